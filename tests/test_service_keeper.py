"""The worker's service keeper, in one process with a real store: replicas run, stop with their hook,
restart with fresh parameters, crash into FAILED, are killed when they ignore a stop, wrap their runs
in a context, and are handed back when the worker stops. (Several worker processes, SIGKILL, SIGSTOP
and store outages: tests/e2e/test_services.py and tests/chaos/test_service_chaos.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conveyor import App, ServiceContext, ServiceStatus, Worker
from conveyor.events import EventKind

LEASE = 3.0
GRACE = 0.5


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keeper.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    app = App(url, lease=LEASE)
    app.backend.destroy_all()
    yield app
    app.close()


@contextlib.contextmanager
def running_worker(app: App, **settings: object) -> Iterator[Worker]:
    worker = Worker(app, grace=GRACE, **settings)  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def until(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


def statuses(app: App, name: str) -> list[ServiceStatus]:
    return [row.status for row in app.services(name)]


def test_a_sync_service_runs_stops_with_its_hook_and_reloads_with_new_parameters(app: App) -> None:
    seen: list[tuple[str, object]] = []

    @app.service(lease=LEASE, grace=GRACE)
    def ticker(ctx: ServiceContext, every: float = 0.05) -> None:
        seen.append(("start", ctx.params.get("every", every)))
        while not ctx.wait(every):
            pass
        seen.append(("end", ctx.why))

    @ticker.on_stop
    def hook(ctx: ServiceContext) -> None:
        seen.append(("hook", ctx.why))

    with running_worker(app) as worker:
        until(lambda: statuses(app, "ticker") == [ServiceStatus.RUNNING])
        assert app.services("ticker")[0].worker_id == worker.id
        app.reload_service("ticker", every=0.02)
        until(lambda: ("start", 0.02) in seen and statuses(app, "ticker") == [ServiceStatus.RUNNING])
        assert app.services("ticker")[0].generation == 1
        app.stop_service("ticker")
        until(lambda: statuses(app, "ticker") == [ServiceStatus.STOPPED])
        assert ("hook", "stop requested") in seen and ("end", "stop requested") in seen
        time.sleep(LEASE / 6 * 3)  # a stopped instance is not taken again
        assert statuses(app, "ticker") == [ServiceStatus.STOPPED]
        assert seen.count(("start", 0.02)) == 1
        app.start_service("ticker")
        until(lambda: statuses(app, "ticker") == [ServiceStatus.RUNNING])
    assert statuses(app, "ticker") == [ServiceStatus.PENDING]  # handed back when the worker stopped
    assert seen[-1] == ("hook", "worker stopping") or ("end", "worker stopping") in seen
    kinds = [event.kind for event in app.events(kinds=[k.value for k in EventKind if k.startswith("service_")])]
    for kind in ("service_created", "service_assigned", "service_started", "service_requested", "service_stopped",
                 "service_handed_back"):  # fmt: skip
        assert kind in kinds, kind


def test_an_async_service_runs_in_its_context_and_is_cancelled_by_running(app: App) -> None:
    seen: list[str] = []

    @app.service(lease=LEASE, grace=GRACE)
    async def listener(ctx: ServiceContext) -> None:
        seen.append(f"start {ctx.resource}")
        async with ctx.running():
            await asyncio.sleep(3600)
        seen.append("left running")

    @listener.context
    @contextlib.asynccontextmanager
    async def connection(ctx: ServiceContext) -> object:
        seen.append("open")
        yield "conn-1"
        seen.append("close")

    @listener.on_stop
    async def hook(ctx: ServiceContext) -> None:
        await asyncio.sleep(0.2)  # slower than the body's cancellation: the context still waits for it
        seen.append(f"hook with {ctx.resource}")

    with running_worker(app):
        until(lambda: statuses(app, "listener") == [ServiceStatus.RUNNING])
        app.stop_service("listener")
        until(lambda: statuses(app, "listener") == [ServiceStatus.STOPPED])
    assert seen == ["open", "start conn-1", "left running", "hook with conn-1", "close"]


def test_a_sync_runs_context_is_left_only_after_its_stop_hook_returned(app: App) -> None:
    seen: list[str] = []

    @app.service(lease=LEASE, grace=GRACE)
    def poller(ctx: ServiceContext) -> None:
        ctx.wait()
        seen.append("returned")

    @poller.context
    @contextlib.contextmanager
    def session(ctx: ServiceContext) -> Iterator[str]:
        yield "session-1"
        seen.append("closed")

    @poller.on_stop
    def hook(ctx: ServiceContext) -> None:
        time.sleep(0.2)  # the function returns at once; its context waits for this
        seen.append(f"hook with {ctx.resource}")

    with running_worker(app):
        until(lambda: statuses(app, "poller") == [ServiceStatus.RUNNING])
        app.stop_service("poller")
        until(lambda: statuses(app, "poller") == [ServiceStatus.STOPPED])
    assert seen == ["returned", "hook with session-1", "closed"]


def test_a_service_that_crashes_every_time_ends_failed_and_others_run_on(app: App) -> None:
    @app.service(lease=LEASE, grace=GRACE, max_crashes=3, backoff=0.05, max_backoff=0.1)
    def crasher(ctx: ServiceContext) -> None:
        raise RuntimeError("cannot connect to the broker")

    @app.service(lease=LEASE, grace=GRACE)
    def steady(ctx: ServiceContext) -> None:
        ctx.wait()

    with running_worker(app):
        until(lambda: statuses(app, "crasher") == [ServiceStatus.FAILED])
        row = app.services("crasher")[0]
        assert row.last_error is not None and row.last_error.type == "RuntimeError"
        assert "cannot connect" in row.last_error.message and row.restarts == 2 and len(row.crashes) == 3
        assert statuses(app, "steady") == [ServiceStatus.RUNNING]
        failed = app.events(kinds=["service_failed"])
        assert len(failed) == 1 and failed[0].data["service"] == "crasher"
        app.start_service("crasher")  # a FAILED one can be started again: its crashes are forgotten
        until(lambda: app.services("crasher")[0].crashes != [] and app.services("crasher")[0].restarts >= 3)


def test_a_sync_service_that_ignores_its_stop_is_killed_after_its_grace(app: App) -> None:
    seen: list[str] = []

    @app.service(lease=LEASE, grace=GRACE)
    def stubborn(ctx: ServiceContext) -> None:
        seen.append("start")
        try:
            while True:
                time.sleep(0.01)  # never looks at ctx
        finally:
            seen.append("killed")

    with running_worker(app):
        until(lambda: statuses(app, "stubborn") == [ServiceStatus.RUNNING])
        asked = time.monotonic()
        app.stop_service("stubborn")
        until(lambda: statuses(app, "stubborn") == [ServiceStatus.STOPPED])
        assert seen == ["start", "killed"]
        assert time.monotonic() - asked >= GRACE


def test_a_local_service_runs_in_each_worker_and_goes_with_it(app: App) -> None:
    seen: list[str] = []

    @app.service(local=True, lease=LEASE, grace=GRACE)
    def per_worker(ctx: ServiceContext) -> None:
        seen.append(ctx.worker_id)
        ctx.wait()

    with running_worker(app) as one, running_worker(app) as two:
        until(lambda: len([row for row in app.services() if row.status is ServiceStatus.RUNNING]) == 2)
        assert sorted(row.name for row in app.services()) == sorted(f"per_worker@{w.id}" for w in (one, two))
        assert sorted(seen) == sorted([one.id, two.id])
        assert {row.local_to for row in app.services()} == {one.id, two.id}
    assert app.services() == []  # removed at each worker's clean stop


def test_a_worker_serving_other_queues_or_without_services_runs_none(app: App) -> None:
    @app.service(lease=LEASE, grace=GRACE, queue="services")
    def elsewhere(ctx: ServiceContext) -> None:
        ctx.wait()

    with running_worker(app, queues=["default"]) as plain, running_worker(app, queues=["services"], services=False):
        time.sleep(LEASE / 6 * 3)
        assert not plain.keeper.active
        assert app.services() == []  # nobody synced it: no worker runs its queue with services on
    with running_worker(app, queues=["services"]):
        until(lambda: statuses(app, "elsewhere") == [ServiceStatus.RUNNING])


def test_replicas_spread_over_workers_while_there_are_others(app: App) -> None:
    @app.service(lease=LEASE, grace=GRACE, replicas=2)
    def pair(ctx: ServiceContext) -> None:
        ctx.wait()

    with running_worker(app) as one, running_worker(app) as two:
        until(lambda: statuses(app, "pair") == [ServiceStatus.RUNNING] * 2)
        assert {row.worker_id for row in app.services("pair")} == {one.id, two.id}
    # alone, a worker runs both (after the spread wait)
    with running_worker(app) as alone:
        until(lambda: statuses(app, "pair") == [ServiceStatus.RUNNING] * 2)
        assert {row.worker_id for row in app.services("pair")} == {alone.id}


def test_the_events_of_a_replica_name_its_instance_and_service(app: App) -> None:
    @app.service(lease=LEASE, grace=GRACE, autostart=False, queue="default")
    def consume(ctx: ServiceContext, topic: str) -> None:
        ctx.wait()

    app.start_service("consume", name="orders-eu", topic="eu")
    with running_worker(app) as worker:
        until(lambda: statuses(app, "orders-eu") == [ServiceStatus.RUNNING])
    started = app.events(kinds=["service_started"])
    assert [(e.task, e.queue, e.worker_id, e.data["service"], e.data["replica"]) for e in started] == [
        ("consume", "default", worker.id, "orders-eu", 0)
    ]
