"""``current_job()``: what a running task knows about the job it runs, and how it reports progress
and publishes its own events."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import events

if TYPE_CHECKING:
    from .backends.base import Backend
    from .job import Job


class JobContext:
    """The running job, seen from inside its task."""

    def __init__(self, job: Job, backend: Backend, clock: Callable[[], float]) -> None:
        self.job = job
        self._backend = backend
        self._clock = clock

    @property
    def id(self) -> str:
        """The job's id."""
        return self.job.id

    @property
    def attempt(self) -> int:
        """Which run this is, counting from 1."""
        return self.job.attempts

    def progress(self, percent: float, message: str = "") -> bool:
        """Record progress (0-100) and a message, visible to other processes at once.

        Returns False when this run no longer owns the job (cancelled or timed out):
        a long task may use that as its signal to stop early.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be between 0 and 100, got {percent!r}")
        assert self.job.token is not None
        text = str(message).encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate, escaped
        return self._backend.progress(self.job.id, self.job.token, float(percent), text, self._clock())

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> bool:
        """Publish an event of the task's own ``kind`` (e.g. "rows_loaded") with a small JSON
        object as ``data``, in the job's history and to every subscriber.

        ``kind``: 1-64 characters of a-z, 0-9, '_', '.', ':', '-', starting with a letter, and
        not one of conveyor's own kinds (ValueError). ``data``: a dict of JSON values (TypeError
        otherwise). Returns False, writing nothing, when this run no longer owns the job."""
        events.check_custom_kind(kind)
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"event data must be a dict (a JSON object) or None, got {type(data).__name__}")
        try:
            payload = events.encode_data(data)
        except TypeError as exc:
            raise TypeError(f"event {kind!r}: its data must hold JSON values only: {exc}") from None
        assert self.job.token is not None
        return self._backend.emit(self.job.id, self.job.token, kind, payload, self._clock())


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("conveyor_job", default=None)


def current_job() -> JobContext:
    """The job the calling task is running; raises RuntimeError outside a task."""
    context = _current.get()
    if context is None:
        raise RuntimeError("current_job() called outside a running conveyor task")
    return context


def in_task() -> bool:
    """True inside a running task (used by the deadlock guard)."""
    return _current.get() is not None


def enter(context: JobContext) -> contextvars.Token[JobContext | None]:
    """Make ``context`` the current job for this thread or asyncio task."""
    return _current.set(context)


def leave(token: contextvars.Token[JobContext | None]) -> None:
    """Undo ``enter``."""
    _current.reset(token)
