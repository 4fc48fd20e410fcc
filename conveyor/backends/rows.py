"""Statement parameters the SQL stores share beyond the column registry (columns.py): how a
reported outcome becomes the named parameters of a ``finish_*`` statement, and a JobQuery those
of ``list_jobs``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import codec
from ..job import Status
from ..outcome import OutcomeKind, Report

if TYPE_CHECKING:
    from .base import JobQuery

#: The ``finish_*`` statement (in every dialect's queries.sql) that writes each kind of outcome.
FINISH_STATEMENTS: dict[OutcomeKind, str] = {kind: f"finish_{kind.value}" for kind in OutcomeKind}


def finish_params(report: Report, now: float) -> dict[str, Any]:
    """The named parameters of a ``finish_*`` statement for one report: the run (id, token), the
    outcome's values (JSON encoded) and ``lease_before``, the leader's guard (None: no guard)."""
    outcome = report.outcome
    return {
        "id": report.job_id,
        "token": report.token,
        "now": now,
        "retry_at": outcome.retry_at,
        "exit_code": outcome.exit_code,
        "result": outcome.result_text(),  # encoded once, by execution.succeeded
        "error": codec.dumps(outcome.error) if outcome.error else None,
        "lease_before": outcome.lease_before,
    }


def list_params(query: JobQuery) -> dict[str, Any]:
    """The named parameters of a ``list_jobs`` statement: a None filter matches everything."""
    return {
        "queue": query.queue,
        "status": None if query.status is None else Status(query.status).value,
        "task": query.task,
        "id_prefix": query.id_prefix,
        "due_before": query.due_before,
        "due_after": query.due_after,
        "limit": query.limit,
        "offset": query.offset,
    }
