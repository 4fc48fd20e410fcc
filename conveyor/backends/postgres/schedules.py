"""The PostgreSQL store's schedules (base.Schedules): the schedules themselves, and ``fire``, which
writes the ticks conveyor.scheduling decided on. Each change writes its event in its own statement.

A tick fires once however many schedulers run, on however many hosts: ``fire`` moves ``next_at`` by
compare-and-set, whose row lock makes a concurrent fire of the same schedule wait and then find
``next_at`` moved, and records each tick under its unique (schedule, tick_at), with its job, in the
same transaction. Everything here runs on the main pool, committed durably: an acknowledged tick
(and its job) survives a crash of the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ... import codec
from ...events import EventKind
from ...schedule_types import ScheduleRecord, Tick, TickOutcome, TickRecord
from ..rows import (
    TICK_HISTORY,
    row_to_schedule,
    row_to_tick,
    schedule_params,
    schedule_row,
    tick_job,
    tick_row,
    unique_ticks,
)
from .connections import Connection
from .inserts import insert
from .schema import queries


def _event(kind: EventKind, data: str | None = None) -> dict[str, Any]:
    """The event parameters of a schedule's statement (its data, if the statement does not build it):
    a control call, so it always wakes readers."""
    params: dict[str, Any] = {"event_kind": kind.value, "wake": True}
    if data is not None:
        params["event_data"] = data
    return params


def _data(kind: EventKind, name: str, now: float) -> str:
    """The JSON data of an event about schedule ``name`` (rows.schedule_row's)."""
    return schedule_row(kind, name, now)[7]


class SchedulesMixin:
    """The Schedules concern of PostgresBackend (base.Schedules). Uses the store's main pool
    (``_conn``) and enqueue's own insert (inserts.py)."""

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    def put_schedule(self, schedule: ScheduleRecord, now: float) -> bool:
        params = schedule_params(schedule, now) | _event(EventKind.SCHEDULE_PUT)
        with self._conn("store a schedule") as conn:
            row = conn.execute(queries()["put_schedule"], params).fetchone()
        return row is not None and bool(row[0])

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._conn("read a schedule") as conn:
            row = conn.execute(queries()["get_schedule"], {"name": name}).fetchone()
        return None if row is None else row_to_schedule(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._conn("list schedules") as conn:
            rows = conn.execute(queries()["list_schedules"]).fetchall()
        return [row_to_schedule(row) for row in rows]

    def remove_schedule(self, name: str, now: float) -> bool:
        kind = EventKind.SCHEDULE_REMOVED
        params = {"name": name, "now": now} | _event(kind, _data(kind, name, now))
        with self._conn("remove a schedule") as conn:
            row = conn.execute(queries()["remove_schedule"], params).fetchone()
        return row is not None and row[0] == 1

    def retire_schedules(self, keep: Sequence[str], now: float) -> list[str]:
        params = {"keep": list(keep), "now": now} | _event(EventKind.SCHEDULE_REMOVED)
        with self._conn("retire schedules") as conn:
            rows = conn.execute(queries()["retire_schedules"], params).fetchall()
        return sorted(row[0] for row in rows)

    def pause_schedule(self, name: str, paused: bool, next_at: float | None, now: float) -> bool:
        kind = EventKind.SCHEDULE_PAUSED if paused else EventKind.SCHEDULE_RESUMED
        params = {"name": name, "paused": bool(paused), "next_at": None if next_at is None else float(next_at),
                  "now": now} | _event(kind, _data(kind, name, now))  # fmt: skip
        with self._conn("pause a schedule" if paused else "resume a schedule") as conn:
            row = conn.execute(queries()["pause_schedule"], params).fetchone()
        return row is not None and row[0] == 1

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        if limit < 1:
            return []
        with self._conn("find due schedules") as conn:
            rows = conn.execute(queries()["due_schedules"], {"now": now, "limit": limit}).fetchall()
        return [row_to_schedule(row) for row in rows]

    def fire(self, name: str, expected_next_at: float, next_at: float, ticks: Sequence[Tick], now: float) -> bool:
        """One transaction: the compare-and-set (nothing else if it fails); the ticks' records in one
        statement, which returns those it recorded (one recorded before is skipped); the jobs of the
        ENQUEUED ones among them, as ``enqueue`` inserts them (with their ``enqueued`` events); the last
        job enqueued and a ``schedule_tick`` event per tick recorded in one statement; the schedule's
        oldest tick records past ``TICK_HISTORY`` deleted."""
        q = queries()
        cas = {"name": name, "expected": float(expected_next_at), "next_at": float(next_at)}
        todo = unique_ticks(ticks)
        jobs = {float(tick.tick_at): tick_job(name, tick) for tick in todo}
        with self._conn("fire a schedule") as conn, conn.transaction():
            if conn.execute(q["advance_schedule"], cas).rowcount != 1:
                return False
            if not todo:
                return True
            recorded = {float(row[0]) for row in conn.execute(q["record_ticks"], {
                "name": name, "now": now, "tick_ats": list(jobs),
                "outcomes": [TickOutcome(tick.outcome).value for tick in todo],
                "job_ids": [None if job is None else job.id for job in jobs.values()],
                "data": [codec.dumps(tick.data) for tick in todo],
            }).fetchall()}  # fmt: skip
            done = [tick for tick in todo if float(tick.tick_at) in recorded]
            planned = [(float(tick.tick_at), job) for tick in done if (job := jobs[float(tick.tick_at)]) is not None]
            stored = insert(conn, [job for _, job in planned], now) if planned else []
            job_ids: dict[float, str] = {}
            for (tick_at, job), got in zip(planned, stored, strict=True):
                job_ids[tick_at] = got.id
                if got.id != job.id:  # its key is held by an unfinished job, which enqueue returned instead
                    conn.execute(q["set_tick_job"], {"name": name, "tick_at": tick_at, "job_id": got.id})
            last_tick_at, last_job_id = max(job_ids.items()) if job_ids else (None, None)
            if done:
                conn.execute(q["fired"], {
                    "name": name, "now": now, "last_tick_at": last_tick_at, "last_job_id": last_job_id,
                    "event_data": [tick_row(name, tick, job_ids.get(float(tick.tick_at)), now)[7] for tick in done],
                } | _event(EventKind.SCHEDULE_TICK))  # fmt: skip
                conn.execute(q["trim_ticks"], {"name": name, "keep": TICK_HISTORY})
        return True

    def ticks(self, name: str, limit: int) -> list[TickRecord]:
        if limit < 1:
            return []
        with self._conn("read a schedule's ticks") as conn:
            rows = conn.execute(queries()["schedule_ticks"], {"name": name, "limit": limit}).fetchall()
        return [row_to_tick(row) for row in rows]
