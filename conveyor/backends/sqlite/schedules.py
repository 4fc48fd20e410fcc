"""The SQLite store's schedules (base.Schedules): the schedules themselves, and ``fire``, which writes
the ticks conveyor.scheduling decided on. A part of ``SQLiteBackend`` (mixed into it); every statement
is in queries.sql, each change's events are written in its transaction.

A tick fires once however many schedulers run: ``fire`` moves ``next_at`` by compare-and-set and
records each tick under its unique (schedule, tick_at), with its job, in one producer transaction
(synced, as an enqueue: an acknowledged tick survives a power cut). SQLite's writers are serial, so
the compare-and-set and everything after it happen under one write lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ... import codec
from ...events import EventKind
from ...job import Job, NewJob
from ...schedule_types import ScheduleRecord, Tick, TickOutcome, TickRecord
from ..rows import (
    TICK_HISTORY,
    EventRow,
    row_to_schedule,
    row_to_tick,
    schedule_params,
    schedule_row,
    tick_job,
    tick_row,
    unique_ticks,
)
from . import event_writes


class SQLiteSchedules:
    """Schedules of the SQLite store (``SQLiteBackend`` supplies the statements, the transactions and
    ``_insert``, enqueue's own insert)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

        def _insert(self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[Job]: ...

    def put_schedule(self, schedule: ScheduleRecord, now: float) -> bool:
        params = schedule_params(schedule, now)
        with self._write("store a schedule", producer=True) as conn:
            new = conn.execute(self._sql["get_schedule"], {"name": schedule.name}).fetchone() is None
            conn.execute(self._sql["put_schedule"], params)
            self._log(conn, [schedule_row(EventKind.SCHEDULE_PUT, schedule.name, now, {"new": new})])
        return new

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._read("read a schedule") as conn:
            row = conn.execute(self._sql["get_schedule"], {"name": name}).fetchone()
        return None if row is None else row_to_schedule(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._read("list schedules") as conn:
            return [row_to_schedule(row) for row in conn.execute(self._sql["list_schedules"])]

    def remove_schedule(self, name: str, now: float) -> bool:
        with self._write("remove a schedule", producer=True) as conn:
            if conn.execute(self._sql["remove_schedule"], {"name": name}).rowcount != 1:
                return False
            conn.execute(self._sql["delete_schedule_ticks"], {"names": json.dumps([name])})
            self._log(conn, [schedule_row(EventKind.SCHEDULE_REMOVED, name, now)])
        return True

    def retire_schedules(self, keep: Sequence[str], now: float) -> list[str]:
        with self._write("retire schedules", producer=True) as conn:
            rows = conn.execute(self._sql["retire_schedules"], {"keep": json.dumps(list(keep))}).fetchall()
            retired = sorted(row[0] for row in rows)
            if retired:
                conn.execute(self._sql["delete_schedule_ticks"], {"names": json.dumps(retired)})
                events = [schedule_row(EventKind.SCHEDULE_REMOVED, name, now, {"retired": True}) for name in retired]
                self._log(conn, events)
        return retired

    def pause_schedule(self, name: str, paused: bool, next_at: float | None, now: float) -> bool:
        params = {"name": name, "paused": bool(paused), "next_at": next_at, "now": now}
        kind = EventKind.SCHEDULE_PAUSED if paused else EventKind.SCHEDULE_RESUMED
        with self._write("pause a schedule" if paused else "resume a schedule", producer=True) as conn:
            if conn.execute(self._sql["pause_schedule"], params).rowcount != 1:
                return False
            self._log(conn, [schedule_row(kind, name, now)])
        return True

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        if limit <= 0:
            return []
        with self._read("find due schedules") as conn:
            rows = conn.execute(self._sql["due_schedules"], {"now": now, "limit": limit})
            return [row_to_schedule(row) for row in rows]

    def fire(self, name: str, expected_next_at: float, next_at: float, ticks: Sequence[Tick], now: float) -> bool:
        """One producer transaction: the compare-and-set (nothing else if it fails), then each tick's
        record; for each tick recorded (one already recorded is skipped), its job enqueued as
        ``enqueue`` would (an ENQUEUED tick) and its ``schedule_tick`` event; the last job enqueued;
        the schedule's oldest tick records past ``TICK_HISTORY`` deleted."""
        sql = self._sql
        cas = {"name": name, "expected": float(expected_next_at), "next_at": float(next_at)}
        with self._write("fire a schedule", producer=True) as conn:
            if conn.execute(sql["advance_schedule"], cas).rowcount != 1:
                return False
            events: list[EventRow] = []
            last: tuple[float, str] | None = None
            for tick in unique_ticks(ticks):
                job = tick_job(name, tick)
                params = {
                    "name": name, "tick_at": float(tick.tick_at), "outcome": TickOutcome(tick.outcome).value,
                    "job_id": None if job is None else job.id, "now": now, "data": codec.dumps(tick.data),
                }  # fmt: skip
                if conn.execute(sql["record_ticks"], params).rowcount != 1:
                    continue  # recorded before (by a scheduler that fired it): its job exists already
                job_id = None if job is None else self._enqueue_tick(conn, name, tick, job, now)
                if job_id is not None and (last is None or tick.tick_at >= last[0]):
                    last = (float(tick.tick_at), job_id)
                events.append(tick_row(name, tick, job_id, now))
            if last is not None:
                conn.execute(sql["fired"], {"name": name, "last_tick_at": last[0], "last_job_id": last[1]})
            if events:
                conn.execute(sql["trim_ticks"], {"name": name, "keep": TICK_HISTORY})
                self._log(conn, events)
        return True

    def _enqueue_tick(self, conn: sqlite3.Connection, name: str, tick: Tick, job: NewJob, now: float) -> str:
        """Enqueue a recorded tick's job in the open transaction (with its ``enqueued`` event); the id
        of the job that holds its key instead, if one does (its tick record then names that one)."""
        stored = self._insert(conn, [job], now)[0]
        if stored.id != job.id:
            conn.execute(self._sql["set_tick_job"], {"name": name, "tick_at": float(tick.tick_at), "job_id": stored.id})
        return stored.id

    def ticks(self, name: str, limit: int) -> list[TickRecord]:
        if limit <= 0:
            return []
        with self._read("read a schedule's ticks") as conn:
            rows = conn.execute(self._sql["schedule_ticks"], {"name": name, "limit": limit})
            return [row_to_tick(row) for row in rows]

    def _log(self, conn: sqlite3.Connection, rows: Sequence[EventRow]) -> None:
        """Append events of no job (schedules')."""
        event_writes.append(conn, self._sql["insert_event"], [event_writes.no_job(row) for row in rows])
