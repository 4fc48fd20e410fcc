"""Control and housekeeping: app.retry, prune and result TTL, listing, stats, fencing of stale runs."""

from __future__ import annotations

import time

import pytest

from conveyor import App, InvalidTransition, JobNotFound, Priority, Status
from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.leader import Leader


def _failing(app: App, **options):
    state = {"fail": True}

    @app.task(**options)
    def sometimes() -> str:
        if state["fail"]:
            raise ValueError("not yet")
        return "fixed"

    return sometimes, state


def test_retry_a_failed_job_keeps_its_counters(app: App) -> None:
    task, state = _failing(app, max_retries=1, backoff=0)
    handle = task.delay()
    app.run_until_empty()
    failed = handle.refresh()
    assert (failed.status, failed.attempts, failed.retries) == (Status.FAILED, 2, 1)

    job = app.retry(handle.id)
    assert job.status is Status.QUEUED
    assert (job.attempts, job.retries) == (2, 1)
    assert job.finished_at is None and job.exit_code is None
    assert job.scheduled_at <= time.time()

    state["fail"] = False
    assert app.run_until_empty() == 1
    job = handle.refresh()
    assert (job.status, job.result, job.attempts, job.retries) == (Status.SUCCEEDED, "fixed", 3, 1)


def test_retry_with_reset_zeroes_the_counters(app: App) -> None:
    task, _ = _failing(app, max_retries=2, backoff=0)
    handle = task.delay()
    app.run_until_empty()
    assert handle.refresh().attempts == 3

    job = app.retry(handle.id, reset=True)
    assert (job.status, job.attempts, job.retries, job.error, job.result) == (Status.QUEUED, 0, 0, None, None)
    # the retries are available again: three more runs before it fails
    assert app.run_until_empty() == 3
    job = handle.refresh()
    assert (job.status, job.attempts, job.retries) == (Status.FAILED, 3, 2)


def test_retry_a_cancelled_job(app: App) -> None:
    @app.task
    def work() -> str:
        return "ran"

    handle = work.delay()
    handle.cancel()
    assert app.retry(handle.id).status is Status.QUEUED
    app.run_until_empty()
    assert handle.result(timeout=1) == "ran"


def test_retry_refuses_jobs_that_are_not_failed_or_cancelled(app: App) -> None:
    @app.task
    def work() -> str:
        return "ok"

    done = work.delay()
    app.run_until_empty()
    with pytest.raises(InvalidTransition, match="succeeded"):
        app.retry(done.id)
    assert done.refresh().status is Status.SUCCEEDED
    assert done.result(timeout=1) == "ok"

    waiting = work.delay()
    with pytest.raises(InvalidTransition):
        app.retry(waiting.id)
    assert waiting.status is Status.QUEUED


def test_retry_refuses_when_another_unfinished_job_holds_the_key(app: App) -> None:
    task, _ = _failing(app)
    first = task.options(key="k").delay()
    app.run_until_empty()
    assert first.status is Status.FAILED
    second = task.options(key="k").delay()  # the key is free once the first finished
    assert second.id != first.id
    with pytest.raises(InvalidTransition, match="key"):
        app.retry(first.id)
    assert first.status is Status.FAILED
    assert second.status is Status.QUEUED


def test_prune_removes_finished_jobs_past_their_result_ttl(app: App, count_rows) -> None:
    @app.task(result_ttl=0.3)
    def short_lived() -> str:
        return "brief"

    @app.task  # the default TTL: a week
    def long_lived() -> str:
        return "kept"

    @app.task(result_ttl=None)
    def forever() -> str:
        return "forever"

    short = short_lived.delay()
    long = long_lived.delay()
    keep = forever.delay()
    app.run_until_empty()
    pending = short_lived.delay()  # unfinished: never pruned
    later = short_lived.options(delay=60).delay()
    assert count_rows() == 5

    job = app.job(short.id)
    assert job.expires_at == pytest.approx(job.finished_at + 0.3)
    assert app.job(keep.id).expires_at is None
    assert app.prune() == 0  # not expired yet
    time.sleep(0.4)
    assert app.prune() == 1
    with pytest.raises(JobNotFound):
        app.job(short.id)
    assert {j.id for j in app.jobs()} == {long.id, keep.id, pending.id, later.id}


def test_prune_older_than(app: App, count_rows) -> None:
    @app.task(result_ttl=None)
    def work() -> str:
        return "x"

    finished = [work.delay() for _ in range(3)]
    app.run_until_empty()
    failed = app.enqueue("not.registered")
    app.run_until_empty()
    cancelled = work.delay()
    cancelled.cancel()
    queued = work.delay()
    scheduled = work.options(delay=60).delay()
    running = work.delay()
    claimed = app.backend.claim(["default"], "someone", 10, 30, time.time())
    assert [j.id for j in claimed] == [queued.id, running.id]
    app.backend.finish(queued.id, claimed[0].token, Outcome(kind=OutcomeKind.RELEASED), time.time())

    assert app.prune(older_than=3600) == 0  # all finished just now
    time.sleep(0.05)
    assert app.prune(older_than=0) == 5
    for handle in [*finished, failed, cancelled]:
        with pytest.raises(JobNotFound):
            app.job(handle.id)
    assert {j.id: j.status for j in app.jobs()} == {
        queued.id: Status.QUEUED,
        scheduled.id: Status.SCHEDULED,
        running.id: Status.RUNNING,
    }
    assert count_rows() == 3


