"""Running one claimed job and turning how it ended into an Outcome for the store.

Shared by the worker and by ``App.run_until_empty``, so both apply the same
retry, discard and failure rules.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from . import codec, context, tracing
from .errors import Discard, Retry
from .job import ExitCode, Job, JobError
from .outcome import Outcome, OutcomeKind
from .task import Task, retry_delay

if TYPE_CHECKING:
    from .backends.base import Backend


def storable(text: str) -> str:
    """``text`` as a store can hold it: characters UTF-8 cannot encode (a lone surrogate such as
    "\\udcff", from bytes decoded with surrogateescape) are escaped with backslashreplace, never dropped."""
    if not isinstance(text, str):  # a hand-made JobError may hold anything
        text = repr(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def storable_error(error: JobError) -> JobError:
    """``error`` with every field made ``storable``."""
    return JobError(type=storable(error.type), message=storable(error.message), traceback=storable(error.traceback))


def error_of(exc: BaseException) -> JobError:
    """The stored form of an exception: type, message, traceback (made ``storable``)."""
    try:
        message = str(exc)
    except Exception as inner:  # a broken __str__ must not lose the run's outcome
        message = f"<the exception's message could not be read: {type(inner).__qualname__}>"
    try:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception as inner:
        trace = f"<the traceback could not be formatted: {type(inner).__qualname__}>"
    return storable_error(JobError(type=type(exc).__qualname__, message=message, traceback=trace))


def succeeded(result: Any) -> Outcome:
    """A run that returned ``result``; a result that cannot be stored as JSON (not JSON, or a
    string UTF-8 cannot encode) fails the run instead, with an error that says so."""
    if result is None:  # most tasks return nothing: skip the encoder
        return Outcome(kind=OutcomeKind.SUCCEEDED, exit_code=ExitCode.SUCCESS, result_json="null")
    try:
        text = codec.dumps(result)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        reason = str(exc) if isinstance(exc, TypeError) else f"not storable: {exc}"
        return failed_permanently(TypeError(f"the task's result cannot be stored: {reason}"))
    return Outcome(kind=OutcomeKind.SUCCEEDED, result=result, exit_code=ExitCode.SUCCESS, result_json=text)


def storable_outcome(outcome: Outcome) -> Outcome:
    """``outcome`` as a store can write it: its error made ``storable``, and a result that
    cannot be encoded replaced by a failure saying so (the reporter's fallback for a bad item)."""
    if outcome.kind is OutcomeKind.SUCCEEDED:
        checked = succeeded(outcome.result)
        if checked.kind is not OutcomeKind.SUCCEEDED:
            return checked
    if outcome.error is None:
        return outcome
    return msgspec.structs.replace(outcome, error=storable_error(outcome.error))


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
    """Run a sync task (or an async one on a fresh loop) in this thread, inside its run's span
    (conveyor.tracing; none without OpenTelemetry)."""
    span = tracing.start_run(job)
    if span is None:
        return _run_sync(task, job, backend, clock)
    try:
        outcome = _run_sync(task, job, backend, clock)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the caller decides; the span says so
        span.abort(exc)
        raise
    span.end(outcome)
    return outcome


def _run_sync(task: Task[Any, Any], job: Job, backend: Backend, clock: Callable[[], float]) -> Outcome:
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
    """Run an async task on the running loop, inside its run's span (as ``run_sync``); cancellation
    propagates to the caller."""
    span = tracing.start_run(job)
    if span is None:
        return await _run_async(task, job, backend, clock)
    try:
        outcome = await _run_async(task, job, backend, clock)
    except BaseException as exc:  # cancelled: the span says so
        span.abort(exc)
        raise
    span.end(outcome)
    return outcome


async def _run_async(task: Task[Any, Any], job: Job, backend: Backend, clock: Callable[[], float]) -> Outcome:
    token = context.enter(context.JobContext(job, backend, clock))
    try:
        value = await task.fn(*job.args, **job.kwargs)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # asyncio would re-raise these out of the loop
        return failed(task, job, exc, clock())
    finally:
        context.leave(token)
    return succeeded(value)
