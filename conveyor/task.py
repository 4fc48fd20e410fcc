"""Tasks: the ``@app.task`` decorator, task and per-call options, and enqueue helpers."""

from __future__ import annotations

import inspect
import math
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import msgspec

from . import codec
from .job import NewJob, Priority

if TYPE_CHECKING:
    from .app import App
    from .handle import JobHandle
    from .refs import Cond, Ref
    from .stages import Step

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_PRIORITIES = frozenset(Priority)
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0


class TaskOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How a task's jobs are queued, retried and kept. Validated when the task is declared."""

    queue: str = DEFAULT_QUEUE
    priority: int = Priority.NORMAL
    max_retries: int = 0  #: N allows N + 1 runs
    backoff: float = 1.0  #: first retry delay in seconds; doubles each retry
    max_backoff: float = 60.0  #: cap on a retry delay
    jitter: float = 0.2  #: a retry delay is spread by up to this fraction either way
    timeout: float | None = None  #: seconds one run may take; None for no limit
    result_ttl: float | None = DEFAULT_RESULT_TTL  #: seconds a finished job is kept; None keeps it


def _no_nul(value: str, what: str) -> str:
    """``value``, refused if it holds a NUL character: PostgreSQL's text cannot store one, so every
    store refuses it at the call (a JSON argument may hold one: it is escaped)."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL character (\\x00), got {value!r}")
    return value


def _check_options(queue: str, priority: int, max_retries: int, timeout: float | None) -> None:
    if not isinstance(queue, str) or not queue.strip():
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    _no_nul(queue, "queue")
    if isinstance(priority, bool) or priority not in _PRIORITIES:
        raise ValueError(f"priority must be one of {[p.name for p in Priority]}, got {priority!r}")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")


def make_options(**given: Any) -> TaskOptions:
    """Build and validate task options, raising ValueError naming the bad one."""
    options = TaskOptions(**given)
    _check_options(options.queue, options.priority, options.max_retries, options.timeout)
    for name in ("backoff", "max_backoff"):
        value = getattr(options, name)
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if not 0 <= options.jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {options.jitter!r}")
    if options.result_ttl is not None and options.result_ttl < 0:
        raise ValueError(f"result_ttl must be >= 0 seconds or None, got {options.result_ttl!r}")
    return options


def retry_delay(options: TaskOptions, retry_number: int) -> float:
    """Exponential back-off with jitter: backoff * 2^(n-1), capped, spread by +-jitter."""
    base = min(options.backoff * 2.0 ** (retry_number - 1), options.max_backoff)
    return float(base * random.uniform(1 - options.jitter, 1 + options.jitter))


class Task(Generic[P, R]):
    """A registered function. Call it to run it here; ``.delay()`` to enqueue a job."""

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.settings = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.settings.queue}>"

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue a job that runs this task with these arguments."""
        return self.s(*args, **kwargs).delay()

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """A call not yet enqueued, for ``app.enqueue_many``."""
        return Signature(self.app, self.name, args, kwargs, self.settings, CallOptions())

    def options(self, **call_options: Any) -> BoundTask[P, R]:
        """This task with per-call options: delay, eta, priority, queue, key, max_retries, timeout, id,
        connection, owner, notify."""
        return BoundTask(self, CallOptions(**call_options))


class CallOptions(msgspec.Struct, kw_only=True, frozen=True, gc=False):  # no cycles
    """Options of one enqueue call; None means the task's own setting."""

    delay: float | None = None  #: seconds from now
    eta: datetime | None = None  #: an absolute due time
    priority: int | None = None
    queue: str | None = None
    key: str | None = None  #: unique among unfinished jobs: a second enqueue returns the first job
    max_retries: int | None = None
    timeout: float | None = None
    id: str | None = None  #: a caller-chosen id; a taken one raises DuplicateJob
    #: the caller's open database connection (psycopg for PostgreSQL, sqlite3 for SQLite): the job
    #: is written in its transaction and exists only if that commits (transactional enqueue)
    connection: Any = None
    owner: str | None = None  #: the user the job belongs to
    notify: bool = False  #: finishing or failing creates a notification for ``owner``


