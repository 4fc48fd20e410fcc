"""Leader duty: end the runs nobody is finishing, decided here in Python and written in one batch.

A run whose lease ran out lost its worker (killed, paused, cut off): it is rescued (queued again,
no retry used) until it has been rescued ``App.max_rescues`` times; the next lost run fails it as
a poison job (exit 137), so a job that kills its process every time stops eating workers. A run
past its timeout plus a margin (its worker should have aborted it) is aborted as a time-out.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import pipeline
from ..execution import timed_out
from ..job import ExitCode, Job, JobError
from ..outcome import Outcome, OutcomeKind, Report

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.leader")

BATCH = 500  #: most runs read and written in one step
MAX_BATCHES = 20  #: a pass stops after this many full batches; the next pass goes on


def lease_lost(job: Job, now: float) -> bool:
    """True if the run's lease ran out before ``now``: its worker stopped renewing it."""
    return job.lease_expires_at is not None and job.lease_expires_at < now


def overdue(job: Job, now: float, margin: float) -> bool:
    """True if the run has gone past its timeout plus ``margin`` (its worker did not abort it)."""
    return job.timeout is not None and job.started_at is not None and job.started_at + job.timeout + margin < now


def worker_died(job: Job, now: float) -> Outcome:
    """A run whose worker died: fail the job as poison after ``rescues`` earlier lost runs."""
    deaths = job.rescues + 1
    error = JobError("WorkerDied", f"worker died {deaths} times while running this job")
    return Outcome(kind=OutcomeKind.FAILED, error=error, exit_code=ExitCode.WORKER_DIED, lease_before=now)


def decide(app: App, job: Job, now: float) -> Outcome | None:
    """What a run returned by ``expired`` does next, or None if it needs nothing (yet).

    A lost lease is checked first: a live worker aborts its own runs at their timeout, so a run
    that is both overdue and unrenewed most likely lost its worker."""
    if lease_lost(job, now):
        if job.rescues >= app.max_rescues:
            return worker_died(job, now)
        return Outcome(kind=OutcomeKind.RESCUED, lease_before=now)
    if overdue(job, now, app.lease):
        task = app.tasks.get(job.task)
        if task is not None:
            return timed_out(task, job, now)  # the task's own back-off
        error = JobError("TimeoutError", f"job exceeded its timeout of {job.timeout} s (aborted by the leader)")
        if job.retries < job.max_retries:
            return Outcome(kind=OutcomeKind.RETRY, error=error, exit_code=ExitCode.ABORTED, retry_at=now)
        return Outcome(kind=OutcomeKind.FAILED, error=error, exit_code=ExitCode.ABORTED)
    return None


def rescue(app: App, now: float) -> dict[OutcomeKind, int]:
    """One pass: read the runs nobody is finishing, decide each, write them; returns how many
    outcomes of each kind the store accepted (a worker that renewed meanwhile keeps its run)."""
    backend = app.backend
    written: dict[OutcomeKind, int] = {}
    for _ in range(MAX_BATCHES):
        jobs = backend.expired(now, abort_margin=app.lease, limit=BATCH)
        reports = []
        for job in jobs:
            outcome = decide(app, job, now)
            if outcome is not None and job.token is not None:
                reports.append(Report(job.id, job.token, pipeline.settle(job, outcome, now)))
        accepted = backend.finish_many(reports, now) if reports else []
        for report, ok in zip(reports, accepted, strict=True):
            if ok:
                written[report.outcome.kind] = written.get(report.outcome.kind, 0) + 1
                _log(report)
        if len(jobs) < BATCH or not any(accepted):
            break
    return written


def _log(report: Report) -> None:
    kind = report.outcome.kind
    if kind is OutcomeKind.RESCUED:
        log.warning("job %s: its worker stopped renewing the lease; queued again", report.job_id)
    elif report.outcome.exit_code == ExitCode.WORKER_DIED:
        message = report.outcome.error.message if report.outcome.error else ""
        log.error("job %s failed as a poison job: %s", report.job_id, message)
    else:
        log.warning("job %s: aborted, past its timeout (%s)", report.job_id, kind.value)
