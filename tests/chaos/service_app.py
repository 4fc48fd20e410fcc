"""The app of the service tests' worker processes (``service_app:app``): long-running services that log
every step of each run to the side-effect log ``$SERVICE_LOG`` (O_APPEND, one write per line, so lines
from many processes never interleave). Each line is a JSON object: ``ev`` (what happened), ``t``
(wall clock), ``pid``, and the run's ``name``, ``svc``, ``replica``, ``gen``, ``token`` and ``worker``;
``start`` lines add the ``params`` the function was called with. The tests read it with
tests/servicekit.py and judge the services from their own side effects, not only from the store.

``declare(app)`` declares the services on any App: here, for the workers, and on a test's client
App (so that ``start_service`` checks parameters there; the bodies never run in a test process).
Every service has a short lease (``$SERVICE_LEASE``, 3 s) and a grace of a third of it, and
starts only when a test starts an instance, except the local one, declared only in workers started
with ``$SERVICE_LOCAL=1`` (it runs in every worker process at boot), and the autostart one, declared
only in workers started with ``$SERVICE_AUTO=<replicas>``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from conveyor import App, ServiceContext

LOG = os.environ.get("SERVICE_LOG", os.devnull)
LEASE = float(os.environ.get("SERVICE_LEASE", "3.0"))  #: a service replica's lease (renewed every lease / 6)
GRACE = LEASE / 3  #: the most ServiceOptions allows: a cut-off worker's stop is over before the lease runs out
BEAT = 0.2  #: seconds between two ``alive`` lines of a run
CRASHES = 3  #: svc.crash is FAILED after this many crashes


def mark(event: str, ctx: ServiceContext, **fields: Any) -> None:
    """Append one line about ``ctx``'s run to the side-effect log, in a single write."""
    line = {"ev": event, "t": time.time(), "pid": os.getpid(), "name": ctx.name, "svc": ctx.service,
            "replica": ctx.replica, "gen": ctx.generation, "token": ctx.token, "worker": ctx.worker_id,
            **fields}  # fmt: skip
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)


#: svc.tick's runs in this process wait on these, by token, until their stop hook sets them.
_RELEASES: dict[str, threading.Event] = {}
_RELEASES_LOCK = threading.Lock()


def _release(token: str) -> threading.Event:
    """The event that releases the svc.tick run of ``token``."""
    with _RELEASES_LOCK:
        return _RELEASES.setdefault(token, threading.Event())


def _hook(ctx: ServiceContext) -> None:
    """The stop hook of every service: it ran, and why the stop was asked; it releases svc.tick."""
    mark("hook", ctx, why=ctx.why)
    _release(ctx.token).set()


def _tick(ctx: ServiceContext, params: dict[str, Any], wait: Callable[[float], bool], linger: float = 0.0) -> None:
    """The body of the sync services: a start line, an alive line every ``beat`` s until ``wait``
    says it is released, ``linger`` s more (a stop that takes a while), a stop line."""
    mark("start", ctx, params=params)
    while not wait(params["beat"]):
        mark("alive", ctx)
    if linger:
        time.sleep(linger)
    mark("stop", ctx, why=ctx.why)


