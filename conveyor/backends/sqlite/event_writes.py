"""How the SQLite store appends events, and the rows of the job steps (kind and payload decided by
conveyor.events).

Two shapes (docs/events.md, "How SQLite stores events"):

- the hot path's steps (an enqueue, a claim, a batch of outcomes) write their events as batch rows
  (``append_batch``, ``copy_batch``: conveyor.backends.event_batches), a few bytes an event, whose
  statements note in each job's ``event_marks`` where those rows are;
- every other step writes a row per event (``append``, ``copy``: queries.sql ``insert_event``,
  ``copy_job_events``): the shared row of conveyor.backends.rows, then the job's ``seq``, by which
  SQLite indexes a job's single events (migrations/0003_events.sql says why).

A deletion of events keeps the log's head (``keeping_head``), so a number is never given twice.

Entries are built straight from what the statements return (a claim builds one per job it takes)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import msgspec

from ... import codec
from ...events import EventKind, outcome_event
from ...outcome import Report
from ..columns import JOB_COLUMNS
from ..event_batches import SPAN, Item, chunks, encode, marked_rows, named

#: What an outcome's event takes from its job (seq, task, queue, attempts, worker_id): a claim keeps
#: it by the run's token (``claimed``), so a batch of outcomes need not read it back.
Run = tuple[int, str, str, int, str | None]


class Runs(dict[str, Run]):
    """The runs this store claimed, by token, with their ``Run``; bounded (a run finished elsewhere,
    by the leader's rescue, is never taken out here)."""

    LIMIT = 100_000

    def claimed(self, rows: Sequence[Sequence[Any]], worker_id: str) -> None:
        """Remember the runs a claim (or start) returned (each row ends with the job's seq)."""
        if len(self) > self.LIMIT:
            self.clear()
        for row in rows:
            self[row[_TOKEN]] = (row[-1], row[_TASK], row[_QUEUE], row[_ATTEMPTS], worker_id)


#: An event row with the job's seq last.
JobEventRow = tuple[float, str, str | None, str | None, str | None, int, str | None, str, int | None]

_EMPTY = "{}"
_INDEX = {column.name: i for i, column in enumerate(JOB_COLUMNS)}
_TASK, _QUEUE, _ATTEMPTS, _TOKEN = (_INDEX[name] for name in ("task", "queue", "attempts", "token"))
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


def append_batch(conn: sqlite3.Connection, insert_event_batch: str, items: Sequence[Item], now: float) -> None:
    """Append these events as batch rows of up to PER_ROW each, in order (none: nothing)."""
    for chunk in chunks(items):
        kind, worker_id, data = encode(chunk)
        params = {"now": now, "kind": kind, "worker_id": worker_id, "entries": data, "n": len(chunk)}
        conn.execute(insert_event_batch, params)


def copy_batch(
    conn: sqlite3.Connection,
    batch_event_jobs: str,
    insert_event_batch: str,
    events: Sequence[tuple[str, str, str]],
    known: Mapping[str, Run],
    now: float,
) -> None:
    """``copy`` as batch rows: the events (job id, kind, data) of a batch of outcomes, the seq, task,
    queue, attempt and worker of each from ``known`` (their runs' claims: those columns are as the
    claim left them) or else read from its job's row as it is now (one read)."""
    if not events:
        return
    jobs: dict[str, Run] = {}
    unknown = list({job_id: None for job_id, _, _ in events if job_id not in known})
    if unknown:
        jobs = {row[0]: row[1:] for row in conn.execute(batch_event_jobs, {"ids": json.dumps(unknown)})}
    jobs.update(known)
    items: list[Item] = []
    for job_id, kind, data in events:
        job = jobs.get(job_id)
        if job is not None:
            seq, task, queue, attempts, worker_id = job
            items.append((seq, attempts, task, queue, kind, worker_id, data))
    append_batch(conn, insert_event_batch, items, now)


@contextmanager
def keeping_head(conn: sqlite3.Connection, sql: Mapping[str, str]) -> Iterator[None]:
    """Delete events inside: if the newest went, a head row (no events) takes its number, so the next
    number is still past every one given (the table has no AUTOINCREMENT counter: migrations/0010)."""
    head = conn.execute(sql["event_head"]).fetchone()
    yield
    if head is not None:
        conn.execute(sql["keep_event_head"], {"seq": head[0], "at": head[1]})


def rows_from(conn: sqlite3.Connection, event_batches_from: str) -> Callable[[int], Iterator[Sequence[Any]]]:
    """``event_batches.marked_rows``' walk: the batch rows from a mark on, read lazily."""

    def walk(mark: int) -> Iterator[Sequence[Any]]:
        yield from conn.execute(event_batches_from, {"mark": mark, "span": SPAN})

    return walk


def name_discarded(conn: sqlite3.Connection, sql: dict[str, str], job_id: str, job_seq: int, event_marks: str) -> None:
    """A job deleted at the end of its run: its entries in batch rows name it by id from now on, so
    its events outlive its row (found from its marks)."""
    for row in marked_rows(rows_from(conn, sql["event_batches_from"]), event_marks, job_seq):
        body = codec.loads(row[8])
        if named(body, job_seq, job_id, row[2], row[7]):
            conn.execute(sql["update_event_batch"], {"seq": row[0], "entries": msgspec.json.encode(body).decode()})


def started_items(rows: Sequence[Sequence[Any]], worker_id: str) -> list[Item]:
    """The ``started`` events of the jobs a claim (or start) returned (each row ends with the job's
    seq): the attempt the claim made."""
    kind = EventKind.STARTED.value
    return [(row[-1], row[_ATTEMPTS], row[_TASK], row[_QUEUE], kind, worker_id, _EMPTY) for row in rows]


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
    seq, task, queue, attempts, worker_id = returned[:5]
    return (now, kind, job_id, task, queue, attempts, worker_id, data, seq)
