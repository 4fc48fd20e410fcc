"""How the SQLite store appends events, and the rows of the job steps (kind and payload decided by
conveyor.events).

Two shapes (docs/events.md, "How SQLite stores events"):

- the hot path's steps (an enqueue, a claim, a batch of outcomes) write one batch row for all their
  events (``append_batch``, ``copy_batch``: conveyor.backends.event_batches), whose statements note
  in each job's ``event_marks`` where that row is;
- every other step writes a row per event (``append``, ``copy``: queries.sql ``insert_event``,
  ``copy_job_events``): the shared row of conveyor.backends.rows, then the job's ``seq``, by which
  SQLite indexes a job's single events (migrations/0003_events.sql says why).

Entries are built straight from what the statements return (a claim builds one per job it takes)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from functools import cache
from typing import Any

from ...events import enqueued_data, outcome_event
from ...job import NewJob
from ...outcome import Report
from ..columns import JOB_COLUMNS
from ..event_batches import Entry, chunks, encode

#: An event row with the job's seq last.
JobEventRow = tuple[float, str, str | None, str | None, str | None, int, str | None, str, int | None]

_EMPTY = "{}"
_INDEX = {column.name: i for i, column in enumerate(JOB_COLUMNS)}
_ID, _TASK, _QUEUE, _ATTEMPTS = (_INDEX[name] for name in ("id", "task", "queue", "attempts"))
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


def append_batch(
    conn: sqlite3.Connection,
    insert_event_batch: str,
    kind: str,
    worker_id: str | None,
    entries: Sequence[Entry],
    now: float,
) -> None:
    """Append these entries as batch rows of up to PER_ROW each, in order (none: nothing); a null
    kind or worker in an entry is ``kind`` / ``worker_id``."""
    for chunk in chunks(entries):
        params = {"now": now, "kind": kind, "worker_id": worker_id, "entries": encode(chunk), "n": len(chunk)}
        conn.execute(insert_event_batch, params)


def copy_batch(
    conn: sqlite3.Connection, copy_job_events_batch: str, events: Sequence[tuple[str, str, str]], now: float
) -> None:
    """``copy`` as batch rows of up to PER_ROW events: the outcomes' events (job id, kind, data) of a
    finish_many, in order."""
    for chunk in chunks(events):
        conn.execute(copy_job_events_batch, {"now": now, "events": json.dumps(chunk)})


def enqueued_entries(jobs: Sequence[NewJob], now: float) -> list[Entry]:
    """The ``enqueued`` entries of jobs just inserted (a batch row of kind ``enqueued``)."""
    return [(new.id, new.task, new.queue, 0, None, None, enqueued_data(new.scheduled_at, now)) for new in jobs]


def started_entries(rows: Sequence[Sequence[Any]]) -> list[Entry]:
    """The ``started`` entries of the jobs a claim (or start) returned: the attempt the claim made;
    the worker is the batch row's."""
    return [(row[_ID], row[_TASK], row[_QUEUE], row[_ATTEMPTS], None, None, _EMPTY) for row in rows]


def no_job(row: Sequence[Any]) -> JobEventRow:
    """A shared event row (rows.EventRow) of no job, as ``insert_event`` takes it."""
    return (*row, None)


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
