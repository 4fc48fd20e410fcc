"""The worker's event loop for async tasks: one asyncio loop on a thread of its own (a supervised
helper runs ``loop.run_forever``), where a claim's async runs start in one call and whose end is
copied into each run's ``concurrent.futures.Future``, so the worker waits on sync and async runs
alike. Cancelling a run's future (the run abandoned, from any thread) cancels its task."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future

from ..backends.base import Backend
from ..execution import run_async
from ..outcome import Outcome
from .helpers import Helper
from .runs import Run

log = logging.getLogger("conveyor.worker")


class JobLoop:
    """The event loop async runs go on; ``start`` from any thread, ``close`` once at the end."""

    def __init__(self, backend: Backend, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.clock = clock
        self.loop = asyncio.new_event_loop()

    def start(self, batch: list[tuple[Run, Future[Outcome]]]) -> None:
        """Start these runs on the loop in ONE call (one wake-up of the loop per claim, not one per
        job). Raises if the loop can take no more (closed): the caller hands the runs back."""
        self.loop.call_soon_threadsafe(self._start_on_loop, batch)

    def _start_on_loop(self, batch: list[tuple[Run, Future[Outcome]]]) -> None:
        """On the loop: one asyncio task per run, its end copied into the run's future. A run
        abandoned before this (its future cancelled) is not started."""
        for run, future in batch:
            if future.cancelled():
                continue
            try:
                task = self.loop.create_task(run_async(run.task, run.job, self.backend, self.clock))
            except BaseException as exc:  # the run's outcome says why; never kill the loop
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
                continue
            task.add_done_callback(functools.partial(_settle, future))
            future.add_done_callback(functools.partial(self._cancel_on_loop, task))

    def _cancel_on_loop(self, task: asyncio.Task[Outcome], future: Future[Outcome]) -> None:
        """The run's future was cancelled (the run abandoned, from any thread): cancel its task."""
        if future.cancelled() and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(task.cancel)

    def close(self, helper: Helper, within: float) -> None:
        """Stop the loop (``helper`` runs it), cancel what is left on it (handed back already) and
        close it; if a task blocks the loop for ``within`` seconds, leave it to the process's end."""
        helper.ending = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not helper.join(within):
            log.error("an async task blocks the event loop; leaving it to the end of the process")
            return
        try:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                cancelled = asyncio.ensure_future(asyncio.wait(pending, timeout=within), loop=self.loop)
                for _ in range(3):  # a stop asked for above may run first and end a pass early
                    with contextlib.suppress(RuntimeError):
                        self.loop.run_until_complete(cancelled)
                    if cancelled.done():
                        break
            self.loop.close()
        except Exception:
            log.exception("closing the event loop failed")


def _settle(future: Future[Outcome], task: asyncio.Task[Outcome]) -> None:
    """On the loop: copy how an asyncio task ended into its run's future (unless abandoned)."""
    if future.cancelled():
        return
    if task.cancelled():
        future.cancel()
        return
    if not future.set_running_or_notify_cancel():
        return
    exc = task.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(task.result())
