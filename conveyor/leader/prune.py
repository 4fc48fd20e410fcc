"""Leader duty: delete finished jobs past their result TTL, now and then."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.leader")


def prune(app: App, now: float) -> int:
    """Delete the finished jobs whose expiry has passed; returns how many."""
    pruned = app.backend.prune(now)
    if pruned:
        log.info("pruned %d finished job(s) past their result TTL", pruned)
    return pruned
