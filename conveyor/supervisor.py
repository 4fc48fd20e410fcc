"""Supervision of worker processes: start P children, restart any that dies, renew their leases from
outside, stop them all on a signal.

The supervisor imports the app once itself (an import error fails at once, not in every child) and
opens its store: every ``min(lease / 3, 1 s)`` it extends the leases of every job held by a child
that is alive and not stopped. A child whose task holds the GIL (a long C call) cannot run its own
heartbeat, but it is alive, so its jobs are not rescued and run twice; a SIGSTOPped or dead child
is skipped, so its jobs still come back when their leases run out.

A child stopped through the store (``app.stop_workers``) exits with EXIT_STOP_REQUESTED and is not
replaced: the user asked for it to stop. Once every child has been stopped that way, the
supervisor exits 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from .errors import StoreUnavailable
from .logs import FORMATS
from .signals import relay_signals
from .worker.loop import EXIT_STOP_REQUESTED
from .worker.options import WorkerOptions, renew_interval

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("conveyor.supervisor")

RestartPredicate = Callable[[int], bool]

EXIT_GAVE_UP = 3  #: the supervisor's exit code when its children keep dying before they start
FAILED_STARTS = 5  #: children in a row that die before they are ready make the supervisor give up
RESPAWN_PAUSE = 1.0  #: seconds before replacing a child that lived less than this


def always_restart(exit_code: int) -> bool:
    """The default: replace a child however it ended (the supervisor is not stopping)."""
    return True


def _child_main(
    app_path: str, url: str | None, options: WorkerOptions, log_level: int, log_format: str, ready: EventType
) -> None:
    """Entry point of a worker child process (spawned, so it imports the app afresh)."""
    from .app import load_app
    from .logs import configure_logging
    from .worker import Worker

    configure_logging(log_level, log_format)  # the same level and format as the supervisor's own log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a terminal's Ctrl-C as SIGTERM
    app = load_app(app_path)
    app.use_url(url)  # --url beats $CONVEYOR_URL and the URL given in code, as in the supervisor
    worker = Worker(app, options)
    ready.set()
    code = worker.run()  # a non-zero code (EXIT_STOP_REQUESTED included) ends the process in there
    logging.shutdown()
    os._exit(code)  # do not wait for a thread still stuck in a timed-out sync task


def runnable(pid: int) -> bool:
    """True if process ``pid`` can run: not stopped (SIGSTOP, traced) and not a zombie. Read from
    /proc on Linux; elsewhere a live process counts as runnable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return sys.platform != "linux" and _exists(pid)
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("T", "t", "Z", "X", "x")


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Child:
    """One worker child: its process, id, and whether it got as far as starting its worker."""

    def __init__(self, process: BaseProcess, worker_id: str, ready: EventType) -> None:
        self.process = process
        self.worker_id = worker_id
        self.ready = ready
        self.started_at = time.monotonic()


