"""An in-thread Worker: its typed settings, sync and async tasks, cancellation, time-outs, progress,
unknown tasks, stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import App, JobFailed, Status, Worker, current_job
from conveyor.worker import WorkerOptions
from conveyor.worker import loop as worker_loop

EVENT_WAIT = 10.0  # generous upper bound for cross-thread hand-offs; never a speed assertion


def test_sync_and_async_tasks_both_run(app: App, start_worker) -> None:
    threads: dict[str, str] = {}

    @app.task
    def sync_add(a: int, b: int) -> int:
        threads["sync"] = threading.current_thread().name
        return a + b

    @app.task
    async def async_add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        threads["async"] = threading.current_thread().name
        return a + b

    start_worker()
    assert sync_add.delay(1, 2).result(timeout=EVENT_WAIT) == 3
    assert async_add.delay(3, 4).result(timeout=EVENT_WAIT) == 7
    assert threads["sync"] != threads["async"]


def test_async_task_inline(app: App) -> None:
    @app.task
    async def async_mul(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a * b

    handle = async_mul.delay(6, 7)
    app.run_until_empty()
    assert handle.result(timeout=1) == 42


def test_many_jobs_all_run_exactly_once(app: App, start_worker) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    @app.task
    def note(i: int) -> int:
        with lock:
            seen.append(i)
        return i

    handles = app.enqueue_many([note.s(i) for i in range(40)])
    start_worker(concurrency=4)
    start_worker(concurrency=4)
    assert [h.result(timeout=EVENT_WAIT) for h in handles] == list(range(40))
    assert sorted(seen) == list(range(40))


def test_cancel_a_queued_job(app: App, start_worker) -> None:
    ran: list[str] = []

    @app.task
    def work(label: str) -> str:
        ran.append(label)
        return label

    doomed = work.delay("doomed")
    job = doomed.cancel()
    assert job.status is Status.CANCELLED
    assert job.exit_code == 130
    assert job.finished_at is not None
    assert app.run_until_empty() == 0

    start_worker()
    assert work.delay("after").result(timeout=EVENT_WAIT) == "after"
    assert ran == ["after"]
    assert doomed.status is Status.CANCELLED
    assert doomed.refresh().attempts == 0


def test_cancel_a_scheduled_job(app: App) -> None:
    @app.task
    def work() -> None:
        return None

    handle = work.options(delay=60).delay()
    assert handle.cancel().status is Status.CANCELLED
    assert app.jobs(status="scheduled") == []


def test_cancel_a_finished_job_changes_nothing(app: App) -> None:
    @app.task
    def work() -> str:
        return "done"

    handle = work.delay()
    app.run_until_empty()
    job = handle.cancel()
    assert job.status is Status.SUCCEEDED
    assert job.exit_code == 0
    assert handle.result(timeout=1) == "done"


def test_cancel_a_running_async_job_stops_it(app: App, start_worker, wait_for) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    finished_normally = threading.Event()

    @app.task
    async def long_async() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        finished_normally.set()
        return "should not be stored"

    @app.task
    def quick() -> str:
        return "quick"

    start_worker(concurrency=1)
    handle = long_async.delay()
    assert started.wait(EVENT_WAIT)
    assert handle.status is Status.RUNNING
    job = handle.cancel()
    assert job.status is Status.CANCELLED
    assert saw_cancel.wait(EVENT_WAIT), "the coroutine was not cancelled"
    assert not finished_normally.is_set()
    job = handle.refresh()
    assert (job.status, job.exit_code, job.result) == (Status.CANCELLED, 130, None)
    with pytest.raises(JobFailed):
        handle.result(timeout=1)
    # the slot is free again: with concurrency 1 the next job still runs
    assert quick.delay().result(timeout=EVENT_WAIT) == "quick"


def test_cancel_a_running_sync_job_discards_its_result(app: App, start_worker) -> None:
    started = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    @app.task
    def long_sync() -> str:
        started.set()
        release.wait(EVENT_WAIT)
        returned.set()
        return "late result"

    @app.task
    def quick() -> str:
        return "quick"

    runner = start_worker(concurrency=1)
    handle = long_sync.delay()
    assert started.wait(EVENT_WAIT)
    assert handle.cancel().status is Status.CANCELLED
    release.set()
    assert returned.wait(EVENT_WAIT)
    assert quick.delay().result(timeout=EVENT_WAIT) == "quick"
    runner.stop()  # drains the worker's reports: a late write would have happened by now
    job = handle.refresh()
    assert (job.status, job.exit_code, job.result) == (Status.CANCELLED, 130, None)


def test_a_sync_job_past_its_timeout_fails_and_its_late_result_is_dropped(app: App, start_worker, wait_for) -> None:
    returned = threading.Event()

    @app.task(timeout=0.3)
    def slow() -> str:
        time.sleep(1.0)
        returned.set()
        return "too late"

    runner = start_worker()
    handle = slow.delay()
    with pytest.raises(JobFailed) as info:
        handle.result(timeout=EVENT_WAIT)
    assert not returned.is_set()  # failed while the task still ran
    job = handle.refresh()
    assert (job.status, job.exit_code) == (Status.FAILED, 130)
    assert info.value.error is not None and info.value.error.type == "TimeoutError"
    assert "timeout" in info.value.error.message

    assert returned.wait(EVENT_WAIT)
    runner.stop()
    job = handle.refresh()
    assert (job.status, job.exit_code, job.result) == (Status.FAILED, 130, None)


def test_a_timed_out_job_is_retried_while_retries_remain(app: App, start_worker) -> None:
    @app.task(timeout=0.3, max_retries=1, backoff=0)
    async def slow_then_fast() -> int:
        if current_job().attempt == 1:
            await asyncio.sleep(30)
        return current_job().attempt

    start_worker()
    handle = slow_then_fast.delay()
    assert handle.result(timeout=EVENT_WAIT) == 2
    job = handle.refresh()
    assert (job.attempts, job.retries, job.exit_code) == (2, 1, 0)


def test_an_async_job_past_its_timeout_is_cancelled(app: App, start_worker) -> None:
    saw_cancel = threading.Event()

    @app.task(timeout=0.3)
    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        return "too late"

    start_worker()
    handle = slow.delay()
    with pytest.raises(JobFailed):
        handle.result(timeout=EVENT_WAIT)
    assert saw_cancel.wait(EVENT_WAIT), "the timed-out coroutine was not cancelled"
    job = handle.refresh()
    assert (job.status, job.exit_code, job.result) == (Status.FAILED, 130, None)
    assert job.error is not None and job.error.type == "TimeoutError"


def test_progress_is_visible_while_the_job_runs(app: App, url: str, start_worker, wait_for) -> None:
    release = threading.Event()

    @app.task
    def halfway() -> str:
        assert current_job().progress(50, "half done") is True
        release.wait(EVENT_WAIT)
        return "done"

    start_worker()
    handle = halfway.delay()
    reader = App(url)  # another App: its own connection to the store
    try:
        job = wait_for(
            lambda: (j := reader.job(handle.id)).progress == 50 and j, timeout=EVENT_WAIT, what="progress 50"
        )
        assert job.status is Status.RUNNING
        assert job.progress_message == "half done"
        assert job.elapsed is not None
        release.set()
        assert handle.result(timeout=EVENT_WAIT) == "done"
        assert reader.job(handle.id).progress == 100
    finally:
        release.set()
        reader.close()


def test_progress_outside_a_task_raises(app: App) -> None:
    from conveyor import current_job as outside

    with pytest.raises(RuntimeError, match="outside"):
        outside()


def test_progress_rejects_a_bad_percentage(app: App) -> None:
    @app.task
    def overshoot() -> None:
        current_job().progress(150)

    handle = overshoot.delay()
    app.run_until_empty()
    job = handle.refresh()
    assert job.status is Status.FAILED
    assert job.error is not None and job.error.type == "ValueError"


def test_progress_reports_false_once_the_job_is_cancelled(app: App, start_worker) -> None:
    started = threading.Event()
    ended = threading.Event()
    outcome: list[bool] = []

    @app.task
    def cooperative() -> str:
        started.set()
        deadline = time.monotonic() + EVENT_WAIT
        try:
            while time.monotonic() < deadline:
                if not current_job().progress(10, "working"):
                    outcome.append(False)
                    return "stopped early"
                time.sleep(0.01)
            outcome.append(True)
            return "ran to the end"
        finally:
            ended.set()

    start_worker()
    handle = cooperative.delay()
    assert started.wait(EVENT_WAIT)
    handle.cancel()
    assert ended.wait(EVENT_WAIT + 1)
    assert outcome == [False]
    assert handle.status is Status.CANCELLED


def test_an_unknown_task_is_handed_back_and_the_worker_keeps_running(
    app: App, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker does not fail a job only because it does not know its task: it hands it back,
    due again later, with an error that says which worker did not know it."""
    monkeypatch.setattr(worker_loop, "UNKNOWN_DELAY", 30.0)  # long: the job must stay queued during the test

    @app.task
    def good() -> str:
        return "good"

    runner = start_worker()
    unknown = app.enqueue("nowhere.missing_task", [1])
    assert good.delay().result(timeout=EVENT_WAIT) == "good"
    deadline = time.monotonic() + EVENT_WAIT
    while (job := unknown.refresh()).error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status is Status.SCHEDULED, "handed back, due later: never failed by a worker that does not know it"
    assert job.error is not None and job.error.type == "UnknownTask"
    assert runner.worker.id in job.error.message
    assert job.scheduled_at >= app.clock() + 20, "handed back with a delay, not due at once"
    assert good.delay().result(timeout=EVENT_WAIT) == "good", "the worker keeps running"


