"""The API's own types, as msgspec structs: what the handlers decode (request bodies, query strings)
and what they answer beside conveyor's own structs (Job, Event, WorkerInfo...). The OpenAPI document
(``conveyor.web.openapi``) is generated from these same types, so it cannot drift from the code.

Bodies refuse unknown fields (a typo is a 400 that names it, not a silent default); query strings
ignore unknown parameters. Every page is at most ``MAX_PAGE`` rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from ..accounts import Permission
from ..job import Job, Status
from ..messages import Delivery, StoredMessage
from ..schedule import ExplainedTick
from ..schedule_types import ScheduleRecord
from ..stage_view import StageView

T = TypeVar("T")

MAX_PAGE = 500  #: the most rows one page answers
MAX_BULK = 10_000  #: the most jobs one bulk action touches

PageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE, description=f"rows per page, 1 to {MAX_PAGE}")]
Offset = Annotated[int, msgspec.Meta(ge=0, le=2**53, description="rows to pass over")]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="a sequence number: read what follows it")]
NO_NUL = "^[^\x00]*$"  #: no NUL character: PostgreSQL's text holds none (a JSON payload may: it is escaped)
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
Search = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
Names = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=NO_NUL, description="comma-separated")]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
PriorityValue = Annotated[int, msgspec.Meta(ge=1, le=4)] | Literal["low", "normal", "high", "critical"]
PRIORITIES = {"low": 1, "normal": 2, "high": 3, "critical": 4}


# query strings ------------------------------------------------------------------------------------------------
class PageQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``?limit&offset`` of a list."""

    limit: PageSize = 100
    offset: Offset = 0


class JobFilter(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Which jobs: every filter given must match. ``q``: an id prefix, or text in the arguments."""

    queue: Name | None = None
    status: Status | None = None
    task: Name | None = None
    owner: Name | None = None
    q: Search | None = None


class JobsQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/jobs``: the filters of ``JobFilter``, newest first, a page at a time."""

    queue: Name | None = None
    status: Status | None = None
    task: Name | None = None
    owner: Name | None = None
    q: Search | None = None
    limit: PageSize = 100
    offset: Offset = 0

    def filter(self) -> JobFilter:
        """The filters alone."""
        return JobFilter(queue=self.queue, status=self.status, task=self.task, owner=self.owner, q=self.q)


class EventsQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/events``: events after ``after``, oldest first. ``kinds``: comma-separated."""

    after: Seq = 0
    job_id: Name | None = None
    task: Name | None = None
    queue: Name | None = None
    kinds: Names | None = None
    limit: PageSize = 100


class JobEventsQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/jobs/{id}/events``: the job's events after ``after``, oldest first."""

    after: Seq = 0
    kinds: Names | None = None
    limit: PageSize = 100


class StreamQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/events/stream``: ``pattern`` ('*', a task or queue name, or a glob of one); ``after``:
    a sequence number to resume after (none: from now on; the ``Last-Event-ID`` header beats it);
    ``kinds``: comma-separated; ``job_id``: one job's events."""

    pattern: Annotated[str, msgspec.Meta(max_length=255, pattern=NO_NUL)] = "*"
    after: Seq | None = None
    kinds: Names | None = None
    job_id: Name | None = None


class NotificationsQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/notifications``: the user's own, newest first."""

    unread: bool = False
    limit: PageSize = 100
    offset: Offset = 0


class TicksQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/schedules/{name}/ticks``: the newest ``limit`` tick records."""

    limit: PageSize = 50


class AuditQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/audit``: entries after ``after``, oldest first, of ``user`` only if given."""

    after: Seq = 0
    limit: PageSize = 100
    user: Name | None = None


class HealthQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/health``: ``queues`` (comma-separated) must have a live worker."""

    queues: Names | None = None


class ForceQuery(msgspec.Struct, kw_only=True, frozen=True):
    """``DELETE /api/schedules/{name}``: ``force`` removes a schedule declared in code."""

    force: bool = False


# request bodies -------------------------------------------------------------------------------------------------
class EnqueueBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/jobs``: a job of one of the app's tasks. Options left out are the task's own.
    ``owner``: only a system user may give one (else the job is the caller's)."""

    task: Name
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: Name | None = None
    priority: PriorityValue | None = None
    delay: Seconds | None = None  #: seconds from now
    eta: datetime | None = None  #: an absolute due time (RFC 3339; no zone means UTC)
    key: Name | None = None  #: unique among unfinished jobs: a second enqueue answers the first job
    id: Name | None = None  #: a job id of the caller's choosing (a taken one: 409)
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=1e9)] | None = None
    result_ttl: Seconds | None = None  #: seconds the finished job is kept
    notify: bool = False  #: a notification for the owner when it finishes or fails
    owner: Name | None = None


class PipelineBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/pipelines``: a pipeline declared by name in the app, or its ``to_dict`` form."""

    pipeline: Name | dict[str, Any]
    kwargs: dict[str, Any] | None = None  #: the pipeline's keywords (merged over the declared ones)
    id: Name | None = None
    key: Name | None = None
    delay: Seconds | None = None
    eta: datetime | None = None
    notify: bool | None = None
    owner: Name | None = None


class RetryBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/jobs/{id}/retry``: ``reset`` zeroes its counters (a pipeline starts over)."""

    reset: bool = False


class MessageBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/jobs/{id}/messages``: a message to a job (``id``: a repeat is a duplicate)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)] | None = None
    payload: Any = None
    id: Name | None = None


class BulkBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/jobs/bulk``: cancel or retry the jobs ``ids``, or every job matching ``filter``
    (exactly one of the two), at most 10,000; ``dry_run`` only counts them."""

    action: Literal["cancel", "retry"]
    ids: Annotated[list[Name], msgspec.Meta(max_length=MAX_BULK)] | None = None
    filter: JobFilter | None = None
    dry_run: bool = False


class ReadBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/notifications/read``: these notifications (none given: all of the user's)."""

    ids: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]], msgspec.Meta(max_length=MAX_BULK)] | None = (
        None
    )


class StopWorkersBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/workers/stop``: the running workers serving any of ``queues``, or ``worker_ids``."""

    queues: Annotated[list[Name], msgspec.Meta(max_length=1000)] | None = None
    worker_ids: Annotated[list[Name], msgspec.Meta(max_length=1000)] | None = None


class ServiceBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/services``: a new instance of one of the app's services, with its parameters."""

    service: Name
    name: Name | None = None  #: the instance's name (default: the service's)
    replicas: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    params: dict[str, Any] = {}
    owner: Name | None = None


class ReloadBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/services/{name}/reload``: parameters merged over the stored ones; ``unset`` names
    stored ones to drop (the function's default applies to them again)."""

    params: dict[str, Any] = {}
    unset: Annotated[list[Name], msgspec.Meta(max_length=100)] = []


class UserBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/users``: add a user, or set an existing one's permissions (and role's)."""

    name: Name
    permissions: Annotated[list[Permission], msgspec.Meta(max_length=10)] = []
    role: Literal["user", "operator", "admin", "system"] | None = None


class TokenBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/users/{name}/tokens``: a new token, with a label to tell it apart."""

    label: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)] = ""


class PruneBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /api/prune``: finished jobs past their result TTL, or all finished over ``older_than``
    seconds ago."""

    older_than: Seconds | None = None


# answers --------------------------------------------------------------------------------------------------------
class Page(msgspec.Struct, Generic[T], kw_only=True):
    """A page of a list. ``next_offset``: pass it as ``offset`` for the next page (null: none)."""

    items: list[T]
    next_offset: int | None = None


class SeqPage(msgspec.Struct, Generic[T], kw_only=True):
    """A page of a log read by sequence number. ``next_after``: pass it as ``after`` to read on."""

    items: list[T]
    next_after: int


class Me(msgspec.Struct, kw_only=True, frozen=True):
    """Who the token belongs to and what they may do."""

    name: str
    permissions: list[Permission]
    can_write: bool
    view_others: bool
    modify_others: bool
    system: bool


class JobDetail(Job, kw_only=True):
    """A job with its stages as a reader sees them (``conveyor.stage_view``; one row for a plain
    job) and its mailbox; ``elapsed``: seconds its latest run took (so far)."""

    elapsed: float | None = None
    stage_view: list[StageView] = []
    messages: list[StoredMessage] = []


class BulkResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a bulk action matched and changed (a dry run changes none); ``ids``: those matched (dry
    run) or changed."""

    action: str
    dry_run: bool
    matched: int
    changed: int
    ids: list[str]


class Changed(msgspec.Struct, kw_only=True, frozen=True):
    """Whether a switch or a state changed (False: it already was so)."""

    changed: bool


class Removed(msgspec.Struct, kw_only=True, frozen=True):
    """A row removed."""

    removed: bool


class Sent(msgspec.Struct, kw_only=True, frozen=True):
    """What became of a message: resumed the job, stored in its mailbox, or a duplicate."""

    delivery: Delivery


class Marked(msgspec.Struct, kw_only=True, frozen=True):
    """How many notifications were marked read."""

    changed: int


class Stopped(msgspec.Struct, kw_only=True, frozen=True):
    """The workers asked to stop."""

    worker_ids: list[str]


class Pruned(msgspec.Struct, kw_only=True, frozen=True):
    """How many finished jobs were deleted."""

    deleted: int


class TokenView(msgspec.Struct, kw_only=True, frozen=True):
    """A token as the API shows it: never its secret nor the secret's digest."""

    id: str
    user: str
    label: str
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None


class NewToken(TokenView, kw_only=True, frozen=True):
    """A token just made: ``token`` is shown this once (only its SHA-256 is stored)."""

    token: str


class ScheduleDetail(msgspec.Struct, kw_only=True):
    """A schedule, its spec in words, and its next ticks in its zone."""

    schedule: ScheduleRecord
    description: str
    next: list[ExplainedTick]


class TaskInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One of the app's tasks, its options, and whether it is disabled."""

    name: str
    queue: str
    priority: int
    max_retries: int
    timeout: float | None
    result_ttl: float | None
    disabled: bool


class PipelineInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A pipeline declared by name in the app: its stages in words and its keywords."""

    name: str
    stages: list[str]
    kws: dict[str, Any]
    queue: str


class Healthz(msgspec.Struct, kw_only=True, frozen=True):
    """The public probe: the server is up and its store usable."""

    ok: bool
    message: str = ""


def priority_of(value: int | str | None) -> int | None:
    """A priority given by number or name, as the number."""
    if isinstance(value, str):
        return PRIORITIES[value]
    return value
