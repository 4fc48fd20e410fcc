"""Leader duties: rescue of expired leases, abort of overdue jobs, pruning of expired results.

Every worker runs ``Maintenance.tick``; only the holder of the store's leader
lock does the work, so there is no separate manager process to deploy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .backends.base import Backend
from .errors import StoreUnavailable

log = logging.getLogger("conveyor.maintenance")


class Maintenance:
    """One worker's share of the leader duties, called from its monitor thread."""

    def __init__(
        self,
        backend: Backend,
        worker_id: str,
        clock: Callable[[], float],
        lease: float,
        prune_interval: float = 60.0,
    ) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.clock = clock
        self.lease = lease
        self.prune_interval = prune_interval
        self.is_leader = False
        self._next_prune = 0.0
        self._outage = False  # the store was unreachable since the last tick
        self._rescue_from = 0.0  # no rescue before this time (one lease after an outage)

    def store_unreachable(self) -> None:
        """Note that the store could not be reached. Once it is back, rescue waits one lease:
        workers cut off by the same outage renew their leases first, so their jobs, which ran
        on meanwhile, are not requeued and run twice."""
        self._outage = True

    def tick(self) -> None:
        """Take or keep the leader lock; if held, rescue, abort and (now and then) prune."""
        now = self.clock()
        try:
            leader = self.backend.acquire_leader(self.worker_id, self.lease, now)
        except StoreUnavailable:
            self.store_unreachable()
            if self.is_leader:
                log.info("worker %s lost the leader lock: the store is unreachable", self.worker_id)
                self.is_leader = False
            raise
        if self._outage:
            self._outage = False
            self._rescue_from = now + self.lease
        if leader != self.is_leader:
            log.info("worker %s %s the leader lock", self.worker_id, "took" if leader else "lost")
            self.is_leader = leader
        if not leader or now < self._rescue_from:
            return
        # A worker aborts its own overdue jobs at their timeout; the leader steps in a lease later.
        rescued = self.backend.rescue(now, abort_margin=self.lease)
        if rescued.requeued:
            log.warning("requeued %d job(s) whose worker stopped renewing its lease: %s",
                        len(rescued.requeued), ", ".join(rescued.requeued[:10]))  # fmt: skip
        if rescued.aborted:
            log.warning("aborted %d overdue job(s): %s", len(rescued.aborted), ", ".join(rescued.aborted[:10]))
        if now >= self._next_prune:
            pruned = self.backend.prune(now)
            if pruned:
                log.info("pruned %d finished job(s) past their result TTL", pruned)
            self._next_prune = now + self.prune_interval
