"""A worker that cannot wedge (DESIGN.md, principle 9): every helper thread survives a bad item
or a store error, or stops the worker with EXIT_HELPER_FAILED; a stop during an outage ends.

Real SQLite files (and PostgreSQL where cheap), real worker threads in this process; store
errors are injected by wrapping one method of the real store, which then runs as usual."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import App, JobFailed, Status, StoreError, StoreUnavailable
from conveyor.job import Job
from conveyor.outcome import OutcomeKind, Report
from conveyor.worker import EXIT_HELPER_FAILED, monitor
from conveyor.worker.reporter import Reporter

LEASE = 1.0  # the lease of the tests' apps (conftest.LEASE)
WAIT = 30.0  # generous upper bound for anything to happen; never a speed assertion


class Inject:
    """Wrap ``store.<method>``: each call first asks ``fail(*args)`` for an exception to raise
    instead (None: call the real method). Counts the exceptions raised."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Any, method: str, fail: Callable[..., Any]) -> None:
        self.raised = 0
        real = getattr(store, method)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            exc = fail(*args, **kwargs)
            if exc is not None:
                self.raised += 1
                raise exc
            return real(*args, **kwargs)

        monkeypatch.setattr(store, method, wrapper)


def once(exc: BaseException, when: Callable[..., bool] = lambda *a, **k: True) -> Callable[..., Any]:
    """A ``fail`` that raises ``exc`` the first time ``when(*args)`` holds, then never again."""
    done = threading.Event()

    def fail(*args: Any, **kwargs: Any) -> BaseException | None:
        if done.is_set() or not when(*args, **kwargs):
            return None
        done.set()
        return exc

    return fail


def worker_reports(reports: list[Report], _now: float) -> bool:
    """True for a ``finish_many`` batch written by a worker (the leader's carry ``lease_before``)."""
    return any(report.outcome.lease_before is None for report in reports)


def settled(app: App, ids: list[str]) -> list[Job] | None:
    """The jobs, once none of them is queued or running any more."""
    jobs = [app.job(job_id) for job_id in ids]
    return jobs if all(job.status not in (Status.QUEUED, Status.RUNNING) for job in jobs) else None


@pytest.fixture(params=["sqlite", "postgres"])
def any_app(request: pytest.FixtureRequest, app: App) -> Iterator[App]:
    """The test's SQLite app, or an app on the session's PostgreSQL database."""
    if request.param == "sqlite":
        yield app
        return
    url = request.getfixturevalue("postgres_url")  # the session's throwaway database, emptied for this test
    other = App(url, lease=LEASE)
    other.backend.destroy_all()
    yield other
    other.backend.destroy_all()
    other.close()


@pytest.fixture
def on_store(any_app: App, start_worker: Callable[..., Any]) -> Callable[..., Any]:
    """``start_worker`` on ``any_app``."""
    return functools.partial(start_worker, on=any_app)


# a bad item ------------------------------------------------------------------------------
def test_an_error_message_with_a_lone_surrogate_fails_the_job_escaped(any_app: App, start_worker, wait_for) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"  # PostgreSQL's database is shared by the session

    @any_app.task(name=f"{queue}.bad", queue=queue)
    def bad() -> None:
        raise ValueError(b"caf\xff".decode("utf-8", "surrogateescape"))

    @any_app.task(name=f"{queue}.good", queue=queue)
    def good(i: int) -> int:
        return i

    runner = start_worker(queues=[queue], on=any_app)
    doomed = bad.delay()
    with pytest.raises(JobFailed) as info:
        doomed.result(timeout=WAIT)
    assert info.value.error is not None
    assert info.value.error.message == "caf\\udcff"  # escaped, not dropped
    assert "caf\\udcff" in info.value.error.traceback
    job = doomed.refresh()
    assert (job.status, job.exit_code) == (Status.FAILED, 1)
    # the worker goes on finishing other jobs
    handles = any_app.enqueue_many([good.s(i) for i in range(10)])
    assert [h.result(timeout=WAIT) for h in handles] == list(range(10))
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_result_that_cannot_be_encoded_fails_the_run_clearly(any_app: App, start_worker) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"

    @any_app.task(name=f"{queue}.returns", queue=queue)
    def returns_surrogate() -> str:
        return "caf\udcff"

    @any_app.task(name=f"{queue}.good", queue=queue)
    def good() -> str:
        return "good"

    start_worker(queues=[queue], on=any_app)
    with pytest.raises(JobFailed) as info:
        returns_surrogate.delay().result(timeout=WAIT)
    assert info.value.error is not None and "result cannot be stored" in info.value.error.message
    assert good.delay().result(timeout=WAIT) == "good"


