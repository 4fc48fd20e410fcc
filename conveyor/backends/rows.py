"""Statement parameters the SQL stores share beyond the column registry (columns.py): how a
reported outcome becomes the named parameters of a ``finish_*`` statement, a JobQuery those of
``list_jobs``, each transition its event row (kind and payload from ``conveyor.events``), and the
rows of the event log, the worker registry, the schedules and the accounts (users, tokens, the audit
log) their values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .. import codec
from ..accounts import AuditEntry, Permission, TokenRecord, User
from ..events import Event, EventKind, EventQuery, encode_data
from ..job import NewJob, Status
from ..operations import Switches, SwitchScope, WorkerInfo, WorkerState
from ..outcome import OutcomeKind, Report
from ..schedule_types import Missed, Overlap, ScheduleRecord, Source, Tick, TickOutcome, TickRecord

if TYPE_CHECKING:
    from .base import JobQuery

#: The ``finish_*`` statement (in every dialect's queries.sql) that writes each kind of outcome.
FINISH_STATEMENTS: dict[OutcomeKind, str] = {kind: f"finish_{kind.value}" for kind in OutcomeKind}


def finish_params(report: Report, now: float) -> dict[str, Any]:
    """The named parameters of a ``finish_*`` statement for one report: the run (id, token), the
    outcome's values (JSON encoded) and ``lease_before``, the leader's guard (None: no guard)."""
    outcome = report.outcome
    return {
        "id": report.job_id,
        "token": report.token,
        "now": now,
        "retry_at": outcome.retry_at,
        "exit_code": outcome.exit_code,
        "result": outcome.result_text(),  # encoded once, by execution.succeeded
        "error": codec.dumps(outcome.error) if outcome.error else None,
        "lease_before": outcome.lease_before,
    }


def list_params(query: JobQuery) -> dict[str, Any]:
    """The named parameters of a ``list_jobs`` statement: a None filter matches everything."""
    return {
        "queue": query.queue,
        "status": None if query.status is None else Status(query.status).value,
        "task": query.task,
        "scheduled_by": query.scheduled_by,
        "owner": query.owner,
        "id_prefix": query.id_prefix,
        "search": query.search or None,
        "due_before": query.due_before,
        "due_after": query.due_after,
        "limit": query.limit,
        "offset": query.offset,
    }


# events ------------------------------------------------------------------------------------------------
#: An event row's values in the order of ``EVENT_COLUMNS`` (every dialect's ``insert_event``).
EventRow = tuple[float, str, str | None, str | None, str | None, int, str | None, str]
EVENT_COLUMNS = ("at", "kind", "job_id", "task", "queue", "attempt", "worker_id", "data")

_EMPTY = "{}"

#: The event each switch change writes: (scope, turned off) -> kind.
SWITCH_EVENTS: dict[tuple[SwitchScope, bool], EventKind] = {
    (SwitchScope.QUEUE, True): EventKind.QUEUE_PAUSED,
    (SwitchScope.QUEUE, False): EventKind.QUEUE_RESUMED,
    (SwitchScope.TASK, True): EventKind.TASK_DISABLED,
    (SwitchScope.TASK, False): EventKind.TASK_ENABLED,
    (SwitchScope.ALL, True): EventKind.ALL_DISABLED,
    (SwitchScope.ALL, False): EventKind.ALL_ENABLED,
}


def switch_row(scope: SwitchScope, name: str, off: bool, now: float) -> EventRow:
    """The event of a switch turned off or on: its queue or task in that column."""
    scope = SwitchScope(scope)
    kind = SWITCH_EVENTS[scope, off]
    task = name if scope is SwitchScope.TASK else None
    queue = name if scope is SwitchScope.QUEUE else None
    return (now, kind.value, None, task, queue, 0, None, _EMPTY)


def worker_row(kind: EventKind, worker_id: str, now: float, data: str = _EMPTY) -> EventRow:
    """A registry event (worker_stopped, worker_dead, stop_requested) about one worker."""
    return (now, kind.value, None, None, None, 0, worker_id, data)


def worker_started_row(info: WorkerInfo, now: float) -> EventRow:
    """``worker_started``: where it runs and what it serves."""
    data = encode_data({"host": info.host, "pid": info.pid, "queues": list(info.queues)})
    return worker_row(EventKind.WORKER_STARTED, info.id, now, data)


def event_params(query: EventQuery) -> dict[str, Any]:
    """The named parameters of ``events`` / ``job_events``: a None filter matches everything;
    ``kinds`` a list (a dialect may encode it), None for any."""
    return {
        "after": query.after,
        "job_id": query.job_id,
        "task": query.task,
        "queue": query.queue,
        "kinds": None if query.kinds is None else [str(kind) for kind in query.kinds],
        "limit": query.limit,
    }


def row_to_event(row: Sequence[Any]) -> Event:
    """An event from a row of (seq, at, kind, job_id, task, queue, attempt, worker_id, data), its
    data as JSON text (or already decoded)."""
    data = row[8]
    return Event(
        seq=row[0], at=float(row[1]), kind=row[2], job_id=row[3], task=row[4], queue=row[5], attempt=row[6],
        worker_id=row[7], data=codec.loads(data) if isinstance(data, str | bytes) else dict(data),
    )  # fmt: skip


def switches_from(rows: Iterable[Sequence[Any]]) -> Switches:
    """What is turned off, from (scope, name) rows of the switches table."""
    queues: set[str] = set()
    tasks: set[str] = set()
    everything = False
    for scope, name in rows:
        if scope == SwitchScope.QUEUE:
            queues.add(name)
        elif scope == SwitchScope.TASK:
            tasks.add(name)
        elif scope == SwitchScope.ALL:
            everything = True
    return Switches(paused_queues=frozenset(queues), disabled_tasks=frozenset(tasks), everything=everything)


# worker registry -------------------------------------------------------------------------------------------
def worker_params(info: WorkerInfo, now: float) -> dict[str, Any]:
    """The named parameters of ``register_worker``: the info as given, last seen ``now``."""
    return {
        "id": info.id, "host": info.host, "pid": info.pid, "queues": codec.dumps(list(info.queues)),
        "concurrency": info.concurrency, "version": info.version, "started_at": info.started_at, "now": now,
        "in_flight": info.in_flight, "state": WorkerState(info.state).value,
        "stop_requested": bool(info.stop_requested), "leader": bool(info.leader),
    }  # fmt: skip


def row_to_worker(row: Sequence[Any]) -> WorkerInfo:
    """A registered worker from a ``list_workers`` row (queues as JSON text or already decoded)."""
    queues = row[3]
    return WorkerInfo(
        id=row[0], host=row[1], pid=row[2], queues=list(codec.loads(queues) if isinstance(queues, str) else queues),
        concurrency=row[4], version=row[5], started_at=float(row[6]), last_seen=float(row[7]), in_flight=row[8],
        state=WorkerState(row[9]), stop_requested=bool(row[10]), leader=bool(row[11]),
    )  # fmt: skip


# schedules ---------------------------------------------------------------------------------------------------
#: Tick records kept per schedule: ``fire`` deletes the older ones (trim_ticks) in its transaction, so the
#: audit trail of a one-second schedule stays bounded; a daily one keeps years of it.
TICK_HISTORY = 1000

#: The columns of a schedule as every dialect's ``schedule_columns`` lists them, in ``row_to_schedule``'s order.
SCHEDULE_COLUMNS = (
    "name", "cron", "tz", "every", "anchor", "target", "missed", "catch_up", "grace", "overlap", "jitter", "paused",
    "source", "next_at", "last_tick_at", "last_job_id", "paused_at", "created_at", "updated_at", "owner",
)  # fmt: skip


def _real(value: Any) -> float | None:
    """A REAL column's value as a float (SQLite may hand back 99 for 99.0), None kept."""
    return None if value is None else float(value)


