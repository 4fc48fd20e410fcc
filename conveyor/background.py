"""A worker inside a web server's processes: ``app.start_background_worker()`` in a startup hook.

A web server runs several processes of one app (gunicorn, uvicorn workers); each calls
``start_background_worker`` and gets a daemon thread that tries a lock in the store: one per host
(``scope="host"``, the lock ``background-worker:<host>``) or one for the whole cluster
(``scope="cluster"``, ``background-worker``). The process that takes it runs a Worker on that
thread and keeps renewing the lock; the others keep trying, so when the holder stops or dies
another process takes over (at once after a clean stop, which releases the lock; after the
lock's ttl after a crash). Which process runs it is decided by the store, not guessed from
environment variables.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

import msgspec

from .locks import Lock
from .worker.options import WorkerOptions, renew_interval

if TYPE_CHECKING:
    from .app import App
    from .worker import Worker

log = logging.getLogger("conveyor.background")

SCOPES = ("host", "cluster")
RESTART_PAUSE = 1.0  #: seconds before a worker that stopped itself (a helper failed) is started again


def lock_name(scope: str) -> str:
    """The store lock that elects the one process running the background worker in ``scope``."""
    if scope == "host":
        return f"background-worker:{socket.gethostname()}"
    if scope == "cluster":
        return "background-worker"
    raise ValueError(f"scope must be 'host' or 'cluster', got {scope!r}")


class BackgroundWorker:
    """One process's candidacy to run the background worker; ``running`` while this process runs
    it. ``stop()`` ends it (and the worker, gracefully); it is also called at interpreter exit.

    A worker stopped through the store (``app.stop_workers``) is not started again here: this
    process gives the lock up, and another process's BackgroundWorker may take over."""

    def __init__(self, app: App, options: WorkerOptions, *, scope: str = "host", ttl: float | None = None) -> None:
        self.app = app
        self.options = options.check()
        self.scope = scope
        self.lock = Lock(app.backend, lock_name(scope), ttl=app.lease if ttl is None else ttl, clock=app.clock,
                         on_lost=self._lost)  # fmt: skip
        self.every = renew_interval(self.lock.ttl)  #: seconds between tries for the lock
        self.worker: Worker | None = None  #: the worker this process runs now, if any
        self.ended = False  #: its worker was stopped through the store: this candidacy is over
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._main, name="conveyor-background", daemon=True)

    def __repr__(self) -> str:
        return f"<BackgroundWorker {self.lock.name} {'running' if self.running else 'standing by'}>"

    @property
    def running(self) -> bool:
        """True while this process runs the worker."""
        return self.worker is not None

    def start(self) -> BackgroundWorker:
        """Start trying for the lock on a daemon thread; stop cleanly at interpreter exit."""
        self._thread.start()
        atexit.register(self.stop)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop trying; stop the worker if this process runs it (running jobs get its ``grace``,
        then are handed back) and give the lock up. True if the thread ended within ``timeout``."""
        self._stopping.set()
        with self._guard:
            worker = self.worker
        if worker is not None:
            worker.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        atexit.unregister(self.stop)
        return not self._thread.is_alive()

    def _main(self) -> None:
        while not self._stopping.is_set():
            try:
                taken = self.lock.acquire()
            except Exception as exc:  # an outage: keep trying
                log.warning("background worker: cannot try the lock %r: %s", self.lock.name, exc)
                taken = False
            if taken:
                self._run_worker()
                if self.ended:
                    return
                if not self._stopping.is_set():
                    self._stopping.wait(RESTART_PAUSE)
                continue
            self._stopping.wait(self.every)

    def _run_worker(self) -> None:
        """Holding the lock: run a Worker on this thread until it stops, renewing the lock meanwhile."""
        from .worker import Worker

        with self._guard:
            if self._stopping.is_set():
                self._give_up_lock()
                return
            self.worker = worker = Worker(self.app, self.options)
        self.lock.keep()
        log.info("background worker %s: this process (lock %r) runs it", worker.id, self.lock.name)
        code = 1
        try:
            code = worker.run()
        except Exception:
            log.exception("background worker %s failed", worker.id)
        finally:
            with self._guard:
                self.worker = None
            self._give_up_lock()
        if worker.stop_requested:
            log.info("background worker %s: stopped through the store; this process stands down", worker.id)
            self.ended = True
        elif code:
            log.error("background worker %s stopped itself (exit code %d); starting another", worker.id, code)

    def _give_up_lock(self) -> None:
        try:
            self.lock.release()
        except Exception as exc:  # it expires by itself
            log.warning("background worker: could not release the lock %r: %s", self.lock.name, exc)

    def _lost(self, _lock: Lock) -> None:
        """The lock ran out and another process may run the worker now: stop this one."""
        with self._guard:
            worker = self.worker
        if worker is not None:
            log.error("background worker %s: lost the lock %r; stopping", worker.id, self.lock.name)
            worker.stop()


def background_options(settings: dict[str, Any]) -> WorkerOptions:
    """WorkerOptions from ``start_background_worker``'s keyword settings (queues as a tuple)."""
    if "queues" in settings:
        settings["queues"] = tuple(settings["queues"])
    return msgspec.structs.replace(WorkerOptions(), **settings).check()
