"""Batch rows of the event log: many events in one row, and reading them back as numbered events.

A store may write the events of one hot-path step (an enqueue of many jobs, a claim, a batch of
outcomes) as one row instead of one row each (the SQLite store does: docs/events.md, "How SQLite
stores events"). The row's ``seq`` is the last of ``n`` consecutive numbers; its ``data`` is a
JSON array of ``n`` entries, the event numbered ``seq - n + 1 + i`` at index ``i``::

    [job_id, task, queue, attempt, kind, worker_id, data]

where a null ``kind`` or ``worker_id`` is the row's own, and a null entry is an event deleted
with its job (pruned), whose number stays unused. Readers see the same ``Event`` either way: this
module turns rows of both shapes into events and applies an ``EventQuery`` to them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import msgspec

from .. import codec
from ..events import Event, EventQuery
from .rows import row_to_event

#: Most entries in one batch row: a step with more events writes several rows, so that reading a job's
#: history or pruning a job parses a few kilobytes, not a whole bulk enqueue's events.
PER_ROW = 100
#: How far past a job's mark its batch row can be, in numbers: a step's events follow its mark in the
#: same transaction (a claim's, a batch of outcomes'), so a walk from a mark stops within this.
SPAN = 100_000

#: One entry's fields as a store writes them, ``data`` as JSON text.
Entry = tuple[str, str | None, str | None, int, str | None, str | None, str]
#: A row of the log as ``events`` statements return it: seq, at, kind, job_id, task, queue, attempt,
#: worker_id, data, n (None for a row of one event).
LogRow = Sequence[Any]


def encode(entries: Sequence[Entry]) -> str:
    """The JSON array of a batch row's entries; each one's data is embedded as it is (JSON text)."""
    return msgspec.json.encode([(*entry[:6], msgspec.Raw(entry[6])) for entry in entries]).decode()


def events_of(row: LogRow) -> list[Event]:
    """The events a row holds: itself for a row of one event, its entries for a batch row."""
    n = row[9]
    if n is None:
        return [row_to_event(row)]
    seq, at, kind, worker_id = row[0], float(row[1]), row[2], row[7]
    first = seq - n + 1
    events = []
    for i, entry in enumerate(codec.loads(row[8])):
        if entry is None:
            continue
        job_id, task, queue, attempt, own_kind, own_worker, data = entry
        worker = own_worker if own_worker is not None else worker_id
        event = Event(
            seq=first + i, at=at, kind=own_kind or kind, job_id=job_id, task=task, queue=queue, attempt=attempt,
            worker_id=worker, data=data or {},
        )  # fmt: skip
        events.append(event)
    return events


def matches(event: Event, query: EventQuery) -> bool:
    """True if the event passes the query's filters (``after`` included; not ``limit``)."""
    return (
        event.seq > query.after
        and (query.job_id is None or event.job_id == query.job_id)
        and (query.task is None or event.task == query.task)
        and (query.queue is None or event.queue == query.queue)
        and (query.kinds is None or event.kind in query.kinds)
    )


def read(fetch: Callable[[int, int], Sequence[LogRow]], query: EventQuery) -> list[Event]:
    """Up to ``query.limit`` events that match, oldest first, from ``fetch(after, limit)``: the log's
    rows past ``after`` in seq order, at most ``limit`` of them, single rows already filtered. A batch
    row can hold fewer matching events than one (or none), so this reads on until the limit is met or
    the log ends."""
    found: list[Event] = []
    after = query.after
    while len(found) < query.limit:
        rows = fetch(after, query.limit)
        for row in rows:
            for event in events_of(row):
                if matches(event, query):
                    found.append(event)
                    if len(found) == query.limit:
                        return found
        if len(rows) < query.limit:
            break
        after = rows[-1][0]
    return found


def chunks(entries: Sequence[Any]) -> list[Sequence[Any]]:
    """``entries`` cut into rows of at most PER_ROW, in order."""
    return [entries[start : start + PER_ROW] for start in range(0, len(entries), PER_ROW)]


def null_entries(entries: list[Any], job_ids: Collection[str]) -> set[str]:
    """Null, in place, the entries (decoded) of these jobs: their events are pruned, their numbers
    stay unused. Returns the ids it found."""
    found: set[str] = set()
    for i, entry in enumerate(entries):
        if entry is not None and entry[0] in job_ids:
            found.add(entry[0])
            entries[i] = None
    return found


def prune_entries(
    jobs: Sequence[tuple[str, str]],
    oldest: int | None,
    walk: Callable[[int], Iterable[tuple[int, str]]],
    write: Callable[[int, str | None], None],
) -> None:
    """Null the entries of pruned jobs, ``(job id, event_marks)`` pairs, in the batch rows their marks
    lead to. ``walk(mark)`` yields the batch rows (key, data) from a mark on, in order, within SPAN;
    the walk from a mark, shared by the jobs of one step, stops once it has found them all. A mark
    SPAN below ``oldest`` (the log's first key) lost its rows to the age limit and is skipped.
    ``write(key, data)`` stores a changed row (data None: none of its entries is left)."""
    by_mark: dict[int, set[str]] = {}
    for job_id, job_marks in jobs:
        for text in job_marks.split():
            by_mark.setdefault(int(text), set()).add(job_id)
    if oldest is None:
        return
    pruned = {job_id for job_id, _ in jobs}
    rows: dict[int, tuple[list[Any], set[str]]] = {}  # key -> (its entries, decoded; the ids nulled)
    for mark, ids in sorted(by_mark.items()):
        if mark + SPAN <= oldest:
            continue
        missing = set(ids)
        for key, data in walk(mark):
            if key not in rows:
                entries = codec.loads(data)
                rows[key] = (entries, null_entries(entries, pruned))
            missing -= rows[key][1]
            if not missing:
                break
    for key, (entries, nulled) in rows.items():
        if nulled:
            write(key, encoded(entries))


def encoded(entries: Sequence[Any]) -> str | None:
    """Decoded entries as a row's ``data`` again; None if every one is nulled (the row can go)."""
    if all(entry is None for entry in entries):
        return None
    return msgspec.json.encode(entries).decode()
