"""Leader duty: delete finished jobs past their result TTL (their events and messages go with
them), events older than the app's ``event_ttl`` and notifications older than its
``notification_ttl``, now and then: nothing grows without bound."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.leader")


def prune(app: App, now: float) -> int:
    """Delete the finished jobs whose expiry has passed, then the events older than
    ``app.event_ttl``; returns how many jobs."""
    pruned = app.backend.prune(now)
    if pruned:
        log.info("pruned %d finished job(s) past their result TTL", pruned)
    events = app.backend.prune_events(now - app.event_ttl)
    if events:
        log.info("pruned %d event(s) older than %.0f s", events, app.event_ttl)
    notes = app.backend.prune_notifications(now - app.notification_ttl)
    if notes:
        log.info("pruned %d notification(s) older than %.0f s", notes, app.notification_ttl)
    return pruned
