"""How a run ended, and what its job does next: a domain value, decided in Python.

Every store writes an ``Outcome`` in one atomic step, fenced by the run's token
(DESIGN.md, rule 1: Python decides, the store writes). The worker's reporter,
the leader's rescue and eager mode all produce outcomes; no store computes one.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from . import codec
from .job import JobError, NewJob


class OutcomeKind(enum.StrEnum):
    """How a run ended, and so where its job goes."""

    SUCCEEDED = "succeeded"  #: store the result; the job is finished
    FAILED = "failed"  #: store the error; the job is finished
    RETRY = "retry"  #: store the error; queue again at ``retry_at``, one retry used
    #: hand the job back, no retry used (graceful stop; an unknown task: due at ``retry_at``, ``error`` says why)
    RELEASED = "released"
    RESCUED = "rescued"  #: its worker died (lease ran out): queue again, no retry used, ``rescues`` + 1
    DISCARDED = "discarded"  #: delete the job
    #: a pipeline's stage ended and the job moves on to ``record.next`` (queued or waiting), no retry used
    ADVANCED = "advanced"


class NextStage(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """The stage a pipeline job moves to: what its row's current-stage columns become (DESIGN.md,
    rule 2: the row describes the current stage). Decided by ``conveyor.pipeline``."""

    stage: int
    task: str  #: a task's name, or ``stages.TIMER_TASK`` / ``stages.MESSAGE_TASK`` for a wait
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None
    waiting: bool = False  #: True: the job is WAITING (a timer or a message), not QUEUED
    scheduled_at: float  #: when a queued job is due
    wait_until: float | None = None  #: a wait's end: the timer, or the message's time-out
    waiting_for: str | None = None  #: a message wait: the message's name ('' for unnamed); None for a timer
    deadline: float | None = None  #: the pipeline's whole time budget ends here


class StageRecord(msgspec.Struct, kw_only=True, gc=False):
    """A pipeline outcome's stage bookkeeping, written with it: the current stage, the results
    (one per stage reached, None for a skipped one), each stage's record, and the next stage
    (for ADVANCED, and for a RETRY, which restarts at the failed stage or the first)."""

    stage: int  #: the stage the job is at once written (the next one, for ADVANCED and a restart)
    results: list[Any]
    stage_log: list[dict[str, Any]]
    next: NextStage | None = None
    done: int | None = None  #: ADVANCED: the stage that ended (its ``stage_done`` event says so)
    skipped: list[int] = msgspec.field(default_factory=list)  #: stages skipped on the way (a false condition)


class Notice(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """A notification for a job's owner, written with the outcome that finishes the job."""

    owner: str
    job_id: str
    status: str  #: succeeded or failed
    exit_code: int | None
    data: dict[str, Any]  #: task, results, error, stage


class Outcome(msgspec.Struct, kw_only=True):
    """The end of one run: what ``finish`` writes.

    ``lease_before``: write only if the run's lease ran out before this time (the leader's
    rescue uses it, so a worker that renewed its lease meanwhile keeps its job)."""

    kind: OutcomeKind
    result: Any = None
    error: JobError | None = None
    exit_code: int | None = None
    retry_at: float | None = None  #: for RETRY (and optionally RELEASED): when the job is due again
    lease_before: float | None = None
    #: ``result`` already JSON-encoded (by ``execution.succeeded``): no store encodes it a second time
    result_json: str | None = None
    record: StageRecord | None = None  #: a pipeline job's stages (conveyor.pipeline); None for a plain job
    then: NewJob | None = None  #: SUCCEEDED: the chained job, enqueued in the same transaction
    notice: Notice | None = None  #: SUCCEEDED or FAILED with ``notify``: the owner's notification

    def result_text(self) -> str | None:
        """The result as a store writes it: JSON text for SUCCEEDED (encoded once), else None.
        Raises TypeError, as ``codec.dumps`` does, for a result that cannot be encoded."""
        if self.kind is not OutcomeKind.SUCCEEDED:
            return None
        if self.result_json is not None:
            return self.result_json
        return codec.dumps(self.result)


class Report(msgspec.Struct, frozen=True):
    """One run's outcome, addressed to its job and guarded by its run's token."""

    job_id: str
    token: str
    outcome: Outcome
