"""job.result(): values, failures, time-outs, unknown ids, and the deadlock guard inside tasks."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import App, JobFailed, JobNotFound, Status


def test_result_returns_the_value(app: App) -> None:
    @app.task
    def structured(n: int) -> dict[str, object]:
        return {"n": n, "items": list(range(n)), "nested": {"ok": True}}

    handle = structured.delay(3)
    app.run_until_empty()
    assert handle.result(timeout=1) == {"n": 3, "items": [0, 1, 2], "nested": {"ok": True}}
    assert app.job(handle.id).result == {"n": 3, "items": [0, 1, 2], "nested": {"ok": True}}


def test_result_waits_for_a_worker(app: App, start_worker) -> None:
    @app.task
    def square(x: int) -> int:
        return x * x

    handles = [square.delay(i) for i in range(5)]
    start_worker()
    assert [h.result(timeout=10) for h in handles] == [0, 1, 4, 9, 16]


def test_result_of_a_failed_job_raises_job_failed(app: App) -> None:
    @app.task
    def broken() -> None:
        raise KeyError("missing-thing")

    handle = broken.delay()
    app.run_until_empty()
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=1)
    assert info.value.job_id == handle.id
    assert info.value.status == "failed"
    assert info.value.error is not None
    assert info.value.error.type == "KeyError"
    assert "missing-thing" in info.value.error.message
    assert "KeyError" in str(info.value)


def test_a_result_that_is_not_json_fails_the_job(app: App) -> None:
    @app.task
    def returns_object() -> object:
        return object()

    handle = returns_object.delay()
    app.run_until_empty()
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=1)
    assert info.value.error is not None and info.value.error.type == "TypeError"


def test_result_times_out_when_the_job_is_not_done(app: App) -> None:
    @app.task
    def never_run() -> None:
        return None

    handle = never_run.delay()
    with pytest.raises(TimeoutError, match=handle.id):
        handle.result(timeout=0.1)
    assert handle.status is Status.QUEUED


def test_unknown_job_id(app: App) -> None:
    with pytest.raises(JobNotFound) as info:
        app.job("no-such-job")
    assert info.value.job_id == "no-such-job"
    with pytest.raises(JobNotFound):
        app.handle("no-such-job")
    with pytest.raises(JobNotFound):
        app.cancel("no-such-job")
    with pytest.raises(JobNotFound):
        app.retry("no-such-job")


def test_result_of_a_cancelled_job_raises_job_failed(app: App) -> None:
    @app.task
    def noop() -> None:
        return None

    handle = noop.delay()
    handle.cancel()
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=1)
    assert info.value.status == "cancelled"


def test_waiting_on_a_job_inside_a_task_is_refused(app: App) -> None:
    @app.task
    def other() -> str:
        return "other's result"

    @app.task
    def waiter(job_id: str) -> str:
        return app.handle(job_id).result(timeout=1)

    done = other.delay()
    app.run_until_empty()
    assert done.result(timeout=1) == "other's result"

    handle = waiter.delay(done.id)
    app.run_until_empty()
    job = handle.refresh()
    assert job.status is Status.FAILED
    assert job.error is not None
    assert job.error.type == "DeadlockError"
    assert "allow_in_task" in job.error.message


def test_waiting_on_a_job_inside_an_async_task_is_refused(app: App, start_worker) -> None:
    @app.task
    def other() -> int:
        return 1

    @app.task
    async def waiter(job_id: str) -> int:
        await asyncio.sleep(0)
        return app.handle(job_id).result(timeout=1)

    done = other.delay()
    handle = waiter.delay(done.id)
    start_worker()
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=10)
    assert info.value.error is not None and info.value.error.type == "DeadlockError"
    assert done.result(timeout=10) == 1


def test_allow_in_task_lifts_the_guard(app: App) -> None:
    @app.task
    def other() -> str:
        return "ready"

    @app.task
    def waiter(job_id: str) -> str:
        return "got " + app.handle(job_id).result(timeout=1, allow_in_task=True)

    done = other.delay()
    app.run_until_empty()
    handle = waiter.delay(done.id)
    app.run_until_empty()
    assert handle.result(timeout=1) == "got ready"
