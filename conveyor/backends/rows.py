"""The row form of a job, shared by the SQL stores: column order, decoding, statement parameters.

Both SQL stores keep the same columns in the same order, so one decoder serves them both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import codec
from ..job import Job, JobError, NewJob, Status
from .base import OutcomeKind, Report

#: The columns every SELECT of a whole job returns, in ``row_to_job``'s order.
COLUMNS = (
    "id, task, queue, priority, args, kwargs, status, created_at, scheduled_at, started_at,"
    " finished_at, attempts, retries, max_retries, timeout, result, error, exit_code, progress,"
    " progress_message, worker_id, token, lease_expires_at, key, result_ttl, expires_at, stage,"
    " stages, results"
)
#: The columns an enqueue writes, in ``insert_row``'s order.
INSERT_COLUMNS = (
    "id, task, queue, priority, args, kwargs, created_at, scheduled_at, max_retries, timeout, key, result_ttl, stages"
)


def row_to_job(row: Sequence[Any]) -> Job:
    """A job from a row of the columns in ``COLUMNS``, in that order."""
    (id_, task, queue, priority, args, kwargs, status, created_at, scheduled_at, started_at,
     finished_at, attempts, retries, max_retries, timeout, result, error, exit_code, progress,
     progress_message, worker_id, token, lease_expires_at, key, result_ttl, expires_at, stage,
     stages, results) = row  # fmt: skip
    return Job(
        id=id_, task=task, queue=queue, priority=priority, args=codec.loads(args),
        kwargs=codec.loads(kwargs), status=Status(status), created_at=created_at,
        scheduled_at=scheduled_at, started_at=started_at, finished_at=finished_at,
        attempts=attempts, retries=retries, max_retries=max_retries, timeout=timeout,
        result=codec.loads(result), error=JobError(**codec.loads(error)) if error else None,
        exit_code=exit_code, progress=progress, progress_message=progress_message,
        worker_id=worker_id, token=token, lease_expires_at=lease_expires_at, key=key,
        result_ttl=result_ttl, expires_at=expires_at, stage=stage, stages=codec.loads(stages),
        results=codec.loads(results),
    )  # fmt: skip


def insert_row(new: NewJob, now: float) -> tuple[Any, ...]:
    """The values of an INSERT of ``new``, in the order of ``INSERT_COLUMNS``."""
    return (
        new.id, new.task, new.queue, new.priority, codec.dumps(new.args), codec.dumps(new.kwargs),
        now, new.scheduled_at, new.max_retries, new.timeout, new.key, new.result_ttl,
        None if new.stages is None else codec.dumps(new.stages),
    )  # fmt: skip


def new_job_record(new: NewJob, now: float) -> Job:
    """The record ``new`` becomes once inserted at ``now`` (no read back needed)."""
    return Job(
        id=new.id, task=new.task, queue=new.queue, priority=new.priority, args=new.args,
        kwargs=new.kwargs, status=Status.QUEUED, created_at=now, scheduled_at=new.scheduled_at,
        max_retries=new.max_retries, timeout=new.timeout, key=new.key,
        result_ttl=new.result_ttl, stages=new.stages,
    )  # fmt: skip


def finish_params(report: Report, now: float) -> dict[str, Any]:
    """The named parameters of a backend's finish statement for one report (shared by the SQL stores)."""
    outcome = report.outcome
    return {
        "id": report.job_id,
        "token": report.token,
        "now": now,
        "retry_at": outcome.retry_at,
        "exit_code": outcome.exit_code,
        "result": codec.dumps(outcome.result) if outcome.kind is OutcomeKind.SUCCEEDED else None,
        "error": codec.dumps(outcome.error) if outcome.error else None,
    }
