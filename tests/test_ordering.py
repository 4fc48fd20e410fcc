"""Claim order: priority (higher first), then due time, then FIFO; only due jobs are claimed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from conveyor import App, Priority, Status


def _recorder(app: App, order: list[str]):
    @app.task
    def record(label: str) -> str:
        order.append(label)
        return label

    return record


def test_higher_priority_runs_first(app: App) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    record.options(priority=Priority.LOW).delay("low")
    record.options(priority=Priority.NORMAL).delay("normal")
    record.options(priority=Priority.CRITICAL).delay("critical")
    record.options(priority=Priority.HIGH).delay("high")
    record.delay("normal-2")  # the task default: NORMAL
    assert app.run_until_empty() == 5
    assert order == ["critical", "high", "normal", "normal-2", "low"]


def test_earlier_due_time_runs_first_within_a_priority(app: App) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    now = datetime.now(UTC)
    record.delay("due-now")
    record.options(eta=now - timedelta(seconds=10)).delay("due-10s-ago")
    record.options(eta=now - timedelta(seconds=20)).delay("due-20s-ago")
    # priority beats due time
    record.options(eta=now - timedelta(hours=1), priority=Priority.LOW).delay("low-due-1h-ago")
    record.options(priority=Priority.HIGH).delay("high-due-now")
    app.run_until_empty()
    assert order == ["high-due-now", "due-20s-ago", "due-10s-ago", "due-now", "low-due-1h-ago"]


def test_fifo_among_equal_priority_and_due_time(app: App) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    labels = [f"job-{i}" for i in range(12)]
    handles = app.enqueue_many([record.s(label) for label in labels])
    assert len({app.job(h.id).scheduled_at for h in handles}) == 1  # one batch: the same due time
    app.run_until_empty()
    assert order == labels


def test_run_until_empty_serves_only_the_queues_given(app: App) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    record.options(queue="a").delay("a1")
    record.options(queue="b").delay("b1")
    record.options(queue="a").delay("a2")
    assert app.run_until_empty(["a"]) == 2
    assert order == ["a1", "a2"]
    assert app.run_until_empty() == 1  # every queue
    assert order == ["a1", "a2", "b1"]


def test_only_due_jobs_are_claimed(app: App, wait_for) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    later = record.options(delay=0.5).delay("later")
    record.delay("now")
    assert later.status is Status.SCHEDULED
    assert [j.id for j in app.jobs(status=Status.SCHEDULED)] == [later.id]
    assert later.id not in [j.id for j in app.jobs(status="queued")]

    assert app.run_until_empty() == 1
    assert order == ["now"]
    assert later.status is Status.SCHEDULED

    wait_for(lambda: later.status is Status.QUEUED, timeout=5, what="the delayed job to fall due")
    assert time.time() >= app.job(later.id).scheduled_at
    assert [j.id for j in app.jobs(status="queued")] == [later.id]
    assert app.jobs(status="scheduled") == []
    assert app.run_until_empty() == 1
    assert order == ["now", "later"]


def test_worker_does_not_run_a_delayed_job_early(app: App, start_worker) -> None:
    started: list[float] = []

    @app.task
    def stamp() -> None:
        started.append(time.time())

    start_worker()
    handle = stamp.options(delay=0.4).delay()
    due = app.job(handle.id).scheduled_at
    assert handle.result(timeout=10) is None
    assert len(started) == 1
    assert started[0] >= due


def test_worker_claims_by_priority(app: App, start_worker) -> None:
    order: list[str] = []
    record = _recorder(app, order)
    labels = [
        ("low", Priority.LOW),
        ("normal", Priority.NORMAL),
        ("critical", Priority.CRITICAL),
        ("high", Priority.HIGH),
    ]
    handles = [record.options(priority=p).delay(label) for label, p in labels]
    start_worker(concurrency=1)
    for handle in handles:
        handle.result(timeout=10)
    assert order == ["critical", "high", "normal", "low"]
