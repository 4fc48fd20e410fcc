"""The embedded default store: one SQLite file in WAL mode, shared by every local process.

Writers serialise on SQLite's write lock (``BEGIN IMMEDIATE``), so a claim is atomic across
processes and a job is never handed out twice; conveyor's writers queue for it on an flock
first (writers.py). Both waits are bounded (``busy_timeout``, 5 s): past it a write raises
StoreUnavailable. Producer commits wait for fsync unless the URL says ``?durable=false``; a
worker's own bookkeeping does not (docs/sqlite.md). Each thread gets its own connection. Idle
workers watch ``PRAGMA data_version``, which changes whenever another connection commits.
Every statement is in queries.sql; the schema is built by migrations/NNNN_*.sql. The event log,
the switches and the worker registry are in operations.py, outcomes in outcomes.py, waits and the
mailbox in waits.py, notifications in notifications.py, schedules in schedules.py, services in
services.py, accounts in accounts.py (each a part of this class).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ...errors import DuplicateJob, InvalidTransition, StoreError
from ...events import EventKind, encode_data, progress_data
from ...job import Job, NewJob, Priority, Status
from ...outcome import NextStage
from .. import event_batches, sql_files
from ..base import JobQuery
from ..columns import insert_plain_row, insert_row, is_plain, new_job_record, row_to_job
from ..rows import list_params
from . import event_writes, schema
from .accounts import SQLiteAccounts
from .errors import translated
from .notifications import SQLiteNotifications
from .operations import SQLiteOperations
from .options import DEFAULT_BUSY_TIMEOUT, SQLiteOptions
from .outcomes import SQLiteOutcomes
from .pipeline_rows import stage_params
from .schedules import SQLiteSchedules
from .services import SQLiteServices
from .waits import SQLiteWaits
from .writers import WritersQueue

_WAKE_POLL = 0.002  #: seconds between data_version checks while idle
_PRIORITIES = json.dumps([int(p) for p in Priority])


def _mark(first: int, index: int) -> int:
    """The mark of the job at ``index`` of an enqueue whose events begin at number ``first``: the
    first number of the batch row its ``enqueued`` event goes into."""
    return first + index // event_batches.PER_ROW * event_batches.PER_ROW


def _queue_params(queues: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``{queues}``'s expansion, ``:q0, :q1, ...``, and those parameters."""
    names = [f"q{i}" for i in range(len(queues))]
    return ", ".join(f":{name}" for name in names), dict(zip(names, queues, strict=True))


