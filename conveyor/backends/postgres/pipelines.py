"""The PostgreSQL store's pipeline writes: an outcome that carries more than its finish (the next
stage, a stage record, a chained job, an owner's notification) is written in one transaction of
several statements, its extras only if the finish was; a job that begins to wait on a message
takes the oldest one of that name from its mailbox in the same transaction. Plain outcomes never
come here: they keep finish_many's one-statement path (store.py)."""

from __future__ import annotations

import logging
from typing import Any

from psycopg import errors as pg_errors

from ... import codec
from ...events import EventKind, encode_data, enqueued_data, outcome_event
from ...job import NewJob, Status
from ...outcome import NextStage, Outcome, OutcomeKind, Report
from ..columns import insert_params
from ..rows import FINISH_STATEMENTS, finish_params
from .connections import Connection
from .schema import queries

log = logging.getLogger("conveyor.postgres")

_RESUMED = EventKind.RESUMED.value
_ENQUEUED = EventKind.ENQUEUED.value
#: Kinds whose outcome may carry a record, a chained job or a notice (others ignore them).
_STAGED = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.RETRY, OutcomeKind.ADVANCED})


def plain(outcome: Outcome) -> bool:
    """Whether the outcome is one finish_* statement on its own (``statement``), which finish_many
    sends with the others in one round trip: an outcome with no record, chained job nor notice
    (RELEASED, RESCUED and DISCARDED ignore those, so they always are; so is an ADVANCED without a
    next stage, handed back, see ``statement``), and a pipeline's move to a next stage that does not
    wait on a message (finish_advanced alone: the common case of a pipeline's stage)."""
    if outcome.kind not in _STAGED:
        return True
    record = outcome.record
    if outcome.kind is OutcomeKind.ADVANCED and (record is None or record.next is None):
        return True
    if outcome.then is not None or outcome.notice is not None:
        return False
    if record is None:
        return True
    nxt = record.next
    return nxt is not None and not (nxt.waiting and nxt.waiting_for is not None)


def statement(outcome: Outcome) -> str:
    """The finish_* statement that writes a ``plain`` outcome: finish_advanced for a move to a next
    stage (ADVANCED, or a RETRY that restarts the pipeline). An ADVANCED without a next stage
    (conveyor.pipeline always gives one) is handed back as RELEASED would be, at the stage it is at,
    as on SQLite: the job runs again rather than being lost or left running."""
    record = outcome.record
    if record is not None and record.next is not None:
        return FINISH_STATEMENTS[OutcomeKind.ADVANCED]
    return FINISH_STATEMENTS[OutcomeKind.RELEASED if outcome.kind is OutcomeKind.ADVANCED else outcome.kind]


def statement_params(report: Report, now: float, wake: bool) -> dict[str, Any]:
    """The parameters of a finish_* statement for ``report`` (rows.finish_params, its event's kind
    and data, whether it wakes readers) and, for a move to a next stage, finish_advanced's."""
    outcome = report.outcome
    kind, data = outcome_event(outcome)
    values = finish_params(report, now) | {"event_kind": kind.value, "event_data": data, "wake": wake}
    record = outcome.record
    if record is not None and record.next is not None:
        retried = outcome.kind is OutcomeKind.RETRY
        values |= stage_params(record.next) | {
            "results": codec.dumps(record.results), "stage_log": codec.dumps(record.stage_log),
            "retried": 1 if retried else 0, "error": values["error"] if retried else None,
        }  # fmt: skip
    return values


def stage_params(stage: NextStage) -> dict[str, Any]:
    """A stage's current-stage columns as the named parameters of finish_advanced / reset_to_stage."""
    return {
        "stage": stage.stage, "task": stage.task, "queue": stage.queue, "args": codec.dumps(stage.args),
        "kwargs": codec.dumps(stage.kwargs), "timeout": stage.timeout,
        "status": (Status.WAITING if stage.waiting else Status.QUEUED).value, "scheduled_at": stage.scheduled_at,
        "wait_until": stage.wait_until, "waiting_for": stage.waiting_for, "deadline": stage.deadline,
    }  # fmt: skip


