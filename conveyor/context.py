"""``current_job()``: what a running task knows about the job it runs, and how it reports progress."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING

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
        return self._backend.progress(self.job.id, self.job.token, float(percent), text)


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
