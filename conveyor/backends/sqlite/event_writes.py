"""How the SQLite store appends events (queries.sql ``insert_event``, ``copy_job_events``), and the
rows of the job steps: the shared row of conveyor.backends.rows (kind and payload decided by
conveyor.events), then the job's ``seq``, by which SQLite indexes a job's events
(migrations/0003_events.sql says why). Rows are built straight from what the statements return
(a claim builds one per job it takes) and written many to a statement: the hot path's cost."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from functools import cache
from typing import Any

from ...events import EventKind, enqueued_data, outcome_event
from ...job import NewJob
from ...outcome import Report
from ..columns import JOB_COLUMNS

#: An event row with the job's seq last.
JobEventRow = tuple[float, str, str | None, str | None, str | None, int, str | None, str, int | None]

_EMPTY = "{}"
_ENQUEUED = EventKind.ENQUEUED.value
_STARTED = EventKind.STARTED.value
_INDEX = {column.name: i for i, column in enumerate(JOB_COLUMNS)}
_ID, _TASK, _QUEUE, _ATTEMPTS = (_INDEX[name] for name in ("id", "task", "queue", "attempts"))
_SEQ = len(JOB_COLUMNS)  #: claim and start return the job's columns, then its seq
#: Rows per INSERT: 9 parameters each stays under SQLite's oldest limit of 999 parameters.
PER_STATEMENT = 100
_VALUES = re.compile(r"VALUES\s*(\([?, ]+\))")


@cache
def _repeated(sql: str, rows: int) -> str:
    """``insert_event`` with its VALUES row repeated for ``rows`` rows."""
    match = _VALUES.search(sql)
    if match is None:
        raise ValueError("insert_event has no VALUES (?, ...) row to repeat")
    return sql[: match.start(1)] + ", ".join([match[1]] * rows) + sql[match.end(1) :]


def append(conn: sqlite3.Connection, insert_event: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert event rows (each ``JobEventRow``-shaped) in order, up to ``PER_STATEMENT`` a statement."""
    for start in range(0, len(rows), PER_STATEMENT):
        chunk = rows[start : start + PER_STATEMENT]
        conn.execute(_repeated(insert_event, len(chunk)), [value for row in chunk for value in row])


def copy(conn: sqlite3.Connection, copy_job_events: str, events: Sequence[tuple[str, str, str]], now: float) -> None:
    """Append the events (job id, kind, data) of jobs just changed, copying the rest from their rows."""
    if events:
        conn.execute(copy_job_events, {"now": now, "events": json.dumps(events)})


def no_job(row: Sequence[Any]) -> JobEventRow:
    """A shared event row (rows.EventRow) of no job, as ``insert_event`` takes it."""
    return (*row, None)


def enqueued(jobs: Sequence[NewJob], first_seq: int, now: float) -> list[JobEventRow]:
    """The ``enqueued`` events of jobs inserted in this order with consecutive seqs from ``first_seq``."""
    return [
        (now, _ENQUEUED, new.id, new.task, new.queue, 0, None, enqueued_data(new.scheduled_at, now), first_seq + i)
        for i, new in enumerate(jobs)
    ]


def started(rows: Sequence[Sequence[Any]], worker_id: str, now: float) -> list[JobEventRow]:
    """The ``started`` events of the jobs a claim (or start) returned: the attempt the claim made,
    the worker in the ``worker_id`` column."""
    return [
        (now, _STARTED, row[_ID], row[_TASK], row[_QUEUE], row[_ATTEMPTS], worker_id, _EMPTY, row[_SEQ]) for row in rows
    ]


def outcome(report: Report) -> tuple[str, str, str]:
    """A report's event as ``copy`` takes it: (job id, kind, data), by ``events.outcome_event``."""
    kind, data = outcome_event(report.outcome)
    return (report.job_id, kind.value, data)


def discarded(event: tuple[str, str, str], returned: Sequence[Any], now: float) -> JobEventRow:
    """The event (``outcome``'s) of a discard, with the (seq, task, queue, attempts, worker_id) its
    DELETE returned: the job's row is gone, nothing is left to copy."""
    job_id, kind, data = event
    seq, task, queue, attempts, worker_id = returned
    return (now, kind, job_id, task, queue, attempts, worker_id, data, seq)
