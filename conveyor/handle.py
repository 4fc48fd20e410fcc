"""JobHandle: what ``.delay()`` returns, to follow one job and get its result."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import context
from .errors import DeadlockError, JobFailed
from .job import Job, Status

if TYPE_CHECKING:
    from .app import App

RECHECK = 1.0  #: longest wait for an event before the job is read again anyway


class JobHandle:
    """A reference to one stored job. ``record`` is the last state read from the store."""

    def __init__(self, app: App, record: Job) -> None:
        self.app = app
        self.record = record

    @property
    def id(self) -> str:
        """The job's id."""
        return self.record.id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.record.task} {self.record.status.value}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def refresh(self) -> Job:
        """Read the job again from the store (raises JobNotFound if it is gone)."""
        self.record = self.app.job(self.id)
        return self.record

    @property
    def status(self) -> Status:
        """The job's current status, read from the store."""
        return self.refresh().status

    def cancel(self) -> Job:
        """Cancel the job if it has not finished; returns the record."""
        self.record = self.app.cancel(self.id)
        return self.record

    def result(self, timeout: float | None = None, *, allow_in_task: bool = False) -> Any:
        """Wait for the job to finish and return its result.

        Raises JobFailed for a failed or cancelled job, TimeoutError when not finished in
        ``timeout`` seconds, JobNotFound for an unknown or discarded job, and DeadlockError
        inside a running task unless ``allow_in_task`` (a task waiting on another job can
        starve the very worker that would run it; in eager mode the job has already run, so
        no guard is needed).

        It does not poll on a timer: between reads of the job it waits for the next event in the
        store's log (``EventLog.wait_for_events``: a NOTIFY on PostgreSQL, a cheap poll on SQLite),
        which every change of the job writes; at most ``RECHECK`` s pass between reads.
        """
        if context.in_task() and not allow_in_task and not self.app.is_eager:
            raise DeadlockError(
                f"waiting for job {self.id} inside a running task can deadlock the worker; "
                "pass allow_in_task=True if that job runs elsewhere"
            )
        backend = self.app.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.refresh()
        while not job.status.finished:
            seen = backend.last_event_seq()  # read before the job: a change after it has a later event
            job = self.refresh()
            if job.status.finished:
                break
            wait = RECHECK if deadline is None else min(RECHECK, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"job {self.id} not finished after {timeout} s (status {job.status.value})")
            backend.wait_for_events(seen, wait)
        if job.status is Status.SUCCEEDED:
            return job.result
        raise JobFailed(job.id, job.status.value, job.error)