def test_two_apps_on_one_store_never_fail_each_others_jobs(
    app: App, url: str, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps with different tasks share one SQLite store and the queue ``default``, each with a
    real worker: each hands the other's jobs back (with a delay) and every job runs, once, on the
    worker that knows it."""
    monkeypatch.setattr(worker_loop, "UNKNOWN_DELAY", 0.2)
    ran: dict[str, list[int]] = {"shop": [], "mail": []}
    other = App(url, lease=app.lease)

    @app.task(name="shop.ship")
    def ship(i: int) -> str:
        ran["shop"].append(i)
        return f"shipped {i}"

    @other.task(name="mail.send")
    def send(i: int) -> str:
        ran["mail"].append(i)
        return f"sent {i}"

    mails = [other.enqueue("mail.send", [i]) for i in range(5)]  # before any worker that knows them
    shipping = start_worker(concurrency=2)
    deadline = time.monotonic() + EVENT_WAIT
    while not all(handle.refresh().error is not None for handle in mails):
        assert time.monotonic() < deadline, "the shop worker did not hand back the mail jobs"
        time.sleep(0.02)
    statuses = {handle.refresh().status for handle in mails}
    assert statuses <= {Status.QUEUED, Status.SCHEDULED, Status.RUNNING}, "never failed for an unknown task"
    assert shipping.worker.id in mails[0].refresh().error.message  # type: ignore[union-attr]
    ships = [app.enqueue("shop.ship", [i]) for i in range(5)]
    start_worker(concurrency=2, on=other)  # the worker that knows mail.send appears
    assert [h.result(timeout=EVENT_WAIT) for h in mails] == [f"sent {i}" for i in range(5)]
    assert [h.result(timeout=EVENT_WAIT) for h in ships] == [f"shipped {i}" for i in range(5)]
    assert sorted(ran["mail"]) == list(range(5)) and sorted(ran["shop"]) == list(range(5)), "each ran once"
    other.close()


def test_an_unknown_task_inline(app: App) -> None:
    @app.task
    def good() -> str:
        return "good"

    unknown = app.enqueue("nowhere.missing_task")
    ok = good.delay()
    assert app.run_until_empty() == 2
    job = unknown.refresh()
    assert job.status is Status.FAILED and job.error is not None
    assert "nowhere.missing_task" in job.error.message
    assert ok.result(timeout=1) == "good"


def test_a_stopping_worker_hands_back_unfinished_jobs(app: App, start_worker) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task
    def stubborn() -> str:
        started.set()
        release.wait(EVENT_WAIT)
        return "done"

    runner = start_worker(grace=0.2)
    handle = stubborn.delay()
    assert started.wait(EVENT_WAIT)
    runner.stop()
    job = handle.refresh()
    release.set()
    assert job.status is Status.QUEUED
    assert (job.attempts, job.retries) == (1, 0)
    assert job.token is None
    # another worker runs it to the end
    start_worker()
    assert handle.result(timeout=EVENT_WAIT) == "done"
    assert handle.refresh().attempts == 2


def test_heartbeats_keep_a_job_longer_than_its_lease(app: App, start_worker) -> None:
    runs: list[int] = []

    @app.task
    def longer_than_the_lease() -> int:
        runs.append(current_job().attempt)
        time.sleep(app.lease * 2.5)
        return len(runs)

    start_worker()
    handle = longer_than_the_lease.delay()
    assert handle.result(timeout=EVENT_WAIT) == 1
    assert runs == [1]
    job = handle.refresh()
    assert (job.attempts, job.retries, job.status) == (1, 0, Status.SUCCEEDED)


def test_worker_settings_are_one_typed_value(app: App) -> None:
    options = WorkerOptions(queues=("a", "b"), concurrency=3, grace=0.5)
    worker = Worker(app, options)
    assert (worker.options, worker.queues, worker.concurrency) == (options, ["a", "b"], 3)
    overridden = Worker(app, options, queues=["c"], poll=0.2)  # keywords override, for convenience
    assert (overridden.options.queues, overridden.options.poll, overridden.options.concurrency) == (("c",), 0.2, 3)
    assert Worker(app).options == WorkerOptions()
    with pytest.raises(ValueError, match="concurrency"):
        Worker(app, concurrency=0)
    with pytest.raises(ValueError, match="queue"):
        Worker(app, WorkerOptions(queues=()))
    with pytest.raises(ValueError, match="hand_back_wait"):
        WorkerOptions(hand_back_wait=-1).check()


def test_run_returns_0_after_a_stop(app: App) -> None:
    @app.task
    def work() -> str:
        return "done"

    worker = Worker(app, WorkerOptions(poll=0.05, grace=0.5))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run()))
    thread.start()
    try:
        assert work.delay().result(timeout=EVENT_WAIT) == "done"
    finally:
        worker.stop()
        thread.join(EVENT_WAIT)
    assert codes == [0] and worker.exit_code == 0


def test_a_progress_message_with_a_lone_surrogate_is_stored_escaped(app: App, start_worker) -> None:
    @app.task
    def report() -> bool:
        return current_job().progress(50, "caf\udcff")

    start_worker()
    handle = report.delay()
    assert handle.result(timeout=EVENT_WAIT) is True
    assert handle.refresh().progress_message == "caf\\udcff"


def test_a_finished_run_frees_its_slot_but_unwritten_outcomes_stop_claims(
    app: App, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run frees its slot when its task ends, before its outcome is written; but a worker whose
    outcomes cannot be written (the store refuses them) stops claiming once its backlog is full,
    keeps those leases, and writes them all once the store takes them again."""
    from conveyor.errors import StoreUnavailable

    ran: list[int] = []

    @app.task
    def quick(i: int) -> int:
        ran.append(i)
        return i

    down = threading.Event()
    down.set()
    real = app.backend.finish_many

    def finish_many(reports, now):  # type: ignore[no-untyped-def]
        if down.is_set():
            raise StoreUnavailable("injected: outcomes cannot be written")
        return real(reports, now)

    monkeypatch.setattr(app.backend, "finish_many", finish_many)
    handles = app.enqueue_many([quick.s(i) for i in range(60)])
    runner = start_worker(concurrency=1)
    backlog = runner.worker.runs.backlog
    assert backlog < 60
    deadline = time.monotonic() + EVENT_WAIT
    while len(ran) < backlog + 1:  # one slot: each ran while earlier outcomes were still unwritten
        assert time.monotonic() < deadline, f"only {len(ran)} ran: a finished run did not free its slot"
        time.sleep(0.01)
    time.sleep(0.3)  # claims would go on here if unwritten outcomes did not take the slot
    assert len(ran) == backlog + 1, "a worker whose outcomes cannot be written stops claiming"
    assert sum(h.refresh().status is Status.RUNNING for h in handles) == backlog + 1, "their leases are kept"
    down.clear()
    assert [h.result(timeout=EVENT_WAIT) for h in handles] == list(range(60))
    assert sorted(ran) == list(range(60)), "each ran once"


def test_a_system_exit_in_a_task_fails_its_job_and_the_worker_keeps_running(app: App, start_worker) -> None:
    """A BaseException that escapes a sync or async task (here SystemExit) is that job's failure,
    not the end of its thread, the loop or the worker."""

    @app.task
    def quits() -> None:
        raise SystemExit(3)

    @app.task
    async def quits_async() -> None:
        raise SystemExit(4)

    @app.task
    def fine() -> str:
        return "fine"

    start_worker()
    for handle in (quits.delay(), quits_async.delay()):
        with pytest.raises(JobFailed) as info:
            handle.result(timeout=EVENT_WAIT)
        assert info.value.error is not None and info.value.error.type == "SystemExit"
    assert fine.delay().result(timeout=EVENT_WAIT) == "fine"
