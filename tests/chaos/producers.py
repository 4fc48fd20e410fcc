"""Producer threads that enqueue through their own App and count only acknowledged enqueues."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from conveyor import App
from conveyor.errors import StoreUnavailable


class Producers:
    """``count`` threads, each with its own App on ``url``, enqueueing ``chaos.work`` jobs.

    An enqueue that returned is acknowledged: its id is kept, and the store must never lose it. An
    enqueue that raised StoreUnavailable is retried as a new call (its job may or may not exist: only
    acknowledged ids are promised)."""

    def __init__(self, url: str, lease: float, count: int = 2) -> None:
        self.url = url
        self.lease = lease
        self.count = count
        self.acknowledged: set[str] = set()
        self.unavailable = 0  #: enqueues refused because the store was unreachable (then retried)
        self.errors: list[str] = []  #: anything else a producer hit: always a test failure
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, jobs: int | None, pause: float = 0.0, duration: Callable[[], float] | None = None) -> Producers:
        """Enqueue ``jobs`` in all (None: until ``stop``), pausing ``pause`` s between enqueues."""
        make = duration or (lambda: random.uniform(0.05, 0.3))
        shares = [None] * self.count if jobs is None else [jobs // self.count + (i < jobs % self.count)
                                                           for i in range(self.count)]  # fmt: skip
        for n, share in enumerate(shares):
            thread = threading.Thread(target=self._produce, args=(share, pause, make), name=f"producer-{n}",
                                      daemon=True)  # fmt: skip
            thread.start()
            self._threads.append(thread)
        return self

    def _produce(self, share: int | None, pause: float, duration: Callable[[], float]) -> None:
        app = App(self.url, lease=self.lease)
        made = 0
        try:
            while (share is None or made < share) and not self._stop.is_set():
                job_id = self._enqueue(app, duration())
                if job_id is not None:
                    with self._lock:
                        self.acknowledged.add(job_id)
                    made += 1
                if pause:
                    self._stop.wait(pause)
        except BaseException as exc:  # recorded, and failed on by the test
            self.errors.append(repr(exc))
        finally:
            app.close()

    def _enqueue(self, app: App, seconds: float) -> str | None:
        try:
            return app.enqueue("chaos.work", [seconds]).id
        except StoreUnavailable:
            with self._lock:
                self.unavailable += 1
            self._stop.wait(0.05)
            return None

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120) -> None:
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a producer did not stop"

    def reached(self, count: int) -> bool:
        """True once ``count`` enqueues were acknowledged."""
        with self._lock:
            return len(self.acknowledged) >= count

    def ids(self) -> set[str]:
        with self._lock:
            return set(self.acknowledged)