class BoundTask(Generic[P, R]):
    """A task with per-call options applied; made by ``Task.options``."""

    def __init__(self, task: Task[P, R], call: CallOptions) -> None:
        self.task = task
        self.call = call

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue with these options."""
        return self.s(*args, **kwargs).delay()

    def s(self, *args: P.args, **kwargs: P.kwargs) -> Signature:
        """A call with these options, not yet enqueued."""
        return Signature(self.task.app, self.task.name, args, kwargs, self.task.settings, self.call)


class Signature:
    """A task call with its options, ready to become a job."""

    def __init__(self, app: App, task: str, args: Any, kwargs: Any, options: TaskOptions, call: CallOptions) -> None:
        self.app = app
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.call = call

    def __repr__(self) -> str:
        return f"<Signature {self.task}>"

    def delay(self) -> JobHandle:
        """Enqueue this call."""
        return self.app.enqueue_many([self])[0]

    def when(self, condition: Cond | Ref) -> Step:
        """This call as a pipeline stage that runs only when ``condition`` holds (a Ref: when its
        value is truthy; or a comparison, ``Ref.stage(1)["score"] > 0.5``); else it is skipped
        with None as its result."""
        from .refs import as_cond
        from .stages import Step

        return Step(self, as_cond(condition))

    def to_new_job(self, now: float) -> NewJob:
        """Validate everything and build the record to store; raises before anything is written."""
        args, kwargs = codec.check_payload(self.task, self.args, self.kwargs)
        call, options = self.call, self.options
        queue = call.queue if call.queue is not None else options.queue
        priority = call.priority if call.priority is not None else options.priority
        max_retries = call.max_retries if call.max_retries is not None else options.max_retries
        timeout = call.timeout if call.timeout is not None else options.timeout
        _check_options(queue, priority, max_retries, timeout)
        return NewJob(
            id=_job_id(call.id),
            task=_no_nul(self.task, "a task name"),
            queue=queue,
            priority=int(priority),
            args=args,
            kwargs=kwargs,
            scheduled_at=_due(call, now),
            max_retries=max_retries,
            timeout=timeout,
            key=_key(call.key),
            result_ttl=options.result_ttl,
            owner=_owner(call.owner),
            notify=_notify(call.notify, call.owner),
        )


def _job_id(given: str | None) -> str:
    if given is None:
        return os.urandom(16).hex()  # 128 random bits, like uuid4, at a third of the cost
    if not isinstance(given, str) or not given or len(given) > 255:
        raise ValueError(f"a job id must be a non-empty string of at most 255 characters, got {given!r}")
    return _no_nul(given, "a job id")


def _key(given: str | None) -> str | None:
    if given is not None and (not isinstance(given, str) or not given):
        raise ValueError(f"key must be a non-empty string, got {given!r}")
    return given if given is None else _no_nul(given, "key")


def _owner(given: str | None) -> str | None:
    if given is not None and (not isinstance(given, str) or not given or len(given) > 255):
        raise ValueError(f"owner must be a non-empty string of at most 255 characters, got {given!r}")
    return given if given is None else _no_nul(given, "owner")


def _notify(given: bool, owner: str | None) -> bool:
    if not isinstance(given, bool):
        raise ValueError(f"notify must be True or False, got {given!r}")
    if given and owner is None:
        raise ValueError("notify=True needs an owner= to notify")
    return given


def _due(call: CallOptions, now: float) -> float:
    if call.delay is not None and call.eta is not None:
        raise ValueError("give delay or eta, not both")
    if call.delay is not None:
        delay = call.delay
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {call.delay!r}")
        return now + call.delay
    if call.eta is not None:
        if not isinstance(call.eta, datetime):
            raise ValueError(f"eta must be a datetime, got {call.eta!r}")
        eta = call.eta if call.eta.tzinfo else call.eta.replace(tzinfo=UTC)
        return eta.timestamp()
    return now
