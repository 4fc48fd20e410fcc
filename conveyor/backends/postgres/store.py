"""The multi-host store: one PostgreSQL database shared by workers on many machines.

Semantics mirror the SQLite store exactly (same statuses, fencing tokens, key rule and
outcomes); what PostgreSQL adds is how it scales:

* claims are one ``UPDATE ... WHERE seq = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))``
  statement, served by a partial index, so many workers claim batches at once without blocking
  each other; a worker's bookkeeping runs on a pool of its own that does not wait for the WAL
  flush (docs/postgres.md says why that is safe);
* idle workers ``LISTEN`` on channel ``conveyor_jobs``; a trigger notifies it whenever a job
  becomes claimable, in the same transaction, so a wake-up never precedes the commit;
* named locks (the leader's among them) are rows of ``conveyor_locks`` with an expiry, taken
  or renewed by one upsert, as on SQLite;
* every job step writes its event in its own statement (a data-modifying CTE) or transaction;
  events are numbered later, in an order no reader can be overtaken in, by the sequencer of
  events.py; new jobs are inserted by inserts.py; switches and the worker registry are in
  operations.py; jobs' mailboxes, the release of ended waits and owners' notifications in
  waits.py; pipeline outcomes in pipelines.py; schedules and their ticks in schedules.py;
  services in services.py, accounts in accounts.py;
* the schema is built by the versioned ``.sql`` migrations in ``postgres/migrations``,
  applied under a transaction-scoped advisory lock, so concurrent ``conveyor migrate`` runs
  are safe; every statement lives in ``postgres/queries.sql``.

Connection-level failures raise :class:`~conveyor.errors.StoreUnavailable`, which the worker
retries with back-off. See docs/postgres.md for the schema and docs/deployment.md for sizing.

URL: ``postgresql://user:password@host:port/dbname?pool_max=10``. Query parameters
``pool_min`` (default 1), ``pool_max`` (default 10) and ``pool_timeout`` (seconds to wait for a
connection, default 10) size this process's pools; every other parameter goes to libpq.
Connections and the LISTEN session are in connections.py; the statements and migrations are
read by conveyor.backends.sql_files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ...errors import InvalidTransition, StoreError, StoreUnavailable, UnstorableText
from ...events import EventKind, encode_data, outcome_event, progress_data
from ...job import Job, NewJob, Priority, Status
from ...outcome import NextStage
from ..base import JobQuery, Outcome, OutcomeKind, Report
from ..columns import row_to_job
from ..rows import list_params
from . import pipelines
from .accounts import AccountsMixin
from .connections import (
    Connection,
    Listener,
    check_on_checkout,
    connect_failure,
    permanent_error,
    split_url,
    worker_session,
)
from .events import EventLogMixin, Waker
from .inserts import insert
from .operations import OperationsMixin
from .schedules import SchedulesMixin
from .schema import SchemaMixin, queries
from .services import ServicesMixin
from .waits import WaitsMixin

log = logging.getLogger("conveyor.postgres")

_NO_DATA = encode_data(None)


#: The event parameters of a claim or start: ``started``, no data (the worker is in the event's
#: worker_id column, as rows.started_rows writes it on SQLite).
_STARTED = {"event_kind": EventKind.STARTED.value, "event_data": _NO_DATA}


def _events_of(batch: Sequence[Report]) -> dict[str, Any]:
    """finish_succeeded_many's event parameters: one kind and data for the whole batch when they are
    the same for every report (the usual case), else a kind and data per report."""
    logged = [outcome_event(report.outcome) for report in batch]
    if all(event == logged[0] for event in logged):
        kind, data = logged[0]
        return {"event_kinds": [], "event_data": [], "event_kind": kind.value, "event_data_one": data}
    kinds = [kind.value for kind, _ in logged]
    return {
        "event_kinds": kinds,
        "event_data": [data for _, data in logged],
        "event_kind": None,
        "event_data_one": None,
    }


class PostgresBackend(
    SchemaMixin, EventLogMixin, OperationsMixin, WaitsMixin, SchedulesMixin, ServicesMixin, AccountsMixin
):
    """A job store in a PostgreSQL database: the jobs in ``conveyor_jobs``, their events in
    ``conveyor_events``, named locks, switches, the worker registry, jobs' mailboxes and owners'
    notifications beside them.

    One instance per process: two connection pools for the store's steps (one for a worker's
    own bookkeeping), plus connections of its own opened on demand to LISTEN for wake-ups (of
    workers; of event readers).
    ``migrate``: create or upgrade the schema in ``setup``; False only checks it is current.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.conninfo, settings = split_url(url)
        self.pool_min = int(settings["pool_min"])
        self.pool_max = int(settings["pool_max"])
        self.pool_timeout = settings["pool_timeout"]
        self.migrate_on_setup = migrate
        parts = urlsplit(url)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
        self._pool: ConnectionPool[Connection] | None = None
        self._worker_pool: ConnectionPool[Connection] | None = None  #: claims, outcomes, leases
        self._pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._ready = False
        self._listener = Listener(self._connect, self._where)
        self._event_listener = Listener(self._connect, self._where, "listen_events")
        self._waker = Waker()

    def __repr__(self) -> str:
        return f"<PostgresBackend {self._where}>"

    # connections ---------------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool[Connection]:
        """The pool for enqueues, reads and control: commits wait for the WAL flush."""
        if self._pool is not None and self._pid == os.getpid():
            return self._pool
        with self._pool_lock:
            self._forget_parent()
            if self._pool is None:
                self._pool = self._new_pool("conveyor", self.pool_min, None)
        return self._pool

    def _get_worker_pool(self) -> ConnectionPool[Connection]:
        """The pool for a worker's own bookkeeping (claims, outcomes, leases), whose sessions
        commit without waiting for the WAL flush (see ``worker_session`` in queries.sql). A
        process that only enqueues never opens it."""
        if self._worker_pool is not None and self._pid == os.getpid():
            return self._worker_pool
        with self._pool_lock:
            self._forget_parent()
            if self._worker_pool is None:
                self._worker_pool = self._new_pool("conveyor-worker", 1, worker_session)
        return self._worker_pool

    def _new_pool(self, name: str, min_size: int, configure: Any) -> ConnectionPool[Connection]:
        pool: ConnectionPool[Connection] = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=self.pool_max,
            timeout=self.pool_timeout,
            kwargs={"autocommit": True, "application_name": name},
            configure=configure,
            check=check_on_checkout,
            name=name,
            open=False,
        )
        pool.open(wait=False)
        return pool

    def _forget_parent(self) -> None:
        """In a forked child, drop the parent's connections: their sockets are not ours to use."""
        if self._pid != os.getpid():
            self._pool = self._worker_pool = None
            self._listener = Listener(self._connect, self._where)
            self._event_listener = Listener(self._connect, self._where, "listen_events")
            self._pid = os.getpid()

    def _connect(self) -> Connection:
        """A connection outside the pools (the listener's); autocommit."""
        return psycopg.connect(self.conninfo, autocommit=True, application_name="conveyor", connect_timeout=5)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn psycopg's errors into conveyor's: an outage is StoreUnavailable (retried); a wrong
        password, database or URL is StoreError with the server's own message (errors.py)."""
        try:
            yield
        except PoolTimeout as exc:
            failure = connect_failure(self.conninfo)  # the pool does not say why: ask the server once
            permanent = None if failure is None else permanent_error(failure, self._where)
            if permanent is not None:
                raise permanent from exc
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} unreachable ({what}): no connection within {self.pool_timeout} s"
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if (permanent := permanent_error(exc, self._where)) is not None:
                raise permanent from exc
            raise StoreUnavailable(f"PostgreSQL at {self._where} unreachable ({what}): {exc}".strip()) from exc
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):  # refused by psycopg before sending
                raise UnstorableText(
                    f"PostgreSQL at {self._where} refused {what}: a name or text given holds"
                    " a NUL character (\\x00), which PostgreSQL's text cannot store"
                ) from exc
            raise StoreError(f"PostgreSQL at {self._where} refused {what}: {exc}".strip()) from exc

    @contextmanager
    def _conn(self, what: str, *, worker: bool = False) -> Iterator[Connection]:
        """A pooled autocommit connection, the schema set up first; errors mapped. ``worker``:
        from the worker pool (no wait for the WAL flush), for a worker's own bookkeeping."""
        if not self._ready:
            self.setup(self.migrate_on_setup)
        pool = self._get_worker_pool() if worker else self._get_pool()
        with self._errors(what), pool.connection() as conn:
            yield conn

    def close(self) -> None:
        """Close the pools and the listener's connection. The store reopens on next use."""
        self._forget_parent()  # a forked child must not close its parent's sockets
        with self._pool_lock:
            pools, self._pool, self._worker_pool = [self._pool, self._worker_pool], None, None
        for pool in pools:
            if pool is not None:
                pool.close()
        self._listener.close()
        self._event_listener.close()

    # producers ---------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, connection: Any = None) -> list[Job]:
        """Insert the jobs in one transaction. With ``connection`` (a psycopg.Connection to this
        database) they are written in the caller's transaction instead, under a savepoint, and
        exist only if that transaction commits; workers are woken at that commit."""
        if not jobs:
            return []
        if connection is not None:
            return self._enqueue_in(connection, jobs, now)
        if len(jobs) == 1:  # one statement (the job and its event), atomic and committed on its own
            with self._conn("enqueue") as conn:
                return insert(conn, jobs, now)
        with self._conn("enqueue") as conn, conn.transaction():
            return insert(conn, jobs, now)

    def _enqueue_in(self, conn: Any, jobs: Sequence[NewJob], now: float) -> list[Job]:
        if not isinstance(conn, psycopg.Connection):
            raise TypeError(
                f"connection= must be a psycopg.Connection (sync, psycopg 3) to the store's database, got {conn!r}"
            )
        if not self._ready:
            self.setup(self.migrate_on_setup)
        q = queries()
        status = conn.info.transaction_status
        with self._errors("enqueue in the caller's transaction"):
            if status is TransactionStatus.INERROR:
                raise StoreError("connection= is in a failed transaction: roll it back before enqueuing")
            if status is TransactionStatus.IDLE and conn.autocommit:
                # Nothing to join: an autocommit connection commits the jobs at once.
                with conn.transaction():
                    return insert(conn, jobs, now)
            conn.execute(q["savepoint"])  # begins the caller's transaction if none is open yet
            try:
                stored = insert(conn, jobs, now)
            except BaseException:
                with suppress(psycopg.Error):
                    conn.execute(q["rollback_to_savepoint"])
                    conn.execute(q["release_savepoint"])
                raise
            conn.execute(q["release_savepoint"])
            return stored

    # workers -----------------------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker_id: str, limit: int, lease: float, now: float) -> list[Job]:
        if limit < 1 or not queues:
            return []
        began = self._waker.ask(worker=True)
        params = {"queues": list(queues), "worker_id": worker_id, "limit": limit, "now": now, "until": now + lease}
        params |= _STARTED | {"wake": began is not None}
        with self._conn("claim", worker=True) as conn:
            rows = conn.execute(queries()["claim"], params).fetchall()
        self._waker.sent(began, bool(rows))
        claimed = [(row[0], row_to_job(row[1:-1])) for row in rows]  # seq, the job, woken
        claimed.sort(key=lambda c: (-c[1].priority, c[1].scheduled_at, c[0]))  # priority, due time, insertion
        return [job for _, job in claimed]

    def start(self, job_id: str, worker_id: str, lease: float, now: float) -> Job | None:
        began = self._waker.ask(worker=True)
        params = {"id": job_id, "worker_id": worker_id, "now": now, "until": now + lease}
        params |= _STARTED | {"wake": began is not None}
        with self._conn("start", worker=True) as conn:
            row = conn.execute(queries()["start"], params).fetchone()
        self._waker.sent(began, row is not None)
        return None if row is None else row_to_job(row[:-1])  # the job, woken

    def wait_for_work(self, queues: Sequence[str], timeout: float, now: float) -> None:
        """LISTEN for a notification naming one of ``queues``, or until the next queued job of
        them falls due (by ``now``), or ``timeout``. Never raises: with the database away it
        sleeps the timeout out (the slow poll), and listens again once it is back."""
        wait = max(0.0, timeout)
        try:
            with self._conn("finding the next due job") as conn:
                row = conn.execute(
                    queries()["next_due"], {"queues": list(queues), "priorities": [int(p) for p in Priority]}
                ).fetchone()
            if row is not None and row[0] is not None:
                wait = min(wait, max(0.0, row[0] - now))
        except StoreError as exc:
            log.debug("wait_for_work: %s", exc)
        self._forget_parent()
        self._listener.wait(set(queues), time.monotonic() + wait)

    def heartbeat(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> set[str]:
        if not tokens:
            return set()
        params = {"until": now + lease, "worker_id": worker_id, "tokens": list(tokens)}
        with self._conn("heartbeat", worker=True) as conn:
            kept = {row[0] for row in conn.execute(queries()["extend_leases"], params).fetchall()}
        return set(tokens) - kept

    def extend_worker_leases(self, worker_ids: Sequence[str], lease: float, now: float) -> int:
        if not worker_ids:
            return 0
        params = {"until": now + lease, "worker_ids": list(worker_ids)}
        with self._conn("extend worker leases", worker=True) as conn:
            return conn.execute(queries()["extend_worker_leases"], params).rowcount

    def progress(self, job_id: str, token: str, percent: float, message: str, now: float) -> bool:
        """Record progress and its event; False if the run is no longer current. Progress is a
        hint: while the database is away it is dropped (logged) and the run goes on, reported as
        current."""
        began = self._waker.ask(worker=True)
        params = {"percent": percent, "message": message, "id": job_id, "token": token, "now": now,
                  "event_kind": EventKind.PROGRESS.value, "event_data": progress_data(percent, message),
                  "wake": began is not None}  # fmt: skip
        try:
            with self._conn("progress", worker=True) as conn:
                row = conn.execute(queries()["progress"], params).fetchone()
            written = row is not None and row[0] == 1
            self._waker.sent(began, written)
            return written
        except StoreUnavailable as exc:
            log.warning("job %s: progress not recorded: %s", job_id, exc)
            return True

    def finish(self, job_id: str, token: str, outcome: Outcome, now: float) -> bool:
        return self.finish_many([Report(job_id, token, outcome)], now)[0]

    def finish_many(self, reports: Sequence[Report], now: float) -> list[bool]:
        """Successes, the common case, in one statement; any other plain outcome (or a success
        guarded by ``lease_before``) in one of its own, all sent in one pipeline (one round trip
        however many there are). Each report is atomic on its own (its outcome and its event, in one
        statement): no report depends on another. A pipeline's move to its next stage is one such
        statement (finish_advanced); a pipeline's end, a move to a message wait, or an outcome with a
        chained job or a notice then goes in a transaction of its own (pipelines.finish)."""
        q = queries()
        succeeded: list[int] = []
        others: list[int] = []
        staged: list[int] = []
        for i, report in enumerate(reports):
            outcome = report.outcome
            if not pipelines.plain(outcome):
                staged.append(i)
                continue
            batched = outcome.kind is OutcomeKind.SUCCEEDED and outcome.lease_before is None
            (succeeded if batched else others).append(i)
        done: dict[int, bool] = {}
        began = self._waker.ask(worker=True)
        notify = began is not None
        with self._conn("finish", worker=True) as conn:
            statements = len(others) + (1 if succeeded else 0)
            with conn.pipeline() if statements > 1 else nullcontext():
                many = None
                if succeeded:
                    batch = [reports[i] for i in succeeded]
                    params = {
                        "now": now,
                        "ids": [r.job_id for r in batch],
                        "tokens": [r.token for r in batch],
                        "results": [r.outcome.result_text() for r in batch],
                        "wake": notify,
                    } | _events_of(batch)
                    many = conn.execute(q["finish_succeeded_many"], params)
                each = []
                for i in others:
                    statement = q[pipelines.statement(reports[i].outcome)]
                    each.append((i, conn.execute(statement, pipelines.statement_params(reports[i], now, notify))))
            # the pipeline, if any, is synced here: every statement's result has arrived
            if many is not None:
                written = {row[0] for row in many.fetchall()}
                done.update((i, reports[i].token in written) for i in succeeded)
            for i, cursor in each:
                row = cursor.fetchone()
                done[i] = row is not None and row[0] == 1
            for i in staged:
                done[i] = pipelines.finish(conn, reports[i], now, notify)
        self._waker.sent(began, any(done.values()))
        return [done[i] for i in range(len(reports))]

    def expired(self, now: float, abort_margin: float, limit: int) -> list[Job]:
        params = {"now": now, "margin": abort_margin, "limit": limit}
        with self._conn("expired") as conn:
            rows = conn.execute(queries()["expired"], params).fetchall()
        return [row_to_job(row) for row in rows]

    # readers and control -------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._conn("get") as conn:
            row = conn.execute(queries()["get"], {"id": job_id}).fetchone()
        return None if row is None else row_to_job(row)

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """One owner's jobs by their own statement (list_owned_jobs: off the owner index)."""
        params = list_params(query)
        statement = queries()["list_jobs" if query.owner is None else "list_owned_jobs"]
        with self._conn("list jobs") as conn:
            rows = conn.execute(statement, params).fetchall()
        return [row_to_job(row) for row in rows]

    def counts(self, now: float) -> dict[tuple[str, Status], int]:
        with self._conn("counts") as conn:
            rows = conn.execute(queries()["counts"], {"now": now}).fetchall()
        return {(queue, Status(status)): int(n) for queue, status, n in rows}

    def cancel(self, job_id: str, now: float) -> Job | None:
        params = {"id": job_id, "now": now, "event_kind": EventKind.CANCELLED.value, "event_data": _NO_DATA,
                  "wake": True}  # fmt: skip
        with self._conn("cancel") as conn:
            conn.execute(queries()["cancel"], params)
            row = conn.execute(queries()["get"], {"id": job_id}).fetchone()
        return None if row is None else row_to_job(row)

    def requeue(self, job_id: str, now: float, reset: bool = False, first: NextStage | None = None) -> Job | None:
        """Queue a failed or cancelled job again (requeue, then reset if asked); with ``first``, a
        finished pipeline job starts over at that stage (pipelines.reset_to_stage: a reset, always)."""
        q = queries()
        params = {"id": job_id, "now": now, "reset": reset, "event_kind": EventKind.REQUEUED.value,
                  "event_data": encode_data({"reset": reset}), "wake": True}  # fmt: skip
        with self._conn("requeue") as conn:
            try:
                if first is not None:
                    pipelines.reset_to_stage(conn, job_id, first, now)
                else:
                    with conn.transaction():
                        requeued = conn.execute(q["requeue"], params).fetchone()
                        if requeued is not None and requeued[0] and reset:
                            conn.execute(q["reset"], params)
            except pg_errors.UniqueViolation as exc:
                raise InvalidTransition(f"job {job_id}: another unfinished job holds its key") from exc
            row = conn.execute(q["get"], {"id": job_id}).fetchone()
        return None if row is None else row_to_job(row)

    # locks ---------------------------------------------------------------------------------
    def acquire_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        params = {"name": name, "owner": owner, "until": now + ttl, "now": now}
        with self._conn("acquire lock") as conn:
            return conn.execute(queries()["acquire_lock"], params).fetchone() is not None

    def release_lock(self, name: str, owner: str) -> bool:
        with self._conn("release lock") as conn:
            return conn.execute(queries()["release_lock"], {"name": name, "owner": owner}).rowcount == 1

    # clean-up --------------------------------------------------------------------------------
    def prune(self, now: float, finished_before: float | None = None) -> int:
        """Delete finished jobs past their expiry (or finished before ``finished_before``), their
        events and messages, in one statement; returns how many jobs. Numbers the log first, so
        their events are found by the index of numbered rows (events.py)."""
        self._sequence_all()
        with self._conn("prune") as conn:
            if finished_before is not None:
                row = conn.execute(queries()["prune_before"], {"before": finished_before}).fetchone()
            else:
                row = conn.execute(queries()["prune_expired"], {"now": now}).fetchone()
        return 0 if row is None else int(row[0])

    def destroy_all(self) -> None:
        with self._conn("destroy all") as conn:
            conn.execute(queries()["destroy_all"].encode())  # several statements, no parameters
