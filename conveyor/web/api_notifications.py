"""The notifications routes: a user's own notes that their jobs finished or failed (``notify``),
and marking them read. Always the caller's own, whatever their permissions."""

from __future__ import annotations

from ..messages import Notification
from . import access
from .routing import Call, Router
from .schemas import Marked, NotificationsQuery, Page, ReadBody

router = Router("notifications")


@router.get("/api/notifications", query=NotificationsQuery, answer=Page[Notification])
def list_notifications(call: Call) -> Page[Notification]:
    """The caller's notifications, newest first (``unread``: only those not read yet)."""
    wanted: NotificationsQuery = call.query
    found = call.app.notifications(call.user.name, unread=wanted.unread, limit=wanted.offset + wanted.limit + 1)
    items = found[wanted.offset : wanted.offset + wanted.limit]
    more = len(found) > wanted.offset + wanted.limit
    return Page(items=items, next_offset=wanted.offset + wanted.limit if more else None)


@router.post("/api/notifications/read", body=ReadBody, answer=Marked, errors=(403, 413))
def mark_read(call: Call) -> Marked:
    """Mark the caller's notifications read: the ``ids`` given (others' are ignored), or all."""
    access.writer(call.user)
    body: ReadBody = call.body
    changed = call.app.mark_read(call.user.name, body.ids)
    if changed:
        call.audit("notifications.read", None, {"ids": body.ids[:100] if body.ids else None, "changed": changed})
    return Marked(changed=changed)
