"""A worker's row in the registry (``Registry``): registered at start, refreshed by the monitor's
beat (jobs in flight, state, leader flag), ended at exit. The beat is also how a worker hears
``app.stop_workers``: a beat that finds a stop requested stops the worker as SIGTERM would.

Never fatal: a registry write that fails is logged and tried at the next beat (the jobs' leases,
not the registry, keep work safe), and a row that is gone (pruned while this worker was cut off)
is registered again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..backends.base import Registry
from ..errors import StoreUnavailable
from ..execution import storable
from ..operations import WorkerInfo, WorkerState
from .options import renew_interval

log = logging.getLogger("conveyor.worker")

MIN_BEAT = 1.0  #: a worker's row is refreshed at most once a second, however short the lease (each beat is a write)


def beat_interval(lease: float) -> float:
    """Seconds between registry beats: with the lease renewals, but at most once a second (a
    stop request is heard, and a live worker seen, well within ``operations.stale_after``)."""
    return max(renew_interval(lease), MIN_BEAT)


class Registration:
    """One worker process's registry row. ``status()`` gives (in flight, state, leader) at each
    beat; ``on_stop_requested`` is called once when a beat finds a stop requested."""

    def __init__(
        self,
        store: Registry,
        clock: Callable[[], float],
        info: WorkerInfo,
        status: Callable[[], tuple[int, WorkerState, bool]],
        on_stop_requested: Callable[[], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self.info = info
        self.status = status
        self.on_stop_requested = on_stop_requested
        self.registered = False  #: the row was written (and not found gone since)
        self.stop_requested = False  #: a beat found a stop requested
        self._failing = False  # the last registry write failed (logged once until it works again)

    @property
    def worker_id(self) -> str:
        """The registered worker's id."""
        return self.info.id

    def register(self) -> bool:
        """Write the row (last seen now, state running); True if written."""
        return self._try("register", self._register)

    def _register(self) -> None:
        self.info.last_seen = self.clock()
        self.store.register_worker(self.info, self.info.last_seen)
        self.registered = True

    def beat(self) -> bool:
        """Refresh the row (registering it first if it was never written or is gone); True if written."""
        return self._try("refresh", self._beat)

    def _beat(self) -> None:
        if not self.registered:
            self._register()
            return
        in_flight, state, leader = self.status()
        asked = self.store.beat_worker(self.info.id, in_flight, state, leader, self.clock())
        if asked is None:
            log.warning("worker %s: its registry row is gone; registering again", self.info.id)
            self.registered = False
            self._register()
        elif asked and not self.stop_requested:
            self.stop_requested = True
            log.info("worker %s: a stop was requested through the store (stop_workers); stopping", self.info.id)
            self.on_stop_requested()

    def end(self) -> None:
        """Mark the row stopped (a clean exit)."""
        if self.registered:
            self._try("end", lambda: self.store.end_worker(self.info.id, self.clock()))

    def _try(self, what: str, step: Callable[[], None]) -> bool:
        try:
            step()
        except StoreUnavailable as exc:
            if not self._failing:
                log.warning("worker %s: cannot %s its registry row, the store is unavailable: %s",
                            self.info.id, what, storable(str(exc)))  # fmt: skip
            self._failing = True
            return False
        except Exception:
            if not self._failing:  # once, until it works again: the traceback says it all
                log.exception("worker %s: cannot %s its registry row; trying at each beat", self.info.id, what)
            self._failing = True
            return False
        if self._failing:
            log.info("worker %s: its registry row is written again", self.info.id)
        self._failing = False
        return True


def worker_info(worker_id: str, host: str, pid: int, queues: list[str], concurrency: int, now: float) -> WorkerInfo:
    """The row a worker registers: this conveyor's version, started ``now``."""
    from .. import __version__

    return WorkerInfo(id=worker_id, host=host, pid=pid, queues=list(queues), concurrency=concurrency,
                      version=__version__, started_at=now, last_seen=now)  # fmt: skip
