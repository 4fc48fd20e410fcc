"""Schedules as the store holds them, and the ticks they fire: plain values shared by the
planner (``conveyor.scheduling``), the stores and the App.

A schedule names what to enqueue (``target``: a frozen task call or pipeline), when (a cron
expression in a time zone, or a fixed interval from an anchor), and its policies. Each tick is
fired once, guaranteed by the store: ``Schedules.fire`` moves ``next_at`` by compare-and-set and
records every tick under a unique (schedule, tick_at), in the same transaction as its job.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from .job import NewJob


class Missed(enum.StrEnum):
    """What a schedule does with ticks it missed (no scheduler ran when they fell due)."""

    LATEST = "latest"  #: run the latest missed tick once (the default)
    EARLIEST = "earliest"  #: run the earliest missed tick once
    SKIP = "skip"  #: run none of them
    ALL = "all"  #: run every missed tick within the catch-up window (at most MAX_CATCH_UP)


class Overlap(enum.StrEnum):
    """What a tick does while the schedule's previous job has not finished."""

    SKIP = "skip"  #: record the tick as skipped (the default)
    ALLOW = "allow"  #: enqueue anyway


class TickOutcome(enum.StrEnum):
    """What became of one tick (its audit record)."""

    ENQUEUED = "enqueued"  #: a job was enqueued for it (``job_id``)
    SKIPPED_OVERLAP = "skipped_overlap"  #: the previous job was still unfinished (Overlap.SKIP)
    SKIPPED_PAUSED = "skipped_paused"  #: the schedule was paused (one record for the pause, ``data.count``)
    MISSED = "missed"  #: fell due while no scheduler ran and the policy did not run it (``data.count``)


class Source(enum.StrEnum):
    """Where a schedule was declared."""

    CODE = "code"  #: ``@app.periodic`` / ``app.periodic(...)``: synced into the store by workers
    STORED = "stored"  #: ``app.schedule(...)`` at run time: lives in the store until removed


class ScheduleRecord(msgspec.Struct, kw_only=True):
    """One schedule as the store holds it."""

    name: str
    cron: str | None = None  #: a cron expression (5 fields, or 6 with seconds), or None for an interval
    tz: str = "UTC"  #: the cron's time zone (IANA name)
    every: float | None = None  #: an interval in seconds, or None for a cron
    anchor: float = 0.0  #: an interval's ticks are anchor + k * every (Unix seconds): they never drift
    target: dict[str, Any]  #: what a tick enqueues: {"kind": "call", ...} or {"kind": "pipeline", ...}
    missed: Missed = Missed.LATEST
    catch_up: float = 3600.0  #: seconds: ticks older than this when fired late count as missed
    grace: float = 30.0  #: seconds: a tick fired later than this after it fell due was missed
    overlap: Overlap = Overlap.SKIP
    jitter: float = 0.0  #: seconds: each job is due up to this long after its tick, at random
    paused: bool = False
    source: Source = Source.STORED
    owner: str | None = None  #: the user it belongs to (None: nobody's; seen only by users with view-others)
    next_at: float  #: the next tick not fired yet (Unix seconds); the compare-and-set's guard
    last_tick_at: float | None = None
    last_job_id: str | None = None
    paused_at: float | None = None  #: when it was paused (resuming records the ticks skipped since)
    created_at: float = 0.0
    updated_at: float = 0.0


class Tick(msgspec.Struct, kw_only=True, frozen=True):
    """One tick as ``Schedules.fire`` records it: its outcome, and the job it enqueues."""

    tick_at: float
    outcome: TickOutcome
    job: NewJob | None = None  #: for ENQUEUED: the job, enqueued in the same transaction
    data: dict[str, Any] = msgspec.field(default_factory=dict)  #: e.g. {"count": n, "until": t}


class TickRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A tick as the audit trail holds it."""

    schedule: str
    tick_at: float
    outcome: TickOutcome
    job_id: str | None = None
    at: float  #: when it was recorded
    data: dict[str, Any] = msgspec.field(default_factory=dict)
