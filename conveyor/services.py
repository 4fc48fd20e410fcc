"""Declaring long-running services (``@app.service``) and the context each run gets.

A service is a function that runs until asked to stop: ``fn(ctx, **params)``, sync or async. The
store keeps how many replicas of each instance should run; workers serving its queue take them
and run them (``conveyor.worker.services``). Here: ``ServiceOptions`` (checked once, at
declaration), ``Service`` (the function, its hooks, and the check of an instance's parameters at
the call that gives them), and ``ServiceContext``, through which a run learns it must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from . import codec
from .errors import ConveyorError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")

Hook = Callable[["ServiceContext"], Any]


class ServiceNotFound(ConveyorError, LookupError):
    """No service instance of that name is stored."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no service instance named {name!r}")
        self.name = name


class UnknownService(ConveyorError, ValueError):
    """No ``@app.service`` of that name is declared in this app."""


def check_name(name: str, what: str = "service instance") -> str:
    """A service or instance name: 1-200 of A-Z a-z 0-9 ``_ . : -``, starting with a letter or digit
    ('@' is kept for worker-local instances, ``service@worker_id``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} name must be 1-200 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-', "
                         f"starting with a letter or digit; got {name!r}")  # fmt: skip
    return name


def _seconds(name: str, value: Any, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'} seconds, got {value!r}")
    return float(value)


def _count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


class ServiceOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How a service runs. ``lease``: seconds a worker holds a replica between renewals (every
    lease / 6); a worker that cannot renew for lease / 2 stops its replicas itself, so ``grace``
    (seconds a stop may take before the run is cancelled) must be at most lease / 3: a run is
    over before any other worker may take the replica over. A run that crashes is started again
    after ``backoff`` * 2^(n-1) seconds (at most ``max_backoff``); ``max_crashes`` crashes within
    ``crash_window`` seconds make the replica FAILED."""

    queue: str = "default"
    replicas: int = 1
    local: bool = False  #: one instance in every worker process, started at boot, never moved
    autostart: bool = True  #: a worker creates the instance named like the service if there is none
    grace: float = 10.0
    lease: float = 30.0
    max_crashes: int = 5
    crash_window: float = 300.0
    backoff: float = 1.0
    max_backoff: float = 60.0

    def check(self) -> ServiceOptions:
        """These options, checked: raises ValueError naming the first bad one."""
        if not isinstance(self.queue, str) or not self.queue:
            raise ValueError(f"queue must be a non-empty string, got {self.queue!r}")
        _count("replicas", self.replicas, 1)
        _count("max_crashes", self.max_crashes, 1)
        lease = _seconds("lease", self.lease)
        grace = _seconds("grace", self.grace, zero=True)
        _seconds("crash_window", self.crash_window)
        _seconds("backoff", self.backoff, zero=True)
        _seconds("max_backoff", self.max_backoff, zero=True)
        if grace > lease / 3:
            raise ValueError(f"grace ({grace:g} s) must be at most lease / 3 ({lease / 3:g} s): a worker cut off "
                             f"from the store must have stopped its replicas before their lease runs out")  # fmt: skip
        if self.local and self.replicas != 1:
            raise ValueError("a local service runs once in every worker process: replicas does not apply")
        return self


