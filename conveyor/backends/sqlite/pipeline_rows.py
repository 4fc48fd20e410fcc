"""The named parameters and event rows of the SQLite store's pipeline steps (queries.sql): a next
stage's columns (``finish_advanced``, ``reset_to_stage``), a record's bookkeeping, a notice, and the
``resumed`` / ``message_received`` events as ``event_writes.copy`` takes them. What they hold is
decided in Python (conveyor.pipeline, conveyor.events); these only lay it out for the statements."""

from __future__ import annotations

from typing import Any

from ... import codec
from ...events import EventKind, encode_data
from ...job import Status
from ...messages import NewMessage, Notification, StoredMessage
from ...outcome import NextStage, Notice, Outcome, OutcomeKind, Report, StageRecord
from ..rows import FINISH_STATEMENTS, finish_params

#: An event as ``event_writes.copy`` takes it: (job id, kind, data JSON text).
CopiedEvent = tuple[str, str, str]

_RESUMED = EventKind.RESUMED.value
_RECEIVED = EventKind.MESSAGE_RECEIVED.value
_WAITING, _QUEUED = Status.WAITING.value, Status.QUEUED.value
ADVANCED = FINISH_STATEMENTS[OutcomeKind.ADVANCED]  #: the statement that moves a pipeline to a stage


def finish_statement(outcome: Outcome) -> str:
    """The ``finish_*`` statement that writes ``outcome``: ``finish_advanced`` for ADVANCED and for a
    RETRY that restarts a pipeline at the stage its record names. An ADVANCED without a next stage
    (conveyor.pipeline always gives one) is handed back as RELEASED would be, at the stage it is
    at: the job runs again rather than being lost or left running."""
    has_next = outcome.record is not None and outcome.record.next is not None
    if outcome.kind is OutcomeKind.RETRY and has_next:
        return ADVANCED
    if outcome.kind is OutcomeKind.ADVANCED and not has_next:
        return FINISH_STATEMENTS[OutcomeKind.RELEASED]
    return FINISH_STATEMENTS[outcome.kind]


def stage_params(job_id: str, stage: NextStage) -> dict[str, Any]:
    """The current-stage columns a job takes from ``stage`` (``reset_to_stage``'s parameters)."""
    return {
        "id": job_id, "stage": stage.stage, "task": stage.task, "queue": stage.queue,
        "args": codec.dumps(stage.args), "kwargs": codec.dumps(stage.kwargs), "timeout": stage.timeout,
        "status": _WAITING if stage.waiting else _QUEUED, "scheduled_at": stage.scheduled_at,
        "wait_until": stage.wait_until, "waiting_for": stage.waiting_for, "deadline": stage.deadline,
    }  # fmt: skip


def record_params(job_id: str, record: StageRecord) -> dict[str, Any]:
    """``record_stages``'s parameters: the stage, results and stage log a pipeline outcome keeps."""
    return {
        "id": job_id, "stage": record.stage, "results": codec.dumps(record.results),
        "stage_log": codec.dumps(record.stage_log),
    }  # fmt: skip


def advanced_params(report: Report, now: float) -> dict[str, Any]:
    """``finish_advanced``'s parameters: the fence and outcome (rows.finish_params), the next stage's
    columns, the record's results and stage log; for a RETRY one retry used and its error kept."""
    outcome = report.outcome
    record = outcome.record
    assert record is not None and record.next is not None  # finish_statement() said so
    retried = outcome.kind is OutcomeKind.RETRY
    params = {
        **finish_params(report, now),
        **stage_params(report.job_id, record.next),
        **record_params(report.job_id, record),
        "stage": record.next.stage,
        "retried": 1 if retried else 0,
    }
    if not retried:  # a stage that ended well leaves no error behind
        params["error"] = None
    return params


def notice_params(notice: Notice, now: float) -> dict[str, Any]:
    """``insert_notification``'s parameters."""
    return {
        "owner": notice.owner, "job_id": notice.job_id, "now": now, "status": notice.status,
        "exit_code": notice.exit_code, "data": codec.dumps(notice.data),
    }  # fmt: skip


def resumed(job_id: str, stage: int, by: str, message_id: str | None = None) -> CopiedEvent:
    """A ``resumed`` event: a waiting job queued again, ``by`` a message (its id), a timer or the deadline."""
    data: dict[str, Any] = {"stage": stage, "by": by}
    if message_id is not None:
        data["message_id"] = message_id
    return (job_id, _RESUMED, encode_data(data))


def received(job_id: str, message: NewMessage) -> CopiedEvent:
    """A ``message_received`` event: a message stored in the job's mailbox."""
    return (job_id, _RECEIVED, encode_data({"name": message.name, "message_id": message.id}))


def row_to_message(row: tuple[Any, ...]) -> StoredMessage:
    """A message from a ``messages`` row (job_id, id, name, payload, at, consumed_at, stage)."""
    job_id, message_id, name, payload, at, consumed_at, stage = row
    return StoredMessage(
        job_id=job_id, id=message_id, name=name, payload=codec.loads(payload), at=float(at),
        consumed_at=None if consumed_at is None else float(consumed_at), stage=stage,
    )  # fmt: skip


def row_to_notification(row: tuple[Any, ...]) -> Notification:
    """A notification from a ``notifications`` row (id, owner, job_id, at, status, exit_code, data, read)."""
    note_id, owner, job_id, at, status, exit_code, data, read = row
    return Notification(
        id=note_id, owner=owner, job_id=job_id, at=float(at), status=status, exit_code=exit_code,
        data=codec.loads(data), read=bool(read),
    )  # fmt: skip
