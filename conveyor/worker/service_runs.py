"""One run of a service replica on this worker: its function on a thread of its own (sync) or on the
keeper's event loop (async), inside its ``@svc.context`` hook; the stop asked through its context
(with the ``on_stop`` hook); and the kill when a stop takes longer than ``grace`` (stop-before-kill):
an async run is cancelled, a sync one gets ``ServiceKilled`` raised in its thread."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

from ..service_policy import StopReason
from ..service_types import ServiceRecord
from ..services import Service, ServiceContext

log = logging.getLogger("conveyor.services")


class ServiceKilled(BaseException):
    """Raised in a sync service's thread that did not stop within its grace (a BaseException, so an
    ``except Exception`` in the service does not swallow it)."""


class ReplicaRun:
    """A replica this worker holds: the row as last read, the run's context and how it is going.

    Set from the run's own thread or task: ``started`` (the function was called), ``done`` (it
    ended: ``error`` says how, None if it returned). Set by the keeper: the stop (``ask_stop``),
    the kill (``kill``), ``renewed_at`` (monotonic time before the last renewal that kept it)."""

    def __init__(self, record: ServiceRecord, svc: Service, worker_id: str, claimed_at: float) -> None:
        assert record.token is not None and record.run_generation is not None
        self.record = record
        self.svc = svc
        self.token = record.token
        self.run_generation = record.run_generation
        self.ctx = ServiceContext(name=record.name, service=record.service, replica=record.replica,
                                  params=record.params, generation=record.run_generation, token=record.token,
                                  worker_id=worker_id)  # fmt: skip
        self.renewed_at = claimed_at  #: monotonic, before the call that last extended its lease
        self.started = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.reported_running = False
        self.stop_asked_at: float | None = None  #: monotonic
        self.killed_at: float | None = None  #: monotonic
        self.stuck_reported = False
        self._thread: threading.Thread | None = None
        self._future: Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<ReplicaRun {self.record.name}[{self.record.replica}] token={self.token[:8]}>"

    @property
    def key(self) -> tuple[str, int]:
        return self.record.name, self.record.replica

    @property
    def why(self) -> StopReason | None:
        """Why a stop was asked, if it was."""
        return None if self.ctx.why is None else StopReason(self.ctx.why)

    # starting -------------------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the function: on ``loop`` for an async service, else on a daemon thread (a sync run
        that will not stop must not keep the process alive)."""
        if self.svc.is_async:
            self._loop = loop
            self._future = asyncio.run_coroutine_threadsafe(self._run_async(), loop)
            self._future.add_done_callback(self._future_done)
        else:
            name = f"conveyor-service {self.record.name}[{self.record.replica}]"
            self._thread = threading.Thread(target=self._run_sync, daemon=True, name=name)
            self._thread.start()

    def _run_sync(self) -> None:
        try:
            hook = self.svc.context_hook
            if hook is None:
                self.started.set()
                self.svc.fn(self.ctx, **self.ctx.params)
            else:
                with hook(self.ctx) as resource:
                    self.ctx.resource = resource
                    self.started.set()
                    self.svc.fn(self.ctx, **self.ctx.params)
        except BaseException as exc:  # every end of a run is reported, ServiceKilled included
            self.error = exc
        finally:
            self.done.set()

    async def _run_async(self) -> None:
        hook = self.svc.context_hook
        if hook is None:
            self.started.set()
            await self.svc.fn(self.ctx, **self.ctx.params)
            return
        manager = hook(self.ctx)
        if hasattr(manager, "__aenter__"):
            async with manager as resource:
                self.ctx.resource = resource
                self.started.set()
                await self.svc.fn(self.ctx, **self.ctx.params)
        else:
            with manager as resource:
                self.ctx.resource = resource
                self.started.set()
                await self.svc.fn(self.ctx, **self.ctx.params)

    def _future_done(self, future: Future[None]) -> None:
        if future.cancelled():
            self.error = ServiceKilled("cancelled after its grace")
        else:
            self.error = future.exception()
        self.done.set()

    # stopping -------------------------------------------------------------------------------------------------
    def ask_stop(self, why: StopReason) -> bool:
        """Ask the run to stop (its context says so; its ``on_stop`` hook is called); False if it was
        asked already. The hook runs on a thread of its own (sync) or on the loop (async), so a hook
        that blocks never holds up the keeper."""
        if not self.ctx.request_stop(why.value):
            return False
        self.stop_asked_at = time.monotonic()
        hook = self.svc.stop_hook
        if hook is not None and not self.done.is_set():
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._hook_on_loop, hook)
            else:
                threading.Thread(target=self._call_hook, args=(hook,), daemon=True,
                                 name=f"conveyor-service-stop {self.record.name}").start()  # fmt: skip
        return True

    def _call_hook(self, hook: Any) -> None:
        try:
            result = hook(self.ctx)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception:
            log.exception("service %s[%d]: its on_stop hook failed", self.record.name, self.record.replica)

    def _hook_on_loop(self, hook: Any) -> None:
        try:
            result = hook(self.ctx)
        except Exception:
            log.exception("service %s[%d]: its on_stop hook failed", self.record.name, self.record.replica)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("service %s[%d]: its on_stop hook failed: %r", self.record.name, self.record.replica,
                      task.exception())  # fmt: skip

    def kill(self) -> None:
        """The stop took longer than the grace: cancel an async run; raise ServiceKilled in a sync
        run's thread (it takes effect at its next Python instruction; a thread blocked in C code
        stays until that call returns)."""
        if self.killed_at is not None or self.done.is_set():
            return
        self.killed_at = time.monotonic()
        if self._future is not None:
            self._future.cancel()
        elif self._thread is not None and self._thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident),
                                                       ctypes.py_object(ServiceKilled))  # fmt: skip


async def _awaited(result: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await result
