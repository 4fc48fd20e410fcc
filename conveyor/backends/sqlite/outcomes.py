"""How the SQLite store writes runs' outcomes (``finish``, ``finish_many``): a part of
``SQLiteBackend`` (mixed into it). Each report is one fenced ``finish_*`` statement; a pipeline's
outcome also writes, only if that statement was, its stage bookkeeping (``record_stages``), the take
of a waiting message, the owner's notification and the chained job (``then``), all in the batch's
one transaction. Events are written in order: a job's outcome event before what follows from it."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ...errors import DuplicateJob
from ...job import Job, NewJob
from ...outcome import OutcomeKind, Report
from ..base import Outcome
from ..rows import FINISH_STATEMENTS, finish_params
from . import event_writes
from .pipeline_rows import ADVANCED, CopiedEvent, advanced_params, finish_statement, notice_params, record_params
from .waits import take_waiting_message

log = logging.getLogger("conveyor.sqlite")

_RELEASED = FINISH_STATEMENTS[OutcomeKind.RELEASED]
#: The kinds whose pipeline parts are written (a record; then for SUCCEEDED only, a notice for the two
#: that finish the job); RELEASED, RESCUED and DISCARDED ignore them.
_PIPELINE_KINDS = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.RETRY, OutcomeKind.ADVANCED})
_FINAL = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.FAILED})


def _planned(report: Report, now: float) -> tuple[str, dict[str, Any], bool]:
    """The statement that writes the report, its parameters, and whether the outcome writes more than
    that statement (a pipeline's, a chained or a notify job's): decided before taking the lock."""
    outcome = report.outcome
    statement = finish_statement(outcome)
    extras = (
        outcome.kind in _PIPELINE_KINDS
        and statement != _RELEASED  # an ADVANCED without a next stage, handed back as it is
        and (outcome.record is not None or outcome.then is not None or outcome.notice is not None)
    )
    if statement == ADVANCED:
        return statement, advanced_params(report, now), extras
    return statement, finish_params(report, now), extras


class SQLiteOutcomes:
    """Outcomes of the SQLite store (``SQLiteBackend`` supplies the statements, the transactions and
    the insert of a chained job)."""

    _sql: dict[str, str]
    _runs: event_writes.Runs  #: what the runs this store claimed give their outcomes' events (by token)

    if TYPE_CHECKING:

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

        def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]: ...

    def finish(self, job_id: str, token: str, outcome: Outcome, now: float) -> bool:
        return self.finish_many([Report(job_id, token, outcome)], now)[0]

    def finish_many(self, reports: Sequence[Report], now: float) -> list[bool]:
        if not reports:
            return []
        plans = [_planned(report, now) for report in reports]
        outcome_events = [event_writes.outcome(report) for report in reports]  # decided before taking the lock
        written: list[bool] = []
        events: list[CopiedEvent] = []  # to copy from the rows once they are written, in this order
        known: dict[str, event_writes.Run] = {}  # job id -> what its run's claim returned, where still true
        with self._write("write outcomes") as conn:
            for report, (statement, values, extras), event in zip(reports, plans, outcome_events, strict=True):
                run = self._runs.pop(report.token, None)
                if report.outcome.kind is OutcomeKind.DISCARDED:
                    written.append(self._discard(conn, values, event, now))
                    continue
                done = conn.execute(self._sql[statement], values).rowcount == 1
                written.append(done)
                if done:  # a stale report wrote nothing: no event, nothing that follows from it
                    if run is not None and statement != ADVANCED:  # the next stage's task and queue: read them
                        known[report.job_id] = run
                    events.append(event)
                    if extras:
                        self._pipeline_parts(conn, report, statement == ADVANCED, events, now)
            self._copy_batch(conn, events, known, now)
        return written

    def _copy_batch(
        self, conn: sqlite3.Connection, events: list[CopiedEvent], known: dict[str, event_writes.Run], now: float
    ) -> None:
        """The written outcomes' events (and what followed from them), as batch rows."""
        sql = self._sql
        event_writes.copy_batch(conn, sql["batch_event_jobs"], sql["insert_event_batch"], events, known, now)

    def _discard(self, conn: sqlite3.Connection, values: dict[str, Any], event: CopiedEvent, now: float) -> bool:
        """Delete the job and its mailbox; its event from what the DELETE returned (the row is gone)."""
        row = conn.execute(self._sql["finish_discarded"], values).fetchone()
        if row is None:
            return False
        event_writes.name_discarded(conn, self._sql, values["id"], row[0], row[5])
        event_writes.append(conn, self._sql["insert_event"], [event_writes.discarded(event, row, now)])
        conn.execute(self._sql["delete_job_messages"], {"ids": json.dumps([values["id"]])})
        return True

    def _pipeline_parts(
        self, conn: sqlite3.Connection, report: Report, advanced: bool, events: list[CopiedEvent], now: float
    ) -> None:
        """What a written outcome writes beyond its finish_* statement, in the same transaction: the
        stage bookkeeping or the take of a waiting message, the notice, then the chained job (after
        the events so far, so that the job's outcome event precedes the new job's ``enqueued``)."""
        outcome = report.outcome
        record = outcome.record
        if record is not None and advanced:
            step = record.next
            if step is not None and step.waiting and step.waiting_for is not None:
                events += take_waiting_message(conn, self._sql, report.job_id, step.stage, step.waiting_for, now)
        elif record is not None:
            conn.execute(self._sql["record_stages"], record_params(report.job_id, record))
        if outcome.notice is not None and outcome.kind in _FINAL:
            conn.execute(self._sql["insert_notification"], notice_params(outcome.notice, now))
        if outcome.then is not None and outcome.kind is OutcomeKind.SUCCEEDED:
            self._copy_batch(conn, events, {}, now)
            events.clear()
            try:
                self._insert(conn, [outcome.then], now)
            except DuplicateJob:  # ids are random: never lose the finish for it
                log.warning("job %s: its chained job's id %s is taken; not enqueued", report.job_id, outcome.then.id)
