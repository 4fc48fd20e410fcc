"""Leader duty: keep the worker registry true. A worker whose heartbeat is older than
``operations.stale_after(lease)`` is marked dead (its jobs come back by lease expiry, through
``rescue``) and its local service instances are deleted (they died with it); rows of workers
stopped or dead for an hour are deleted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..operations import stale_after

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.leader")

KEEP_ENDED = 3600.0  #: seconds a stopped or dead worker's row stays listed


def workers(app: App, now: float) -> list[str]:
    """One pass: mark silent workers dead (and forget their local services), prune old rows; returns
    the ids marked dead."""
    backend = app.backend
    dead = backend.mark_dead_workers(now - stale_after(app.lease), now)
    for worker_id in dead:
        log.warning("worker %s: no heartbeat for %.0f s; marked dead", worker_id, stale_after(app.lease))
    if dead:
        backend.forget_local_services(dead, now)
    pruned = backend.prune_workers(now - KEEP_ENDED)
    if pruned:
        log.info("pruned %d stopped or dead worker(s) from the registry", pruned)
    return dead
