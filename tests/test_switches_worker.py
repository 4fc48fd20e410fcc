"""Control at run time through the store, with real Workers on threads: pausing a queue, disabling
a task or everything (claims honour the switches: nothing of theirs starts once the call has
returned, the rest goes on), ``app.queues()``, and ``stop_workers`` by worker id or by queue
(the worker stops gracefully as on SIGTERM, its ``run()`` returns 0). Both stores."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import waiting

from conveyor import App, Status, Worker, WorkerState
from conveyor.worker import WorkerOptions

WAIT = 20.0  # generous bound for cross-thread hand-offs; never a speed assertion


class Running:
    """A Worker on a thread, keeping what its ``run()`` returned."""

    def __init__(self, app: App, **options: Any) -> None:
        options.setdefault("poll", 0.05)
        options.setdefault("grace", 2.0)
        self.worker = Worker(app, WorkerOptions(**options))
        self.code: int | None = None
        self.claims = 0  # claim calls made, to know the worker kept polling
        claim = self.worker.backend.claim

        def counting_claim(*args: Any, **kwargs: Any) -> Any:
            self.claims += 1
            return claim(*args, **kwargs)

        self.worker.backend = _Proxy(self.worker.backend, claim=counting_claim)
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        self.code = self.worker.run()

    def polls(self, more: int) -> None:
        """Wait until the worker has tried ``more`` further claims."""
        target = self.claims + more
        deadline = time.monotonic() + WAIT
        while self.claims < target:
            assert time.monotonic() < deadline, "the worker stopped claiming"
            time.sleep(0.01)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


class _Proxy:
    """The worker's store with some methods replaced (the rest passed through)."""

    def __init__(self, backend: Any, **replaced: Any) -> None:
        self._backend = backend
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


@pytest.fixture
def make_worker(any_url: str) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def make(app: App, **options: Any) -> Running:
        running = Running(app, **options)
        started.append(running)
        return running

    yield make
    for running in started:
        running.worker.stop()
    for running in started:
        running.thread.join(WAIT)


@pytest.fixture
def control(any_url: str) -> Iterator[App]:
    """The app of the operator: the same store, its own connections, its own tasks' names."""
    application = App(any_url, lease=1.0)
    yield application
    application.close()


def worker_app(url: str) -> App:
    app = App(url, lease=1.0)

    @app.task(name="work")
    def work(i: int) -> int:
        time.sleep(0.02)
        return i

    @app.task(name="other")
    def other(i: int) -> int:
        return i

    return app


wait_until = functools.partial(waiting.wait_for, timeout=WAIT, interval=0.02)  #: tests/waiting.py


def statuses(app: App, handles: list[Any]) -> list[Status]:
    return [app.job(h.id).status for h in handles]


def test_a_paused_queue_starts_nothing_after_pause_returns_while_others_go_on(
    any_url: str, control: App, make_worker: Callable[..., Running]
) -> None:
    app = worker_app(any_url)
    work_in_a = app.tasks["work"].options(queue="a")
    paused_jobs = app.enqueue_many(work_in_a.s(i) for i in range(200))  # queued before the worker starts
    runner = make_worker(app, queues=("a", "b"), concurrency=4)
    wait_until(lambda: len(control.events(queue="a", kinds=["succeeded"])) >= 5, "queue a to be running")

    assert control.pause_queue("a") is True
    returned_at = time.time()
    assert control.pause_queue("a") is False  # already paused: nothing changed, no second event
    [paused] = control.events(kinds=["queue_paused"])
    assert paused.queue == "a"
    others = [control.enqueue("work", [i], queue="b") for i in range(30)]
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, others)), "queue b to drain")
    runner.polls(20)

    started_a = control.events(queue="a", kinds=["started"], limit=10_000)
    if any_url.startswith("sqlite"):  # serial writers: a claim commits wholly before or after the pause
        assert all(e.seq < paused.seq for e in started_a)
    else:  # a claim whose statement began before the pause committed may end just after it
        assert all(e.at < returned_at + 1.0 for e in started_a)
    untouched = [h for h in paused_jobs if control.job(h.id).attempts == 0]
    assert len(untouched) >= 50 and all(control.job(h.id).status is Status.QUEUED for h in untouched)
    assert control.switches().paused_queues == frozenset({"a"})
    info = {q.name: q for q in control.queues()}
    assert info["a"].paused and info["a"].queued == len(untouched) and info["a"].oldest_due is not None
    assert not info["b"].paused and info["b"].queued == 0

    assert control.resume_queue("a") is True
    assert control.resume_queue("a") is False
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, paused_jobs)), "queue a to drain")
    assert [e.kind for e in control.events(kinds=["queue_paused", "queue_resumed"])] == [
        "queue_paused",
        "queue_resumed",
    ]
    app.close()


