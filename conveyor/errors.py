"""Every exception conveyor raises or lets a task raise, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import JobError


class ConveyorError(Exception):
    """Base class of conveyor's own errors."""


class StoreError(ConveyorError):
    """The store cannot be opened or used: unreadable, corrupt, wrong URL, unreachable."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (connection refused or lost, server restarting).

    Raised by server backends for connection-level failures: the same call may succeed once the
    server is back, so a worker retries it with back-off instead of giving up.
    """


class UnstorableText(StoreError, ValueError):
    """A value given to the store cannot be stored as it is: PostgreSQL's text holds no NUL
    character (\\x00). Bad input (a ValueError), refused by the store at the call; nothing written."""


class JobNotFound(ConveyorError, LookupError):
    """No job with that id exists (never did, was discarded, or was pruned)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class DuplicateJob(ConveyorError, ValueError):
    """A caller-chosen job id is already taken."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class JobFailed(ConveyorError):
    """Raised by ``JobHandle.result()`` for a job that failed or was cancelled."""

    def __init__(self, job_id: str, status: str, error: JobError | None) -> None:
        detail = f"{error.type}: {error.message}" if error else status
        super().__init__(f"job {job_id} {status}: {detail}")
        self.job_id = job_id
        self.status = status
        self.error = error


class DeadlockError(ConveyorError):
    """A running task waited on another job's result without ``allow_in_task=True``."""


class InvalidTransition(ConveyorError, ValueError):
    """A control call (cancel, retry) does not apply to the job's current state."""


class LockNotAcquired(ConveyorError):
    """``with app.lock(name):`` found the lock held by another owner (locks are non-blocking by
    default: the block does not run). ``holder`` is who held it, when known."""

    def __init__(self, name: str, holder: str | None = None) -> None:
        by = f" by {holder}" if holder else ""
        super().__init__(f"lock {name!r} is held{by}; not acquired")
        self.name = name
        self.holder = holder


class Retry(Exception):
    """Raise inside a task to ask for another run after ``delay`` seconds.

    It counts against ``max_retries``; once those are used up the job fails.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason


class Discard(Exception):
    """Raise inside a task to drop the job: it is deleted and later look-ups report not found."""
