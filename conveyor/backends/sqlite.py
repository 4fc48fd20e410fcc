"""The embedded default store: one SQLite file in WAL mode, shared by every local process.

Writers serialise on SQLite's write lock (``BEGIN IMMEDIATE``), so a claim is
atomic across processes and a job is never handed out twice; conveyor's own
writers queue for it on an flock of ``<file>.lock`` first. Each thread
gets its own connection. Idle workers watch ``PRAGMA data_version``, which
changes whenever another connection commits, instead of sleeping out a poll.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: writers rely on SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

from ..errors import DuplicateJob, InvalidTransition, StoreError
from ..job import Job, NewJob
from .base import JobQuery, Outcome, OutcomeKind, Report, Rescued
from .rows import COLUMNS, INSERT_COLUMNS, finish_params, insert_row, new_job_record, row_to_job


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


UNFINISHED = "('queued', 'running', 'waiting')"
ORDER = "priority DESC, scheduled_at, seq"

INSERT = f"INSERT INTO conveyor_jobs (status, {INSERT_COLUMNS}) VALUES ('queued', {_placeholders(13)})"
FIND_UNFINISHED_BY_KEY = f"SELECT {COLUMNS} FROM conveyor_jobs WHERE key = ? AND status IN {UNFINISHED}"
CANDIDATES = (
    "SELECT seq FROM conveyor_jobs WHERE status = 'queued' AND queue IN ({queues})"
    f" AND scheduled_at <= ? ORDER BY {ORDER} LIMIT ?"
)
CLAIM = (
    "UPDATE conveyor_jobs SET status = 'running', token = lower(hex(randomblob(12))),"
    " worker_id = ?, attempts = attempts + 1, started_at = ?, finished_at = NULL,"
    " lease_expires_at = ?, progress = 0, progress_message = ''"
    " WHERE seq IN ({candidates}) AND status = 'queued'"
    f" RETURNING {COLUMNS}"
)
NEXT_DUE = "SELECT min(scheduled_at) FROM conveyor_jobs WHERE status = 'queued' AND queue IN ({queues})"
EXTEND_LEASES = (
    "UPDATE conveyor_jobs SET lease_expires_at = ? WHERE status = 'running' AND worker_id = ?"
    " AND token IN ({tokens}) RETURNING token"
)
PROGRESS = (
    "UPDATE conveyor_jobs SET progress = ?, progress_message = ? WHERE id = ? AND token = ? AND status = 'running'"
)
_CURRENT_RUN = " WHERE id = :id AND token = :token AND status = 'running'"
_END_RUN = "token = NULL, lease_expires_at = NULL"
FINISH = {
    OutcomeKind.SUCCEEDED: (
        "UPDATE conveyor_jobs SET status = 'succeeded', result = :result,"
        " results = json_insert(results, '$[#]', json(:result)), error = NULL, exit_code = 0,"
        f" progress = 100, finished_at = :now, expires_at = :now + result_ttl, {_END_RUN}" + _CURRENT_RUN
    ),
    OutcomeKind.FAILED: (
        "UPDATE conveyor_jobs SET status = 'failed', error = :error, exit_code = :exit_code,"
        f" finished_at = :now, expires_at = :now + result_ttl, {_END_RUN}" + _CURRENT_RUN
    ),
    OutcomeKind.RETRY: (
        "UPDATE conveyor_jobs SET status = 'queued', error = :error, exit_code = :exit_code,"
        f" retries = retries + 1, scheduled_at = :retry_at, {_END_RUN}" + _CURRENT_RUN
    ),
    OutcomeKind.RELEASED: f"UPDATE conveyor_jobs SET status = 'queued', {_END_RUN}" + _CURRENT_RUN,
    OutcomeKind.DISCARDED: "DELETE FROM conveyor_jobs" + _CURRENT_RUN,
}
CANCEL = (
    "UPDATE conveyor_jobs SET status = 'cancelled', exit_code = 130, finished_at = :now,"
    f" expires_at = :now + result_ttl, {_END_RUN} WHERE id = :id AND status IN {UNFINISHED}"
)
REQUEUE = (
    "UPDATE conveyor_jobs SET status = 'queued', scheduled_at = :now, finished_at = NULL,"
    " expires_at = NULL, exit_code = NULL, result = NULL"
    " WHERE id = :id AND status IN ('failed', 'cancelled')"
)
RESET = (
    "UPDATE conveyor_jobs SET attempts = 0, retries = 0, error = NULL, progress = 0,"
    " progress_message = '', started_at = NULL, worker_id = NULL, stage = 0, results = '[]'"
    " WHERE id = :id"
)
RESCUE_EXPIRED = (
    f"UPDATE conveyor_jobs SET status = 'queued', {_END_RUN}"
    " WHERE status = 'running' AND lease_expires_at < :now RETURNING id"
)
_OVERDUE = " WHERE status = 'running' AND timeout IS NOT NULL AND started_at + timeout + :margin < :now"
_TIMEOUT_ERROR = (
    "json_object('type', 'TimeoutError', 'traceback', '', 'message', 'job exceeded its timeout of ' || timeout || ' s')"
)
ABORT_OVERDUE_RETRY = (
    f"UPDATE conveyor_jobs SET status = 'queued', retries = retries + 1, scheduled_at = :now,"
    f" exit_code = 130, error = {_TIMEOUT_ERROR}, {_END_RUN}" + _OVERDUE + " AND retries < max_retries RETURNING id"
)
ABORT_OVERDUE_FAIL = (
    f"UPDATE conveyor_jobs SET status = 'failed', exit_code = 130, error = {_TIMEOUT_ERROR},"
    f" finished_at = :now, expires_at = :now + result_ttl, {_END_RUN}" + _OVERDUE + " RETURNING id"
)
ACQUIRE_LOCK = (
    "INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (:name, :owner, :until)"
    " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
    " WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at < :now"
)
PRUNE_EXPIRED = "DELETE FROM conveyor_jobs WHERE expires_at <= ? AND status IN ('succeeded', 'failed', 'cancelled')"
PRUNE_BEFORE = "DELETE FROM conveyor_jobs WHERE finished_at < ? AND status IN ('succeeded', 'failed', 'cancelled')"

_WAKE_POLL = 0.002  # seconds between data_version checks while idle


def _set_wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Switch to WAL. Processes opening a new file at once race for that switch, and SQLite
    answers "database is locked" at once, without waiting its busy timeout: so try again."""
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _open_lock_file(path: str) -> BinaryIO | None:
    """The writers' lock file, or None where flock is unavailable. A file object, so that
    it is closed with the thread's other state when the thread ends."""
    if fcntl is None:
        return None
    try:
        return open(path, "ab")  # held for the connection's life
    except OSError:
        return None  # a read-only directory: fall back to SQLite's own busy waiting


