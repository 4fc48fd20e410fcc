"""Declaring services and checking instances' parameters: every mistake is refused at the call that
makes it, before anything is stored; and the pure decisions of conveyor.service_policy."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from conveyor import App, ServiceContext, ServiceNotFound, UnknownService
from conveyor.events import EventKind
from conveyor.service_policy import StopReason, after_renewal, backoff, crashed, error_of, stopped
from conveyor.service_types import ServiceError, ServiceRecord, ServiceSource, ServiceStatus
from conveyor.services import ServiceOptions


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(f"sqlite:///{tmp_path / 'svc.db'}")


def _record(**changes: object) -> ServiceRecord:
    fields: dict[str, object] = dict(
        name="orders", replica=0, service="consume", queue="default", params={}, source=ServiceSource.API,
        local_to=None, wanted=True, generation=0, status=ServiceStatus.RUNNING, worker_id="w", token="t",
        lease_until=10.0, run_generation=0, started_at=1.0, free_since=None, not_before=0.0, restarts=0, crashes=[],
        last_error=None, created_at=0.0, updated_at=0.0,
    )  # fmt: skip
    fields.update(changes)
    return ServiceRecord(**fields)  # type: ignore[arg-type]


# declaring --------------------------------------------------------------------------------------------------
def test_a_service_is_declared_with_its_options(app: App) -> None:
    @app.service(queue="services", replicas=2, lease=6.0, grace=2.0)
    def consume(ctx: ServiceContext, topic: str = "orders") -> None: ...

    assert app.service_defs["consume"] is consume
    assert consume.options.replicas == 2 and consume.options.queue == "services"
    assert consume.options.autostart is True  # needs no parameters


def test_a_service_that_needs_parameters_does_not_start_by_itself(app: App) -> None:
    @app.service(autostart=False)
    def consume(ctx: ServiceContext, topic: str) -> None: ...

    assert consume.options.autostart is False
    with pytest.raises(ValueError, match="needs parameters"):

        @app.service(autostart=True)
        def other(ctx: ServiceContext, topic: str) -> None: ...


def test_an_unnamed_service_defaults_to_autostart_false_when_it_needs_parameters(app: App) -> None:
    @app.service
    def needs(ctx: ServiceContext, topic: str) -> None: ...

    assert needs.options.autostart is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replicas": True}, "replicas"),
        ({"lease": 0}, "lease"),
        ({"grace": -1}, "grace"),
        ({"grace": 5.0, "lease": 9.0}, "lease / 3"),
        ({"max_crashes": 0}, "max_crashes"),
        ({"queue": ""}, "queue"),
        ({"local": True, "replicas": 2}, "local"),
        ({"crash_window": float("nan")}, "crash_window"),
    ],
)
def test_bad_options_are_refused_at_declaration(app: App, options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):

        @app.service(**options)
        def svc(ctx: ServiceContext) -> None: ...

    assert "svc" not in app.service_defs


def test_an_unknown_option_and_a_function_without_a_context_are_refused(app: App) -> None:
    with pytest.raises(TypeError, match="unknown service option"):
        app.service(replica=2)
    with pytest.raises(TypeError, match="context first"):

        @app.service
        def no_ctx() -> None: ...


def test_a_bad_name_and_a_second_function_of_the_same_name_are_refused(app: App) -> None:
    with pytest.raises(ValueError, match="name"):

        @app.service(name="bad name!")
        def svc(ctx: ServiceContext) -> None: ...

    @app.service(name="one")
    def first(ctx: ServiceContext) -> None: ...

    with pytest.raises(ValueError, match="already declared"):

        @app.service(name="one")
        def second(ctx: ServiceContext) -> None: ...


# instances' parameters ----------------------------------------------------------------------------------------
def test_parameters_are_checked_against_the_function_before_anything_is_stored(app: App) -> None:
    @app.service(autostart=False)
    def consume(ctx: ServiceContext, topic: str, batch: int = 10) -> None: ...

    with pytest.raises(TypeError, match="cannot take these parameters"):
        app.start_service("consume", name="eu", topc="x")
    with pytest.raises(TypeError, match="cannot take these parameters"):
        app.start_service("consume", name="eu")  # topic missing
    with pytest.raises(TypeError):
        app.start_service("consume", name="eu", topic={1, 2})  # not JSON
    with pytest.raises(ValueError, match="name"):
        app.start_service("consume", name="bad name", topic="x")
    with pytest.raises(ValueError, match="replicas"):
        app.start_service("consume", name="eu", replicas=0, topic="x")
    assert app.services() == []


def test_unknown_services_and_instances_are_named(app: App) -> None:
    with pytest.raises(UnknownService, match="no service 'nope'"):
        app.start_service(app.service_def("nope"))
    with pytest.raises(ServiceNotFound):
        app.stop_service("nope")
    with pytest.raises(ServiceNotFound):
        app.reload_service("nope", topic="x")
    assert app.remove_service("nope") is False


def test_an_existing_instance_starts_again_without_parameters_only(app: App) -> None:
    @app.service(autostart=False)
    def consume(ctx: ServiceContext, topic: str) -> None: ...

    rows = app.start_service("consume", name="eu", replicas=2, topic="orders-eu")
    assert [(row.name, row.replica, row.status, row.params) for row in rows] == [
        ("eu", 0, ServiceStatus.PENDING, {"topic": "orders-eu"}),
        ("eu", 1, ServiceStatus.PENDING, {"topic": "orders-eu"}),
    ]
    with pytest.raises(ValueError, match="reload_service"):
        app.start_service("consume", name="eu", topic="other")
    assert [row.status for row in app.stop_service("eu")] == [ServiceStatus.STOPPED] * 2
    assert [row.status for row in app.start_service("eu")] == [ServiceStatus.PENDING] * 2
    rows = app.reload_service("eu", topic="orders-us")
    assert {row.params["topic"] for row in rows} == {"orders-us"} and {row.generation for row in rows} == {1}
    with pytest.raises(TypeError, match="cannot take"):
        app.reload_service("eu", nope=1)
    assert app.remove_service("eu") is True and app.services() == []


def test_a_reload_can_unset_a_parameter_so_its_default_applies_again(app: App) -> None:
    @app.service(autostart=False)
    def consume(ctx: ServiceContext, topic: str, batch: int = 10) -> None: ...

    app.start_service("consume", name="eu", topic="orders", batch=50)
    [row] = app.reload_service("eu", unset=["batch"], topic="orders-us")
    assert (row.params, row.generation) == ({"topic": "orders-us"}, 1)
    with pytest.raises(TypeError, match="cannot take these parameters"):
        app.reload_service("eu", unset=["topic"])  # it has no default
    with pytest.raises(ValueError, match=r"no stored parameter to unset: batch \(it has: topic\)"):
        app.reload_service("eu", unset=["batch"])
    with pytest.raises(ValueError, match="both given and unset: topic"):
        app.reload_service("eu", unset=["topic"], topic="x")
    with pytest.raises(TypeError, match=r"unset takes parameter names, e.g. unset=\['batch'\]"):
        app.reload_service("eu", unset="batch")
    [row] = app.services("eu")
    assert (row.params, row.generation) == ({"topic": "orders-us"}, 1), "the refused calls wrote nothing"


def test_sync_creates_the_autostart_instances_once_and_keeps_their_replicas_in_step(app: App) -> None:
    @app.service(replicas=2)
    def ticker(ctx: ServiceContext) -> None: ...

    @app.service(autostart=False)
    def manual(ctx: ServiceContext) -> None: ...

    @app.service(local=True)
    def per_worker(ctx: ServiceContext) -> None: ...

    assert app.sync_services() == ["ticker"]
    assert app.sync_services() == []
    assert [(row.name, row.replica, row.source) for row in app.services()] == [
        ("ticker", 0, ServiceSource.CODE), ("ticker", 1, ServiceSource.CODE)
    ]  # fmt: skip
    app.stop_service("ticker")
    app.sync_services()  # a sync never starts what a user stopped
    assert {row.status for row in app.services("ticker")} == {ServiceStatus.STOPPED}


# the context ------------------------------------------------------------------------------------------------
def _ctx() -> ServiceContext:
    return ServiceContext(name="n", service="s", replica=0, params={}, generation=0, token="t", worker_id="w")


def test_wait_returns_once_a_stop_is_asked() -> None:
    ctx = _ctx()
    assert ctx.wait(0.01) is False
    threading.Timer(0.05, ctx.request_stop, args=("stop requested",)).start()
    assert ctx.wait(10) is True and ctx.stopping and ctx.why == "stop requested"
    assert ctx.request_stop("again") is False and ctx.why == "stop requested"


def test_running_cancels_the_body_at_a_stop_and_leaves_quietly() -> None:
    ctx = _ctx()
    seen: list[str] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, ctx.request_stop, "stop requested")
        async with ctx.running():
            try:
                await asyncio.sleep(30)
            finally:
                seen.append("finally")
        seen.append("after")
        assert await ctx.sleep(5) is True  # already stopping: returns at once

    asyncio.run(asyncio.wait_for(body(), 10))
    assert seen == ["finally", "after"]


def test_running_does_not_swallow_a_cancel_from_outside() -> None:
    ctx = _ctx()

    async def body() -> None:
        async with ctx.running():
            await asyncio.sleep(30)

    async def main() -> None:
        task = asyncio.ensure_future(body())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


# the decisions ----------------------------------------------------------------------------------------------
def test_a_renewal_decides_whether_the_run_goes_on() -> None:
    assert after_renewal(_record(), 0) is None
    assert after_renewal(None, 0) is StopReason.LOST
    assert after_renewal(_record(wanted=False), 0) is StopReason.STOP
    assert after_renewal(_record(generation=1), 0) is StopReason.RESTART


def test_an_asked_stop_ends_stopped_or_handed_back() -> None:
    end = stopped(StopReason.STOP, 5.0)
    assert end.status is ServiceStatus.STOPPED and end.event == EventKind.SERVICE_STOPPED
    for why in (StopReason.RESTART, StopReason.WORKER_STOPPING, StopReason.UNREACHABLE):
        end = stopped(why, 5.0)
        assert end.status is ServiceStatus.PENDING and end.not_before == 5.0
        assert end.event == EventKind.SERVICE_HANDED_BACK and end.data == {"why": why.value}


def test_crashes_back_off_then_fail_within_the_window() -> None:
    options = ServiceOptions(max_crashes=3, crash_window=100.0, backoff=1.0, max_backoff=3.0)
    error = ServiceError(type="ValueError", message="boom")
    first = crashed(_record(crashes=[]), options, error, 1000.0)
    assert first.status is ServiceStatus.PENDING and first.not_before == 1001.0 and first.restarted
    second = crashed(_record(crashes=[1000.0]), options, error, 1010.0)
    assert second.not_before == 1012.0 and second.crashes == [1000.0, 1010.0]
    third = crashed(_record(crashes=[1000.0, 1010.0]), options, error, 1020.0)
    assert third.status is ServiceStatus.FAILED and third.event == EventKind.SERVICE_FAILED and third.error == error
    # crashes older than the window are forgotten
    late = crashed(_record(crashes=[1000.0, 1010.0]), options, error, 1105.0)
    assert late.status is ServiceStatus.PENDING and late.crashes == [1010.0, 1105.0]
    assert backoff(options, 10) == 3.0


def test_an_error_keeps_its_type_message_and_traceback() -> None:
    try:
        raise KeyError("topic")
    except KeyError as exc:
        error = error_of(exc)
    assert error.type == "KeyError" and "topic" in error.message
    assert error.traceback is not None and "raise KeyError" in error.traceback


def test_a_new_instance_belongs_to_its_owner(app: App) -> None:
    @app.service(autostart=False)
    def consume(ctx: ServiceContext, topic: str) -> None: ...

    rows = app.start_service("consume", name="eu", replicas=2, owner="alice", topic="eu")
    assert [row.owner for row in rows] == ["alice", "alice"]
    assert [row.owner for row in app.start_service("consume", name="us", topic="us")] == [None]
    with pytest.raises(ValueError, match="owner"):
        app.start_service("consume", name="bad", owner="", topic="x")