def test_an_outcome_the_store_keeps_refusing_fails_only_that_job(any_app: App, on_store, monkeypatch) -> None:
    @any_app.task
    def echo(i: int) -> int:
        return i

    handles = any_app.enqueue_many([echo.s(i) for i in range(20)])
    poisoned = handles[7].id

    def refuse(reports: list[Report], _now: float) -> BaseException | None:
        hit = any(r.job_id == poisoned and r.outcome.kind is OutcomeKind.SUCCEEDED for r in reports)
        return StoreError("value too long for this store (injected)") if hit else None

    injected = Inject(monkeypatch, any_app.backend, "finish_many", refuse)
    on_store(concurrency=4)
    jobs = {h.id: h for h in handles}
    for job_id, handle in jobs.items():
        if job_id != poisoned:
            assert handle.result(timeout=WAIT) == handles.index(handle)
    with pytest.raises(JobFailed) as info:
        jobs[poisoned].result(timeout=WAIT)
    assert info.value.error is not None
    assert "could not store this run's outcome" in info.value.error.message
    assert "value too long" in info.value.error.message
    assert injected.raised >= 2  # the batch, then the item alone


# a store error in each helper thread ------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [sqlite3.OperationalError("disk I/O error (injected)"), StoreError("injected"), StoreUnavailable("injected")],
    ids=["sqlite3-error", "store-error", "store-unavailable"],
)
def test_a_store_error_while_writing_outcomes_is_survived(any_app: App, on_store, monkeypatch, error) -> None:
    @any_app.task
    def echo(i: int) -> int:
        return i

    injected = Inject(monkeypatch, any_app.backend, "finish_many", once(error, worker_reports))
    runner = on_store(concurrency=4)
    handles = any_app.enqueue_many([echo.s(i) for i in range(40)])
    assert [h.result(timeout=WAIT) for h in handles] == list(range(40))
    assert injected.raised == 1
    more = any_app.enqueue_many([echo.s(i) for i in range(5)])
    assert [h.result(timeout=WAIT) for h in more] == list(range(5))
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_store_error_while_writing_a_time_out_is_survived(any_app: App, on_store, monkeypatch) -> None:
    """The time-out path used to write on the monitor thread, outside its try: one StoreError
    there killed the monitor, heartbeats stopped and live jobs were rescued while running."""
    release = threading.Event()

    @any_app.task(timeout=0.3)
    def slow() -> None:
        release.wait(WAIT)

    @any_app.task
    def longer_than_the_lease() -> int:
        time.sleep(LEASE * 2.5)
        return 1

    def timing_out(reports: list[Report], _now: float) -> bool:
        return any(r.outcome.exit_code == 130 and r.outcome.lease_before is None for r in reports)

    injected = Inject(monkeypatch, any_app.backend, "finish_many", once(StoreError("injected"), timing_out))
    runner = on_store()
    try:
        with pytest.raises(JobFailed) as info:
            slow.delay().result(timeout=WAIT)
        assert info.value.error is not None and info.value.error.type == "TimeoutError"
        assert injected.raised == 1
        handle = longer_than_the_lease.delay()
        assert handle.result(timeout=WAIT) == 1
        assert handle.refresh().attempts == 1  # heartbeats went on: not rescued while it ran
        assert runner.worker.exit_code == 0
    finally:
        release.set()


