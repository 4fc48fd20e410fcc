"""Leader duty: release the waits that ended. A job WAITING at a Timer stage whose time is up, at
a Message stage whose own time-out passed, or past its pipeline's budget, is queued again at the
same stage; the worker that claims it decides what comes next (conveyor.pipeline.before_run).
A wait holds nothing meanwhile: this duty is what ends it, so it runs often (WAITS_EVERY)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.leader")

BATCH = 500  #: most waits released in one step
MAX_BATCHES = 20  #: a pass stops after this many full batches; the next pass goes on


def release_waits(app: App, now: float) -> int:
    """Queue again every wait that ended by ``now``; returns how many."""
    released = 0
    for _ in range(MAX_BATCHES):
        done = app.backend.release_waits(now, BATCH)
        released += done
        if done < BATCH:
            break
    if released:
        log.debug("released %d ended wait(s)", released)
    return released
