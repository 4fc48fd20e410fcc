"""Server-Sent Events from the event log: each event the user may see as ``id: seq``, ``event: kind``,
``data: <the Event as JSON>``, read by the same machinery as ``app.subscribe`` (a ``Subscription``:
every event once, in order, resumable from a sequence number: the ``Last-Event-ID`` a client sends
back when it reconnects). A comment every ``KEEPALIVE`` seconds keeps proxies from closing an idle
stream; at each one the caller's token is checked again, and the stream ends once it is no longer
valid (revoked, its user removed).

A browser's EventSource cannot send an Authorization header; the dashboard reads the stream with
``fetch()`` and a ReadableStream instead, sending the token in the header."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.to_thread
import msgspec
from starlette.responses import StreamingResponse

from ..events import Event
from ..subscription import Subscription

KEEPALIVE = 15.0  #: seconds between keep-alive comments on an idle stream
RETRY_MS = 2000  #: how long a client waits before reconnecting (the ``retry:`` field)
STREAMS = 200  #: streams waiting for events at once (each on a thread); more wait their turn, a keep-alive at most
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(event: Event) -> bytes:
    """One event as an SSE frame (a kind is a word of a-z0-9_.:-, so it needs no escaping)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.kind.encode(), msgspec.json.encode(event))


def last_event_id(header: str | None) -> int | None:
    """The sequence number of a ``Last-Event-ID`` header (None: none given). Raises ValueError."""
    if header is None or not header.strip():
        return None
    seq = int(header.strip())
    if seq < 0:
        raise ValueError("Last-Event-ID must be an event sequence number >= 0")
    return seq


async def frames(
    subscription: Subscription,
    allowed: Callable[[Event], Awaitable[bool]],
    still_valid: Callable[[], Awaitable[bool]],
    keepalive: float | None = None,
) -> AsyncIterator[bytes]:
    """The stream's bytes: a first comment at once (the client knows the stream is open, and that
    anything written from now on reaches it), then each allowed event, a comment each ``keepalive``
    seconds (default ``KEEPALIVE``) without one. Ends when the caller is no longer valid; closes the
    subscription however it ends (a client gone included: its waiting thread ends within a poll).

    The waits run on threads of the streams' own pool (``STREAMS`` at once), so open streams never
    take the threads the API's requests run on."""
    keepalive = KEEPALIVE if keepalive is None else keepalive
    try:
        yield b"retry: %d\n: connected, after %d\n\n" % (RETRY_MS, subscription.last_seq)
        while not subscription.closed:
            event = await anyio.to_thread.run_sync(subscription.next_event, keepalive, limiter=_limiter(),
                                                   abandon_on_cancel=True)  # fmt: skip
            if event is None:
                if subscription.closed or not await still_valid():
                    return
                yield b": keep-alive\n\n"
            elif await allowed(event):
                yield frame(event)
    finally:
        subscription.close()


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    """The streams' thread pool limit of the running event loop (one per loop: a limiter is bound to its loop)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(STREAMS)
    return limiter


def response(body: AsyncIterator[bytes]) -> StreamingResponse:
    """The streaming answer."""
    return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)