def _written(row: tuple[Any, ...] | None) -> bool:
    """A {log_done} statement's answer: whether it changed the job (and so wrote its event)."""
    return row is not None and row[0] == 1


def finish(conn: Connection, report: Report, now: float, notify: bool) -> bool:
    """Write one pipeline (or chained, or noted) outcome and all that goes with it in a transaction
    of its own: False, and nothing written, if the run is no longer current (``check`` first)."""
    q = queries()
    outcome = report.outcome
    params = statement_params(report, now, notify)
    record = outcome.record
    with conn.transaction():
        if record is not None and record.next is not None:  # ADVANCED, or a RETRY that restarts the pipeline
            if not _written(conn.execute(q["finish_advanced"], params).fetchone()):
                return False
            if record.next.waiting and record.next.waiting_for is not None:
                take_and_resume(conn, report.job_id, record.next.stage, record.next.waiting_for, now, notify)
            return True
        if not _written(conn.execute(q[FINISH_STATEMENTS[outcome.kind]], params).fetchone()):
            return False
        if record is not None:
            conn.execute(q["record_stages"], {
                "id": report.job_id, "stage": record.stage, "results": codec.dumps(record.results),
                "stage_log": codec.dumps(record.stage_log),
            })  # fmt: skip
        if outcome.then is not None and outcome.kind is OutcomeKind.SUCCEEDED:
            _chain(conn, report.job_id, outcome.then, now, notify)
        notice = outcome.notice
        if notice is not None and outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED):
            conn.execute(q["insert_notification"], {
                "owner": notice.owner, "job_id": notice.job_id, "now": now, "status": notice.status,
                "exit_code": notice.exit_code, "data": codec.dumps(notice.data),
            })  # fmt: skip
    return True


def _chain(conn: Connection, job_id: str, new: NewJob, now: float, notify: bool) -> None:
    """Enqueue the chained job as ``enqueue`` inserts it (with its ``enqueued`` event), under a
    savepoint: a taken id undoes that insert only, never the finish (logged); a key another
    unfinished job holds inserts nothing, as ``enqueue`` would return that job instead."""
    params = insert_params(new, now) | {
        "event_kind": _ENQUEUED, "event_data": enqueued_data(new.scheduled_at, now), "wake": notify,
    }  # fmt: skip
    try:
        with conn.transaction():
            inserted = conn.execute(queries()["insert"], params).fetchone() is not None
    except pg_errors.UniqueViolation:
        log.warning("job %s: its chained job %s was not enqueued: that id is taken", job_id, new.id)
        return
    if not inserted:
        log.info("job %s: its chained job %s was not enqueued: key %r is held by an unfinished job",
                 job_id, new.id, new.key)  # fmt: skip


def take_and_resume(conn: Connection, job_id: str, stage: int, name: str, now: float, notify: bool) -> str | None:
    """In the transaction that made the job wait on message ``name`` at ``stage`` (its row locked):
    take its oldest unconsumed message of that name, if any, and queue the job due now with it as
    the inbox (a ``resumed`` event). Returns the message's id, or None if the mailbox had none."""
    q = queries()
    row = conn.execute(q["take_message"], {"job_id": job_id, "name": name, "stage": stage, "now": now}).fetchone()
    if row is None:
        return None
    message_id: str = row[0]
    data = encode_data({"stage": stage, "by": "message", "message_id": message_id})
    conn.execute(q["resume_with_message"], {
        "id": job_id, "message_id": message_id, "now": now, "event_kind": _RESUMED, "event_data": data,
        "wake": notify,
    })  # fmt: skip
    return message_id


def reset_to_stage(conn: Connection, job_id: str, first: NextStage, now: float) -> bool:
    """``requeue(reset=True, first=...)`` in a transaction: a finished job of any terminal status
    starts over at ``first``, its mailbox emptied, with its ``requeued`` event. False if the job is
    not finished. Raises UniqueViolation for a key held meanwhile."""
    params = stage_params(first) | {
        "id": job_id, "now": now, "event_kind": EventKind.REQUEUED.value,
        "event_data": encode_data({"reset": True}), "wake": True,
    }  # fmt: skip
    with conn.transaction():
        return _written(conn.execute(queries()["reset_to_stage"], params).fetchone())
