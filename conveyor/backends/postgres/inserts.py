"""How the PostgreSQL store inserts new jobs, each with its ``enqueued`` event: a batch without keys
by two COPYs (the jobs, then their events as batch rows, with ids reserved first), anything else
row by row in one pipeline, where a key held by an unfinished job yields that job. Used by enqueue
(store.py) and by a schedule's fire (schedules.py), in their transactions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import errors as pg_errors
from psycopg.pq import PipelineStatus
from psycopg.rows import tuple_row

from ...errors import DuplicateJob
from ...events import EventKind, enqueued_data
from ...job import Job, NewJob
from .. import event_batches
from ..columns import insert_params, insert_row, new_job_record, row_to_job
from .schema import queries

_DUPLICATE_ID = re.compile(r"Key \(id\)=\((.*)\) already exists")


def insert(conn: Any, jobs: Sequence[NewJob], now: float) -> list[Job]:
    """The inserts, each job with its ``enqueued`` event: two COPYs for a batch without keys
    (the jobs, then their events; inside the caller's transaction, all rows or none), else
    pipelined row by row, where a key held by an unfinished job yields that job instead (and
    writes no event)."""
    q = queries()
    if _copied(jobs) and conn.pgconn.pipeline_status == PipelineStatus.OFF:  # no COPY in a caller's pipeline
        try:
            with conn.cursor() as cur:
                seqs, row_ids = _reserve(cur, len(jobs))
                with cur.copy(q["insert_copy"]) as copy:
                    write = copy.write_row
                    for i, new in enumerate(jobs):
                        # event_rows as array text: psycopg's list dumper cost the enqueue a tenth
                        write((seqs[i], f"{{{row_ids[i // event_batches.PER_ROW]}}}", *insert_row(new, now)))
                with cur.copy(q["insert_copy_events"]) as copy:
                    write = copy.write_row
                    items = event_batches.chunks(event_batches.enqueued_items(jobs, seqs, now))
                    for row_id, chunk in zip(row_ids, items, strict=True):
                        write((row_id, now, *event_batches.encode(chunk), len(chunk)))
                cur.execute(q["wake_event_readers"])
        except pg_errors.UniqueViolation as exc:
            raise _duplicate(exc, jobs) from exc
        return [new_job_record(new, now) for new in jobs]
    kind = EventKind.ENQUEUED.value
    params = [
        insert_params(new, now) | {"event_kind": kind, "event_data": enqueued_data(new.scheduled_at, now), "wake": True}
        for new in jobs
    ]
    with conn.cursor(row_factory=tuple_row) as cur:
        try:
            if len(params) == 1:  # a plain round trip: no pipeline to set up and sync
                inserted = [cur.execute(q["insert"], params[0]).fetchone() is not None]
            else:
                cur.executemany(q["insert"], params, returning=True)
                inserted = [cur.fetchone() is not None]
                while cur.nextset():
                    inserted.append(cur.fetchone() is not None)
        except pg_errors.UniqueViolation as exc:
            raise _duplicate(exc, jobs) from exc
        stored: list[Job] = []
        for new, param, was_inserted in zip(jobs, params, inserted, strict=True):
            if was_inserted:
                stored.append(new_job_record(new, now))
                continue
            # The key is held: return the holder. If it finished in between, insert after all.
            while True:
                row = cur.execute(q["find_unfinished_by_key"], {"key": new.key}).fetchone()
                if row is not None:
                    stored.append(row_to_job(row))
                    break
                try:
                    if cur.execute(q["insert"], param).fetchone() is not None:
                        stored.append(new_job_record(new, now))
                        break
                except pg_errors.UniqueViolation as exc:
                    raise _duplicate(exc, jobs) from exc
    return stored


def _duplicate(exc: pg_errors.UniqueViolation, jobs: Sequence[NewJob]) -> DuplicateJob:
    """The DuplicateJob of an id already stored (the first job's, if the server did not say which)."""
    match = _DUPLICATE_ID.search(exc.diag.message_detail or "")
    return DuplicateJob(match[1] if match else jobs[0].id)


def _reserve(cur: Any, jobs: int) -> tuple[list[int], list[int]]:
    """The seqs of a COPY'd batch's ``jobs`` jobs and the ids of its batch rows of events (one per
    event_batches.PER_ROW jobs), in order (reserve_ids)."""
    rows = -(-jobs // event_batches.PER_ROW)
    seqs, row_ids = cur.execute(queries()["reserve_ids"], {"jobs": jobs, "rows": rows}).fetchone()
    return sorted(seqs), sorted(row_ids)


def _copied(jobs: Sequence[NewJob]) -> bool:
    """Whether ``insert`` writes ``jobs`` by one COPY: a batch without keys (a key needs insert's
    ON CONFLICT)."""
    return len(jobs) > 1 and all(new.key is None for new in jobs)