def test_a_bad_time_out_decision_still_ends_the_job(app: App, start_worker, monkeypatch) -> None:
    calls: list[int] = []
    real = monitor.timed_out

    def broken(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in the retry policy (injected)")
        return real(*args)

    monkeypatch.setattr(monitor, "timed_out", broken)

    @app.task(timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(WAIT)

    runner = start_worker()
    with pytest.raises(JobFailed) as info:
        slow.delay().result(timeout=WAIT)
    assert info.value.error is not None and "deciding a retry failed" in info.value.error.message
    assert info.value.error.message.startswith("timed out after 0.2 s")
    with pytest.raises(JobFailed) as info:
        slow.delay().result(timeout=WAIT)  # the next one times out as usual
    assert info.value.error is not None and info.value.error.type == "TimeoutError"
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_heartbeat_error_is_survived(app: App, start_worker, monkeypatch) -> None:
    @app.task
    def longer_than_the_lease() -> int:
        time.sleep(LEASE * 2.5)
        return 1

    injected = Inject(monkeypatch, app.backend, "heartbeat", once(StoreError("injected"), lambda _w, t, *a: bool(t)))
    runner = start_worker()
    handle = longer_than_the_lease.delay()
    assert handle.result(timeout=WAIT) == 1
    assert injected.raised == 1
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_heartbeat_that_keeps_failing_stops_the_worker(any_app: App, on_store, monkeypatch, wait_for) -> None:
    started = threading.Event()
    release = threading.Event()

    @any_app.task
    def blocked() -> str:
        started.set()
        release.wait(WAIT)
        return "done"

    Inject(monkeypatch, any_app.backend, "heartbeat", lambda _w, tokens, *a: StoreError("injected") if tokens else None)
    runner = on_store(concurrency=1)
    handle = blocked.delay()
    try:
        assert started.wait(WAIT)
        runner.thread.join(WAIT)
        assert not runner.thread.is_alive(), "the worker did not stop itself"
        assert runner.worker.exit_code == EXIT_HELPER_FAILED
        job = handle.refresh()
        assert job.status is Status.QUEUED and job.token is None  # handed back, no retry used
        assert (job.attempts, job.retries) == (1, 0)
    finally:
        release.set()


def test_an_error_in_the_leader_is_survived_or_stops_the_worker(app: App, start_worker, monkeypatch) -> None:
    @app.task
    def echo(i: int) -> int:
        return i

    Inject(monkeypatch, app.backend, "acquire_lock", once(StoreError("injected")))
    runner = start_worker()
    handles = app.enqueue_many([echo.s(i) for i in range(10)])
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and runner.thread.is_alive() and settled(app, [h.id for h in handles]) is None:
        time.sleep(0.05)
    if runner.thread.is_alive():  # recovered: it completes every job
        assert [h.result(timeout=WAIT) for h in handles] == list(range(10))
        assert runner.worker.exit_code == 0
    else:  # stopped itself: with the exit code, and no job left running on it
        assert runner.worker.exit_code == EXIT_HELPER_FAILED
        assert all(app.job(h.id).status in (Status.QUEUED, Status.SUCCEEDED) for h in handles)


def test_a_helper_that_ends_unexpectedly_stops_the_worker_and_hands_back(app: App, start_worker, wait_for) -> None:
    """An async task that stops the worker's event loop ends the loop thread: every async run on
    it would hang while its lease is renewed forever. The worker stops itself instead."""
    sleeping = threading.Event()

    @app.task
    async def sleeper() -> str:
        sleeping.set()
        await asyncio.sleep(WAIT)
        return "never"

    @app.task
    async def saboteur() -> None:
        await asyncio.sleep(0)
        asyncio.get_running_loop().stop()
        await asyncio.sleep(WAIT)

    runner = start_worker(concurrency=2)
    victim = sleeper.delay()
    assert sleeping.wait(WAIT)
    culprit = saboteur.delay()
    runner.thread.join(WAIT)
    assert not runner.thread.is_alive(), "the worker did not stop itself"
    assert runner.worker.exit_code == EXIT_HELPER_FAILED
    for handle in (victim, culprit):
        job = handle.refresh()
        assert job.status is Status.QUEUED and job.token is None, job  # handed back at once


# stopping during an outage --------------------------------------------------------------
def test_stop_during_an_outage_returns_within_a_bound(any_app: App, on_store, monkeypatch, wait_for) -> None:
    """An unknown task's outcome was written on the claim thread, retrying forever and deaf to
    stop: stopping during an outage hung. Now every outcome goes by the reporter, which gives up
    after ``hand_back_wait`` and leaves the rest to lease-expiry rescue. (An unknown task's job is
    handed back with a delay, never failed: a worker that knows it may come.)"""
    release = threading.Event()

    @any_app.task
    def quick() -> str:
        return "quick"

    @any_app.task
    def blocked() -> str:
        release.wait(WAIT)
        return "blocked"

    down = threading.Event()

    def unavailable(*_args: Any, **_kwargs: Any) -> BaseException | None:
        return StoreUnavailable("injected") if down.is_set() else None

    for method in ("finish_many", "heartbeat", "acquire_lock"):
        Inject(monkeypatch, any_app.backend, method, unavailable)
    down.set()  # claims still work: the store is half up, as during a failover
    runner = on_store(concurrency=3, grace=0.2, hand_back_wait=1.0)
    handles = [any_app.enqueue("nowhere.missing"), quick.delay(), blocked.delay()]
    wait_for(lambda: all(h.refresh().status is Status.RUNNING for h in handles), timeout=WAIT, what="all claimed")
    wait_for(lambda: len(runner.worker.runs.running()) == 1, timeout=WAIT, what="quick finished")
    started = time.monotonic()
    runner.worker.stop()
    runner.thread.join(WAIT)
    assert not runner.thread.is_alive(), "stop() hung during the outage"
    assert time.monotonic() - started < WAIT
    assert sorted(runner.worker.reporter.left) == sorted(h.id for h in handles)
    release.set()
    down.clear()
    # the store is back: a new worker's leader rescues them once their leases ran out
    on_store(concurrency=3)
    wait_for(lambda: settled(any_app, [h.id for h in handles[1:]]), timeout=WAIT, what="all rescued and run")
    assert handles[1].result(timeout=1) == "quick"
    assert handles[2].result(timeout=1) == "blocked"
    unknown = wait_for(lambda: (job := handles[0].refresh()).error is not None and job, timeout=WAIT,
                       what="the unknown task's job rescued and handed back")  # fmt: skip
    assert unknown.error.type == "UnknownTask" and unknown.status is Status.SCHEDULED, "handed back, never failed"


# disk full ------------------------------------------------------------------------------
def test_a_disk_full_error_while_reporting_is_survived_once_space_returns(app: App, start_worker, monkeypatch) -> None:
    """SQLite's own "database or disk is full" (max_page_count on the store's connection), while
    the reporter writes large results: it retries, keeping the leases, and completes them all."""
    full = threading.Event()
    limited: list[sqlite3.Connection] = []

    @app.task
    def big(i: int) -> str:
        return str(i) * 20_000

    store = app.backend
    real = store.finish_many

    def finish_many(reports: list[Report], now: float) -> list[bool]:
        conn = store._conn()  # type: ignore[attr-defined]  # this thread's connection to the file
        if full.is_set():
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")
            limited.append(conn)
        else:
            conn.execute("PRAGMA max_page_count = 4294967294")
        return real(reports, now)

    monkeypatch.setattr(store, "finish_many", finish_many)
    full.set()
    runner = start_worker(concurrency=4)
    handles = app.enqueue_many([big.s(i) for i in range(8)])
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not limited:
        time.sleep(0.05)
    assert limited, "no outcome was written while the disk was full"
    time.sleep(LEASE)  # a few failed writes: the reporter retries with back-off
    assert not any(h.refresh().status is Status.SUCCEEDED for h in handles)
    full.clear()  # space returns
    assert [h.result(timeout=WAIT) for h in handles] == [str(i) * 20_000 for i in range(8)]
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_reporter_that_fails_stops_the_worker_and_its_leases(app: App, start_worker, monkeypatch, wait_for) -> None:
    """Something truly unexpected in the reporter: the worker stops itself (exit 70) and renews no
    lease any more, so its unfinished job is rescued and finished by another worker."""
    started = threading.Event()
    release = threading.Event()

    @app.task
    def blocked() -> str:
        started.set()
        release.wait(WAIT)
        return "blocked"

    @app.task
    def quick() -> str:
        return "quick"

    real = Reporter._written
    calls: list[int] = []

    def buggy(self: Reporter, reports: Any, written: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the reporter (injected)")
        real(self, reports, written)

    monkeypatch.setattr(Reporter, "_written", buggy)
    runner = start_worker(concurrency=2)
    held = blocked.delay()
    assert started.wait(WAIT)
    done = quick.delay()
    runner.thread.join(WAIT)
    assert not runner.thread.is_alive(), "the worker did not stop itself"
    assert runner.worker.exit_code == EXIT_HELPER_FAILED
    assert done.result(timeout=1) == "quick"  # written before the bug struck
    job = held.refresh()
    if job.status is Status.RUNNING:  # not handed back (its reporter is gone): the lease is not renewed
        time.sleep(LEASE / 2)
        assert held.refresh().lease_expires_at == job.lease_expires_at
    release.set()
    start_worker()
    assert held.result(timeout=WAIT) == "blocked"


@pytest.mark.parametrize("method", ["claim", "wait_for_work"])
def test_a_store_error_in_the_claim_loop_is_survived(app: App, start_worker, monkeypatch, method: str) -> None:
    @app.task
    def echo(i: int) -> int:
        return i

    injected = Inject(monkeypatch, app.backend, method, once(sqlite3.OperationalError("injected")))
    runner = start_worker()
    handles = app.enqueue_many([echo.s(i) for i in range(10)])
    assert [h.result(timeout=WAIT) for h in handles] == list(range(10))
    assert injected.raised == 1
    assert runner.thread.is_alive() and runner.worker.exit_code == 0


def test_a_reporter_blocked_in_the_store_for_good_stops_the_worker(app: App, start_worker, monkeypatch) -> None:
    """A store call that never returns would keep the waiting outcomes' leases renewed forever."""
    monkeypatch.setattr(monitor, "STALL_AFTER", 0.5)  # the bound is then two leases
    unblock = threading.Event()

    @app.task
    def quick() -> str:
        return "quick"

    def block(*_args: Any) -> None:
        unblock.wait(WAIT)  # then the real call goes ahead

    Inject(monkeypatch, app.backend, "finish_many", block)
    runner = start_worker(hand_back_wait=0.5)
    try:
        handle = quick.delay()
        runner.thread.join(WAIT)
        assert not runner.thread.is_alive(), "the worker did not stop itself"
        assert runner.worker.exit_code == EXIT_HELPER_FAILED
    finally:
        unblock.set()
    assert handle.result(timeout=WAIT) == "quick"  # the call that was blocked completes


def test_storable_outcomes_escape_what_utf8_cannot_encode_and_refuse_unencodable_results() -> None:
    from conveyor.execution import error_of, storable_outcome, succeeded
    from conveyor.outcome import Outcome

    error = error_of(ValueError("caf\udcff"))
    assert (error.type, error.message) == ("ValueError", "caf\\udcff")
    assert error.traceback.encode("utf-8")  # encodable: nothing dropped, the surrogate escaped
    refused = succeeded({"text": "caf\udcff"})
    assert refused.kind is OutcomeKind.FAILED and refused.error is not None
    assert "result cannot be stored" in refused.error.message
    raw = Outcome(kind=OutcomeKind.SUCCEEDED, result=["caf\udcff"])  # as if built past succeeded()
    assert storable_outcome(raw).kind is OutcomeKind.FAILED
    fine = Outcome(kind=OutcomeKind.SUCCEEDED, result=["café"])
    assert storable_outcome(fine) is fine