def test_a_disabled_tasks_jobs_stay_queued_untouched_across_a_restart(
    any_url: str, control: App, make_worker: Callable[..., Running]
) -> None:
    app = worker_app(any_url)
    assert control.disable_task("work") is True
    assert control.disable_task("work") is False
    held = [control.enqueue("work", [i]) for i in range(5)]
    first = make_worker(app)
    ran = [control.enqueue("other", [i]) for i in range(5)]
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, ran)), "the other task to run")
    first.polls(10)
    first.stop()
    assert first.code == 0
    second = make_worker(app)
    second.polls(10)
    for handle in held:
        job = control.job(handle.id)
        assert job.status is Status.QUEUED and job.attempts == 0 and job.started_at is None
    assert control.events(task="work", kinds=["started"]) == []
    assert control.switches().disabled_tasks == frozenset({"work"})

    assert control.enable_task("work") is True
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, held)), "the enabled task to run")
    assert [e.kind for e in control.events(task="work", kinds=["task_disabled", "task_enabled"])] == [
        "task_disabled",
        "task_enabled",
    ]
    app.close()


def test_disable_all_stops_every_claim_until_enable_all(
    any_url: str, control: App, make_worker: Callable[..., Running]
) -> None:
    app = worker_app(any_url)
    runner = make_worker(app, queues=("default", "b"))
    assert control.disable_all() is True
    assert control.disable_all() is False
    jobs = [control.enqueue("other", [i]) for i in range(3)] + [control.enqueue("work", [9], queue="b")]
    runner.polls(20)
    assert all(control.job(h.id).attempts == 0 for h in jobs)
    assert control.switches().everything
    assert control.enable_all() is True
    assert control.enable_all() is False
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, jobs)), "everything to run")
    app.close()


@pytest.mark.parametrize("name", ["", "  ", None, 3])
def test_switch_names_are_checked(app: App, name: Any) -> None:
    for switch in (app.pause_queue, app.resume_queue, app.disable_task, app.enable_task):
        with pytest.raises(ValueError, match="name must be a non-empty string"):
            switch(name)


def test_stop_workers_by_id_stops_only_that_worker(
    any_url: str, control: App, make_worker: Callable[..., Running]
) -> None:
    app = worker_app(any_url)
    gate = threading.Event()

    @app.task(name="gated")
    def gated() -> str:
        gate.wait(WAIT)
        return "finished"

    one = make_worker(app, grace=WAIT)
    two = make_worker(app)
    wait_until(lambda: len(control.workers()) == 2, "both workers to register")
    running = control.enqueue("gated")
    wait_until(lambda: control.job(running.id).status is Status.RUNNING, "the gated job to start")
    holder = one if control.job(running.id).worker_id == one.worker.id else two
    bystander = two if holder is one else one

    assert control.stop_workers(worker_ids=[holder.worker.id]) == [holder.worker.id]
    wait_until(lambda: holder.worker._stopping.is_set(), "the stop request to be heard")
    row = {w.id: w for w in control.workers()}[holder.worker.id]
    assert row.stop_requested
    gate.set()  # the running job finishes within the grace period, as on SIGTERM
    holder.thread.join(WAIT)
    assert not holder.thread.is_alive() and holder.code == 0 and holder.worker.stop_requested
    assert control.job(running.id).status is Status.SUCCEEDED

    after = [control.enqueue("other", [i]) for i in range(5)]
    wait_until(lambda: all(s is Status.SUCCEEDED for s in statuses(control, after)), "the other worker to run jobs")
    assert {control.job(h.id).worker_id for h in after} == {bystander.worker.id}
    assert bystander.thread.is_alive() and not bystander.worker.stop_requested
    rows = {w.id: w for w in control.workers()}
    assert rows[holder.worker.id].state is WorkerState.STOPPED
    assert rows[bystander.worker.id].state is WorkerState.RUNNING
    [asked] = control.events(kinds=["stop_requested"])
    assert asked.worker_id == holder.worker.id
    app.close()


def test_stop_workers_by_queue_stops_the_workers_serving_it(
    any_url: str, control: App, make_worker: Callable[..., Running]
) -> None:
    app = worker_app(any_url)
    emails = make_worker(app, queues=("emails", "default"))
    reports = make_worker(app, queues=("reports",))
    wait_until(lambda: len(control.workers()) == 2, "both workers to register")
    assert control.stop_workers(queues=["emails"]) == [emails.worker.id]
    emails.thread.join(WAIT)
    assert emails.code == 0 and not emails.thread.is_alive()
    job = control.enqueue("other", [1], queue="reports")
    wait_until(lambda: control.job(job.id).status is Status.SUCCEEDED, "the reports worker to run a job")
    assert reports.thread.is_alive()
    assert control.stop_workers(queues="emails") == []  # nobody running serves it now
    app.close()


def test_stop_workers_checks_its_arguments(app: App, start_worker: Callable[..., Any], wait_for: Any) -> None:
    runner = start_worker()
    wait_for(lambda: app.workers(), what="the worker to register")
    with pytest.raises(ValueError, match="exactly one of"):
        app.stop_workers()
    with pytest.raises(ValueError, match="exactly one of"):
        app.stop_workers(queues=["default"], worker_ids=[runner.worker.id])
    with pytest.raises(ValueError, match="no-such-worker \\(not registered\\)"):
        app.stop_workers(worker_ids=[runner.worker.id, "no-such-worker"])
    assert not runner.worker._stopping.is_set()  # nobody was asked: the bad id refused the whole call
    runner.stop()
    with pytest.raises(ValueError, match="not running"):
        app.stop_workers(worker_ids=[runner.worker.id])
