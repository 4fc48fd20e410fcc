"""Supervision of worker processes: start P children, restart any that dies, stop them all on a signal."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("conveyor.supervisor")

RestartPredicate = Callable[[int], bool]


def always_restart(exit_code: int) -> bool:
    """The default: replace a child however it ended (the supervisor is not stopping)."""
    return True


def _child_main(app_path: str, url: str | None, worker_options: dict[str, Any], log_level: int) -> None:
    """Entry point of a worker child process (spawned, so it imports the app afresh)."""
    from .app import load_app
    from .worker import Worker

    logging.basicConfig(level=log_level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards a terminal's Ctrl-C as SIGTERM
    app = load_app(app_path)
    if url:
        app.url = url
    Worker(app, supervised=True, **worker_options).run()
    logging.shutdown()
    os._exit(0)  # do not wait for a thread still stuck in a timed-out sync task


class Supervisor:
    """Keeps ``processes`` worker children running until SIGTERM/SIGINT."""

    def __init__(
        self,
        app_path: str,
        processes: int,
        worker_options: dict[str, Any],
        *,
        url: str | None = None,
        restart_if: RestartPredicate = always_restart,
        log_level: int = logging.INFO,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.app_path = app_path
        self.processes = processes
        self.worker_options = worker_options
        self.url = url
        self.restart_if = restart_if
        self.log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._children: list[BaseProcess | None] = [None] * processes
        self._started_at = [0.0] * processes
        self._signals = 0
        self._last_signal = 0.0

    def run(self) -> int:
        """Start the children and watch them; returns the exit code for the parent."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in range(self.processes):
            self._spawn(slot)
        while not self._signals:
            for slot, child in enumerate(self._children):
                if child is not None and not child.is_alive() and not self._signals:
                    self._replace(slot, child.exitcode or 0)
            time.sleep(0.1)
        self._stop_children()
        return 0

    def _spawn(self, slot: int) -> None:
        args = (self.app_path, self.url, self.worker_options, self.log_level)
        child = self._context.Process(target=_child_main, args=args, name=f"conveyor-worker-{slot}")
        child.start()
        self._children[slot] = child
        self._started_at[slot] = time.monotonic()
        log.info("started worker process %d (pid %s)", slot, child.pid)

    def _replace(self, slot: int, exit_code: int) -> None:
        log.warning("worker process %d exited with code %s", slot, exit_code)
        if not self.restart_if(exit_code):
            self._children[slot] = None
            return
        if time.monotonic() - self._started_at[slot] < 1.0:
            time.sleep(1.0)  # a child that dies at once must not spin the supervisor
        self._spawn(slot)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._signals and time.monotonic() - self._last_signal < 0.5:
            return  # one stop request delivered twice (to the process and to its group)
        self._last_signal = time.monotonic()
        self._signals += 1
        forward = signal.SIGTERM if self._signals == 1 else signal.SIGUSR1  # the second: hand back at once
        log.info("got %s: %s", signal.Signals(signum).name, "stopping workers" if self._signals == 1 else "hurrying")
        for child in self._children:
            if child is not None and child.pid and child.is_alive():
                os.kill(child.pid, forward)

    def _stop_children(self) -> None:
        for child in self._children:
            if child is not None:
                child.join()
        log.info("all worker processes stopped")