class Supervisor:
    """Keeps ``processes`` worker children running until SIGTERM/SIGINT, renewing their leases."""

    def __init__(
        self,
        app_path: str,
        processes: int,
        options: WorkerOptions,
        *,
        url: str | None = None,
        restart_if: RestartPredicate = always_restart,
        log_level: int = logging.INFO,
        log_format: str = "text",
    ) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        if log_format not in FORMATS:
            raise ValueError(f"unknown log format {log_format!r}: use text or json")
        self.app_path = app_path
        self.processes = processes
        self.options = options.check()
        self.url = url
        self.restart_if = restart_if
        self.log_level = log_level
        self.log_format = log_format  #: "text" or "json" (conveyor.logs), for every child
        self._context = multiprocessing.get_context("spawn")
        self._children: list[_Child | None] = [None] * processes
        self._signals = 0
        self._last_signal = 0.0
        self._failed_starts = 0  # children in a row that died before they were ready
        self._stopped_on_request = 0  # children that exited with EXIT_STOP_REQUESTED (not replaced)
        self._stopping = threading.Event()
        self._app: App | None = None

    def load(self) -> App:
        """Import the app (ImportError if it cannot be) and point it at its store: ``url`` (--url),
        else $CONVEYOR_URL, else the URL given in code (``App.use_url``; a warning if they differ)."""
        from .app import load_app

        app = load_app(self.app_path)
        app.use_url(self.url)
        self._app = app
        return app

    def run(self) -> int:
        """Start the children and watch them; returns the exit code for the parent."""
        app = self._app or self.load()
        from .backends import describe_url

        log.info("supervising %d worker processes of %s; store %s (from %s)",
                 self.processes, self.app_path, describe_url(app.url), app.url_source)  # fmt: skip
        relay_signals([signal.SIGTERM, signal.SIGINT], self._on_signal)
        renewer = threading.Thread(target=self._renew_leases, args=(app,), name="conveyor-renewer", daemon=True)
        renewer.start()
        code = 0
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            while not self._signals:
                for slot, child in enumerate(self._children):
                    if child is not None and not child.process.is_alive() and not self._signals:
                        self._replace(slot, child)
                if self._failed_starts >= FAILED_STARTS:
                    log.error("giving up: %d worker processes in a row died before they started", FAILED_STARTS)
                    self._forward(signal.SIGTERM)
                    code = EXIT_GAVE_UP
                    break
                if self._stopped_on_request and all(child is None for child in self._children):
                    log.info("every worker process was stopped on request (stop_workers); the supervisor exits")
                    break
                time.sleep(0.1)
            self._stop_children()
        finally:
            self._stopping.set()
            renewer.join(timeout=5)
        return code

    def _spawn(self, slot: int) -> None:
        worker_id = f"{socket.gethostname()}:{os.getpid()}.{slot}:{secrets.token_hex(3)}"
        options = msgspec.structs.replace(self.options, supervised=True, worker_id=worker_id)
        ready = self._context.Event()
        args = (self.app_path, self.url, options, self.log_level, self.log_format, ready)
        process = self._context.Process(target=_child_main, args=args, name=f"conveyor-worker-{slot}")
        process.start()
        self._children[slot] = _Child(process, worker_id, ready)
        log.info("started worker process %d (pid %s, worker %s)", slot, process.pid, worker_id)

    def _replace(self, slot: int, child: _Child) -> None:
        exit_code = child.process.exitcode or 0
        if exit_code == EXIT_STOP_REQUESTED:
            log.info("worker process %d (pid %s, worker %s) was stopped on request; not replacing it",
                     slot, child.process.pid, child.worker_id)  # fmt: skip
            self._children[slot] = None
            self._stopped_on_request += 1
            self._failed_starts = 0
            return
        log.warning("worker process %d (pid %s) exited with code %s", slot, child.process.pid, exit_code)
        if not child.ready.is_set():
            self._failed_starts += 1
        else:
            self._failed_starts = 0
        if not self.restart_if(exit_code):
            self._children[slot] = None
            return
        if self._failed_starts >= FAILED_STARTS:
            self._children[slot] = None
            return
        if time.monotonic() - child.started_at < RESPAWN_PAUSE:
            time.sleep(RESPAWN_PAUSE)  # a child that dies at once must not spin the supervisor
        self._spawn(slot)

    def _renew_leases(self, app: App) -> None:
        """Extend the leases of the jobs of every live, running child until the supervisor stops.
        Nothing stops this thread but that: a store error is logged and tried again."""
        every = renew_interval(app.lease)
        store_down = False
        while not self._stopping.wait(every):
            ids = [
                child.worker_id
                for child in list(self._children)
                if child is not None and child.process.pid and child.process.is_alive() and runnable(child.process.pid)
            ]
            if not ids:
                continue
            try:
                app.backend.extend_worker_leases(ids, app.lease, app.clock())
                if store_down:
                    log.info("renewing leases again: the store is reachable")
                store_down = False
            except StoreUnavailable as exc:
                if not store_down:
                    log.warning("cannot renew the workers' leases, the store is unreachable; retrying: %s", exc)
                store_down = True
            except Exception:
                log.exception("renewing the workers' leases failed; retrying")
        try:
            app.close()
        except Exception:
            log.exception("closing the supervisor's store failed")

    def _on_signal(self, signum: int) -> None:
        if self._signals and time.monotonic() - self._last_signal < 0.5:
            return  # one stop request delivered twice (to the process and to its group)
        self._last_signal = time.monotonic()
        self._signals += 1
        forward = signal.SIGTERM if self._signals == 1 else signal.SIGUSR1  # the second: hand back at once
        log.info("got %s: %s", signal.Signals(signum).name, "stopping workers" if self._signals == 1 else "hurrying")
        self._forward(forward)

    def _forward(self, signum: int) -> None:
        for child in self._children:
            if child is not None and child.process.pid and child.process.is_alive():
                os.kill(child.process.pid, signum)

    def _stop_children(self) -> None:
        for child in self._children:
            if child is not None:
                child.process.join()
        log.info("all worker processes stopped")
