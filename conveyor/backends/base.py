"""The storage contract: small protocols by concern; ``Backend`` is their union.

Each method is one atomic step in the store. Methods that change a running
job take the run's ``token`` and do nothing (returning False) when the token
is no longer the job's current one: that is the fencing that keeps a worker
which lost its lease from overwriting a newer run (DESIGN.md, principle 1).
What a job does next is decided in Python (``conveyor.outcome``); a store only
writes it.

Every method that depends on the time takes ``now`` (Unix seconds) from the
caller, so no store reads a clock of its own and tests may inject one.

Events (DESIGN.md, principle 5): every method that changes a job's state appends the event
``conveyor.events`` names for it in the same transaction, so the log and the jobs never
disagree; the kind and payload are decided in Python (``events.outcome_event``...), the store
writes the row. Claims honour the switches (``Control``): no job of a paused queue or a
disabled task is claimed, nor any job while everything is disabled.

Errors: a store raises ``StoreUnavailable`` when it cannot be reached or is
busy right now (the same call may succeed later; workers retry it with
back-off) and ``StoreError`` for anything permanent. No driver exception
(sqlite3, psycopg) leaves a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from ..accounts import AuditEntry, TokenRecord, User
from ..events import Event, EventQuery
from ..job import Job, NewJob, Status
from ..messages import Delivery, NewMessage, Notification, StoredMessage
from ..operations import Switches, SwitchScope, WorkerInfo, WorkerState
from ..outcome import NextStage, Outcome, OutcomeKind, Report
from ..schedule_types import ScheduleRecord, Tick, TickRecord
from ..service_types import ServiceAction, ServiceEnd, ServiceRecord, ServiceSpec

__all__ = [
    "Accounts",
    "Admin",
    "Backend",
    "Control",
    "EventLog",
    "JobQuery",
    "JobStore",
    "Locks",
    "Notifications",
    "Outcome",
    "OutcomeKind",
    "Registry",
    "Report",
    "Schedules",
    "Services",
    "Waits",
]


class JobQuery(msgspec.Struct, kw_only=True):
    """Filters for listing jobs. ``status`` is a stored status: SCHEDULED is QUEUED with
    ``due_after`` set; ``due_before``/``due_after`` split QUEUED from SCHEDULED."""

    queue: str | None = None
    status: Status | None = None
    task: str | None = None
    scheduled_by: str | None = None  #: jobs enqueued by this schedule's ticks
    owner: str | None = None  #: jobs of this owner only (the web side's users without view-others)
    id_prefix: str | None = None  #: ids starting with this (the CLI's short ids)
    search: str | None = None  #: text in the args' or kwargs' JSON (case-sensitive), or an id prefix ('': none)
    due_before: float | None = None  #: scheduled_at <= this
    due_after: float | None = None  #: scheduled_at > this
    limit: int = 100
    offset: int = 0


class JobStore(Protocol):
    """Jobs: enqueue, claim, leases, outcomes, reads and control."""

    # producers ----------------------------------------------------------------
    def enqueue(self, jobs: Sequence[NewJob], now: float, connection: Any = None) -> list[Job]:
        """Insert jobs in one transaction, committed durably; for a key already held by an
        unfinished job, return that job instead. Raises DuplicateJob for a taken id (nothing
        inserted).

        ``connection``: the caller's own open database connection (psycopg.Connection for
        PostgreSQL, sqlite3.Connection on the same file for SQLite). The jobs are then written
        inside that connection's current transaction, under a savepoint, and exist only if the
        caller commits it (transactional enqueue); a connection in autocommit mode with no
        transaction open gets a transaction of its own, committed at once."""
        ...

    # workers ------------------------------------------------------------------
    def claim(self, queues: Sequence[str], worker_id: str, limit: int, lease: float, now: float) -> list[Job]:
        """Atomically take up to ``limit`` due jobs (priority, due time, insertion order),
        mark them RUNNING with a fresh token each, a lease until now + lease, attempts + 1."""
        ...

    def start(self, job_id: str, worker_id: str, lease: float, now: float) -> Job | None:
        """Claim one given QUEUED job (due or not) as ``claim`` would; None if it is not queued.
        Eager mode runs the job it has just enqueued this way."""
        ...

    def wait_for_work(self, queues: Sequence[str], timeout: float, now: float) -> None:
        """Block until new work may have arrived, a queued job falls due, or ``timeout`` seconds
        pass (``now`` says what time it is, to tell when the next job falls due). A hint: it may
        wake early, and the caller then simply claims again."""
        ...

    def heartbeat(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> set[str]:
        """Extend the leases of the runs this worker holds; return the tokens it no longer owns
        (cancelled, aborted or rescued), whose work the worker must drop."""
        ...

    def extend_worker_leases(self, worker_ids: Sequence[str], lease: float, now: float) -> int:
        """Extend the lease of every running job held by these workers to now + lease; returns how
        many. A supervisor renews its live children's runs this way, from outside, so a child
        whose task holds the GIL (and so starves its own heartbeat) keeps its jobs."""
        ...

    def progress(self, job_id: str, token: str, percent: float, message: str, now: float) -> bool:
        """Record progress of a running job (and a ``progress`` event); False if the run is no
        longer current."""
        ...

    def emit(self, job_id: str, token: str, kind: str, data: str, now: float) -> bool:
        """Append a running task's own event (``kind`` checked by events.check_custom_kind,
        ``data`` JSON object text); False, and nothing written, if the run is no longer current."""
        ...

    def finish(self, job_id: str, token: str, outcome: Outcome, now: float) -> bool:
        """Write how a run ended; False (and nothing written) if the run is no longer current
        (or, with ``outcome.lease_before``, if its lease did not run out before that time).

        Pipelines (``outcome.record``, decided by conveyor.pipeline), all in the same transaction:
        ADVANCED and a RETRY with ``record.next`` write the next stage's columns (NextStage), the
        stage, results and stage_log; one whose next stage waits on a message takes the oldest
        unconsumed message of that name from the mailbox, if any, and is queued at once with it
        as ``inbox`` (a ``resumed`` event). SUCCEEDED and FAILED write the record's stage, results
        and stage_log. ``outcome.then`` is enqueued (as ``enqueue`` would) and ``outcome.notice``
        stored, only if the outcome was written. An ADVANCED with no next stage (never decided by
        conveyor.pipeline) is written as a hand-back (RELEASED), with its ``stage_done`` event."""
        ...

    def finish_many(self, reports: Sequence[Report], now: float) -> list[bool]:
        """``finish`` for many runs in one transaction (a worker reports in batches);
        one bool per report, in order. Each report is atomic on its own."""
        ...

    def expired(self, now: float, abort_margin: float, limit: int) -> list[Job]:
        """Up to ``limit`` running jobs whose lease ran out before ``now``, or that have run past
        their timeout + ``abort_margin``: the leader decides what each does next (rescue, fail
        as poison, abort) and writes it with ``finish_many``."""
        ...

    # readers and control --------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job's full record, or None."""
        ...

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Jobs matching the filters, newest first."""
        ...

    def counts(self, now: float) -> dict[tuple[str, Status], int]:
        """Number of jobs by (queue, status), where a queued job not due at ``now`` counts as
        SCHEDULED. Only pairs with at least one job appear."""
        ...

    def oldest_due(self, now: float) -> dict[str, float]:
        """For each queue with queued jobs due at ``now``: the due time of its oldest (health's
        "oldest queued job's age", ``conveyor queues``). Switches are not considered."""
        ...

    def cancel(self, job_id: str, now: float) -> Job | None:
        """Cancel a job that has not finished; return it (unchanged if already finished)."""
        ...

    def requeue(self, job_id: str, now: float, reset: bool = False, first: NextStage | None = None) -> Job | None:
        """Queue a failed or cancelled job again, due now; ``reset`` also zeroes its counters,
        result and error. Raises InvalidTransition if another unfinished job holds its key.

        ``first`` (with ``reset``; a pipeline's stage 0, from conveyor.pipeline): a finished job
        of any terminal status, succeeded included, starts over at that stage, its current-stage
        columns written from it (queued, or WAITING for a first stage that waits), results,
        stage_log and inbox cleared, and its mailbox emptied (a fresh start: a message id sent
        before may be sent again)."""
        ...


class Waits(Protocol):
    """Jobs WAITING at a Timer or Message stage: the mailbox, and the release of ended waits.
    A waiting job holds no lease, no token and no worker; it is queued again (at the same
    stage) when its wait ends, and the worker that claims it decides what comes next."""

    def send_message(self, job_id: str, message: NewMessage, now: float) -> Delivery:
        """Store ``message`` in the job's mailbox, in one transaction: DUPLICATE (nothing changed)
        if the job already has a message of that id; NOT_FOUND / FINISHED (nothing stored) for
        no such job / a finished one; else store it and, if the job is WAITING with
        ``waiting_for`` equal to the message's name, consume it and queue the job due now with
        ``inbox`` = {"id", "payload"} (RESUMED, a ``resumed`` event), otherwise STORED. Each
        stored message gets a ``message_received`` event."""
        ...

    def messages(self, job_id: str) -> list[StoredMessage]:
        """The job's mailbox, oldest first: messages waiting, and those consumed (with the stage)."""
        ...

    def release_waits(self, now: float, limit: int) -> int:
        """Queue again, due now, at the same stage, up to ``limit`` WAITING jobs whose
        ``wait_until`` or ``deadline`` is at or before ``now`` (a timer ended, a message's
        time-out or the pipeline's budget ran out), each with a ``resumed`` event; returns how
        many. The worker that claims one decides what it does next (conveyor.pipeline)."""
        ...


class Notifications(Protocol):
    """Notifications for jobs' owners, written by the outcome that finishes a job (``notice``)."""

    def notifications(self, owner: str | None, unread: bool, limit: int) -> list[Notification]:
        """The newest ``limit`` notifications, of ``owner`` (None: everyone's), only unread ones if
        ``unread``."""
        ...

    def mark_read(self, owner: str, ids: Sequence[int] | None) -> int:
        """Mark ``owner``'s notifications read: these ids (others' ids are ignored), or all
        (None). Returns how many changed."""
        ...

    def prune_notifications(self, before: float) -> int:
        """Delete notifications written before ``before``; returns how many."""
        ...


class EventLog(Protocol):
    """The event log: read it, follow it, prune it. Events are written by the steps they describe."""

    def events(self, query: EventQuery) -> list[Event]:
        """Events with ``seq > query.after`` matching the filters, in ``seq`` order, at most
        ``query.limit``. Never skips an event that commits later with a lower number: only events
        whose ``seq`` can no longer be preceded by an uncommitted one are returned (on PostgreSQL
        a sequencer numbers committed events in commit order; SQLite's writers are serial)."""
        ...

    def last_event_seq(self) -> int:
        """The highest ``seq`` ``events`` would return now (0 for an empty log): where a
        subscriber that wants only new events starts."""
        ...

    def wait_for_events(self, after: int, timeout: float) -> None:
        """Block until an event past ``after`` may be readable, or ``timeout`` seconds pass. A
        hint (it may wake early); PostgreSQL is woken by NOTIFY, SQLite polls cheaply."""
        ...

    def prune_events(self, before: float) -> int:
        """Delete events written before ``before`` (the leader's ``event_ttl``); returns how many.
        A finished job's events also go when ``prune`` deletes the job."""
        ...


class Control(Protocol):
    """Switches that stop claims at run time, across hosts: paused queues, disabled tasks, all."""

    def set_switch(self, scope: SwitchScope, name: str, off: bool, now: float) -> bool:
        """Turn a queue (paused), a task (disabled) or everything (``name`` '') off, or back on.
        Persistent. Returns True if that changed anything, and then appends its event
        (queue_paused, task_enabled, ...) in the same transaction."""
        ...

    def switches(self) -> Switches:
        """What is turned off right now."""
        ...


class Registry(Protocol):
    """The worker registry: each worker process registers itself and refreshes its row with its
    heartbeat; ``stop_workers`` asks workers to stop through it."""

    def register_worker(self, info: WorkerInfo, now: float) -> None:
        """Insert (or replace) a worker's row, ``last_seen`` = now, and append worker_started."""
        ...

    def beat_worker(self, worker_id: str, in_flight: int, state: WorkerState, leader: bool, now: float) -> bool | None:
        """Refresh a worker's row; returns whether a stop was requested for it, or None if the
        row is gone (pruned while the worker was paused or cut off): it registers again."""
        ...

    def end_worker(self, worker_id: str, now: float) -> None:
        """Mark a worker STOPPED (a clean exit) and append worker_stopped."""
        ...

    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, newest first."""
        ...

    def request_worker_stop(self, worker_ids: Sequence[str], now: float) -> list[str]:
        """Ask these workers (running or stopping) to stop; returns the ids asked, each with a
        stop_requested event."""
        ...

    def mark_dead_workers(self, seen_before: float, now: float) -> list[str]:
        """Mark DEAD every running or stopping worker not seen since ``seen_before`` (the leader);
        returns their ids, each with a worker_dead event."""
        ...

    def prune_workers(self, before: float) -> int:
        """Delete the rows of workers STOPPED or DEAD and not seen since ``before``."""
        ...


class Locks(Protocol):
    """Named locks with expiry, safe across processes and hosts. The leader is the holder of
    the lock named ``leader``."""

    def acquire_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        """Take the lock, or keep it if ``owner`` holds it, until now + ttl. False while another
        owner holds it unexpired. Never blocks."""
        ...

    def release_lock(self, name: str, owner: str) -> bool:
        """Give the lock up if ``owner`` holds it; False if it did not."""
        ...

    def lock_owner(self, name: str, now: float) -> str | None:
        """Who holds the lock unexpired at ``now``, or None."""
        ...


class Admin(Protocol):
    """Schema, connections and clean-up."""

    url: str

    def setup(self, migrate: bool = True) -> list[str]:
        """Create or migrate the schema by its numbered migrations; safe to call from many
        processes at once. With ``migrate`` False a server store only checks its schema is
        current (StoreError if not). Returns the names of the migrations applied, if any."""
        ...

    def schema_versions(self) -> tuple[int | None, int]:
        """The schema version the store has (None: none yet) and the one this conveyor needs."""
        ...

    def close(self) -> None:
        """Release connections (the store reopens on next use)."""
        ...

    def prune(self, now: float, finished_before: float | None = None) -> int:
        """Delete finished jobs past their expiry (or, if given, all finished before that time),
        and their events and messages, in one transaction; returns how many jobs."""
        ...

    def destroy_all(self) -> None:
        """Delete every job, event, lock, switch, worker, message, notification, schedule, service, user,
        token and audit row (a test hook)."""
        ...


class Schedules(Protocol):
    """Schedules and their ticks. A tick is fired once however many schedulers run: ``fire``
    moves the schedule's ``next_at`` by compare-and-set and records each tick under a unique
    (schedule, tick_at), with its job, in one transaction. What to fire is decided in Python
    (conveyor.scheduling); the store only writes it."""

    def put_schedule(self, schedule: ScheduleRecord, now: float) -> bool:
        """Insert the schedule, or replace the one of that name (its spec, target, policies, ``source``,
        and ``next_at`` as given, unless the spec (cron, tz, every, anchor) is unchanged: then the
        stored ``next_at`` stays, so concurrent syncs never move a tick), keeping its tick history,
        ``last_tick_at``, ``last_job_id`` and ``created_at``; ``paused`` and ``paused_at`` are kept
        too unless the schedule is new. Returns True if it was new. A ``schedule_put`` event."""
        ...

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule of that name, or None."""
        ...

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    def remove_schedule(self, name: str, now: float) -> bool:
        """Delete the schedule and its tick history; False if there was none. A ``schedule_removed`` event."""
        ...

    def retire_schedules(self, keep: Sequence[str], now: float) -> list[str]:
        """Delete every schedule of source CODE whose name is not in ``keep`` (a worker's sync:
        declared in code no more); returns their names."""
        ...

    def pause_schedule(self, name: str, paused: bool, next_at: float | None, now: float) -> bool:
        """Pause (``paused_at`` = now) or resume it; resuming sets ``next_at`` (the first tick after
        now, decided by the caller: no burst) and clears ``paused_at``. False if there is no such
        schedule or it already was so. A ``schedule_paused`` / ``schedule_resumed`` event."""
        ...

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules not paused whose ``next_at`` <= now, the most overdue first."""
        ...

    def fire(self, name: str, expected_next_at: float, next_at: float, ticks: Sequence[Tick], now: float) -> bool:
        """In one transaction: set the schedule's ``next_at`` to ``next_at`` only if it is still
        ``expected_next_at`` and the schedule is not paused (compare-and-set; else write nothing and
        return False: a pass that read the schedule before a pause fires nothing after it); record each
        tick (unique per schedule and tick_at: a tick already recorded is skipped, its job not
        enqueued); enqueue each tick's job (as ``enqueue``, with its ``enqueued`` event) and set
        ``last_tick_at`` / ``last_job_id`` from the last enqueued; a ``schedule_tick`` event per
        tick (data: schedule, tick_at, outcome, job_id)."""
        ...

    def ticks(self, name: str, limit: int) -> list[TickRecord]:
        """The schedule's latest ``limit`` tick records, newest first."""
        ...


class Services(Protocol):
    """Long-running services: one row per replica of an instance, held by a worker with a lease its
    keeper renews and a fencing token per run, like a job's. What a run's end means (restart after a
    back-off, FAILED, STOPPED) is decided in Python (conveyor.service_policy); the store writes it.
    Every change appends its event (service_created, service_resized, service_requested,
    service_assigned, service_started, and the end's) in the same transaction; a service event's
    ``task`` is the service, its ``queue`` the instance's queue, its data the instance
    (``service``) and ``replica``."""

    def create_service(self, spec: ServiceSpec, now: float) -> bool:
        """Insert the instance's ``spec.replicas`` rows (PENDING, or STOPPED if not ``wanted``;
        generation 0) with a ``service_created`` event; False, and nothing written, if an instance
        of that name exists."""
        ...

    def resize_service(self, name: str, replicas: int, queue: str, now: float) -> bool:
        """Set an instance's queue and number of replicas: new rows copy replica 0's service, params,
        wanted, generation and source (PENDING or STOPPED); rows past ``replicas`` are deleted (a
        holder finds its token gone at its next renewal and stops), with a ``service_resized`` event
        (replicas, queue). False if there is no such instance or nothing changed (then nothing is
        written)."""
        ...

    def control_service(
        self, name: str, action: ServiceAction, params: dict[str, Any] | None, now: float
    ) -> list[ServiceRecord]:
        """Ask an instance to start, stop, restart or reload (with ``params``, replacing the stored
        ones: RELOAD only), every replica in one transaction, with one ``service_requested`` event
        (data: action). START: wanted; STOPPED and FAILED rows PENDING, due now, crashes and error
        cleared; a row STOPPING after a stop is restarted (generation + 1: its run stops, a new one
        starts). STOP: not wanted; PENDING rows STOPPED, held rows STOPPING. RESTART and RELOAD:
        wanted, generation + 1; held rows STOPPING, STOPPED and FAILED rows PENDING (crashes and error
        cleared). Returns the rows after (empty: no such instance, nothing written)."""
        ...

    def remove_service(self, name: str, now: float) -> bool:
        """Delete every row of the instance (holders find their tokens gone and stop), with a
        ``service_removed`` event; False if there was none."""
        ...

    def list_services(self, name: str | None = None) -> list[ServiceRecord]:
        """Every row (or the instance ``name``'s), by name and replica."""
        ...

    def claim_services(self, worker_id: str, services: Sequence[str], spread: Sequence[str], limit: int,
                       lease: float, spread_before: float, now: float) -> list[ServiceRecord]:  # fmt: skip
        """Take up to ``limit`` rows of these services, local to no worker or to this one, that are
        wanted and either PENDING with ``not_before`` <= now, or held with ``lease_until`` < now (their
        worker is gone: taken over). Rows of the instances in ``spread`` (which this worker already
        runs a replica of) are taken only if free since ``spread_before`` or earlier, so replicas
        spread over workers while others are there to take them. Each row taken is STARTING with a
        fresh token, ``worker_id``, ``lease_until`` = now + lease and ``run_generation`` =
        generation, with a ``service_assigned`` event (data: worker_id, and ``from``: the worker
        whose lease ran out). Also, in the same transaction: rows not wanted whose lease ran out
        become STOPPED (with ``service_stopped``, data: why = "lease expired")."""
        ...

    def renew_services(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> list[ServiceRecord]:
        """Extend to now + lease the lease of every row this worker holds with one of these tokens;
        return those rows (a token missing from the answer is lost: taken over or removed). The
        caller decides from ``wanted`` and ``generation`` whether each run goes on."""
        ...

    def service_running(self, name: str, replica: int, token: str, now: float) -> bool:
        """The run's function has started: STARTING -> RUNNING, ``started_at`` = now, with a
        ``service_started`` event (data: worker_id, generation). False (nothing written) if the
        token is not current or the row is not STARTING."""
        ...

    def end_service_run(self, name: str, replica: int, token: str, end: ServiceEnd, now: float) -> bool:
        """Write how a run ended, fenced by its token: the row is no longer held (token and lease
        cleared, ``worker_id`` kept as who ran it last, ``free_since`` = now), its status ``end.status``
        (but STOPPED instead of PENDING if it is no longer wanted, and PENDING instead of STOPPED if it
        is wanted and a newer generation than the run's: a start after the stop its worker saw),
        ``not_before``, ``restarts`` + 1 if ``end.restarted``, crashes and ``last_error`` if given;
        ``end.event`` appended with ``end.data``. False, and nothing written, if the token is not current."""
        ...

    def forget_local_services(self, worker_ids: Sequence[str], now: float) -> int:
        """Delete the LOCAL instances of these workers (dead, or stopped without removing them);
        returns how many rows."""
        ...


class Accounts(Protocol):
    """Users, their API tokens (the SHA-256 of the secret only) and the audit log of changes made
    through the API (conveyor.accounts)."""

    def put_user(self, user: User, now: float) -> bool:
        """Insert the user, or set the permissions of the one of that name; True if new."""
        ...

    def get_user(self, name: str) -> User | None:
        """The user of that name, or None."""
        ...

    def list_users(self) -> list[User]:
        """Every user, by name."""
        ...

    def remove_user(self, name: str, now: float) -> bool:
        """Delete the user and every token of theirs; False if there was none."""
        ...

    def add_token(self, token: TokenRecord) -> None:
        """Store a new token. Raises StoreError if its user does not exist or its id is taken."""
        ...

    def get_token(self, token_id: str, now: float, digest: str | None = None) -> TokenRecord | None:
        """The token of that id (revoked ones too), or None. With ``digest`` (the SHA-256 of the secret
        presented) equal to the stored one, and the token not revoked, its use is recorded:
        ``last_used_at`` = now when it was last recorded more than a minute ago (one write a minute per
        token at most). A wrong secret records nothing; the caller still decides, in constant time."""
        ...

    def list_tokens(self, user: str | None) -> list[TokenRecord]:
        """Every token (or ``user``'s), newest first, digests included (the caller shows none)."""
        ...

    def revoke_token(self, token_id: str, now: float) -> bool:
        """Set ``revoked_at``; False if there is no such token or it was revoked already."""
        ...

    def audit(self, user: str, action: str, target: str | None, data: dict[str, Any], now: float) -> int:
        """Append an audit entry; returns its ``seq``."""
        ...

    def audit_log(self, after: int, limit: int, user: str | None = None) -> list[AuditEntry]:
        """Entries with ``seq > after`` (of ``user`` only, if given), oldest first, at most ``limit``."""
        ...


class Backend(
    JobStore, Waits, Notifications, Schedules, Services, EventLog, Control, Registry, Locks, Accounts, Admin, Protocol
):
    """A whole store: every concern. Implementations: sqlite.SQLiteBackend,
    postgres.PostgresBackend."""
