"""Batch rows of the event log: many events in a few bytes each, read back as numbered events.

A store may write the events of one hot-path step (an enqueue of many jobs, a claim, a batch of
outcomes) as one row instead of one row each: both SQL stores do (docs/events.md, "How SQLite
stores events"; docs/postgres.md, "Batch rows", where a claim's row is built in SQL). The row's
``seq`` is the last of ``n`` consecutive numbers, its ``kind`` and ``worker_id`` those of most of
its events, and its ``data`` a JSON object::

    {"t": [[task, queue], ...], "a": attempt, "e": [entry, ...]}

where entry ``i`` is the event numbered ``seq - n + 1 + i``, one of:

- an int, the job's seq (``conveyor_jobs.seq``): task and queue ``t[0]``, attempt ``a``, the row's
  kind and worker, no data: the usual entry, a few bytes;
- a list ``[job seq, attempt, pair, kind, worker_id, data]``, ``pair`` an index into ``t`` or the
  ``[task, queue]`` itself, a null kind or worker being the row's and a null data ``{}``;
- an object ``{"j": job id, "t": task, "q": queue, "a": attempt, "k": kind, "w": worker_id, "d":
  data}``: an entry that names its job itself, written when the job's row goes at the end of its
  run (a discard) so that its events outlive it.

Why job seqs: the bytes a commit writes are what the log costs (a batch row of job ids and names
cost a claim a tenth more than no log; one of seqs, nothing measurable). A reader looks the jobs'
ids up by seq. An entry counts only if that job existed when the entry was written (its first
event mark is at or before the row's first number), so a seq SQLite gives again to a newer job
never inherits older entries, and the entries of a job pruned with its events resolve to nothing.
(PostgreSQL never gives a seq twice: its readers pass a mark of 0. Its discarded jobs keep their
entries through their ``discarded`` event, which holds the job's seq, not by ``named``.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from .. import codec
from ..events import Event, EventKind, EventQuery, enqueued_data
from ..job import NewJob
from .rows import row_to_event

#: Most entries in one batch row: a step with more events writes several rows, so that reading a
#: job's history parses a few kilobytes, not a whole bulk enqueue's events.
PER_ROW = 100
#: How far past a job's mark its batch row can be, in numbers: a step's events follow its mark in
#: the same transaction, so a walk from a mark ends within this even if the row is gone.
SPAN = 100_000

#: One event as a store hands it to ``encode``: job seq, attempt, task, queue, kind, worker_id,
#: data (JSON text).
Item = tuple[int, int, str, str, str, str | None, str]
#: A row of the log as ``events`` statements return it: seq, at, kind, job_id, task, queue,
#: attempt, worker_id, data, n (None for a row of one event).
LogRow = Sequence[Any]
#: What a reader knows of the jobs a batch row names: job seq -> (job id, its first event mark).
Jobs = Mapping[int, tuple[str, int]]

_EMPTY = "{}"


def encode(items: Sequence[Item]) -> tuple[str, str | None, str]:
    """A batch row of these events (at most PER_ROW): its (kind, worker_id, data). The row's kind,
    worker and attempt are the first event's; an event that differs says so in its entry."""
    first = items[0]
    kind, worker, attempt = first[4], first[5], first[1]
    if _alike(items):  # the usual case: an entry is its job's seq alone
        body: dict[str, Any] = {"t": [first[2:4]], "a": attempt, "e": [item[0] for item in items]}
        return kind, worker, msgspec.json.encode(body).decode()
    pairs: dict[tuple[str, str], int] = {}
    entries: list[Any] = []
    for job_seq, own_attempt, task, queue, own_kind, own_worker, data in items:
        pair = pairs.setdefault((task, queue), len(pairs))
        if own_attempt == attempt and pair == 0 and own_kind == kind and own_worker == worker and data == _EMPTY:
            entries.append(job_seq)
        else:
            entries.append([
                job_seq, own_attempt, pair, None if own_kind == kind else own_kind,
                None if own_worker == worker else own_worker, None if data == _EMPTY else msgspec.Raw(data),
            ])  # fmt: skip
    body = {"t": list(pairs), "a": attempt, "e": entries}
    return kind, worker, msgspec.json.encode(body).decode()


def _alike(items: Sequence[Item]) -> bool:
    """True if the events differ only by job (and carry no data): a column at a time, in C, as this
    runs under a store's write lock for every claim and batch of outcomes."""
    _, *columns = zip(*items, strict=True)
    n = len(items)
    return all(column.count(column[0]) == n for column in columns) and columns[-1][0] == _EMPTY


def enqueued_items(jobs: Sequence[NewJob], seqs: Sequence[int], now: float) -> list[Item]:
    """The ``enqueued`` events of jobs just inserted, with their seqs."""
    kind = EventKind.ENQUEUED.value
    return [
        (seq, 0, new.task, new.queue, kind, None, enqueued_data(new.scheduled_at, now))
        for new, seq in zip(jobs, seqs, strict=True)
    ]


def chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    """``items`` cut into rows of at most PER_ROW, in order."""
    return [items[start : start + PER_ROW] for start in range(0, len(items), PER_ROW)]


def decode(row: LogRow) -> dict[str, Any] | None:
    """A batch row's body (None for a row of one event)."""
    return None if row[9] is None else codec.loads(row[8])


def job_seqs(body: dict[str, Any]) -> set[int]:
    """The job seqs a batch row's entries name (entries that name their job by id excepted)."""
    return {entry if isinstance(entry, int) else entry[0] for entry in body["e"] if isinstance(entry, int | list)}


