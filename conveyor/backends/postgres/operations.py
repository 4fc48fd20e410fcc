"""The PostgreSQL store's operations, beside the jobs: switches (paused queues, disabled tasks,
everything off), the worker registry, and what a health check reads (oldest due job per queue,
a lock's holder, the schema version). Each change writes its event in the same statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ...events import EventKind, encode_data
from ...job import Priority
from ...operations import Switches, SwitchScope, WorkerInfo, WorkerState
from .. import sql_files
from ..rows import row_to_worker, switch_row, switches_from, worker_params, worker_started_row
from .connections import Connection

_NO_DATA = encode_data(None)


def _event(kind: str, data: str) -> dict[str, Any]:
    """The event parameters of a statement that writes one event of each row it changes (a
    control call: it always wakes readers)."""
    return {"event_kind": kind, "event_data": data, "wake": True}


class OperationsMixin:
    """The Control and Registry concerns of PostgresBackend (base.Control, base.Registry), and
    the reads ``health`` makes. Runs on the store's main pool (``_conn``): these are control
    calls, committed durably."""

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    # base.Control ------------------------------------------------------------------------------
    def set_switch(self, scope: SwitchScope, name: str, off: bool, now: float) -> bool:
        """Add (off) or remove (on) the switch's row, with its event, only if that changes it.
        Turning one back on wakes the idle workers of the queues it concerns."""
        scope = SwitchScope(scope)
        name = "" if scope is SwitchScope.ALL else name
        _, kind, _, task, queue, _, _, data = switch_row(scope, name, off, now)
        params = {"scope": scope.value, "name": name, "now": now, "queue": queue, "task": task} | _event(kind, data)
        q = sql_files.queries("postgres")
        with self._conn("set switch") as conn:
            row = conn.execute(q["switch_off" if off else "switch_on"], params).fetchone()
        return row is not None and bool(row[0])  # switch_off: events written; switch_on: a row removed

    def switches(self) -> Switches:
        with self._conn("read switches") as conn:
            rows = conn.execute(sql_files.queries("postgres")["switches"]).fetchall()
        return switches_from(rows)

    # base.Registry -----------------------------------------------------------------------------
    def register_worker(self, info: WorkerInfo, now: float) -> None:
        event = worker_started_row(info, now)
        params = worker_params(info, now) | _event(event[1], event[7])
        with self._conn("register worker") as conn:
            conn.execute(sql_files.queries("postgres")["register_worker"], params)

    def beat_worker(self, worker_id: str, in_flight: int, state: WorkerState, leader: bool, now: float) -> bool | None:
        params = {"id": worker_id, "in_flight": in_flight, "state": WorkerState(state).value, "leader": leader}
        with self._conn("worker heartbeat") as conn:
            row = conn.execute(sql_files.queries("postgres")["beat_worker"], params | {"now": now}).fetchone()
        return None if row is None else bool(row[0])

    def end_worker(self, worker_id: str, now: float) -> None:
        params = {"id": worker_id, "now": now} | _event(EventKind.WORKER_STOPPED.value, _NO_DATA)
        with self._conn("end worker") as conn:
            conn.execute(sql_files.queries("postgres")["end_worker"], params)

    def list_workers(self) -> list[WorkerInfo]:
        with self._conn("list workers") as conn:
            rows = conn.execute(sql_files.queries("postgres")["list_workers"]).fetchall()
        return [row_to_worker(row) for row in rows]

    def request_worker_stop(self, worker_ids: Sequence[str], now: float) -> list[str]:
        if not worker_ids:
            return []
        params = {"ids": list(worker_ids), "now": now} | _event(EventKind.STOP_REQUESTED.value, _NO_DATA)
        with self._conn("request worker stop") as conn:
            asked = {row[0] for row in conn.execute(sql_files.queries("postgres")["request_worker_stop"], params)}
        return [wid for wid in dict.fromkeys(worker_ids) if wid in asked]

    def mark_dead_workers(self, seen_before: float, now: float) -> list[str]:
        params = {"seen_before": seen_before, "now": now} | _event(EventKind.WORKER_DEAD.value, _NO_DATA)
        with self._conn("mark dead workers") as conn:
            return sorted(row[0] for row in conn.execute(sql_files.queries("postgres")["mark_dead_workers"], params))

    def prune_workers(self, before: float) -> int:
        with self._conn("prune workers") as conn:
            return conn.execute(sql_files.queries("postgres")["prune_workers"], {"before": before}).rowcount

    # what health reads -------------------------------------------------------------------------
    def oldest_due(self, now: float) -> dict[str, float]:
        params = {"now": now, "priorities": [int(p) for p in Priority]}
        with self._conn("oldest due job") as conn:
            rows = conn.execute(sql_files.queries("postgres")["oldest_due"], params).fetchall()
        return {queue: float(at) for queue, at in rows}

    def lock_owner(self, name: str, now: float) -> str | None:
        with self._conn("lock owner") as conn:
            row = conn.execute(sql_files.queries("postgres")["lock_owner"], {"name": name, "now": now}).fetchone()
        return None if row is None else str(row[0])