def schedule_params(schedule: ScheduleRecord, now: float) -> dict[str, Any]:
    """The named parameters of ``put_schedule``: the record's spec, target (JSON text), policies and
    ``next_at``, its ``owner`` (a put replaces it, like the spec); a new schedule that is paused was paused at
    ``paused_at``, or now."""
    paused = bool(schedule.paused)
    return {
        "name": schedule.name, "cron": schedule.cron, "tz": schedule.tz, "every": _real(schedule.every),
        "anchor": float(schedule.anchor), "target": codec.dumps(schedule.target),
        "missed": Missed(schedule.missed).value, "catch_up": float(schedule.catch_up), "grace": float(schedule.grace),
        "overlap": Overlap(schedule.overlap).value, "jitter": float(schedule.jitter), "paused": paused,
        "source": Source(schedule.source).value, "owner": schedule.owner, "next_at": float(schedule.next_at),
        "paused_at": (now if schedule.paused_at is None else float(schedule.paused_at)) if paused else None,
        "now": now,
    }  # fmt: skip


def row_to_schedule(row: Sequence[Any]) -> ScheduleRecord:
    """A schedule from a row of ``SCHEDULE_COLUMNS`` (target as JSON text or already decoded)."""
    (name, cron, tz, every, anchor, target, missed, catch_up, grace, overlap, jitter, paused, source, next_at,
     last_tick_at, last_job_id, paused_at, created_at, updated_at, owner) = row  # fmt: skip
    return ScheduleRecord(
        name=name, cron=cron, tz=tz, every=_real(every), anchor=float(anchor),
        target=codec.loads(target) if isinstance(target, str | bytes) else dict(target), missed=Missed(missed),
        catch_up=float(catch_up), grace=float(grace), overlap=Overlap(overlap), jitter=float(jitter),
        paused=bool(paused), source=Source(source), next_at=float(next_at), last_tick_at=_real(last_tick_at),
        last_job_id=last_job_id, paused_at=_real(paused_at), created_at=float(created_at),
        updated_at=float(updated_at), owner=owner,
    )  # fmt: skip