def first_mark(event_marks: str) -> int:
    """A job's first event mark (0 for a job from before marks: it is older than any batch row)."""
    head = event_marks.split(maxsplit=1)
    return int(head[0]) if head else 0


def events_of(row: LogRow, body: dict[str, Any] | None, jobs: Jobs) -> list[Event]:
    """The events a row holds: itself for a row of one event; a batch row's entries whose job
    ``jobs`` names (and that existed when the entry was written), others skipped."""
    if body is None:
        return [row_to_event(row)]
    seq, at, kind, worker, n = row[0], float(row[1]), row[2], row[7], row[9]
    first = seq - n + 1
    pairs, attempt = body["t"], body["a"]
    events = []
    for i, entry in enumerate(body["e"]):
        if isinstance(entry, dict):  # names its job itself
            events.append(Event(
                seq=first + i, at=at, kind=entry["k"], job_id=entry["j"], task=entry["t"], queue=entry["q"],
                attempt=entry["a"], worker_id=entry["w"], data=entry["d"] or {},
            ))  # fmt: skip
            continue
        if isinstance(entry, int):
            job_seq, own_attempt, pair, own_kind, own_worker, data = entry, attempt, 0, None, None, None
        else:
            job_seq, own_attempt, pair, own_kind, own_worker, data = entry
        job = jobs.get(job_seq)
        if job is None or job[1] > first:  # gone, or its seq is a newer job's
            continue
        task, queue = pairs[pair] if isinstance(pair, int) else pair
        events.append(Event(
            seq=first + i, at=at, kind=own_kind or kind, job_id=job[0], task=task, queue=queue, attempt=own_attempt,
            worker_id=worker if own_worker is None else own_worker, data=data or {},
        ))  # fmt: skip
    return events


def holds(body: dict[str, Any], job_seq: int) -> bool:
    """True if a batch row's body has an entry naming this job by its seq."""
    return any(entry == job_seq if isinstance(entry, int) else isinstance(entry, list) and entry[0] == job_seq
               for entry in body["e"])  # fmt: skip


def matches(event: Event, query: EventQuery) -> bool:
    """True if the event passes the query's filters (``after`` included; not ``limit``)."""
    return (
        event.seq > query.after
        and (query.job_id is None or event.job_id == query.job_id)
        and (query.task is None or event.task == query.task)
        and (query.queue is None or event.queue == query.queue)
        and (query.kinds is None or event.kind in query.kinds)
    )


def read(
    fetch: Callable[[int, int], Sequence[LogRow]], resolve: Callable[[Collection[int]], Jobs], query: EventQuery
) -> list[Event]:
    """Up to ``query.limit`` events that match, oldest first. ``fetch(after, limit)`` returns the
    log's rows past ``after`` in seq order, at most ``limit`` of them, single rows already
    filtered; ``resolve(seqs)`` the jobs those seqs are now. A batch row can hold fewer matching
    events than one (or none), so this reads on until the limit is met or the log ends."""
    found: list[Event] = []
    after = query.after
    while len(found) < query.limit:
        rows = fetch(after, query.limit)
        bodies = [decode(row) for row in rows]
        seqs = {job_seq for body in bodies if body is not None for job_seq in job_seqs(body)}
        jobs = resolve(seqs) if seqs else {}
        for row, body in zip(rows, bodies, strict=True):
            for event in events_of(row, body, jobs):
                if matches(event, query):
                    found.append(event)
                    if len(found) == query.limit:
                        return found
        if len(rows) < query.limit:
            break
        after = rows[-1][0]
    return found


def history(rows: Iterable[LogRow], jobs: Jobs, query: EventQuery) -> list[Event]:
    """A job's events from its rows of the log in seq order (its own rows and the batch rows that
    name it): read out, filtered by ``query``, at most ``query.limit``."""
    found = [event for row in rows for event in events_of(row, decode(row), jobs) if matches(event, query)]
    return found[: query.limit]


def marked_rows(rows_from: Callable[[int], Iterable[LogRow]], event_marks: str, job_seq: int) -> list[LogRow]:
    """A job's batch rows: from each of its marks, the first batch row on that names it
    (``rows_from(mark)``: the batch rows from a mark on, in order, within SPAN)."""
    found: dict[int, LogRow] = {}
    for mark in sorted({int(text) for text in event_marks.split()}):
        for row in rows_from(mark):
            body = decode(row)
            if body is not None and holds(body, job_seq):
                found[row[0]] = row
                break
    return [found[seq] for seq in sorted(found)]


def named(body: dict[str, Any], job_seq: int, job_id: str, kind: str, worker: str | None) -> bool:
    """Rewrite, in place, a batch row body's entries of this job so that they name it by its id
    (its row is about to go); ``kind``/``worker`` are the row's. True if any entry changed."""
    changed = False
    for i, entry in enumerate(body["e"]):
        if isinstance(entry, int):
            entry = [entry, body["a"], 0, None, None, None]
        if not isinstance(entry, list) or entry[0] != job_seq:
            continue
        _, attempt, pair, own_kind, own_worker, data = entry
        task, queue = body["t"][pair] if isinstance(pair, int) else pair
        body["e"][i] = {"j": job_id, "t": task, "q": queue, "a": attempt, "k": own_kind or kind,
                        "w": worker if own_worker is None else own_worker, "d": data}  # fmt: skip
        changed = True
    return changed
