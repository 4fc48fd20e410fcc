"""The event log's vocabulary: what kinds of event there are, what one holds, and which event
each job transition writes (DESIGN.md, principle 5: everything is an event).

A store appends events in the same transaction as the change they describe, so the log and the
jobs never disagree. Which kind a transition writes, and its payload, is decided here, in Python,
once for every store; a store only writes the row (docs/events.md).
"""

from __future__ import annotations

import enum
import re
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from . import codec
from .job import ExitCode
from .outcome import Outcome, OutcomeKind


class EventKind(enum.StrEnum):
    """Every kind of event conveyor writes itself. A task's own events (``current_job().emit``)
    use any other name that ``check_custom_kind`` accepts."""

    # a job's transitions (docs/states.md names the one each transition writes)
    ENQUEUED = "enqueued"  #: inserted (data: scheduled_at when delayed)
    STARTED = "started"  #: claimed by a worker, a run begins (data: worker_id)
    PROGRESS = "progress"  #: a running task reported progress (data: percent, message)
    RETRY_SCHEDULED = "retry_scheduled"  #: the run failed, queued again (data: retry_at, error, exit_code)
    SUCCEEDED = "succeeded"  #: finished with a result
    FAILED = "failed"  #: finished with an error, no retry left (data: error, exit_code)
    TIMED_OUT = "timed_out"  #: finished: ran past its time-out, no retry left (data: error, exit_code)
    CANCELLED = "cancelled"  #: cancelled by a user
    HANDED_BACK = "handed_back"  #: a stopping worker (or one that cannot run it) gave it back (data: retry_at, error)
    RESCUED = "rescued"  #: its worker died; queued again by the leader
    DISCARDED = "discarded"  #: deleted at the end of its run
    REQUEUED = "requeued"  #: a finished job queued again by a user (data: reset)
    # pipelines (docs/pipelines.md)
    STAGE_DONE = "stage_done"  #: a stage ended, the job moved on (data: stage, next, skipped, waiting)
    RESUMED = "resumed"  #: a WAITING job was queued again (data: stage, by: message, timer or deadline)
    MESSAGE_RECEIVED = "message_received"  #: a message was stored for the job (data: name, message_id)
    # schedules (docs/schedules.md; no job, but the tick's job in data)
    SCHEDULE_TICK = "schedule_tick"  #: a tick was fired (data: schedule, tick_at, outcome, job_id)
    SCHEDULE_PUT = "schedule_put"  #: a schedule was created or changed (data: schedule, new)
    SCHEDULE_REMOVED = "schedule_removed"  #: data: schedule
    SCHEDULE_PAUSED = "schedule_paused"  #: data: schedule
    SCHEDULE_RESUMED = "schedule_resumed"  #: data: schedule
    # services (docs/services.md; no job: task = the service, queue = its queue, data: service = the
    # instance, replica)
    SERVICE_CREATED = "service_created"  #: an instance was made (data: replicas, source)
    SERVICE_REMOVED = "service_removed"
    SERVICE_RESIZED = "service_resized"  #: its replica count or queue changed (a worker's sync of the code;
    #: data: replicas, queue)
    SERVICE_REQUESTED = "service_requested"  #: a user asked it to start, stop, restart or reload (data: action)
    SERVICE_ASSIGNED = "service_assigned"  #: a worker took a replica (data: worker_id; from: whose lease ran out)
    SERVICE_STARTED = "service_started"  #: its function started (data: worker_id, generation)
    SERVICE_STOPPED = "service_stopped"  #: it stopped on request (data: why)
    SERVICE_HANDED_BACK = "service_handed_back"  #: its worker let it go for another run (data: why: reload,
    #: worker stopping, store unreachable, ...)
    SERVICE_CRASHED = "service_crashed"  #: its function raised or returned unasked; restarted after a back-off
    #: (data: error, restart_at, crashes)
    SERVICE_FAILED = "service_failed"  #: it crashed too often: FAILED until started again (data: error, crashes)
    # operations (no job)
    QUEUE_PAUSED = "queue_paused"
    QUEUE_RESUMED = "queue_resumed"
    TASK_DISABLED = "task_disabled"
    TASK_ENABLED = "task_enabled"
    ALL_DISABLED = "all_disabled"
    ALL_ENABLED = "all_enabled"
    WORKER_STARTED = "worker_started"  #: data: host, pid, queues
    WORKER_STOPPED = "worker_stopped"
    WORKER_DEAD = "worker_dead"  #: the leader found its heartbeat too old
    STOP_REQUESTED = "stop_requested"  #: ``stop_workers`` asked this worker to stop


