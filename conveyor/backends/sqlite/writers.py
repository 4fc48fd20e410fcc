"""conveyor's writers' queue: an flock of ``<file>.lock`` taken before SQLite's write lock.

SQLite's busy handler sleeps 1-100 ms between tries for its lock; conveyor's writers first take
this flock, polled every 0.1-2 ms, so the next writer goes as soon as the lock is free (under
contention that doubles a worker pool's throughput). The wait is bounded: a writer that does not
get the flock within ``wait`` seconds (its holder may be stopped or hung) goes on to SQLite's own
bounded busy wait, and until the flock is free again the process's writers skip the queue after
one try, so a stopped holder costs each of them no more than SQLite's lock itself would.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: writers rely on SQLite's busy timeout alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("conveyor.sqlite")

_FIRST_PAUSE = 0.0001
_MAX_PAUSE = 0.002


class WritersQueue:
    """The flock queue of one store file, shared by the threads of a process (each thread holds
    its own open file: flock is per open file, so threads queue like processes)."""

    def __init__(self, path: str, wait: float) -> None:
        self.path = path
        self.wait = wait
        self._wedged = False  #: the last wait ran out: skip the queue until the flock is free
        self._guard = threading.Lock()

    def open(self) -> BinaryIO | None:
        """This thread's lock file, or None where flock is unavailable (no fcntl, a read-only
        directory): writers then rely on SQLite's busy wait alone."""
        if fcntl is None:
            return None
        try:
            return open(self.path, "ab")  # held for the connection's life
        except OSError:
            return None

    def acquire(self, file: BinaryIO | None) -> bool:
        """Queue for the flock for at most ``wait`` seconds; True if it is held (release it),
        False to go on without it."""
        if file is None:
            return False
        if _try_lock(file):
            self._set_wedged(False)
            return True
        if self._wedged:
            return False
        deadline = time.monotonic() + self.wait
        pause = _FIRST_PAUSE
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, _MAX_PAUSE)
            if _try_lock(file):
                return True
        self._set_wedged(True)
        return False

    def release(self, file: BinaryIO) -> None:
        fcntl.flock(file, fcntl.LOCK_UN)

    def _set_wedged(self, wedged: bool) -> None:
        if wedged == self._wedged:
            return
        with self._guard:
            if wedged != self._wedged:
                self._wedged = wedged
                if wedged:
                    log.warning(
                        "%s: held for over %.1f s by another process (maybe stopped or hung); writers go on to"
                        " SQLite's own lock until it is free",
                        self.path,
                        self.wait,
                    )
                else:
                    log.info("%s: free again; writers queue on it as before", self.path)


def _try_lock(file: BinaryIO) -> bool:
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return False  # a file system without flock: SQLite's lock alone
    return True
