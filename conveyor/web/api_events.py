"""The event log's routes: a page of events (``GET /api/events``) and the live stream over
Server-Sent Events (``GET /api/events/stream``), both filtered as ``app.events`` / ``app.subscribe``
filter, and by permission (``access.EventFilter``: without view-others, only the events of the
user's own jobs, schedules and services, and the operations' events)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import StoreError
from ..events import Event
from ..subscription import kinds_filter
from . import sse
from .access import EventFilter
from .auth import bearer_token
from .errors import BadRequest
from .routing import Call, Router, Settings
from .schemas import EventsQuery, SeqPage, StreamQuery

router = Router("events")


def event_filter(settings: Settings) -> EventFilter:
    """The server's event filter (one per server: its owner cache is shared by every request)."""
    found = settings.extra.get("event_filter")
    if not isinstance(found, EventFilter):
        found = settings.extra["event_filter"] = EventFilter(settings.app)
    return found


def kinds_of(text: str | None) -> tuple[str, ...] | None:
    """``kinds=a,b`` as the store's filter (None: every kind)."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise BadRequest("kinds must name at least one event kind")
    return kinds_filter(names)


@router.get("/api/events", query=EventsQuery, answer=SeqPage[Event])
def list_events(call: Call) -> SeqPage[Event]:
    """Events after ``after``, oldest first, that match every filter and the caller may see.

    ``kinds``: comma-separated. ``next_after``: the last sequence number read (pass it as ``after``
    to read on; the page may hold fewer than ``limit`` events the caller may see)."""
    wanted: EventsQuery = call.query
    events = call.app.events(job_id=wanted.job_id, task=wanted.task, queue=wanted.queue,
                             kinds=kinds_of(wanted.kinds), after=wanted.after, limit=wanted.limit)  # fmt: skip
    visible = event_filter(call.settings).filter(call.user, events)
    return SeqPage(items=visible, next_after=events[-1].seq if events else wanted.after)


@router.get("/api/events/stream", query=StreamQuery, media_type="text/event-stream", errors=(404,))
async def stream(call: Call) -> Response:
    """Follow the event log live, as Server-Sent Events.

    Each event: ``id: seq``, ``event: kind``, ``data: <Event JSON>``. ``after`` (or the
    ``Last-Event-ID`` header, which beats it) resumes right after that sequence number; neither:
    from now on. ``pattern``: '*', a task or queue name, or a glob of one. A comment every 15 s
    keeps an idle stream open."""
    wanted: StreamQuery = call.query
    try:
        resume = sse.last_event_id(call.request.headers.get("last-event-id"))
    except ValueError:
        raise BadRequest("Last-Event-ID must be an event sequence number (an int >= 0)") from None
    after = resume if resume is not None else wanted.after
    kinds = kinds_of(wanted.kinds)
    app, user, settings = call.app, call.user, call.settings
    if wanted.job_id is not None:
        from .api_jobs import find_job

        await run_in_threadpool(find_job, call, wanted.job_id)  # 404 for a job the user may not see
    subscription = await run_in_threadpool(
        app.subscribe, wanted.pattern or "*", after=after, job_id=wanted.job_id, kinds=kinds, poll=1.0
    )
    events = event_filter(settings)
    token = None if not settings.auth.enabled else bearer_token(call.request.headers.get("authorization"))

    async def allowed(event: Event) -> bool:
        """Whether the user may see the event (from memory, else the store, in a thread)."""
        known = events.known(user, event)
        return known if known is not None else await run_in_threadpool(events.visible, user, event)

    async def still_valid() -> bool:
        """Whether the caller's token still authenticates (checked at each keep-alive; a store out of
        reach does not end the stream)."""
        try:
            return token is None or await settings.auth.lookup(token) is not None
        except StoreError:
            return True

    return sse.response(sse.frames(subscription, allowed, still_valid))
