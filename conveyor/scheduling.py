"""What a due schedule fires, decided in Python: which of its due ticks enqueue a job, which are
skipped (overlap) or missed (downtime), and the schedule's next fire time. Pure: no store, no clock
(``now`` is given), no randomness but the jitter's (``rand``, injectable). The store then writes
the plan in one transaction (``Schedules.fire``), which is what makes each tick fire once.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from .job import NewJob
from .schedule import Spec
from .schedule_types import Missed, Overlap, ScheduleRecord, Tick, TickOutcome

MAX_DUE = 10_000  #: ticks walked one by one per stretch of a plan (a longer stretch is jumped over)
MAX_CATCH_UP = 100  #: Missed.ALL runs at most this many missed ticks: never an unbounded burst


class FirePlan(msgspec.Struct, frozen=True):
    """What to write: the schedule's new ``next_at`` and the tick records (with their jobs)."""

    next_at: float
    ticks: list[Tick]

    @property
    def jobs(self) -> list[NewJob]:
        """The jobs the plan enqueues, oldest tick first."""
        return [tick.job for tick in self.ticks if tick.job is not None]


@dataclass
class _Walk:
    """Ticks walked in order: how many, the first, the latest ``keep`` of them, and the latest one
    not kept. ``more``: ticks were jumped over uncounted (too many to walk), so ``count`` is a
    lower bound and ``before_kept`` may not be the very latest tick before ``kept``."""

    kept: deque[float]
    count: int = 0
    first: float | None = None
    before_kept: float | None = None
    more: bool = False


@dataclass
class _Unfired:
    """The due ticks that fire no job, summed up for one MISSED record."""

    count: int = 0
    first: float | None = None
    last: float | None = None
    more: bool = False

    def add(self, count: int, first: float | None, last: float | None, more: bool = False) -> None:
        if count <= 0 or first is None:
            return
        self.count += count
        self.first = first if self.first is None else min(self.first, first)
        end = last if last is not None else first
        self.last = end if self.last is None else max(self.last, end)
        self.more = self.more or more


def at_or_after(spec: Spec, t: float) -> float:
    """The first tick at or after ``t``."""
    return spec.next_after(math.nextafter(t, -math.inf))


def _walk(spec: Spec, start: float, end: float, keep: int) -> _Walk:
    """Walk the ticks from ``start`` (taken as a tick) through ``end`` inclusive. After MAX_DUE
    ticks in a row it jumps towards ``end`` (at least halfway, far enough to leave about 2 * keep
    ticks by the density so far), so a plan stays cheap after any outage."""
    walk = _Walk(kept=deque(maxlen=keep))
    t = start
    stretch_start, stretch = t, 0
    while t <= end:
        if stretch >= MAX_DUE:
            walk.more = True
            rate = stretch / max(t - stretch_start, 1e-9)  # ticks per second so far
            target = max(end - 2 * max(keep, 1) / rate, t + (end - t) / 2)
            t = at_or_after(spec, target)
            stretch_start, stretch = t, 0
            continue
        walk.count += 1
        if walk.first is None:
            walk.first = t
        if keep == 0:
            walk.before_kept = t
        elif len(walk.kept) == keep:
            walk.before_kept = walk.kept[0]
        walk.kept.append(t)
        stretch += 1
        t = spec.next_after(t)
    return walk


def plan(
    record: ScheduleRecord,
    spec: Spec,
    now: float,
    previous_unfinished: bool,
    make_job: Callable[[float], NewJob],
    *,
    rand: Callable[[], float] = random.random,
) -> FirePlan:
    """What ``record`` fires at ``now``: ticks from ``record.next_at`` through ``now``.

    On time (the oldest due tick is at most ``record.grace`` late) every due tick fires, so a late
    scheduler pass leaves no gap. Otherwise they were missed: ticks more than ``record.catch_up``
    old are dropped, and of the rest ``record.missed`` picks the latest, the earliest, none or all
    (at most MAX_CATCH_UP, the latest). The ticks not fired make ONE MISSED record (tick_at: the
    first, data: {"count", "until"}, plus "more": True if some were jumped over uncounted).
    Overlap.SKIP records a tick SKIPPED_OVERLAP while the previous job is unfinished:
    ``previous_unfinished`` for the first, and the plan's own job for the later ones.

    ``make_job(tick_at)`` builds a tick's job; the plan sets its ``scheduled_by`` and ``tick_at``,
    and ``scheduled_at`` = tick + jitter * rand(). A paused schedule, or one not due, fires nothing
    and keeps its ``next_at``. The new ``next_at`` is the first tick strictly after ``now``."""
    first = record.next_at
    if record.paused or first > now:
        return FirePlan(next_at=first, ticks=[])
    next_at = spec.next_after(now)
    unfired = _Unfired()
    if now - first <= record.grace:
        due = _walk(spec, first, now, MAX_DUE)
        fire = list(due.kept)
        unfired.add(due.count - len(fire), due.first, due.before_kept, due.more)
    else:
        fire = _catch_up(record, spec, now, unfired)
    ticks = _fire(record, fire, previous_unfinished, make_job, rand)
    if unfired.count:
        data: dict[str, Any] = {"count": unfired.count, "until": unfired.last}
        if unfired.more:
            data["more"] = True
        assert unfired.first is not None
        ticks.append(Tick(tick_at=unfired.first, outcome=TickOutcome.MISSED, data=data))
        ticks.sort(key=lambda tick: tick.tick_at)
    return FirePlan(next_at=next_at, ticks=ticks)


