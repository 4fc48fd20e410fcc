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
        #: set once the on_stop hook has returned (or there is none to call): a run's context is left only
        #: after it, so the hook never finds what the context made already torn down
        self.hook_over = threading.Event()
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
                self._await_hook_sync()
            else:
                with hook(self.ctx) as resource:
                    self.ctx.resource = resource
                    self.started.set()
                    self.svc.fn(self.ctx, **self.ctx.params)
                    self._await_hook_sync()
        except BaseException as exc:  # every end of a run is reported, ServiceKilled included
            self.error = exc
        finally:
            self.done.set()

    def _await_hook_sync(self) -> None:
        """After the function returned at a stop: let its on_stop hook finish (within the grace) before
        the context is left."""
        if self.ctx.stopping:
            self.hook_over.wait(self.svc.options.grace)

    async def _await_hook(self) -> None:
        """``_await_hook_sync`` on the loop (the hook runs on it too, or on a thread)."""
        if not self.ctx.stopping:
            return
        deadline = asyncio.get_running_loop().time() + self.svc.options.grace
        while not self.hook_over.is_set() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)

    async def _run_async(self) -> None:
        hook = self.svc.context_hook
        if hook is None:
            self.started.set()
            await self.svc.fn(self.ctx, **self.ctx.params)
            await self._await_hook()
            return
        manager = hook(self.ctx)
        if hasattr(manager, "__aenter__"):
            async with manager as resource:
                self.ctx.resource = resource
                self.started.set()
                await self.svc.fn(self.ctx, **self.ctx.params)
                await self._await_hook()
        else:
            with manager as resource:
                self.ctx.resource = resource
                self.started.set()
                await self.svc.fn(self.ctx, **self.ctx.params)
                await self._await_hook()

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
        that blocks never holds up the keeper; the run leaves its context only once the hook returned
        (or its grace is over), so the hook never finds the context's resource torn down."""
        if not self.ctx.request_stop(why.value):
            return False
        self.stop_asked_at = time.monotonic()
        hook = self.svc.stop_hook
        if hook is None or self.done.is_set():
            self.hook_over.set()
        elif self._loop is not None:
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
        finally:
            self.hook_over.set()

    def _hook_on_loop(self, hook: Any) -> None:
        try:
            result = hook(self.ctx)
        except Exception:
            log.exception("service %s[%d]: its on_stop hook failed", self.record.name, self.record.replica)
            self.hook_over.set()
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            task.add_done_callback(self._hook_done)
        else:
            self.hook_over.set()

    def _hook_done(self, task: asyncio.Future[Any]) -> None:
        self.hook_over.set()
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