class SQLiteBackend:
    """A job store in one SQLite file. ``path`` ':memory:' is refused: workers need a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path in ("", ":memory:"):
            raise StoreError("the SQLite store needs a file path; ':memory:' cannot be shared by workers")
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        self._ready = False

    # connections ---------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            if not self._ready:
                self.setup()
        return conn

    def _connect(self) -> sqlite3.Connection:
        parent = Path(self.path).resolve().parent
        if not parent.is_dir():
            raise StoreError(f"cannot open SQLite store {self.path}: directory {parent} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            _set_wal(conn, deadline=time.monotonic() + 60.0)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._local.lock = _open_lock_file(self.path + ".lock")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its first statement.

        conveyor's own writers first queue on an flock of ``<file>.lock``: the kernel wakes
        the next one the moment the lock is free, where SQLite's busy handler would sleep
        1-100 ms between tries. Under contention that doubles a worker pool's throughput."""
        conn = self._conn()
        lock = self._local.lock
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def setup(self, migrate: bool = True) -> list[str]:
        """Create the tables and indexes if they are missing; checks the file is a store.
        ``migrate`` is accepted for the contract and ignored: one file has nothing to coordinate.
        Returns [] (the schema is created whole, not by numbered migrations)."""
        conn = getattr(self._local, "conn", None) or self._connect()
        self._local.conn = conn
        schema = resources.files(__package__).joinpath("sqlite_schema.sql").read_text()
        try:
            conn.executescript(schema)
            version = conn.execute("SELECT value FROM conveyor_meta WHERE name = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable conveyor SQLite store: {exc}") from exc
        if version is None or version[0] != "1":
            raise StoreError(f"{self.path} has conveyor schema version {version}, this conveyor knows 1")
        self._ready = True
        return []

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        lock = getattr(self._local, "lock", None)
        if lock is not None:
            lock.close()
            self._local.lock = None

    # producers -------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, connection: Any = None) -> list[Job]:
        if connection is not None:
            return self._enqueue_in(connection, jobs, now)
        with self._write() as conn:
            return self._insert(conn, jobs, now)

    def _enqueue_in(self, conn: Any, jobs: Sequence[NewJob], now: float) -> list[Job]:
        """Transactional enqueue on the caller's sqlite3 connection to this same file: the jobs
        join its open transaction (one is begun if none is), under a savepoint."""
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(f"connection= for the SQLite store must be a sqlite3.Connection, got {conn!r}")
        self._conn()  # the schema exists
        files = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
        if not files or Path(files[0]).resolve() != Path(self.path).resolve():
            raise StoreError(f"connection= is not open on the store's file {self.path}")
        if not conn.in_transaction and conn.isolation_level is None:
            conn.execute("BEGIN IMMEDIATE")  # autocommit, nothing to join: commit the jobs at once
            try:
                stored = self._insert(conn, jobs, now)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return stored
        if not conn.in_transaction:
            conn.execute("BEGIN")
        conn.execute("SAVEPOINT conveyor_enqueue")
        try:
            stored = self._insert(conn, jobs, now)
        except BaseException:
            conn.execute("ROLLBACK TO SAVEPOINT conveyor_enqueue")
            conn.execute("RELEASE SAVEPOINT conveyor_enqueue")
            raise
        conn.execute("RELEASE SAVEPOINT conveyor_enqueue")
        return stored

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
        """Insert in the open transaction: all rows in one executemany when no job has a key
        (the common, fast case); row by row where keys must be looked up or an id is taken."""
        if all(new.key is None for new in jobs):
            conn.execute("SAVEPOINT conveyor_bulk")
            try:
                conn.executemany(INSERT, [insert_row(new, now) for new in jobs])
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK TO SAVEPOINT conveyor_bulk")  # find the taken id below
            else:
                conn.execute("RELEASE SAVEPOINT conveyor_bulk")
                return [new_job_record(new, now) for new in jobs]
            conn.execute("RELEASE SAVEPOINT conveyor_bulk")
        stored: list[Job] = []
        for new in jobs:
            if new.key is not None:
                existing = conn.execute(FIND_UNFINISHED_BY_KEY, (new.key,)).fetchone()
                if existing is not None:
                    stored.append(row_to_job(existing))
                    continue
            try:
                conn.execute(INSERT, insert_row(new, now))
            except sqlite3.IntegrityError as exc:
                raise DuplicateJob(new.id) from exc
            stored.append(new_job_record(new, now))
        return stored

    # workers ---------------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker_id: str, limit: int, lease: float, now: float) -> list[Job]:
        marks = _placeholders(len(queues))
        candidates = CANDIDATES.format(queues=marks)
        conn = self._conn()
        # A read first: an idle poll must not take the write lock.
        if not conn.execute(candidates, (*queues, now, 1)).fetchone():
            return []
        with self._write() as conn:
            rows = conn.execute(
                CLAIM.format(candidates=candidates), (worker_id, now, now + lease, *queues, now, limit)
            ).fetchall()
        jobs = [row_to_job(row) for row in rows]
        jobs.sort(key=lambda j: (-j.priority, j.scheduled_at))
        return jobs

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        conn = self._conn()
        deadline = time.monotonic() + timeout
        next_due = conn.execute(NEXT_DUE.format(queues=_placeholders(len(queues))), tuple(queues)).fetchone()[0]
        if next_due is not None:
            deadline = min(deadline, time.monotonic() + max(0.0, next_due - time.time()))
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        while time.monotonic() < deadline:
            time.sleep(_WAKE_POLL)
            if conn.execute("PRAGMA data_version").fetchone()[0] != version:
                return

    def heartbeat(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> set[str]:
        if not tokens:
            return set()
        with self._write() as conn:
            sql = EXTEND_LEASES.format(tokens=_placeholders(len(tokens)))
            kept = {row[0] for row in conn.execute(sql, (now + lease, worker_id, *tokens))}
        return set(tokens) - kept

    def progress(self, job_id: str, token: str, percent: float, message: str) -> bool:
        with self._write() as conn:
            return conn.execute(PROGRESS, (percent, message, job_id, token)).rowcount == 1

    def finish(self, job_id: str, token: str, outcome: Outcome, now: float) -> bool:
        return self.finish_many([Report(job_id, token, outcome)], now)[0]

    def finish_many(self, reports: Sequence[Report], now: float) -> list[bool]:
        params = [finish_params(report, now) for report in reports]
        with self._write() as conn:
            return [
                conn.execute(FINISH[report.outcome.kind], values).rowcount == 1
                for report, values in zip(reports, params, strict=True)
            ]

    # readers and control -----------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        row = self._conn().execute(f"SELECT {COLUMNS} FROM conveyor_jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row_to_job(row)

    def list_jobs(self, query: JobQuery) -> list[Job]:
        where: list[str] = []
        params: list[object] = []
        for column, value in (("queue", query.queue), ("status", query.status), ("task", query.task)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if query.due_before is not None:
            where.append("scheduled_at <= ?")
            params.append(query.due_before)
        if query.due_after is not None:
            where.append("scheduled_at > ?")
            params.append(query.due_after)
        sql = f"SELECT {COLUMNS} FROM conveyor_jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        rows = self._conn().execute(sql, (*params, query.limit, query.offset)).fetchall()
        return [row_to_job(row) for row in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        rows = self._conn().execute("SELECT queue, status, count(*) FROM conveyor_jobs GROUP BY queue, status")
        return {(queue, status): n for queue, status, n in rows}

    def cancel(self, job_id: str, now: float) -> Job | None:
        with self._write() as conn:
            conn.execute(CANCEL, {"id": job_id, "now": now})
        return self.get(job_id)

    def requeue(self, job_id: str, now: float, reset: bool = False) -> Job | None:
        try:
            with self._write() as conn:
                if conn.execute(REQUEUE, {"id": job_id, "now": now}).rowcount and reset:
                    conn.execute(RESET, {"id": job_id})
        except sqlite3.IntegrityError as exc:
            raise InvalidTransition(f"job {job_id}: another unfinished job holds its key") from exc
        return self.get(job_id)

    # leader duties -------------------------------------------------------------------
    def acquire_leader(self, worker_id: str, ttl: float, now: float) -> bool:
        with self._write() as conn:
            params = {"name": "leader", "owner": worker_id, "until": now + ttl, "now": now}
            return conn.execute(ACQUIRE_LOCK, params).rowcount == 1

    def rescue(self, now: float, abort_margin: float) -> Rescued:
        params = {"now": now, "margin": abort_margin}
        with self._write() as conn:
            aborted = [row[0] for row in conn.execute(ABORT_OVERDUE_RETRY, params)]
            aborted += [row[0] for row in conn.execute(ABORT_OVERDUE_FAIL, params)]
            requeued = [row[0] for row in conn.execute(RESCUE_EXPIRED, {"now": now})]
        return Rescued(requeued=requeued, aborted=aborted)

    def prune(self, now: float, finished_before: float | None = None) -> int:
        with self._write() as conn:
            if finished_before is not None:
                return conn.execute(PRUNE_BEFORE, (finished_before,)).rowcount
            return conn.execute(PRUNE_EXPIRED, (now,)).rowcount

    def destroy_all(self) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM conveyor_jobs")
            conn.execute("DELETE FROM conveyor_locks")
