"""Named locks with expiry in the store, for an app's own use: ``app.lock("nightly-report")``.

The store's lock table (``Locks``: the same one the leader lock lives in) makes a lock safe
across processes and hosts; an expiry (``ttl``) frees a lock whose holder died. Taking it never
blocks unless asked. Inside a ``with`` block a daemon thread renews the lock, so a block that
runs longer than ``ttl`` keeps it; the lock is released when the block ends.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import LockNotAcquired, StoreUnavailable
from .worker.options import renew_interval

if TYPE_CHECKING:
    from .backends.base import Locks

log = logging.getLogger("conveyor.locks")

RETRY_EVERY = 0.1  #: longest pause between tries of a blocking ``acquire``


def new_owner() -> str:
    """A lock owner unique to one Lock object: host:pid:random (readable in the store)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lock:
    """One named lock in the store, held by this object's ``owner`` for ``ttl`` seconds at a time.

    ``acquire()`` takes it if free (non-blocking by default), ``extend()`` renews it,
    ``release()`` gives it up, ``locked()`` says whether this object holds it now. As a context
    manager it is taken at once or raises LockNotAcquired, renewed every ``renew_interval(ttl)``
    while the block runs, and released at its end. ``on_lost`` is called (on the renewing
    thread) if the lock was lost meanwhile: its ttl ran out (the store unreachable, this process
    paused) and someone else took it."""

    def __init__(
        self,
        store: Locks,
        name: str,
        *,
        ttl: float = 30.0,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        on_lost: Callable[[Lock], None] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a lock name must be a non-empty string, got {name!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"lock ttl must be > 0 seconds, got {ttl!r}")
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ValueError(f"a lock owner must be a non-empty string, got {owner!r}")
        self.store = store
        self.name = name
        self.ttl = float(ttl)
        self.owner = owner or new_owner()
        self.clock = clock
        self.on_lost = on_lost
        self.held = False  #: this object took the lock and has not released or lost it (as far as it knows)
        self._renewing: threading.Event | None = None  # set to stop the renewing thread
        self._renewer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} owner {self.owner} {'held' if self.held else 'not held'}>"

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lock (or keep it, if this object holds it) for ``ttl`` seconds; True if
        taken. ``blocking``: try again until taken or ``timeout`` seconds pass (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.store.acquire_lock(self.name, self.owner, self.ttl, self.clock()):
                self.held = True
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            pause = RETRY_EVERY if deadline is None else min(RETRY_EVERY, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def extend(self, ttl: float | None = None) -> bool:
        """Hold the lock ``ttl`` (default: this lock's ttl) seconds from now, if this object
        still holds it; False (and ``held`` False) if it was lost: expired and taken, or freed."""
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0):
            raise ValueError(f"lock ttl must be > 0 seconds, got {ttl!r}")
        now = self.clock()
        if self.store.lock_owner(self.name, now) != self.owner:  # lost: re-taking it would hide that
            self.held = False
            return False
        self.held = self.store.acquire_lock(self.name, self.owner, self.ttl if ttl is None else float(ttl), now)
        return self.held

    def release(self) -> bool:
        """Give the lock up (stopping its renewal); False if this object did not hold it."""
        self._stop_renewing()
        self.held = False
        return self.store.release_lock(self.name, self.owner)

    def locked(self) -> bool:
        """True if this object holds the lock now (asks the store)."""
        return self.store.lock_owner(self.name, self.clock()) == self.owner

    def holder(self) -> str | None:
        """Who holds the lock now (any owner), or None."""
        return self.store.lock_owner(self.name, self.clock())

    # renewal ------------------------------------------------------------------------
    def keep(self) -> None:
        """Renew the lock every ``renew_interval(ttl)`` on a daemon thread until ``release``
        (what a ``with`` block does). Call it once the lock is held."""
        if self._renewer is not None and self._renewer.is_alive():
            return
        stop = threading.Event()
        self._renewing = stop
        self._renewer = threading.Thread(target=self._renew, args=(stop,), name=f"conveyor-lock-{self.name}",
                                         daemon=True)  # fmt: skip
        self._renewer.start()

    def _renew(self, stop: threading.Event) -> None:
        every = renew_interval(self.ttl)
        while not stop.wait(every):
            try:
                if self.extend():
                    continue
            except StoreUnavailable as exc:
                log.warning("lock %r: cannot renew it, the store is unreachable; trying again: %s", self.name, exc)
                continue
            except Exception:
                log.exception("lock %r: renewing it failed; trying again", self.name)
                continue
            if stop.is_set():  # released meanwhile
                return
            log.error("lock %r was lost (its ttl of %s s ran out and another owner may hold it)", self.name, self.ttl)
            if self.on_lost is not None:
                self.on_lost(self)
            return

    def _stop_renewing(self) -> None:
        stop, renewer = self._renewing, self._renewer
        self._renewing = self._renewer = None
        if stop is not None:
            stop.set()
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()

    # with ---------------------------------------------------------------------------
    def __enter__(self) -> Lock:
        if not self.acquire():
            raise LockNotAcquired(self.name, self.holder())
        self.keep()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.release()
        except StoreUnavailable as error:  # it expires by itself
            log.warning("lock %r: could not release it (it expires after its ttl): %s", self.name, error)
