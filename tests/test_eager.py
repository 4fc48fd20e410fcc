"""Eager mode: ``.delay()`` stores the job and runs it inline at once, with no retry.

Distinct from ``run_until_empty`` (which keeps the worker's retry rules): an eager job is
finished, in the store, by the time ``.delay()`` returns."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from conveyor import App, JobFailed, Retry, Status


@pytest.fixture
def eager_app(url: str) -> Iterator[App]:
    app = App(url, eager=True)
    yield app
    app.close()


def test_delay_runs_the_task_and_stores_its_result(eager_app: App) -> None:
    calls: list[tuple[int, int]] = []

    @eager_app.task
    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    handle = add.delay(2, 3)
    assert calls == [(2, 3)]  # ran before delay() returned
    assert handle.record.status is Status.SUCCEEDED
    assert handle.result(timeout=0) == 5
    job = eager_app.job(handle.id)  # read back from the store
    assert (job.status, job.result, job.attempts, job.exit_code) == (Status.SUCCEEDED, 5, 1, 0)
    assert job.worker_id == "eager"


def test_an_exception_fails_the_job_with_no_retry(eager_app: App) -> None:
    runs: list[int] = []

    @eager_app.task(max_retries=5)
    def flaky() -> None:
        runs.append(1)
        raise ValueError("broken")

    handle = flaky.delay()
    assert len(runs) == 1
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=0)
    assert info.value.error is not None and info.value.error.type == "ValueError"
    job = eager_app.job(handle.id)
    assert (job.status, job.retries, job.attempts, job.exit_code) == (Status.FAILED, 0, 1, 1)


def test_retry_fails_the_job_too(eager_app: App) -> None:
    @eager_app.task(max_retries=3)
    def again() -> None:
        raise Retry(delay=0, reason="not yet")

    handle = again.delay()
    job = eager_app.job(handle.id)
    assert job.status is Status.FAILED
    assert job.error is not None and "not yet" in job.error.message
    with pytest.raises(JobFailed):
        handle.result(timeout=0)


def test_nothing_is_left_queued(eager_app: App) -> None:
    @eager_app.task
    def ok(n: int) -> int:
        return n

    @eager_app.task
    def bad() -> None:
        raise RuntimeError("no")

    handles = eager_app.enqueue_many([ok.s(1), ok.s(2), bad.s()])
    eager_app.enqueue("no.such.task")  # by name, not registered here: fails at once
    ok.options(delay=3600).delay(3)  # a delay is not waited for
    assert [h.record.status for h in handles] == [Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED]
    assert eager_app.stats()["all"] == {Status.SUCCEEDED: 3, Status.FAILED: 2}
    assert eager_app.run_until_empty() == 0


def test_a_task_may_enqueue_and_wait_on_another(eager_app: App) -> None:
    @eager_app.task
    def inner(x: int) -> int:
        return x * 10

    @eager_app.task
    def outer(x: int) -> int:
        return int(inner.delay(x).result(timeout=0)) + 1  # already finished: no deadlock guard

    assert outer.delay(4).result(timeout=0) == 41


def test_the_context_manager_switches_and_restores(app: App) -> None:
    @app.task
    def ok() -> str:
        return "ran"

    queued = ok.delay()
    assert queued.record.status is Status.QUEUED
    with app.eager() as same:
        assert same is app and app.is_eager
        assert ok.delay().result(timeout=0) == "ran"
        with app.eager(False):
            assert ok.delay().record.status is Status.QUEUED
        assert app.is_eager
    assert not app.is_eager
    assert ok.delay().record.status is Status.QUEUED
    assert app.stats()["all"] == {Status.QUEUED: 3, Status.SUCCEEDED: 1}

    with pytest.raises(KeyError), app.eager():
        raise KeyError("the mode is restored on an exception too")
    assert not app.is_eager


def test_run_until_empty_keeps_the_retry_rules(app: App) -> None:
    @app.task(max_retries=1, backoff=0, jitter=0)
    def flaky() -> None:
        raise ValueError("again")

    handle = flaky.delay()
    app.run_until_empty()
    assert (handle.refresh().status, handle.record.retries) == (Status.FAILED, 1)  # retried once, then failed


def test_eager_refuses_a_callers_transaction(eager_app: App, db_path) -> None:
    @eager_app.task
    def ok() -> None:
        return None

    eager_app.backend.setup()
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(ValueError, match="eager mode"):
            ok.options(connection=conn).delay()
    finally:
        conn.close()
    assert eager_app.jobs() == []
