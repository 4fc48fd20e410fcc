"""Following the event log as it grows: ``app.subscribe()`` returns a ``Subscription``.

A subscription reads the log in pages (``EventLog.events(after=last)``) and, when it has read
everything, waits for more with ``EventLog.wait_for_events`` (PostgreSQL wakes it by NOTIFY,
SQLite polls cheaply). The store never hands out an event that a later commit could precede
(docs/events.md), so reading ``seq > last`` in order yields every event exactly once, and a
subscription resumed from a ``last_seq`` it saved goes on exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from .backends.base import EventLog
from .errors import StoreUnavailable
from .events import Event, EventQuery, matches

log = logging.getLogger("conveyor.events")

PAGE = 500  #: events read from the store in one step
MAX_OUTAGE_PAUSE = 5.0  #: longest pause between reads while the store is unreachable
#: The threads async subscriptions read and wait on (each waits up to ``poll`` seconds at a time): a pool of
#: their own, so that many subscribers neither queue behind the event loop's default pool (a few threads on a
#: small machine) nor starve its other users. Threads are made as needed, up to this many.
WAITERS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="conveyor-subscription")


def kinds_filter(kinds: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """Event kinds to read (str or EventKind, one or many) as the store's filter; None: every kind.
    Raises ValueError for an empty or non-string kind."""
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [kinds]
    wanted = tuple(dict.fromkeys(kinds))
    for kind in wanted:
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"an event kind must be a non-empty string, got {kind!r}")
    if not wanted:
        raise ValueError("kinds= must name at least one kind (or be None for every kind)")
    return tuple(str(kind) for kind in wanted)


def check_position(after: object) -> int:
    """A sequence number to read after: an int >= 0 (0: from the start of the log)."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"after must be an event sequence number (an int >= 0), got {after!r}")
    return after


class Subscription(Iterator[Event], AsyncIterator[Event]):
    """Events past ``after`` that match ``pattern`` (``events.matches``), ``job_id`` and
    ``kinds``, oldest first, as they are written. Iterate it (``for``: blocks until the next
    event) or ``async for`` it (the waiting runs in a thread); ``close()`` ends it.

    ``last_seq`` is the sequence number of the last event it has gone past (yielded, or skipped
    as not matching): save it, and ``app.subscribe(after=saved)`` resumes with nothing missed or
    repeated. ``poll``: longest wait for one wake-up before reading again. A store that cannot
    be reached is read again with back-off (the subscription does not end on an outage)."""

    def __init__(
        self,
        store: EventLog,
        *,
        after: int,
        pattern: str = "*",
        job_id: str | None = None,
        kinds: tuple[str, ...] | None = None,
        poll: float = 1.0,
    ) -> None:
        self.store = store
        self.pattern = pattern
        self.job_id = job_id
        self.kinds = kinds
        self.poll = poll
        self.last_seq = after  #: the last event gone past (yielded or skipped); resume from here
        self._pending: collections.deque[Event] = collections.deque()  # read, not yet gone past
        self._closed = threading.Event()
        self._outage_pause = 0.0

    def __repr__(self) -> str:
        return f"<Subscription {self.pattern!r} after {self.last_seq}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: iteration ends."""
        return self._closed.is_set()

    def close(self) -> None:
        """End the subscription: a ``for`` loop over it stops at its next step, within one
        ``poll`` if it is waiting (from any thread). Events read but not yet yielded are dropped:
        ``last_seq`` still says where to resume."""
        self._closed.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # reading ------------------------------------------------------------------------
    def _read_to(self) -> int:
        """Where the next page starts: past everything read so far."""
        return self._pending[-1].seq if self._pending else self.last_seq

    def _take(self) -> Event | None:
        """Go past pending events up to the next one that matches; None once none is left."""
        while self._pending:
            event = self._pending.popleft()
            self.last_seq = event.seq
            if matches(event, self.pattern):
                return event
        return None

    def _page(self, after: int) -> list[Event]:
        """The next page of the log after ``after`` (the store filters by job and kinds; the
        pattern, which matches a task or a queue, is applied here)."""
        return self.store.events(EventQuery(after=after, job_id=self.job_id, kinds=self.kinds, limit=PAGE))

    def _read_or_wait(self, after: int, wait: float) -> tuple[list[Event], int]:
        """One step, blocking: the next page if there is one, else wait (up to ``wait`` s) for a
        wake-up and return nothing. Also returns where the log was read up to: with the store
        filtering (a job, kinds), an empty page means nothing matched up to the head read before
        it, so the next read and wait start there, not at ``after`` (or every later event of other
        jobs would wake the wait at once, a spin). An unreachable store is waited out with back-off."""
        try:
            head = self.store.last_event_seq() if self.job_id is not None or self.kinds else after
            page = self._page(after)
            read_to = after if page else max(after, head)
            if not page and wait > 0:
                self.store.wait_for_events(read_to, wait)
            if self._outage_pause:
                log.info("subscription: the store is reachable again")
            self._outage_pause = 0.0
            return page, read_to
        except StoreUnavailable as exc:
            if not self._outage_pause:
                log.warning("subscription: the store is unreachable; reading again with back-off: %s", exc)
            self._outage_pause = min(MAX_OUTAGE_PAUSE, max(self.poll, self._outage_pause * 2, 0.1))
            self._closed.wait(min(self._outage_pause, wait))
            return [], after

    def _extend(self, after: int, step: tuple[list[Event], int]) -> None:
        page, read_to = step
        if after != self._read_to():  # read from where this subscription no longer is
            return
        if page:
            self._pending.extend(page)
        else:
            self.last_seq = max(self.last_seq, read_to)

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        """The next matching event, waiting for it as long as it takes (StopIteration once closed)."""
        while True:
            if self.closed:
                raise StopIteration
            event = self._take()
            if event is not None:
                return event
            after = self._read_to()
            self._extend(after, self._read_or_wait(after, self.poll))

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        """As ``__next__``, with the store's blocking read and wait run on a thread of ``WAITERS``, so
        the event loop goes on meanwhile. Cancelling it loses nothing: events are taken here, on the loop."""
        while True:
            if self.closed:
                raise StopAsyncIteration
            event = self._take()
            if event is not None:
                return event
            after = self._read_to()
            step = await asyncio.get_running_loop().run_in_executor(WAITERS, self._read_or_wait, after, self.poll)
            self._extend(after, step)

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next matching event, or None if none comes within ``timeout`` seconds (None: wait
        as long as it takes) or once closed: for a loop that has other things to do meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed:
                return None
            event = self._take()
            if event is not None:
                return event
            remaining = self.poll if deadline is None else min(self.poll, deadline - time.monotonic())
            after = self._read_to()
            step = self._read_or_wait(after, max(0.0, remaining))
            self._extend(after, step)
            if not step[0] and remaining <= 0:
                return None
