"""Leader duties: the work one worker does for the whole store, while it holds the lock "leader".

Every worker runs a ``Leader`` on a thread of its own, off the heartbeat, so slow maintenance
never delays lease renewal; only the lock's holder does the duties. One duty per module, each on
its own timer: ``rescue`` (runs nobody is finishing), ``waits`` (timers and message time-outs
that ended), ``prune`` (expired results, old events and notifications), ``workers`` (the
registry: silent workers marked dead, old rows pruned). A worker started with
``leader=False`` (``--no-leader``) runs no Leader at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StoreUnavailable
from ..worker.options import renew_interval
from .prune import prune
from .rescue import rescue
from .waits import release_waits
from .workers import workers

if TYPE_CHECKING:
    from ..app import App

__all__ = ["LOCK", "Duty", "Leader"]

log = logging.getLogger("conveyor.leader")

LOCK = "leader"  #: the named lock whose holder does the duties
PRUNE_EVERY = 60.0  #: seconds between prunes
WORKERS_EVERY = 2.0  #: seconds between registry passes (dead workers are found within stale_after + this)
MIN_PAUSE = 0.05  #: shortest pause between two passes of the leader
WAITS_EVERY = 0.5  #: seconds between releases of ended waits: a Timer resumes within about this of its end


class Duty:
    """One leader duty and its timer: ``run(app, now)`` every ``every`` seconds. A duty that
    ``waits_after_outage`` skips the first lease after the store comes back."""

    def __init__(
        self, name: str, every: float, run: Callable[[App, float], object], *, waits_after_outage: bool = False
    ) -> None:
        self.name = name
        self.every = every
        self.run = run
        self.waits_after_outage = waits_after_outage
        self.next_at = 0.0  #: store time at which it is next due

    def __repr__(self) -> str:
        return f"<Duty {self.name} every {self.every} s>"


class Leader:
    """Takes or keeps the lock "leader" for ``owner`` and, while it holds it, runs each due duty.

    ``run`` loops until its ``stopping`` event is set; ``tick(now)`` is one pass (tests call it
    with their own clock). A store outage is handled here: the lock is given up for lost and,
    once the store is back, rescue waits one lease (see ``store_unreachable``). So does a stall:
    a pass that woke late (this process was paused, or a task held its GIL) or waited long for
    the store's lock (another process held it), see ``stalled``."""

    def __init__(self, app: App, owner: str) -> None:
        self.app = app
        self.owner = owner
        self.lease = app.lease
        self.every = renew_interval(self.lease)  #: seconds between passes: well under the lock's ttl
        self.duties = [
            Duty("rescue", self.every, rescue, waits_after_outage=True),
            Duty("waits", WAITS_EVERY, release_waits),
            Duty("prune", PRUNE_EVERY, prune),
            Duty("workers", WORKERS_EVERY, workers, waits_after_outage=True),  # cut-off workers beat first
        ]
        self.is_leader = False
        self._outage = False  # the store was unreachable since the last pass
        self._rescue_from = 0.0  # no rescue before this time (one lease after an outage)

    def __repr__(self) -> str:
        return f"<Leader {self.owner} {'leading' if self.is_leader else 'following'}>"

    def run(self, stopping: threading.Event) -> None:
        """Pass every ``every`` seconds (the leader: as soon as a duty is due) until ``stopping``
        is set, then give the lock up so another worker takes over at once. An unexpected error
        propagates (the worker stops on it)."""
        try:
            while not stopping.is_set():
                now = self.app.clock()
                self.tick(now)
                pause = self.pause(now)
                due = time.monotonic() + pause
                stopping.wait(pause)
                late = time.monotonic() - due
                if late > self.every:
                    self.stalled(late, "this process was held up (paused, or a task held the GIL)")
        finally:
            self.resign()

    def pause(self, now: float) -> float:
        """Seconds until the next pass: ``every`` for a follower; for the leader, until its next
        duty is due (the waits duty every WAITS_EVERY), never longer than ``every``."""
        if not self.is_leader:
            return self.every
        soonest = min(duty.next_at for duty in self.duties) - now
        return max(MIN_PAUSE, min(self.every, soonest))

    def tick(self, now: float) -> None:
        """One pass: take or keep the lock; if held, run each duty that is due."""
        try:
            self._tick(now)
        except StoreUnavailable as exc:
            self.store_unreachable()
            if self.is_leader:
                log.warning("%s gave up the leader lock: the store is unreachable: %s", self.owner, exc)
                self.is_leader = False

    def store_unreachable(self) -> None:
        """Note that the store could not be reached. Once it is back, rescue waits one lease:
        workers cut off by the same outage renew their leases first, so their jobs, which ran
        on meanwhile, are not requeued and run twice."""
        self._outage = True

    def stalled(self, seconds: float, why: str) -> None:
        """Note that this leader saw nothing for ``seconds``, longer than a renewal interval. The
        workers' renewals may have been held up as long (by the same paused process, or the same
        lock on the store), so rescue waits one lease as after an outage: a lease that ran out
        meanwhile is no sign that its worker died."""
        log.info("%s saw nothing for %.1f s: %s; rescue waits one lease", self.owner, seconds, why)
        self._outage = True

    def resign(self) -> None:
        """Give the lock up if held (a stopping worker), so another worker leads without waiting."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            self.app.backend.release_lock(LOCK, self.owner)
            log.info("%s released the leader lock", self.owner)
        except StoreUnavailable as exc:
            log.info("%s could not release the leader lock (it expires by itself): %s", self.owner, exc)

    def _tick(self, now: float) -> None:
        began = time.monotonic()
        leader = self.app.backend.acquire_lock(LOCK, self.owner, ttl=self.lease, now=now)
        waited = time.monotonic() - began
        if waited > self.every:
            self.stalled(waited, "the store's write lock was held (renewals waited as long)")
            now += waited  # the lease to wait starts once the lock is free
        if self._outage:
            self._outage = False
            self._rescue_from = now + self.lease
        if leader != self.is_leader:
            log.info("%s %s the leader lock", self.owner, "took" if leader else "lost")
            self.is_leader = leader
        if not leader:
            return
        for duty in self.duties:
            if now < duty.next_at or (duty.waits_after_outage and now < self._rescue_from):
                continue
            duty.next_at = now + duty.every
            duty.run(self.app, now)
