"""One log line per job outcome, on logger ``conveyor.jobs``: what a user follows a worker by.

INFO for a success (task, id, duration, attempt), WARNING for a retry (with its delay), ERROR for a
failure (with the traceback). The same fields go in ``extra`` (job_id, task, queue, attempt,
duration, status, retry_in) for a JSON formatter. Costs one ``isEnabledFor`` when the level is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..job import Job
from ..outcome import Outcome, OutcomeKind

log = logging.getLogger("conveyor.jobs")

#: The level of each kind of outcome's line.
LEVELS: dict[OutcomeKind, int] = {
    OutcomeKind.SUCCEEDED: logging.INFO,
    OutcomeKind.DISCARDED: logging.INFO,
    OutcomeKind.RELEASED: logging.INFO,
    OutcomeKind.RESCUED: logging.WARNING,
    OutcomeKind.RETRY: logging.WARNING,
    OutcomeKind.FAILED: logging.ERROR,
    OutcomeKind.ADVANCED: logging.INFO,
}
_SAID: dict[OutcomeKind, str] = {
    OutcomeKind.SUCCEEDED: "succeeded",
    OutcomeKind.DISCARDED: "was discarded",
    OutcomeKind.RELEASED: "was handed back",
    OutcomeKind.RESCUED: "was rescued",
    OutcomeKind.RETRY: "failed, retrying",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.ADVANCED: "finished its stage, moving on",
}


def log_outcome(job: Job, outcome: Outcome, duration: float, clock: Callable[[], float]) -> None:
    """Log the line for ``outcome`` of ``job``'s run, which took ``duration`` seconds (``clock``:
    the store's time source, for a retry's delay). Never raises: a log line must not lose an outcome."""
    level = LEVELS.get(outcome.kind, logging.INFO)
    if not log.isEnabledFor(level):
        return
    try:
        _log(level, job, outcome, duration, clock() if outcome.retry_at is not None else 0.0)
    except Exception:  # a broken handler or formatter: say so once per line, carry on
        logging.getLogger("conveyor.worker").exception("job %s: logging its outcome failed", job.id)


def _log(level: int, job: Job, outcome: Outcome, duration: float, now: float) -> None:
    duration = round(duration, 4)
    retry_in = None if outcome.retry_at is None else round(max(0.0, outcome.retry_at - now), 3)
    extra = {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
        "duration": duration,
        "status": outcome.kind.value,
        "retry_in": retry_in,
    }
    said = _SAID.get(outcome.kind, outcome.kind.value)
    error = outcome.error
    why = f": {error.type}: {error.message}" if error is not None else ""
    if outcome.kind is OutcomeKind.RETRY:
        log.log(level, "%s %s %s in %.3f s (attempt %d)%s; next try in %.1f s",
                job.task, job.id, said, duration, job.attempts, why, retry_in or 0.0, extra=extra)  # fmt: skip
    elif outcome.kind is OutcomeKind.FAILED and error is not None and error.traceback:
        log.log(level, "%s %s %s in %.3f s (attempt %d)%s\n%s",
                job.task, job.id, said, duration, job.attempts, why, error.traceback.rstrip(), extra=extra)  # fmt: skip
    else:
        log.log(level, "%s %s %s in %.3f s (attempt %d)%s",
                job.task, job.id, said, duration, job.attempts, why, extra=extra)  # fmt: skip