class Service:
    """A declared service: its function, options and hooks. ``@svc.on_stop`` and ``@svc.context``
    add the hooks; ``check_params`` checks an instance's parameters against the function."""

    def __init__(self, fn: Callable[..., Any], name: str, options: ServiceOptions) -> None:
        if not callable(fn):
            raise TypeError(f"@app.service decorates a function, got {fn!r}")
        self.fn = fn
        self.name = check_name(name, "service")
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.stop_hook: Hook | None = None
        self.context_hook: Hook | None = None
        self._signature = inspect.signature(fn)
        params = list(self._signature.parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"service {name!r}: its function takes the run's context first: "
                            f"def {fn.__name__}(ctx, ...)")  # fmt: skip

    def __repr__(self) -> str:
        return f"<Service {self.name} queue={self.options.queue} replicas={self.options.replicas}>"

    def __call__(self, ctx: ServiceContext, **params: Any) -> Any:
        """Call the function (a test may run one directly with a context of its own)."""
        return self.fn(ctx, **params)

    @property
    def needs_params(self) -> bool:
        """True if the function has a parameter without a default (it cannot start without them)."""
        try:
            self._signature.bind(None)
        except TypeError:
            return True
        return False

    def on_stop(self, fn: Hook) -> Hook:
        """Declare the hook called (on a thread of its own for a sync service, on the loop for an async
        one) when a run is asked to stop: close what the function blocks on, so that it returns."""
        if not callable(fn):
            raise TypeError(f"on_stop takes a function of the context, got {fn!r}")
        self.stop_hook = fn
        return fn

    def context(self, fn: Hook) -> Hook:
        """Declare a wrapper around each run: ``fn(ctx)`` returns a context manager (a plain one for a
        sync service; a plain or an async one for an async service), entered before the function runs
        and left after it returned; what it gives is ``ctx.resource`` (setup and teardown: C25)."""
        if not callable(fn):
            raise TypeError(f"context takes a function of the context, got {fn!r}")
        self.context_hook = fn
        return fn

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters of an instance, checked at the call that gives them: JSON values (no pickle)
        that the function accepts. Raises TypeError naming what is wrong."""
        if not isinstance(params, dict):
            raise TypeError(f"service {self.name!r}: parameters must be a dict, got {type(params).__name__}")
        for key, value in params.items():
            codec.check_json(value, f"service {self.name!r} parameter {key!r}")
        try:
            self._signature.bind(None, **params)
        except TypeError as exc:
            raise TypeError(f"service {self.name!r} cannot take these parameters: {exc}") from None
        return dict(params)


class ServiceContext:
    """What a run of a service sees: which replica it is, its parameters, and whether it must stop.

    ``stopping`` turns True when a stop is asked (stop, restart, reload, the worker stopping, the
    store out of reach, the replica taken over). A sync function polls it or waits with ``wait``;
    an async one awaits ``sleep`` / ``stopped``, or runs its body in ``async with ctx.running()``,
    which cancels the body at a stop and leaves quietly."""

    def __init__(self, *, name: str, service: str, replica: int, params: dict[str, Any], generation: int,
                 token: str, worker_id: str) -> None:  # fmt: skip
        self.name = name  #: the instance
        self.service = service
        self.replica = replica
        self.params = dict(params)
        self.generation = generation
        self.token = token  #: this run's fencing token
        self.worker_id = worker_id
        self.resource: Any = None  #: what the ``@svc.context`` hook gave, if any
        self.log = logging.getLogger(f"conveyor.services.{name}")
        self.why: str | None = None  #: why the stop was asked, once it was
        self._stop = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ServiceContext {self.name}[{self.replica}] generation={self.generation}>"

    @property
    def stopping(self) -> bool:
        """True once this run was asked to stop."""
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, less if a stop is asked; returns ``stopping``."""
        return self._stop.wait(timeout)

    async def sleep(self, timeout: float) -> bool:
        """The async ``wait``: sleep up to ``timeout`` seconds, less if a stop is asked; returns ``stopping``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped(), timeout)
        return self.stopping

    async def stopped(self) -> None:
        """Return once a stop is asked."""
        if self.stopping:
            return
        event = asyncio.Event()
        with self._lock:
            if self.stopping:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the body until it ends or a stop is asked; at a stop the body is cancelled and the block
        is left without an error (the body's own ``finally`` clauses run)."""
        task = asyncio.current_task()
        assert task is not None, "ctx.running() is used inside an async service"
        watcher = asyncio.ensure_future(self.stopped())
        watcher.add_done_callback(lambda done: None if done.cancelled() else task.cancel())
        try:
            yield
        except asyncio.CancelledError:
            if not (watcher.done() and not watcher.cancelled()):
                raise  # cancelled from outside (the worker killing the run): not ours to swallow
            task.uncancel()
        finally:
            watcher.cancel()

    def request_stop(self, why: str) -> bool:
        """Ask the run to stop (the keeper's side); False if it was asked already."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.why = why
            self._stop.set()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop closed
                loop.call_soon_threadsafe(event.set)
        return True
