"""Running one claimed job and turning how it ended into an Outcome for the store.

Shared by the worker and by ``App.run_until_empty``, so both apply the same
retry, discard and failure rules.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import codec, context
from .backends.base import Outcome, OutcomeKind
from .errors import Discard, Retry
from .job import ExitCode, Job, JobError
from .task import Task, retry_delay

if TYPE_CHECKING:
    from .backends.base import Backend


def error_of(exc: BaseException) -> JobError:
    """The stored form of an exception: type, message, traceback."""
    return JobError(
        type=type(exc).__qualname__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


def succeeded(result: Any) -> Outcome:
    """A run that returned ``result``; a result that is not JSON fails the run instead."""
    try:
        codec.dumps(result)
    except TypeError as exc:
        return failed_permanently(TypeError(f"the task's result is {exc}"))
    return Outcome(kind=OutcomeKind.SUCCEEDED, result=result, exit_code=ExitCode.SUCCESS)


def failed_permanently(exc: BaseException, exit_code: int = ExitCode.EXECUTION_ERROR) -> Outcome:
    """A run that failed in a way no retry can mend."""
    return Outcome(kind=OutcomeKind.FAILED, error=error_of(exc), exit_code=exit_code)


def failed(
    task: Task[Any, Any], job: Job, exc: BaseException, now: float, exit_code: int = ExitCode.EXECUTION_ERROR
) -> Outcome:
    """A run that raised: retry with back-off while retries remain, else fail; Discard drops it."""
    if isinstance(exc, Discard):
        return Outcome(kind=OutcomeKind.DISCARDED)
    error = error_of(exc)
    if job.retries >= job.max_retries:
        if isinstance(exc, Retry):
            error = JobError("MaxRetriesExceeded", f"retry requested after {job.max_retries} retries: {exc}")
        return Outcome(kind=OutcomeKind.FAILED, error=error, exit_code=exit_code)
    if isinstance(exc, Retry) and exc.delay is not None:
        delay = exc.delay
    else:
        delay = retry_delay(task.settings, job.retries + 1)
    return Outcome(kind=OutcomeKind.RETRY, error=error, exit_code=exit_code, retry_at=now + delay)


def timed_out(task: Task[Any, Any], job: Job, now: float) -> Outcome:
    """A run that went over its timeout: aborted with exit code 130, retried like a failure."""
    exc = TimeoutError(f"job exceeded its timeout of {job.timeout} s")
    return failed(task, job, exc, now, exit_code=ExitCode.ABORTED)


def unknown_task(job: Job) -> Outcome:
    """A job whose task this worker does not know."""
    exc = LookupError(f"unknown task {job.task!r}: no task of that name is registered in this worker's app")
    return failed_permanently(exc)


def run_sync(task: Task[Any, Any], job: Job, backend: Backend, clock: Callable[[], float]) -> Outcome:
    """Run a sync task (or an async one on a fresh loop) in this thread."""
    token = context.enter(context.JobContext(job, backend, clock))
    try:
        call = task.fn(*job.args, **job.kwargs)
        value = asyncio.run(call) if task.is_async else call
    except Exception as exc:
        return failed(task, job, exc, clock())
    finally:
        context.leave(token)
    return succeeded(value)


async def run_async(task: Task[Any, Any], job: Job, backend: Backend, clock: Callable[[], float]) -> Outcome:
    """Run an async task on the running loop; cancellation propagates to the caller."""
    token = context.enter(context.JobContext(job, backend, clock))
    try:
        value = await task.fn(*job.args, **job.kwargs)
    except Exception as exc:
        return failed(task, job, exc, clock())
    finally:
        context.leave(token)
    return succeeded(value)
