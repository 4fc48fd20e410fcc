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
from .job import JobError


class OutcomeKind(enum.StrEnum):
    """How a run ended, and so where its job goes."""

    SUCCEEDED = "succeeded"  #: store the result; the job is finished
    FAILED = "failed"  #: store the error; the job is finished
    RETRY = "retry"  #: store the error; queue again at ``retry_at``, one retry used
    #: hand the job back, no retry used (graceful stop; an unknown task: due at ``retry_at``, ``error`` says why)
    RELEASED = "released"
    RESCUED = "rescued"  #: its worker died (lease ran out): queue again, no retry used, ``rescues`` + 1
    DISCARDED = "discarded"  #: delete the job


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