class SQLiteBackend(
    SQLiteOutcomes, SQLiteWaits, SQLiteNotifications, SQLiteSchedules, SQLiteServices, SQLiteAccounts, SQLiteOperations
):
    """A job store in one SQLite file. ``path`` ':memory:' is refused: workers need a file.

    ``durable``: producer commits (enqueue, cancel, requeue, prune) wait for the fsync of the log,
    so an acknowledged enqueue survives power loss; False trades that for speed.
    ``busy_timeout``: seconds a writer waits for the write lock before StoreUnavailable."""

    def __init__(self, path: str | Path, *, durable: bool = True, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.options = SQLiteOptions(str(path), durable, busy_timeout)
        self.path = self.options.path
        if self.path in ("", ":memory:"):
            raise StoreError("the SQLite store needs a file path; ':memory:' cannot be shared by workers")
        self.url = self.options.url
        self._sql = sql_files.queries("sqlite")
        self._writers = WritersQueue(self.path + ".lock", self.options.flock_wait)
        self._local = threading.local()
        self._queue_lists: dict[tuple[str, ...], str] = {}  #: queues as the JSON array next_due takes
        self._runs = event_writes.Runs()
        self._ready = False

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.url}>"

    # connections ---------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, and afresh in a forked child)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid, self._local.sync = conn, os.getpid(), "synchronous_normal"
            self._local.lock = self._writers.open()
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, the schema set up first."""
        conn = self._connection()
        if not self._ready:
            self.setup()
        return conn

    def _connect(self) -> sqlite3.Connection:
        parent = Path(self.path).resolve().parent
        if not parent.is_dir():
            raise StoreError(f"cannot open SQLite store {self.path}: directory {parent} does not exist")
        with translated(self.path, "open the file", self.options.busy_timeout):
            conn = sqlite3.connect(
                self.path, timeout=self.options.sqlite_wait, isolation_level=None, check_same_thread=False
            )
            try:
                self._set_wal(conn)
                conn.execute(self._sql["synchronous_normal"])
            except BaseException:
                conn.close()
                raise
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. Processes opening a new file at once race for that switch, and SQLite
        answers "database is locked" at once, without its busy wait: so try again, within the bound."""
        deadline = time.monotonic() + self.options.busy_timeout
        while True:
            try:
                conn.execute(self._sql["journal_mode_wal"])
                return
            except sqlite3.OperationalError as exc:
                if (exc.sqlite_errorcode & 0xFF) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads (WAL: never blocked by the writer); errors mapped."""
        with translated(self.path, what, self.options.busy_timeout):
            yield self._conn()

    @contextmanager
    def _write(self, what: str, *, producer: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection, schema set up first; errors mapped.
        ``producer``: the commit waits for fsync (unless the store is not durable)."""
        with translated(self.path, what, self.options.busy_timeout):
            conn = self._conn()
            with self._transaction(conn, durable=producer and self.options.durable):
                yield conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, *, durable: bool) -> Iterator[None]:
        """Queue on the writers' flock (bounded), then hold SQLite's write lock from the first
        statement (``BEGIN IMMEDIATE``, bounded by the busy timeout) until commit."""
        sync = "synchronous_full" if durable else "synchronous_normal"
        if self._local.sync != sync:  # a pragma, so set between transactions, and only on a change
            conn.execute(self._sql[sync])
            self._local.sync = sync
        lock = self._local.lock
        held = self._writers.acquire(lock)
        try:
            conn.execute(self._sql["begin_write"])
            try:
                yield
                conn.execute(self._sql["commit"])
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute(self._sql["rollback"])
                raise
        finally:
            if held:
                self._writers.release(lock)

    def setup(self, migrate: bool = True) -> list[str]:
        """Apply the migrations the file still needs, all in one write transaction (so processes
        opening a new file at once apply them once). Returns their names. StoreError for a file
        that is not a SQLite database, not conveyor's, or newer than this conveyor. ``migrate`` is
        accepted for the contract: one file has no separate migrate step to coordinate."""
        with translated(self.path, "set up its schema", self.options.busy_timeout):
            conn = self._connection()
            if not schema.pending(conn, self.path):
                self._ready = True
                return []
            with self._transaction(conn, durable=True):
                todo = schema.pending(conn, self.path)  # again, under the lock: another may have applied them
                for migration in todo:
                    schema.apply(conn, migration)
        self._ready = True
        return [name for _, name, _ in todo]

    def close(self) -> None:
        """Close this thread's connection and lock file (reopened on next use)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()
            self._local.conn = None
        lock = getattr(self._local, "lock", None)
        if lock is not None:
            with suppress(OSError):
                lock.close()
            self._local.lock = None

    # producers -------------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, connection: Any = None) -> list[Job]:
        if connection is not None:
            return self._enqueue_in(connection, jobs, now)
        with self._write("enqueue", producer=True) as conn:
            return self._insert(conn, jobs, now)

    def _enqueue_in(self, conn: Any, jobs: Sequence[NewJob], now: float) -> list[Job]:
        """Transactional enqueue on the caller's sqlite3 connection to this same file: the jobs
        join its open transaction (one is begun if none is), under a savepoint. How durable the
        commit is, is the caller's connection's setting."""
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(f"connection= for the SQLite store must be a sqlite3.Connection, got {conn!r}")
        with translated(self.path, "enqueue", self.options.busy_timeout):
            self._conn()  # the schema exists
            row = conn.execute(self._sql["database_file"]).fetchone()
            if not row or not row[0] or Path(row[0]).resolve() != Path(self.path).resolve():
                raise StoreError(f"connection= is not open on the store's file {self.path}")
            if not conn.in_transaction and conn.isolation_level is None:
                conn.execute(self._sql["begin_write"])  # autocommit, nothing to join: commit the jobs at once
                try:
                    stored = self._insert(conn, jobs, now)
                except BaseException:
                    conn.execute(self._sql["rollback"])
                    raise
                conn.execute(self._sql["commit"])
                return stored
            if not conn.in_transaction:
                conn.execute(self._sql["begin"])  # a savepoint released outside one would commit at once
            conn.execute(self._sql["savepoint"])
            try:
                stored = self._insert(conn, jobs, now)
            except BaseException:
                conn.execute(self._sql["rollback_to_savepoint"])
                conn.execute(self._sql["release_savepoint"])
                raise
            conn.execute(self._sql["release_savepoint"])
            return stored

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]:
        """Insert in the open transaction, with an ``enqueued`` event per job inserted: a batch
        without keys in one executemany (the common, fast case); row by row where keys must be
        looked up, an id is taken, or there is one job (whose IntegrityError already names the
        taken id: no savepoint needed). A key held by an unfinished job returns it, no event. Plain
        jobs bind only the columns they set (``insert_plain``)."""
        insert = self._sql["insert"]
        first: int = conn.execute(self._sql["next_event"]).fetchone()[0]  # the marks: where their rows begin
        if len(jobs) > 1 and all(new.key is None for new in jobs):
            conn.execute(self._sql["savepoint"])
            try:
                if all(is_plain(new) for new in jobs):
                    rows = [(*insert_plain_row(new, now), _mark(first, i)) for i, new in enumerate(jobs)]
                    conn.executemany(self._sql["insert_plain"], rows)
                else:
                    conn.executemany(insert, [(*insert_row(new, now), _mark(first, i)) for i, new in enumerate(jobs)])
            except sqlite3.IntegrityError:
                conn.execute(self._sql["rollback_to_savepoint"])  # find the taken id below
            else:
                conn.execute(self._sql["release_savepoint"])
                last: int = conn.execute(self._sql["last_insert_seq"]).fetchone()[0]  # one executemany: consecutive
                self._enqueued(conn, jobs, range(last - len(jobs) + 1, last + 1), now)
                return [new_job_record(new, now) for new in jobs]
            conn.execute(self._sql["release_savepoint"])
        stored: list[Job] = []
        inserted: list[NewJob] = []
        seqs: list[int] = []
        for new in jobs:
            if new.key is not None:
                existing = conn.execute(self._sql["find_unfinished_by_key"], {"key": new.key}).fetchone()
                if existing is not None:
                    stored.append(row_to_job(existing))
                    continue
            try:
                seqs.append(conn.execute(insert, (*insert_row(new, now), _mark(first, len(inserted)))).lastrowid or 0)
            except sqlite3.IntegrityError as exc:
                raise DuplicateJob(new.id) from exc
            stored.append(new_job_record(new, now))
            inserted.append(new)
        self._enqueued(conn, inserted, seqs, now)
        return stored

    def _enqueued(self, conn: sqlite3.Connection, jobs: Sequence[NewJob], seqs: Sequence[int], now: float) -> None:
        """The ``enqueued`` events of jobs just inserted, as batch rows (their inserts noted where)."""
        items = event_batches.enqueued_items(jobs, seqs, now)
        event_writes.append_batch(conn, self._sql["insert_event_batch"], items, now)

    # workers -----------------------------------------------------------------------------------
    def _next_due(self, conn: sqlite3.Connection, queues: Sequence[str]) -> float | None:
        key = tuple(queues)
        names = self._queue_lists.get(key)
        if names is None:  # a worker asks about the same few queues every time
            if len(self._queue_lists) > 64:
                self._queue_lists.clear()
            names = self._queue_lists[key] = json.dumps(key)
        due: float | None = conn.execute(
            self._sql["next_due"], {"queues": names, "priorities": _PRIORITIES}
        ).fetchone()[0]
        return due

    def claim(self, queues: Sequence[str], worker_id: str, limit: int, lease: float, now: float) -> list[Job]:
        if not queues or limit <= 0:
            return []
        with self._read("claim") as conn:  # a read first: an idle poll must not take the write lock
            due = self._next_due(conn, queues)
        if due is None or due > now:
            return []
        marks, params = _queue_params(queues)
        sql = self._sql["claim"].replace("{queues}", marks)
        with self._write("claim") as conn:
            rows = conn.execute(
                sql, {**params, "worker_id": worker_id, "now": now, "until": now + lease, "limit": limit}
            ).fetchall()
            items = event_writes.started_items(rows, worker_id)
            event_writes.append_batch(conn, self._sql["insert_event_batch"], items, now)
        self._runs.claimed(rows, worker_id)
        jobs = [row_to_job(row[:-1]) for row in rows]  # each row ends with the job's seq
        jobs.sort(key=lambda j: (-j.priority, j.scheduled_at))
        return jobs

    def start(self, job_id: str, worker_id: str, lease: float, now: float) -> Job | None:
        with self._write("start a job") as conn:
            params = {"id": job_id, "worker_id": worker_id, "now": now, "until": now + lease}
            row = conn.execute(self._sql["start"], params).fetchone()
            if row is not None:
                items = event_writes.started_items([row], worker_id)
                event_writes.append_batch(conn, self._sql["insert_event_batch"], items, now)
        if row is None:
            return None
        self._runs.claimed([row], worker_id)
        return row_to_job(row[:-1])

    def wait_for_work(self, queues: Sequence[str], timeout: float, now: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        with self._read("wait for work") as conn:
            due = self._next_due(conn, queues) if queues else None
            if due is not None:
                deadline = min(deadline, started + max(0.0, due - now))
            version = conn.execute(self._sql["data_version"]).fetchone()[0]
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(_WAKE_POLL, left))
                if conn.execute(self._sql["data_version"]).fetchone()[0] != version:
                    return

    def heartbeat(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> set[str]:
        if not tokens:
            return set()
        params = {"until": now + lease, "worker_id": worker_id, "tokens": json.dumps(list(tokens))}
        with self._write("renew leases") as conn:
            kept = {row[0] for row in conn.execute(self._sql["extend_leases"], params)}
        return set(tokens) - kept

    def extend_worker_leases(self, worker_ids: Sequence[str], lease: float, now: float) -> int:
        if not worker_ids:
            return 0
        params = {"until": now + lease, "worker_ids": json.dumps(list(worker_ids))}
        with self._write("renew leases") as conn:
            return conn.execute(self._sql["extend_worker_leases"], params).rowcount

    def progress(self, job_id: str, token: str, percent: float, message: str, now: float) -> bool:
        params = {"percent": percent, "message": message, "id": job_id, "token": token}
        with self._write("record progress") as conn:
            if conn.execute(self._sql["progress"], params).rowcount != 1:
                return False  # a stale run: no progress, no event
            event = (job_id, EventKind.PROGRESS.value, progress_data(percent, message))
            event_writes.copy(conn, self._sql["copy_job_events"], [event], now)
        return True

    def emit(self, job_id: str, token: str, kind: str, data: str, now: float) -> bool:
        params = {"id": job_id, "token": token, "kind": kind, "data": data, "now": now}
        with self._write("append an event") as conn:
            return conn.execute(self._sql["emit"], params).rowcount == 1

    def expired(self, now: float, abort_margin: float, limit: int) -> list[Job]:
        with self._read("find expired runs") as conn:
            rows = conn.execute(self._sql["expired"], {"now": now, "margin": abort_margin, "limit": limit})
            return [row_to_job(row) for row in rows]

    # readers and control ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._read("read a job") as conn:
            row = conn.execute(self._sql["get"], {"id": job_id}).fetchone()
        return None if row is None else row_to_job(row)

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """One owner's jobs by their own statement (list_owned_jobs: off the owner index)."""
        params = list_params(query)
        statement = self._sql["list_jobs" if query.owner is None else "list_owned_jobs"]
        with self._read("list jobs") as conn:
            return [row_to_job(row) for row in conn.execute(statement, params)]

    def counts(self, now: float) -> dict[tuple[str, Status], int]:
        with self._read("count jobs") as conn:
            rows = conn.execute(self._sql["counts"], {"now": now}).fetchall()
        return {(queue, Status(status)): n for queue, status, n in rows}

    def oldest_due(self, now: float) -> dict[str, float]:
        with self._read("find the oldest due jobs") as conn:
            rows = conn.execute(self._sql["oldest_due"], {"now": now, "priorities": _PRIORITIES}).fetchall()
        return {queue: float(due) for queue, due in rows}

    def cancel(self, job_id: str, now: float) -> Job | None:
        with self._write("cancel a job", producer=True) as conn:
            if conn.execute(self._sql["cancel"], {"id": job_id, "now": now}).rowcount == 1:
                event_writes.copy(conn, self._sql["copy_job_events"], [(job_id, EventKind.CANCELLED.value, "{}")], now)
        return self.get(job_id)

    def requeue(self, job_id: str, now: float, reset: bool = False, first: NextStage | None = None) -> Job | None:
        if first is not None:
            return self._start_over(job_id, first, now)
        with self._write("requeue a job", producer=True) as conn:
            try:
                requeued = conn.execute(self._sql["requeue"], {"id": job_id, "now": now}).rowcount == 1
            except sqlite3.IntegrityError as exc:
                raise InvalidTransition(f"job {job_id}: another unfinished job holds its key") from exc
            if requeued:
                if reset:
                    conn.execute(self._sql["reset"], {"id": job_id})
                event = (job_id, EventKind.REQUEUED.value, encode_data({"reset": reset}))
                event_writes.copy(conn, self._sql["copy_job_events"], [event], now)  # after the reset: attempt 0
        return self.get(job_id)

    def _start_over(self, job_id: str, first: NextStage, now: float) -> Job | None:
        """``requeue`` of a finished pipeline at its first stage (always a reset), its mailbox
        emptied: the job starts over as if new."""
        with self._write("requeue a job", producer=True) as conn:
            try:
                requeued = conn.execute(self._sql["reset_to_stage"], stage_params(job_id, first)).rowcount == 1
            except sqlite3.IntegrityError as exc:
                raise InvalidTransition(f"job {job_id}: another unfinished job holds its key") from exc
            if requeued:  # fresh state: the mailbox too (a message id taken before may be sent again)
                conn.execute(self._sql["delete_job_messages"], {"ids": json.dumps([job_id])})
                events = [(job_id, EventKind.REQUEUED.value, encode_data({"reset": True}))]
                event_writes.copy(conn, self._sql["copy_job_events"], events, now)
        return self.get(job_id)

    # locks -------------------------------------------------------------------------------------------
    def acquire_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        params = {"name": name, "owner": owner, "until": now + ttl, "now": now}
        with self._write("take a lock") as conn:
            return conn.execute(self._sql["acquire_lock"], params).rowcount == 1

    def release_lock(self, name: str, owner: str) -> bool:
        with self._write("release a lock") as conn:
            return conn.execute(self._sql["release_lock"], {"name": name, "owner": owner}).rowcount == 1

    def lock_owner(self, name: str, now: float) -> str | None:
        with self._read("read a lock") as conn:
            row = conn.execute(self._sql["lock_owner"], {"name": name, "now": now}).fetchone()
        return None if row is None else str(row[0])

    # admin -------------------------------------------------------------------------------------------
    def prune(self, now: float, finished_before: float | None = None) -> int:
        with self._write("prune jobs", producer=True) as conn:
            if finished_before is not None:
                rows = conn.execute(self._sql["prune_before"], {"before": finished_before}).fetchall()
            else:
                rows = conn.execute(self._sql["prune_expired"], {"now": now}).fetchall()
            if rows:  # and their events and messages, in the same transaction
                seqs, ids = json.dumps([row[0] for row in rows]), json.dumps([row[1] for row in rows])
                with event_writes.keeping_head(conn, self._sql):
                    conn.execute(self._sql["delete_job_events"], {"seqs": seqs, "ids": ids})
                conn.execute(self._sql["delete_job_messages"], {"ids": ids})
        return len(rows)

    def schema_versions(self) -> tuple[int | None, int]:
        with translated(self.path, "read its schema version", self.options.busy_timeout):
            return schema.version(self._connection(), self.path), schema.latest()

    def destroy_all(self) -> None:
        with self._write("delete everything", producer=True) as conn, event_writes.keeping_head(conn, self._sql):
            for statement in schema.statements(self._sql["destroy_all"]):
                conn.execute(statement)
