"""The storage contract every backend implements: one small Protocol.

Each method is one atomic step in the store. Methods that change a running
job take the run's ``token`` and do nothing (returning False) when the token
is no longer the job's current one: that is the fencing that keeps a worker
which lost its lease from overwriting a newer run (DESIGN.md, principle 1).

Every method that depends on the time takes ``now`` (Unix seconds) from the
caller, so the store never reads a clock of its own and tests may inject one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ..job import Job, JobError, NewJob


class OutcomeKind(enum.StrEnum):
    """How a run ended, as reported by the worker that ran it."""

    SUCCEEDED = "succeeded"  #: store the result; the job is finished
    FAILED = "failed"  #: store the error; the job is finished
    RETRY = "retry"  #: store the error; queue again at ``retry_at``, one retry used
    RELEASED = "released"  #: hand the job back untouched (graceful stop); no retry used
    DISCARDED = "discarded"  #: delete the job


class Outcome(msgspec.Struct, kw_only=True):
    """The end of one run: what ``finish`` writes."""

    kind: OutcomeKind
    result: Any = None
    error: JobError | None = None
    exit_code: int | None = None
    retry_at: float | None = None  #: for RETRY: when the job is due again


class Report(msgspec.Struct, frozen=True):
    """One run's outcome, addressed to its job and guarded by its run's token."""

    job_id: str
    token: str
    outcome: Outcome


class JobQuery(msgspec.Struct, kw_only=True):
    """Filters for listing jobs; ``due_before``/``due_after`` split QUEUED from SCHEDULED."""

    queue: str | None = None
    status: str | None = None
    task: str | None = None
    due_before: float | None = None  #: scheduled_at <= this
    due_after: float | None = None  #: scheduled_at > this
    limit: int = 100
    offset: int = 0


class Rescued(msgspec.Struct):
    """What one maintenance pass changed."""

    requeued: list[str]  #: leases ran out: back to the queue, no retry used
    aborted: list[str]  #: ran past timeout + margin: failed with exit code 130 or retried


class Backend(Protocol):
    """A job store. Implementations: sqlite.SQLiteBackend, postgres.PostgresBackend.

    Server stores raise ``StoreUnavailable`` (a ``StoreError``) when the server cannot be
    reached; the same call may succeed later, and the worker retries it with back-off."""

    url: str

    def setup(self, migrate: bool = True) -> list[str]:
        """Create or migrate the schema; safe to call from many processes at once. With
        ``migrate`` False a server store only checks its schema is current (StoreError if not);
        SQLite always creates its schema (one file, nothing to coordinate). Returns the names
        of the migrations applied, if any."""

    def close(self) -> None:
        """Release connections."""

    # producers --------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, connection: Any = None) -> list[Job]:
        """Insert jobs in one transaction; for a key already held by an unfinished job,
        return that job instead. Raises DuplicateJob for a taken id (nothing inserted).

        ``connection``: the caller's own open database connection (psycopg.Connection for
        PostgreSQL, sqlite3.Connection on the same file for SQLite). The jobs are then written
        inside that connection's current transaction, under a savepoint, and exist only if the
        caller commits it (transactional enqueue); a connection in autocommit mode with no
        transaction open gets a transaction of its own, committed at once."""

    # workers ----------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker_id: str, limit: int, lease: float, now: float) -> list[Job]:
        """Atomically take up to ``limit`` due jobs (priority, due time, insertion order),
        mark them RUNNING with a fresh token each, a lease until now + lease, attempts + 1."""

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block until new work may have arrived, a queued job falls due, or ``timeout`` passes.
        A hint: it may wake early, and the caller then simply claims again."""

    def heartbeat(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> set[str]:
        """Extend the leases of the runs this worker holds; return the tokens it no longer owns
        (cancelled, aborted or rescued), whose work the worker must drop."""

    def progress(self, job_id: str, token: str, percent: float, message: str) -> bool:
        """Record progress of a running job; False if the run is no longer current."""

    def finish(self, job_id: str, token: str, outcome: Outcome, now: float) -> bool:
        """Write how a run ended; False (and nothing written) if the run is no longer current."""

    def finish_many(self, reports: Sequence[Report], now: float) -> list[bool]:
        """``finish`` for many runs in one transaction (a worker reports in batches);
        one bool per report, in order."""

    # readers and control ------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job's full record, or None."""

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Jobs matching the filters, newest first."""

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of jobs by (queue, stored status)."""

    def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a job that has not finished; return it (unchanged if already finished)."""

    def requeue(self, job_id: str, now: float, reset: bool = False) -> Job | None:
        """Queue a failed or cancelled job again, due now; ``reset`` also zeroes its counters,
        result and error. Raises InvalidTransition if another unfinished job holds its key."""

    # leader duties ------------------------------------------------------------
    def acquire_leader(self, worker_id: str, ttl: float, now: float) -> bool:
        """Take or keep the leader lock for ``ttl`` seconds; True while this worker holds it."""

    def rescue(self, now: float, abort_margin: float) -> Rescued:
        """Requeue running jobs whose lease ran out; abort those over timeout + margin."""

    def prune(self, now: float, finished_before: float | None = None) -> int:
        """Delete finished jobs past their expiry (or, if given, all finished before that time)."""

    def destroy_all(self) -> None:
        """Delete every job and lock (a test hook)."""
