"""How a run ended, and what its job does next: a domain value, decided in Python.

Every store writes an ``Outcome`` in one atomic step, fenced by the run's token
(DESIGN.md, rule 1: Python decides, the store writes). The worker's reporter,
the leader's rescue and eager mode all produce outcomes; no store computes one.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from .job import JobError


class OutcomeKind(enum.StrEnum):
    """How a run ended, and so where its job goes."""

    SUCCEEDED = "succeeded"  #: store the result; the job is finished
    FAILED = "failed"  #: store the error; the job is finished
    RETRY = "retry"  #: store the error; queue again at ``retry_at``, one retry used
    RELEASED = "released"  #: hand the job back untouched (graceful stop); no retry used
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
    retry_at: float | None = None  #: for RETRY: when the job is due again
    lease_before: float | None = None


class Report(msgspec.Struct, frozen=True):
    """One run's outcome, addressed to its job and guarded by its run's token."""

    job_id: str
    token: str
    outcome: Outcome
