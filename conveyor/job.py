"""The job data model: what a job is, the states it moves through, and how it ends.

A job is an ordered list of stages with a current stage and one result per
finished stage (DESIGN.md, principle 8). A plain task job is the one-stage
case: its single stage is the call ``task(*args, **kwargs)`` and its result is
that stage's result. ``stages`` is left ``None`` for that case. A pipeline job
(``conveyor.stages``) holds its frozen stage list in ``stages`` and its settings
in ``pipeline``; its row's task, arguments, queue and time-out are those of the
stage it is at (DESIGN.md, rule 2).
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import Any

import msgspec


class Status(enum.StrEnum):
    """Where a job is in its life. See docs/states.md for the diagram."""

    QUEUED = "queued"  #: due now, waiting for a worker
    SCHEDULED = "scheduled"  #: queued, but not due yet (a delay, an eta or a retry back-off)
    RUNNING = "running"  #: claimed by a worker that holds its lease
    WAITING = "waiting"  #: paused between stages on a timer or a message
    SUCCEEDED = "succeeded"  #: finished; the result is stored
    FAILED = "failed"  #: finished with an error, retries used up
    CANCELLED = "cancelled"  #: cancelled; it will never run again

    @property
    def finished(self) -> bool:
        """True for the terminal states, from which only a manual retry leads back."""
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


class Priority(enum.IntEnum):
    """Priority inside a queue: higher runs first."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


class ExitCode(enum.IntEnum):
    """Unix-style exit codes of a finished run (kaiju_tasks)."""

    SUCCESS = 0
    EXECUTION_ERROR = 1
    ABORTED = 130  #: time-out or cancellation
    WORKER_DIED = 137  #: its worker died while running it, too many times (a poison job)


class JobError(msgspec.Struct, frozen=True):
    """A failure as stored: the exception's type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class Job(msgspec.Struct, kw_only=True, gc=False):  # no cycles: the collector need not track it
    """The full record of one job, as the store holds it.

    Times are Unix seconds (UTC) so that every backend stores them alike; the
    ``*_time`` properties give them as aware datetimes.
    """

    id: str
    task: str
    queue: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    status: Status
    created_at: float
    scheduled_at: float  #: when it is (or was) due
    started_at: float | None = None  #: start of the latest run
    finished_at: float | None = None
    attempts: int = 0  #: runs started, including ones handed back by a dead or stopping worker
    retries: int = 0  #: retries used up by failures and time-outs
    max_retries: int = 0
    rescues: int = 0  #: runs lost because their worker died (lease ran out); see App(max_rescues=)
    timeout: float | None = None  #: seconds a single run may take
    result: Any = None
    error: JobError | None = None
    exit_code: int | None = None
    progress: float = 0.0  #: percent, 0 to 100
    progress_message: str = ""
    worker_id: str | None = None  #: the worker running it, or that ran it last
    token: str | None = None  #: the current run's fencing token, while it runs
    lease_expires_at: float | None = None
    key: str | None = None  #: uniqueness key while the job is not finished
    result_ttl: float | None = None  #: seconds a finished job is kept; None keeps it
    expires_at: float | None = None  #: when a finished job is pruned
    stage: int = 0  #: index of the current stage
    stages: list[dict[str, Any]] | None = None  #: explicit stages; None for a plain one-stage job
    results: list[Any] = msgspec.field(default_factory=list)  #: one result per finished stage
    owner: str | None = None  #: the user the job belongs to (notifications; the HTTP API's permissions)
    notify: bool = False  #: finishing or failing creates a notification for ``owner``
    pipeline: dict[str, Any] | None = None  #: a pipeline's settings (kws, restart, timeout, then); None for a plain job
    deadline: float | None = None  #: a pipeline's whole time budget ends here (restarts on each requeue)
    wait_until: float | None = None  #: a WAITING job's timer (or message time-out) ends here
    waiting_for: str | None = None  #: a job WAITING on a message: its name ('' for any unnamed message)
    inbox: dict[str, Any] | None = None  #: the message delivered to the current Message stage: {"id", "payload"}
    stage_log: list[dict[str, Any]] = msgspec.field(default_factory=list)  #: per stage: status, times, attempts
    scheduled_by: str | None = None  #: the schedule whose tick enqueued it
    tick_at: float | None = None  #: ... and that tick's time (Unix seconds)
    #: the W3C trace context (traceparent, tracestate) of the span that enqueued it (conveyor.tracing);
    #: None when no span was active, or without OpenTelemetry
    trace: dict[str, str] | None = None

    @property
    def is_pipeline(self) -> bool:
        """True for a job of explicit stages (``app.pipeline``); False for a plain task job."""
        return self.stages is not None

    @property
    def elapsed(self) -> float | None:
        """Seconds the latest run took (or has taken so far, while running); None if not run."""
        if self.started_at is None:
            return None
        if self.finished_at is not None:
            return max(0.0, self.finished_at - self.started_at)
        if self.status is Status.RUNNING:
            return max(0.0, time.time() - self.started_at)
        return None

    @property
    def created_time(self) -> datetime:
        """When the job was enqueued."""
        return _utc(self.created_at)  # type: ignore[return-value]

    @property
    def scheduled_time(self) -> datetime:
        """When the job is (or was) due."""
        return _utc(self.scheduled_at)  # type: ignore[return-value]

    @property
    def started_time(self) -> datetime | None:
        """When the latest run started."""
        return _utc(self.started_at)

    @property
    def finished_time(self) -> datetime | None:
        """When the job reached a terminal state."""
        return _utc(self.finished_at)

    def view_status(self, now: float) -> Status:
        """The status a reader should see: a queued job not due yet reads as SCHEDULED."""
        if self.status is Status.QUEUED and self.scheduled_at > now:
            return Status.SCHEDULED
        return self.status

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field, plus ``elapsed``."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["elapsed"] = self.elapsed
        return data


class NewJob(msgspec.Struct, kw_only=True, gc=False):  # no cycles: the collector need not track it
    """What a producer hands the store to enqueue: a job before it exists."""

    id: str
    task: str
    queue: str
    priority: int
    args: list[Any]
    kwargs: dict[str, Any]
    scheduled_at: float
    max_retries: int
    timeout: float | None = None
    key: str | None = None
    result_ttl: float | None = None
    stages: list[dict[str, Any]] | None = None
    owner: str | None = None
    notify: bool = False
    pipeline: dict[str, Any] | None = None
    deadline: float | None = None
    status: Status = Status.QUEUED  #: WAITING for a pipeline whose first stage waits (a timer, a message)
    wait_until: float | None = None
    waiting_for: str | None = None
    stage: int = 0  #: a pipeline whose first stages are skipped (false conditions) starts further on
    results: list[Any] = msgspec.field(default_factory=list)  #: ... with None for each skipped stage
    stage_log: list[dict[str, Any]] = msgspec.field(default_factory=list)
    scheduled_by: str | None = None  #: the schedule whose tick enqueues it
    tick_at: float | None = None
    trace: dict[str, str] | None = None  #: the enqueuing span's trace context, set by conveyor.tracing
