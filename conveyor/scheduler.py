"""Firing schedules' ticks (``Scheduler``) and running the in-process ``@app.repeat`` functions
(``Repeat``): what a worker runs on helper threads for schedules, and ``conveyor scheduler`` alone.

Every worker runs a Scheduler, not only the leader: a tick is fired once however many run,
because ``Schedules.fire`` moves the schedule's ``next_at`` by compare-and-set and records each
tick under a unique (schedule, tick_at), with its job, in one transaction. A scheduler that
loses that race moves on. What a tick does (on time, missed, overlapping) is decided by
``conveyor.scheduling.plan``; here the store is read and written, and outages are waited out.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import StoreUnavailable
from .job import NewJob
from .refs import Scope
from .schedule_types import Overlap, ScheduleRecord, TickOutcome

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("conveyor.scheduler")

PASS_EVERY = 0.5  #: seconds between passes: a tick is fired within about this of falling due
BATCH = 500  #: schedules read per pass; a full batch is followed by another pass at once
BROKEN_PAUSE = 30.0  #: seconds a schedule whose tick could not be built is left alone (its error logged)
MAX_PAUSE = 5.0  #: longest pause between passes while the store is unreachable
NO_SCOPE = Scope({}, [], "")  #: a schedule's target holds no references (checked when it is declared)


class Scheduler:
    """Fires the due ticks of every schedule in the store, every ``every`` seconds, until stopped.

    ``sync``: first put the app's code schedules into the store (``App.sync_schedules``), as a
    worker does at start. ``run`` is the helper thread's loop; ``tick(now)`` is one pass."""

    def __init__(self, app: App, *, every: float = PASS_EVERY, limit: int = BATCH, sync: bool = True) -> None:
        self.app = app
        self.every = every
        self.limit = limit
        self.sync = sync
        self.fired = 0  #: ticks fired by this scheduler (compare-and-sets won)
        self.lost = 0  #: ticks another scheduler fired first
        self._broken: dict[str, float] = {}  # schedule -> store time before which it is not tried again

    def __repr__(self) -> str:
        return f"<Scheduler fired={self.fired} lost={self.lost}>"

    def run(self, stopping: threading.Event) -> None:
        """Sync, then pass every ``every`` seconds until ``stopping`` is set. Never ends on an
        error: an unreachable store is retried with back-off, anything else is logged and retried."""
        synced = not self.sync
        failures = 0
        while not stopping.is_set():
            more = False
            try:
                if not synced:
                    self._sync()
                    synced = True
                more = self.tick()
                if failures:
                    log.info("the scheduler reaches the store again")
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("the scheduler cannot reach the store (%d tries); trying again: %s", failures, exc)
            except Exception:
                failures += 1
                log.exception("a scheduler pass failed; trying again")
            pause = 0.0 if more else self.every * 2 ** min(failures, 10)
            stopping.wait(min(pause, max(self.every, MAX_PAUSE)))

    def _sync(self) -> None:
        try:
            self.app.sync_schedules()
        except StoreUnavailable:
            raise
        except Exception:  # a bug must not stop the stored schedules from firing
            log.exception("syncing the app's code schedules failed; firing the stored ones as they are")

    def tick(self, now: float | None = None) -> bool:
        """One pass: fire every due schedule (each at the time read just before it, or at ``now``
        if given: tests). Returns True when a full batch was due (more may be: pass again now).
        StoreUnavailable propagates; any other error of one schedule is logged and that schedule
        left alone for BROKEN_PAUSE seconds."""
        start = self.app.clock() if now is None else now
        due = self.app.backend.due_schedules(start, self.limit)
        tried = 0
        for record in due:
            at = self.app.clock() if now is None else now
            if self._broken.get(record.name, 0.0) > at:
                continue
            tried += 1
            try:
                self.fire(record, at)
            except StoreUnavailable:
                raise
            except Exception:
                log.exception("schedule %r: its tick at %s could not be fired; trying it again in %.0f s",
                              record.name, _iso(record.next_at), BROKEN_PAUSE)  # fmt: skip
                self._broken[record.name] = at + BROKEN_PAUSE
        return tried >= self.limit

    def fire(self, record: ScheduleRecord, now: float) -> bool:
        """Plan the due ticks of ``record`` and fire them; False if another scheduler did first."""
        from .schedule import spec_of
        from .scheduling import plan

        backend = self.app.backend
        unfinished = False
        if record.overlap is Overlap.SKIP and record.last_job_id is not None:
            previous = backend.get(record.last_job_id)
            unfinished = previous is not None and not previous.status.finished
        planned = plan(record, spec_of(record), now, unfinished, functools.partial(tick_job, record, now))
        won = backend.fire(record.name, record.next_at, planned.next_at, planned.ticks, now)
        if not won:
            self.lost += 1
            return False
        self.fired += 1
        for tick in planned.ticks:
            if tick.outcome is TickOutcome.ENQUEUED and tick.job is not None:
                log.debug("schedule %r: tick %s enqueued job %s", record.name, _iso(tick.tick_at), tick.job.id)
            else:
                log.info("schedule %r: tick %s %s%s", record.name, _iso(tick.tick_at), tick.outcome.value,
                         f" {tick.data}" if tick.data else "")  # fmt: skip
        return True


def tick_job(record: ScheduleRecord, now: float, tick_at: float) -> NewJob:
    """The job of one tick of ``record``: its target made (``pipeline.then_job``), due at the
    tick (``scheduling.plan`` adds the jitter), marked with the schedule and the tick."""
    from .pipeline import then_job

    job = then_job(record.target, NO_SCOPE, now, None)
    return msgspec.structs.replace(job, scheduled_by=record.name, tick_at=tick_at, scheduled_at=tick_at)


class Repeat:
    """A function an app runs every ``seconds`` in each of its worker processes (``@app.repeat``).

    ``run`` is its helper thread's loop: calls on a fixed grid from the worker's start (a call
    that overruns skips the slots it covered: no burst); errors are logged, never raised."""

    def __init__(self, name: str, fn: Callable[[], Any], seconds: float, *, at_start: bool = False) -> None:
        self.name = name
        self.fn = fn
        self.seconds = seconds
        self.at_start = at_start
        self.runs = 0  #: calls that returned
        self.errors = 0  #: calls that raised

    def __repr__(self) -> str:
        return f"<Repeat {self.name} every {self.seconds} s>"

    def run(self, stopping: threading.Event) -> None:
        """Call the function on its grid until ``stopping`` is set."""
        next_at = time.monotonic() + (0.0 if self.at_start else self.seconds)
        while not stopping.wait(max(0.0, next_at - time.monotonic())):
            self.call()
            late = time.monotonic() - next_at
            next_at += self.seconds * max(1, math.floor(late / self.seconds) + 1)

    def call(self) -> bool:
        """Call the function once (an ``async def`` on an event loop of its own); True if it returned."""
        try:
            result = self.fn()
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except Exception:  # SystemExit and KeyboardInterrupt are not swallowed
            self.errors += 1
            log.exception("repeat %s failed; it runs again in %s s", self.name, self.seconds)
            return False
        self.runs += 1
        return True


def _iso(ts: float) -> str:
    """A tick's time for a log line, in UTC: '2026-03-29T01:00:00Z' ('...00.500Z' with a fraction)."""
    fraction = f".{round(ts * 1000) % 1000:03d}" if ts % 1 else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + fraction + "Z"