def _catch_up(record: ScheduleRecord, spec: Spec, now: float, unfired: _Unfired) -> list[float]:
    """The missed ticks ``record.missed`` runs; the rest are added to ``unfired``."""
    first = record.next_at
    cutoff = now - record.catch_up  # older ticks are dropped
    start = first
    if first < cutoff:
        dropped = _walk(spec, first, math.nextafter(cutoff, -math.inf), 0)
        unfired.add(dropped.count, dropped.first, dropped.before_kept, dropped.more)
        start = at_or_after(spec, cutoff)
    policy = record.missed
    window = _walk(spec, start, now, MAX_CATCH_UP if policy is Missed.ALL else 1)
    if window.count == 0 or window.first is None:
        return []
    latest = window.kept[-1]
    if policy is Missed.LATEST:
        unfired.add(window.count - 1, window.first, window.before_kept, window.more)
        return [latest]
    if policy is Missed.EARLIEST:
        if window.count > 1:
            unfired.add(window.count - 1, spec.next_after(window.first), latest, window.more)
        return [window.first]
    if policy is Missed.SKIP:
        unfired.add(window.count, window.first, latest, window.more)
        return []
    fire = list(window.kept)  # Missed.ALL: the latest MAX_CATCH_UP
    unfired.add(window.count - len(fire), window.first, window.before_kept, window.more)
    return fire


def _fire(
    record: ScheduleRecord,
    fire: list[float],
    previous_unfinished: bool,
    make_job: Callable[[float], NewJob],
    rand: Callable[[], float],
) -> list[Tick]:
    """The ticks to fire, oldest first: each enqueues its job, or is skipped for overlap."""
    skip_overlap = record.overlap is Overlap.SKIP
    busy = previous_unfinished
    ticks: list[Tick] = []
    for tick_at in fire:
        if skip_overlap and busy:
            ticks.append(Tick(tick_at=tick_at, outcome=TickOutcome.SKIPPED_OVERLAP))
            continue
        delay = record.jitter * rand() if record.jitter > 0 else 0.0
        job = msgspec.structs.replace(
            make_job(tick_at), scheduled_at=tick_at + delay, scheduled_by=record.name, tick_at=tick_at
        )
        ticks.append(Tick(tick_at=tick_at, outcome=TickOutcome.ENQUEUED, job=job))
        busy = True
    return ticks


def plan_resume(record: ScheduleRecord, spec: Spec, now: float) -> FirePlan:
    """What resuming a paused schedule writes: no burst. Its ``next_at`` moves to the first tick
    after ``now``, and the ticks that fell due while it was paused make ONE SKIPPED_PAUSED record
    (data: {"count", "until"}, plus "more": True if some were jumped over uncounted)."""
    next_at = spec.next_after(now)
    if record.next_at > now:
        return FirePlan(next_at=record.next_at, ticks=[])
    skipped = _walk(spec, record.next_at, now, 1)
    if skipped.count == 0 or skipped.first is None:
        return FirePlan(next_at=next_at, ticks=[])
    data: dict[str, Any] = {"count": skipped.count, "until": skipped.kept[-1]}
    if skipped.more:
        data["more"] = True
    tick = Tick(tick_at=skipped.first, outcome=TickOutcome.SKIPPED_PAUSED, data=data)
    return FirePlan(next_at=next_at, ticks=[tick])