def test_a_pruned_job_is_not_found_by_its_handle(app: App) -> None:
    @app.task(result_ttl=0)
    def work() -> str:
        return "x"

    handle = work.delay()
    app.run_until_empty()
    time.sleep(0.01)
    assert app.prune() == 1
    with pytest.raises(JobNotFound):
        handle.result(timeout=1)


def test_jobs_filters_and_pages(app: App) -> None:
    @app.task(name="t.alpha")
    def alpha() -> None:
        return None

    @app.task(name="t.beta", queue="other")
    def beta() -> None:
        raise ValueError("beta fails")

    a1, a2, a3 = (alpha.options(id=f"a{i}").delay() for i in (1, 2, 3))
    b1 = beta.options(id="b1").delay()
    app.run_until_empty(["other"])
    later = alpha.options(id="later", delay=60).delay()

    assert [j.id for j in app.jobs()] == ["later", "b1", "a3", "a2", "a1"]  # newest first
    assert [j.id for j in app.jobs(limit=2)] == ["later", "b1"]
    assert [j.id for j in app.jobs(limit=2, offset=2)] == ["a3", "a2"]
    assert [j.id for j in app.jobs(queue="other")] == ["b1"]
    assert [j.id for j in app.jobs(task="t.alpha")] == ["later", "a3", "a2", "a1"]
    assert [j.id for j in app.jobs(status=Status.FAILED)] == ["b1"]
    assert [j.id for j in app.jobs(status="queued")] == ["a3", "a2", "a1"]
    assert [j.id for j in app.jobs(status="scheduled")] == ["later"]
    assert [j.id for j in app.jobs(status="queued", task="t.alpha", limit=1)] == ["a3"]
    assert app.jobs(queue="nope") == []
    with pytest.raises(ValueError):
        app.jobs(status="bogus")
    with pytest.raises(ValueError):
        app.jobs(limit=-1)
    assert {a1.id, a2.id, a3.id, b1.id, later.id} == {j.id for j in app.jobs()}


def test_stats_counts_by_queue_and_status(app: App) -> None:
    @app.task
    def ok() -> None:
        return None

    ok.delay()
    ok.delay()
    ok.options(queue="bulk", priority=Priority.LOW).delay()
    done = ok.options(queue="bulk").delay()
    app.run_until_empty(["bulk"])
    ok.delay().cancel()
    stats = app.stats()
    assert stats["default"] == {"queued": 2, "cancelled": 1}
    assert stats["bulk"] == {"succeeded": 2}
    assert stats["all"] == {"queued": 2, "cancelled": 1, "succeeded": 2}
    assert done.status is Status.SUCCEEDED


def test_a_stale_token_cannot_finish_a_job(app: App) -> None:
    @app.task
    def work() -> str:
        return "x"

    handle = work.delay()
    backend = app.backend
    [first] = backend.claim(["default"], "worker-a", 1, 0.1, time.time())
    stale = first.token
    assert stale is not None

    time.sleep(0.15)  # worker-a's lease runs out: rescued by the leader and claimed again
    Leader(app, "the-leader").tick(time.time())
    rescued = app.job(handle.id)
    assert (rescued.status, rescued.rescues, rescued.token) == (Status.QUEUED, 1, None)
    [second] = backend.claim(["default"], "worker-b", 1, 30, time.time())
    assert second.token not in (None, stale)
    before = app.job(handle.id)

    done = Outcome(kind=OutcomeKind.SUCCEEDED, result="stale result", exit_code=0)
    assert backend.finish(handle.id, stale, done, time.time()) is False
    assert backend.progress(handle.id, stale, 99, "stale", time.time()) is False
    assert backend.heartbeat("worker-a", [stale], 30, time.time()) == {stale}
    after = app.job(handle.id)
    assert after == before
    assert (after.status, after.result, after.worker_id, after.attempts) == (Status.RUNNING, None, "worker-b", 2)

    assert backend.finish(handle.id, second.token, done, time.time()) is True
    assert handle.result(timeout=1) == "stale result"
    # and once finished, no token can change it again
    failed = Outcome(kind=OutcomeKind.FAILED, exit_code=1)
    assert backend.finish(handle.id, second.token, failed, time.time()) is False
    assert handle.refresh().status is Status.SUCCEEDED


def test_a_cancelled_run_cannot_finish(app: App) -> None:
    @app.task
    def work() -> str:
        return "x"

    handle = work.delay()
    [claimed] = app.backend.claim(["default"], "w", 1, 30, time.time())
    handle.cancel()
    done = Outcome(kind=OutcomeKind.SUCCEEDED, result="late", exit_code=0)
    assert app.backend.finish(handle.id, claimed.token, done, time.time()) is False
    job = handle.refresh()
    assert (job.status, job.result, job.exit_code) == (Status.CANCELLED, None, 130)


def test_a_job_whose_worker_died_is_rescued_and_run(app: App, start_worker) -> None:
    @app.task
    def work() -> str:
        return "rescued"

    handle = work.delay()
    [orphan] = app.backend.claim(["default"], "dead-worker", 1, 0.2, time.time())  # never finished
    assert handle.status is Status.RUNNING
    start_worker()
    assert handle.result(timeout=10) == "rescued"
    job = handle.refresh()
    assert job.attempts == 2 and job.retries == 0 and job.rescues == 1
    late = Outcome(kind=OutcomeKind.FAILED, exit_code=1)
    assert app.backend.finish(handle.id, orphan.token, late, time.time()) is False
    assert handle.refresh().status is Status.SUCCEEDED