def declare(app: App, *, local: bool = True, auto: int = 0) -> None:
    """Declare the test services on ``app``: the local one only if ``local``, the autostart one
    (``svc.auto``, its instance made by the first worker to start) only if ``auto`` replicas."""
    timing: dict[str, Any] = {"lease": LEASE, "grace": GRACE}

    @app.service(name="svc.tick", autostart=False, **timing)
    def tick(ctx: ServiceContext, label: str = "a", beat: float = BEAT, linger: float = 0.0) -> None:
        """A sync service that does not watch ``ctx``: it runs until its stop hook releases it (as a
        consumer blocked in a client library runs until the hook closes the client), then takes
        ``linger`` s to stop."""
        try:
            _tick(ctx, {"label": label, "beat": beat}, _release(ctx.token).wait, linger)
        finally:
            with _RELEASES_LOCK:
                _RELEASES.pop(ctx.token, None)

    tick.on_stop(_hook)

    @app.service(name="svc.atick", autostart=False, **timing)
    async def atick(ctx: ServiceContext, label: str = "a", beat: float = BEAT) -> None:
        """An async service: its body is cancelled at a stop (``ctx.running()``); the stop line is
        written by its ``finally``, so it is there whichever way the run ended."""
        mark("start", ctx, params={"label": label, "beat": beat}, resource=ctx.resource)
        try:
            async with ctx.running():
                while True:
                    await asyncio.sleep(beat)
                    mark("alive", ctx)
        finally:
            mark("stop", ctx, why=ctx.why)

    @atick.context
    @contextlib.asynccontextmanager
    async def around(ctx: ServiceContext) -> AsyncIterator[str]:
        """Setup and teardown around each run of svc.atick (its value is ``ctx.resource``)."""
        mark("setup", ctx)
        try:
            yield f"resource-{ctx.token[:6]}"
        finally:
            mark("teardown", ctx)

    atick.on_stop(_hook)

    @app.service(name="svc.crash", autostart=False, max_crashes=CRASHES, crash_window=120.0, backoff=0.2,
                 max_backoff=0.4, **timing)  # fmt: skip
    def crash(ctx: ServiceContext, message: str = "boom") -> None:
        """Raises shortly after every start: restarted with back-off, FAILED after CRASHES crashes."""
        mark("start", ctx, params={"message": message})
        ctx.wait(0.1)
        mark("crash", ctx)
        raise RuntimeError(f"{message} (run {ctx.token[:8]})")

    @app.service(name="svc.stubborn", autostart=False, **timing)
    def stubborn(ctx: ServiceContext, beat: float = BEAT) -> None:
        """A sync service that never looks at a stop: killed (ServiceKilled raised in its thread) once
        its grace is over. Short sleeps, so that the kill lands at once; an alive line every ``beat`` s."""
        mark("start", ctx, params={"beat": beat})
        try:
            while True:
                for _ in range(max(1, round(beat / 0.02))):
                    time.sleep(0.02)
                mark("alive", ctx)
        except BaseException as exc:
            mark("stop", ctx, why=ctx.why, killed=type(exc).__name__)
            raise

    @app.service(name="svc.astubborn", autostart=False, **timing)
    async def astubborn(ctx: ServiceContext, beat: float = BEAT) -> None:
        """An async service that never looks at a stop: cancelled once its grace is over."""
        mark("start", ctx, params={"beat": beat})
        try:
            while True:
                await asyncio.sleep(beat)
                mark("alive", ctx)
        except BaseException as exc:
            mark("stop", ctx, why=ctx.why, killed=type(exc).__name__)
            raise

    @app.service(name="svc.blocked", autostart=False, **timing)
    def blocked(ctx: ServiceContext, hold: str = "") -> None:
        """Holds an exclusive flock on the file ``hold`` (a resource one copy at a time may have: a
        ``conflict`` line says a run found another copy still holding it, and it waits for it), then
        blocks in one long C call, deaf to its stop and to the kill (a client library stuck in a read
        with no time-out). Only the end of its process ends it."""
        fd = os.open(hold, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            mark("conflict", ctx)
            fcntl.flock(fd, fcntl.LOCK_EX)
        mark("start", ctx, params={"hold": hold})
        time.sleep(3600)

    if auto:

        @app.service(name="svc.auto", replicas=auto, **timing)
        def auto_tick(ctx: ServiceContext, beat: float = BEAT) -> None:
            """An autostart service: it needs no parameters, so a worker makes its instance."""
            _tick(ctx, {"beat": beat}, ctx.wait)

        auto_tick.on_stop(_hook)

    if local:

        @app.service(name="svc.local", local=True, **timing)
        def local_tick(ctx: ServiceContext, beat: float = BEAT) -> None:
            """A worker-local service: one run in every worker process, for as long as it runs; it
            watches ``ctx`` (the stop event itself)."""
            _tick(ctx, {"beat": beat}, ctx.wait)

        local_tick.on_stop(_hook)


app = App(os.environ.get("CONVEYOR_URL"), lease=float(os.environ.get("SERVICE_APP_LEASE", "2.0")))
declare(app, local=os.environ.get("SERVICE_LOCAL") == "1", auto=int(os.environ.get("SERVICE_AUTO") or 0))