def row_to_tick(row: Sequence[Any]) -> TickRecord:
    """A tick record from a row of (schedule, tick_at, outcome, job_id, at, data as JSON text or decoded)."""
    schedule, tick_at, outcome, job_id, at, data = row
    return TickRecord(
        schedule=schedule, tick_at=float(tick_at), outcome=TickOutcome(outcome), job_id=job_id, at=float(at),
        data=codec.loads(data) if isinstance(data, str | bytes) else dict(data),
    )  # fmt: skip


def unique_ticks(ticks: Iterable[Tick]) -> list[Tick]:
    """The ticks to record, the first of each ``tick_at`` (a second one could never be recorded)."""
    seen: dict[float, Tick] = {}
    for tick in ticks:
        seen.setdefault(float(tick.tick_at), tick)
    return list(seen.values())


def tick_job(name: str, tick: Tick) -> NewJob | None:
    """The job an ENQUEUED tick enqueues (None for another outcome), linked to its schedule and tick
    (``scheduled_by``, ``tick_at``) where the planner left them unset."""
    job = tick.job
    if job is None or TickOutcome(tick.outcome) is not TickOutcome.ENQUEUED:
        return None
    if job.scheduled_by is None or job.tick_at is None:
        job = msgspec.structs.replace(
            job,
            scheduled_by=name if job.scheduled_by is None else job.scheduled_by,
            tick_at=float(tick.tick_at) if job.tick_at is None else job.tick_at,
        )
    return job


def schedule_row(kind: EventKind, name: str, now: float, data: dict[str, Any] | None = None) -> EventRow:
    """An event about a schedule (no job): its data names it (first, whatever ``data`` says), then says
    what ``data`` says."""
    payload: dict[str, Any] = {"schedule": name}
    payload.update(data or {})
    payload["schedule"] = name
    return (now, EventKind(kind).value, None, None, None, 0, None, encode_data(payload))


def tick_row(name: str, tick: Tick, job_id: str | None, now: float) -> EventRow:
    """The ``schedule_tick`` event of a tick recorded: its schedule, tick, outcome and job (None when
    it enqueued none), after what the tick's own data says (``count``, ``until``)."""
    data = {**tick.data, "tick_at": float(tick.tick_at), "outcome": TickOutcome(tick.outcome).value, "job_id": job_id}
    return schedule_row(EventKind.SCHEDULE_TICK, name, now, data)


# accounts ----------------------------------------------------------------------------------------------------
#: ``get_token`` records a token's use (``last_used_at``) at most once per this many seconds: checking a
#: token on every request must not write on every request.
TOKEN_TOUCH_EVERY = 60.0

#: The columns of a token as every dialect's ``token_columns`` lists them, in ``row_to_token``'s order.
TOKEN_COLUMNS = ("id", "user_name", "label", "digest", "created_at", "last_used_at", "revoked_at")


def _json_value(value: Any) -> Any:
    """A JSON column's value decoded (SQLite hands back text; psycopg text when cast, else the value)."""
    return codec.loads(value) if isinstance(value, str | bytes) else value


def row_to_user(row: Sequence[Any]) -> User:
    """A user from a row of (name, permissions as a JSON array, created_at)."""
    name, permissions, created_at = row
    held = tuple(sorted({Permission(p) for p in _json_value(permissions) or []}))
    return User(name=name, permissions=held, created_at=float(created_at))


def row_to_token(row: Sequence[Any]) -> TokenRecord:
    """A token from a row of ``TOKEN_COLUMNS``."""
    token_id, user, label, digest, created_at, last_used_at, revoked_at = row
    return TokenRecord(
        id=token_id, user=user, label=label, digest=digest, created_at=float(created_at),
        last_used_at=_real(last_used_at), revoked_at=_real(revoked_at),
    )  # fmt: skip


def row_to_audit(row: Sequence[Any]) -> AuditEntry:
    """An audit entry from a row of (seq, at, user_name, action, target, data as JSON text or decoded)."""
    seq, at, user, action, target, data = row
    return AuditEntry(seq=int(seq), at=float(at), user=user, action=action, target=target,
                      data=dict(_json_value(data) or {}))  # fmt: skip


def permissions_text(user: User) -> str:
    """A user's permissions as the JSON array text ``put_user`` stores: their values, sorted, no repeats."""
    return codec.dumps(sorted({Permission(p).value for p in user.permissions}))