#: The kind each outcome writes (FAILED with exit code 130 writes TIMED_OUT instead).
OUTCOME_EVENTS: dict[OutcomeKind, EventKind] = {
    OutcomeKind.SUCCEEDED: EventKind.SUCCEEDED,
    OutcomeKind.FAILED: EventKind.FAILED,
    OutcomeKind.RETRY: EventKind.RETRY_SCHEDULED,
    OutcomeKind.RELEASED: EventKind.HANDED_BACK,
    OutcomeKind.RESCUED: EventKind.RESCUED,
    OutcomeKind.DISCARDED: EventKind.DISCARDED,
    OutcomeKind.ADVANCED: EventKind.STAGE_DONE,
}

_CUSTOM_KIND = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_EMPTY = "{}"


class Event(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """One entry of the log. ``seq`` increases by store and is never reused; job events carry the
    job's id, task, queue and the run's ``attempt`` (0 before its first run); operations' events
    carry what they are about in ``queue``/``task``/``worker_id`` and ``data``."""

    seq: int
    at: float  #: Unix seconds
    kind: str  #: an EventKind value, or a task's own kind
    job_id: str | None = None
    task: str | None = None
    queue: str | None = None
    attempt: int = 0
    worker_id: str | None = None
    data: dict[str, Any] = {}


class EventQuery(msgspec.Struct, kw_only=True, frozen=True):
    """Filters for reading the log: events with ``seq > after``, oldest first, at most ``limit``."""

    after: int = 0
    job_id: str | None = None
    task: str | None = None
    queue: str | None = None
    kinds: tuple[str, ...] | None = None
    limit: int = 1000


def check_custom_kind(kind: str) -> str:
    """A task's own event kind: lowercase, 1-64 characters of ``a-z0-9_.:-``, starting with a
    letter, and not one of conveyor's kinds. Raises ValueError naming the rule it breaks."""
    if not isinstance(kind, str) or not _CUSTOM_KIND.fullmatch(kind):
        raise ValueError(
            "event kind must be 1-64 characters of a-z, 0-9, '_', '.', ':' or '-', starting with a letter;"
            f" got {kind!r}"
        )
    if kind in EventKind.__members__.values():
        raise ValueError(f"event kind {kind!r} is conveyor's own; give your event another name")
    return kind


def encode_data(data: dict[str, Any] | None) -> str:
    """An event's payload as the JSON text a store writes ('{}' for none). Raises TypeError for a
    payload that is not a JSON object of JSON values."""
    if not data:
        return _EMPTY
    if not isinstance(data, dict):
        raise TypeError(f"event data must be a dict (a JSON object), got {type(data).__name__}")
    return codec.dumps(data)


def _error(outcome: Outcome) -> dict[str, Any]:
    error = outcome.error
    return {} if error is None else {"error": {"type": error.type, "message": error.message}}


def outcome_event(outcome: Outcome) -> tuple[EventKind, str]:
    """The kind and JSON payload of the event a finished run writes with its outcome."""
    kind = OUTCOME_EVENTS[outcome.kind]
    if outcome.kind is OutcomeKind.FAILED and outcome.exit_code == ExitCode.ABORTED:
        kind = EventKind.TIMED_OUT
    data: dict[str, Any] = _error(outcome)
    if outcome.exit_code is not None and outcome.kind in (OutcomeKind.FAILED, OutcomeKind.RETRY):
        data["exit_code"] = int(outcome.exit_code)
    if outcome.retry_at is not None:
        data["retry_at"] = outcome.retry_at
    record = outcome.record
    if record is not None:
        if record.done is not None:
            data["stage"] = record.done
        if record.next is not None:
            data["next"] = record.next.stage
            if record.next.waiting:
                data["waiting"] = "timer" if record.next.waiting_for is None else "message"
        if record.skipped:
            data["skipped"] = list(record.skipped)
    return kind, encode_data(data)


def enqueued_data(scheduled_at: float, now: float) -> str:
    """The payload of an ``enqueued`` event: when it is due, if later than now."""
    return encode_data({"scheduled_at": scheduled_at}) if scheduled_at > now else _EMPTY


def progress_data(percent: float, message: str) -> str:
    """The payload of a ``progress`` event."""
    return encode_data({"percent": percent, "message": message})


def matches(event: Event, pattern: str) -> bool:
    """Whether an event is one a subscriber to ``pattern`` wants: '*' (everything), or a glob
    ('emails.*') matched against the event's task and its queue."""
    if pattern in ("*", ""):
        return True
    return any(name is not None and fnmatchcase(name, pattern) for name in (event.task, event.queue))
