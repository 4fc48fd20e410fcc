"""The SQLite store's event log, switches and worker registry: a part of ``SQLiteBackend`` (mixed
into it), beside the jobs in store.py. Every statement is in queries.sql; each change appends its
event (rows.py builds it) in its own transaction.

Following the log: SQLite's writers are serial, so ``seq`` order is commit order and a reader
never misses an event that commits later with a lower number. ``wait_for_events`` watches
``PRAGMA data_version`` (it changes when another connection commits) and reads the last ``seq``
only then: a cheap poll, no server to notify.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ...events import Event, EventKind, EventQuery
from ...operations import Switches, SwitchScope, WorkerInfo, WorkerState
from .. import event_batches
from ..rows import (
    EventRow,
    event_params,
    row_to_worker,
    switch_row,
    switches_from,
    worker_params,
    worker_row,
    worker_started_row,
)
from . import event_writes

_EVENT_POLL = 0.005  #: seconds between data_version checks while waiting for events


class SQLiteOperations:
    """EventLog, Control and Registry of the SQLite store (``SQLiteBackend`` supplies the
    statements and the read and write transactions)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    # event log ----------------------------------------------------------------------------------------
    def events(self, query: EventQuery) -> list[Event]:
        params = event_params(query)
        if params["kinds"] is not None:
            params["kinds"] = json.dumps(params["kinds"])
        with self._read("read events") as conn:

            def resolve(seqs: Collection[int]) -> event_batches.Jobs:
                rows = conn.execute(self._sql["event_jobs"], {"seqs": json.dumps(list(seqs))})
                return {seq: (job_id, event_batches.first_mark(marks)) for seq, job_id, marks in rows}

            if query.job_id is not None:  # its history while it exists: no walk of the log
                row = conn.execute(self._sql["job_seq"], {"id": query.job_id}).fetchone()
                if row is not None:
                    return self._job_events(conn, params, row[0], row[1], query)

            def fetch(after: int, limit: int) -> list[sqlite3.Row]:
                return conn.execute(self._sql["events"], {**params, "after": after, "limit": limit}).fetchall()

            return event_batches.read(fetch, resolve, query)

    def _job_events(
        self, conn: sqlite3.Connection, params: dict[str, Any], job_seq: int, marks: str, query: EventQuery
    ) -> list[Event]:
        """A job's events: its single rows by its seq (conveyor_events_job), its batch rows from its
        event_marks (a row or two each), merged in seq order."""
        rows = conn.execute(self._sql["job_events"], {**params, "job_seq": job_seq, "limit": -1}).fetchall()
        rows += event_batches.marked_rows(event_writes.rows_from(conn, self._sql["event_batches_from"]), marks, job_seq)
        rows.sort(key=lambda row: int(row[0]))
        jobs = {job_seq: (query.job_id or "", event_batches.first_mark(marks))}
        return event_batches.history(rows, jobs, query)

    def _last_seq(self, conn: sqlite3.Connection) -> int:
        last: int = conn.execute(self._sql["last_event_seq"]).fetchone()[0]
        return last

    def last_event_seq(self) -> int:
        with self._read("read the last event") as conn:
            return self._last_seq(conn)

    def wait_for_events(self, after: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._read("wait for events") as conn:
            version = conn.execute(self._sql["data_version"]).fetchone()[0]
            if self._last_seq(conn) > after:
                return
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(_EVENT_POLL, left))
                now_version = conn.execute(self._sql["data_version"]).fetchone()[0]
                if now_version != version:  # something committed: is it an event past `after`?
                    version = now_version
                    if self._last_seq(conn) > after:
                        return

    def prune_events(self, before: float) -> int:
        with self._write("prune events") as conn, event_writes.keeping_head(conn, self._sql):
            return sum(row[0] for row in conn.execute(self._sql["prune_events"], {"before": before}))

    # switches -------------------------------------------------------------------------------------------
    def set_switch(self, scope: SwitchScope, name: str, off: bool, now: float) -> bool:
        scope = SwitchScope(scope)
        if scope is SwitchScope.ALL:
            name = ""
        params = {"scope": scope.value, "name": name, "now": now}
        with self._write("set a switch", producer=True) as conn:
            changed = conn.execute(self._sql["switch_off" if off else "switch_on"], params).rowcount == 1
            if changed:
                self._append(conn, [switch_row(scope, name, off, now)])
        return changed

    def switches(self) -> Switches:
        with self._read("read the switches") as conn:
            return switches_from(conn.execute(self._sql["switches"]))

    # worker registry ----------------------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo, now: float) -> None:
        with self._write("register a worker") as conn:
            conn.execute(self._sql["register_worker"], worker_params(info, now))
            self._append(conn, [worker_started_row(info, now)])

    def beat_worker(self, worker_id: str, in_flight: int, state: WorkerState, leader: bool, now: float) -> bool | None:
        state = WorkerState(state)
        params = {"id": worker_id, "in_flight": in_flight, "state": state.value, "leader": leader, "now": now}
        with self._write("refresh a worker") as conn:
            row = conn.execute(self._sql["beat_worker"], params).fetchone()
        return None if row is None else bool(row[0])

    def end_worker(self, worker_id: str, now: float) -> None:
        with self._write("end a worker") as conn:
            if conn.execute(self._sql["end_worker"], {"id": worker_id, "now": now}).rowcount:
                self._append(conn, [worker_row(EventKind.WORKER_STOPPED, worker_id, now)])

    def list_workers(self) -> list[WorkerInfo]:
        with self._read("list workers") as conn:
            return [row_to_worker(row) for row in conn.execute(self._sql["list_workers"])]

    def request_worker_stop(self, worker_ids: Sequence[str], now: float) -> list[str]:
        if not worker_ids:
            return []
        with self._write("ask workers to stop", producer=True) as conn:
            rows = conn.execute(self._sql["request_worker_stop"], {"ids": json.dumps(list(worker_ids))}).fetchall()
            asked = sorted(row[0] for row in rows)
            self._worker_events(conn, EventKind.STOP_REQUESTED, asked, now)
        return asked

    def mark_dead_workers(self, seen_before: float, now: float) -> list[str]:
        with self._write("mark dead workers") as conn:
            rows = conn.execute(self._sql["mark_dead_workers"], {"seen_before": seen_before}).fetchall()
            dead = sorted(row[0] for row in rows)
            self._worker_events(conn, EventKind.WORKER_DEAD, dead, now)
        return dead

    def prune_workers(self, before: float) -> int:
        with self._write("prune workers") as conn:
            return conn.execute(self._sql["prune_workers"], {"before": before}).rowcount

    def _worker_events(self, conn: sqlite3.Connection, kind: EventKind, worker_ids: Sequence[str], now: float) -> None:
        self._append(conn, [worker_row(kind, worker_id, now) for worker_id in worker_ids])

    def _append(self, conn: sqlite3.Connection, rows: Sequence[EventRow]) -> None:
        """Append events of no job (operations)."""
        event_writes.append(conn, self._sql["insert_event"], [event_writes.no_job(row) for row in rows])
