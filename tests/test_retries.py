"""Retries: N retries mean N + 1 runs, exponential back-off with jitter, Retry(delay=...), Discard."""

from __future__ import annotations

import itertools
import time

import pytest

from conveyor import App, Discard, JobFailed, JobNotFound, Retry, Status, current_job
from conveyor.task import make_options, retry_delay


def test_a_failing_task_runs_max_retries_plus_one_times_then_fails(app: App) -> None:
    runs: list[int] = []

    @app.task(max_retries=2, backoff=0)
    def flaky(x: int) -> None:
        runs.append(current_job().attempt)
        raise ValueError(f"bad input {x}")

    handle = flaky.delay(7)
    assert app.run_until_empty() == 3
    assert runs == [1, 2, 3]
    job = handle.refresh()
    assert job.status is Status.FAILED
    assert (job.attempts, job.retries) == (3, 2)
    assert job.exit_code == 1
    assert job.error is not None
    assert job.error.type == "ValueError"
    assert job.error.message == "bad input 7"
    assert "Traceback (most recent call last)" in job.error.traceback
    assert "in flaky" in job.error.traceback
    assert "ValueError: bad input 7" in job.error.traceback
    assert job.finished_at is not None and job.result is None


def test_max_retries_per_call_overrides_the_task(app: App) -> None:
    runs: list[int] = []

    @app.task(max_retries=5, backoff=0)
    def boom() -> None:
        runs.append(1)
        raise RuntimeError("boom")

    handle = boom.options(max_retries=1).delay()
    app.run_until_empty()
    assert len(runs) == 2
    assert handle.status is Status.FAILED

    runs.clear()
    once = boom.options(max_retries=0).delay()
    app.run_until_empty()
    assert len(runs) == 1
    assert once.refresh().retries == 0


def test_a_task_that_succeeds_on_a_retry_succeeds(app: App) -> None:
    @app.task(max_retries=3, backoff=0)
    def second_time_lucky() -> int:
        if current_job().attempt < 2:
            raise ConnectionError("try again")
        return current_job().attempt

    handle = second_time_lucky.delay()
    app.run_until_empty()
    job = handle.refresh()
    assert (job.status, job.result, job.attempts, job.retries, job.exit_code) == (Status.SUCCEEDED, 2, 2, 1, 0)
    assert job.error is None


def test_a_retry_waits_for_its_back_off(app: App) -> None:
    @app.task(max_retries=1, backoff=30, jitter=0)
    def fails() -> None:
        raise ValueError("no")

    handle = fails.delay()
    before = time.time()
    assert app.run_until_empty() == 1  # the retry is not due yet
    job = handle.refresh()
    assert job.status is Status.SCHEDULED
    assert job.retries == 1
    assert job.scheduled_at >= before + 30
    assert job.error is not None and job.error.type == "ValueError"  # the last error is kept meanwhile


def test_back_off_grows_exponentially_with_jitter(app: App, start_worker, tmp_path) -> None:
    backoff, jitter = 0.2, 0.2
    stamps = tmp_path / "attempts.txt"

    @app.task(max_retries=3, backoff=backoff, jitter=jitter)
    def flaky() -> None:
        with stamps.open("a") as f:
            f.write(f"{time.time()!r}\n")
        raise OSError("still down")

    start_worker(concurrency=2)
    handle = flaky.delay()
    with pytest.raises(JobFailed):
        handle.result(timeout=20)
    times = [float(line) for line in stamps.read_text().split()]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for n, gap in enumerate(gaps):
        assert gap >= backoff * 2**n * (1 - jitter) - 0.01, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    job = handle.refresh()
    assert (job.attempts, job.retries, job.exit_code) == (4, 3, 1)
    assert job.error is not None and job.error.type == "OSError"


def test_retry_delay_bounds() -> None:
    options = make_options(backoff=1.0, max_backoff=5.0, jitter=0.25)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        for _ in range(50):
            assert base * 0.75 <= retry_delay(options, n) <= base * 1.25
    no_jitter = make_options(backoff=0.5, jitter=0)
    assert [retry_delay(no_jitter, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_retry_exception_sets_the_delay(app: App) -> None:
    @app.task(max_retries=2, backoff=0)
    def later() -> str:
        if current_job().attempt == 1:
            raise Retry(delay=60, reason="rate limited")
        return "done"

    handle = later.delay()
    before = time.time()
    assert app.run_until_empty() == 1
    job = handle.refresh()
    assert job.status is Status.SCHEDULED
    assert job.retries == 1
    assert before + 60 <= job.scheduled_at <= time.time() + 60
    assert job.error is not None and job.error.type == "Retry" and "rate limited" in job.error.message


def test_retry_delay_is_honoured_by_a_worker(app: App, start_worker) -> None:
    stamps: list[float] = []

    @app.task(max_retries=2, backoff=30)
    def later() -> int:
        stamps.append(time.time())
        if len(stamps) == 1:
            raise Retry(delay=0.3)
        return len(stamps)

    start_worker()
    handle = later.delay()
    assert handle.result(timeout=10) == 2
    assert stamps[1] - stamps[0] >= 0.3 - 0.01
    job = handle.refresh()
    assert (job.attempts, job.retries) == (2, 1)


def test_retry_counts_against_max_retries(app: App) -> None:
    runs: list[int] = []

    @app.task(max_retries=2)
    def forever() -> None:
        runs.append(1)
        raise Retry(delay=0)

    handle = forever.delay()
    app.run_until_empty()
    assert len(runs) == 3
    job = handle.refresh()
    assert job.status is Status.FAILED
    assert job.retries == 2
    assert job.exit_code == 1
    assert job.error is not None and job.error.type == "MaxRetriesExceeded"


def test_discard_deletes_the_job(app: App, count_rows) -> None:
    runs: list[int] = []

    @app.task(max_retries=3, backoff=0)
    def drop() -> None:
        runs.append(1)
        raise Discard()

    keep = app.task(name="keep")(lambda: "kept").delay()
    handle = drop.delay()
    app.run_until_empty()
    assert runs == [1]  # no retry
    with pytest.raises(JobNotFound):
        app.job(handle.id)
    with pytest.raises(JobNotFound):
        handle.result(timeout=1)
    assert count_rows() == 1
    assert keep.result(timeout=1) == "kept"


def test_discard_in_a_worker(app: App, start_worker, wait_for) -> None:
    @app.task(max_retries=3)
    def drop() -> None:
        raise Discard()

    start_worker()
    handle = drop.delay()

    def gone() -> bool:
        try:
            app.job(handle.id)
        except JobNotFound:
            return True
        return False

    wait_for(gone, timeout=10, what="the discarded job to be deleted")
