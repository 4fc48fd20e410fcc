"""Enqueueing: .delay, .options, enqueue_many, enqueue by name, caller ids, unique keys, bad input."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import App, DuplicateJob, JobHandle, Priority, Status, current_job


def test_delay_stores_a_queued_job_and_runs_it(app: App, count_rows) -> None:
    @app.task
    def add(a: int, b: int, *, c: int = 0) -> int:
        return a + b + c

    before = time.time()
    handle = add.delay(2, 3, c=4)
    assert isinstance(handle, JobHandle)
    assert count_rows() == 1
    job = app.job(handle.id)
    assert job.id == handle.id
    assert job.task == add.name
    assert job.queue == "default"
    assert job.priority == Priority.NORMAL
    assert job.args == [2, 3]
    assert job.kwargs == {"c": 4}
    assert job.status is Status.QUEUED
    assert before <= job.created_at <= job.scheduled_at <= time.time()
    assert job.attempts == 0 and job.result is None

    assert app.run_until_empty() == 1
    assert handle.status is Status.SUCCEEDED
    assert handle.result(timeout=1) == 9
    assert handle.refresh().exit_code == 0


def test_decorator_options_become_the_job_defaults(app: App) -> None:
    @app.task(queue="emails", priority=Priority.HIGH, max_retries=3, backoff=2.0, timeout=30)
    def send(to: str) -> str:
        return to

    job = app.job(send.delay("a@b.c").id)
    assert (job.queue, job.priority, job.max_retries, job.timeout) == ("emails", Priority.HIGH, 3, 30)
    assert app.run_until_empty(["default"]) == 0  # not on the default queue
    assert app.run_until_empty(["emails"]) == 1


def test_options_override_per_call(app: App) -> None:
    @app.task(queue="emails", max_retries=1)
    def send(to: str) -> str:
        return to

    handle = send.options(
        priority=Priority.LOW, queue="bulk", key="welcome:a@b.c", max_retries=5, id="my-job-1", timeout=12.5
    ).delay("a@b.c")
    assert handle.id == "my-job-1"
    job = app.job("my-job-1")
    assert job.priority == Priority.LOW
    assert job.queue == "bulk"
    assert job.key == "welcome:a@b.c"
    assert job.max_retries == 5
    assert job.timeout == 12.5
    # the task's own settings are unchanged for the next plain call
    plain = app.job(send.delay("x").id)
    assert (plain.queue, plain.max_retries, plain.key) == ("emails", 1, None)


def test_delay_option_schedules_the_job_later(app: App) -> None:
    @app.task
    def noop() -> None:
        return None

    before = time.time()
    handle = noop.options(delay=30).delay()
    job = app.job(handle.id)
    assert job.status is Status.SCHEDULED
    assert before + 30 <= job.scheduled_at <= time.time() + 30
    assert app.run_until_empty() == 0
    assert handle.status is Status.SCHEDULED


def test_eta_option_sets_the_due_time(app: App) -> None:
    @app.task
    def noop() -> None:
        return None

    eta = datetime.now(UTC) + timedelta(minutes=5)
    later = noop.options(eta=eta).delay()
    assert app.job(later.id).scheduled_at == pytest.approx(eta.timestamp())
    assert later.status is Status.SCHEDULED
    assert abs((app.job(later.id).scheduled_time - eta).total_seconds()) < 0.001

    past = noop.options(eta=datetime.now(UTC) - timedelta(minutes=5)).delay()
    assert past.status is Status.QUEUED
    assert app.run_until_empty() == 1
    assert past.status is Status.SUCCEEDED
    assert later.status is Status.SCHEDULED


def test_enqueue_many_stores_every_call(app: App, count_rows) -> None:
    @app.task
    def double(x: int) -> int:
        return 2 * x

    handles = app.enqueue_many([double.s(1), double.s(2), double.options(queue="other").s(3)])
    assert [app.job(h.id).args for h in handles] == [[1], [2], [3]]
    assert app.job(handles[2].id).queue == "other"
    assert count_rows() == 3
    assert app.enqueue_many([]) == []
    app.run_until_empty(["default", "other"])
    assert [h.result(timeout=1) for h in handles] == [2, 4, 6]


@pytest.mark.parametrize(
    ("bad_index", "error"),
    [(0, TypeError), (1, TypeError), (2, ValueError)],
)
def test_enqueue_many_stores_nothing_when_one_call_is_invalid(app: App, count_rows, bad_index, error) -> None:
    @app.task
    def double(x: object) -> object:
        return x

    existing = double.delay("kept")
    bad = [double.s(object()), double.s(1 + 2j), double.options(priority=99).s(1)][bad_index]
    with pytest.raises(error):
        app.enqueue_many([double.s(1), bad, double.s(3)])
    assert count_rows() == 1
    assert [j.id for j in app.jobs()] == [existing.id]
    assert app.job(existing.id).args == ["kept"]


def test_enqueue_many_is_one_transaction_when_the_store_refuses_an_item(app: App, count_rows) -> None:
    @app.task
    def double(x: int) -> int:
        return x

    double.options(id="taken").delay(0)
    with pytest.raises(DuplicateJob):
        app.enqueue_many([double.options(id="new-1").s(1), double.options(id="taken").s(2)])
    assert count_rows() == 1
    assert app.job("taken").args == [0]
    with pytest.raises(LookupError):
        app.job("new-1")


def test_enqueue_by_task_name(app: App) -> None:
    @app.task(name="maths.add", queue="maths")
    def add(a: int, b: int) -> int:
        return a + b

    handle = app.enqueue("maths.add", (1, 2))
    job = app.job(handle.id)
    assert (job.task, job.queue, job.args) == ("maths.add", "maths", [1, 2])  # the task's own queue is used
    kw = app.enqueue("maths.add", kwargs={"a": 5, "b": 6}, priority=Priority.CRITICAL, id="by-name")
    assert app.job("by-name").priority == Priority.CRITICAL
    app.run_until_empty(["maths"])
    assert handle.result(timeout=1) == 3
    assert kw.result(timeout=1) == 11

    # a name this process does not know is stored too (another process may run it)
    other = app.enqueue("elsewhere.task", ["x"], queue="remote")
    assert app.job(other.id).task == "elsewhere.task"
    assert app.job(other.id).queue == "remote"


def _bad_calls():
    """(description, call(app, task), exception type, message fragment)."""
    return [
        ("non-JSON argument", lambda app, t: t.delay(object()), TypeError, "JSON"),
        ("non-JSON kwarg", lambda app, t: t.delay(x=len), TypeError, "JSON"),
        ("bad priority number", lambda app, t: t.options(priority=99).delay(1), ValueError, "priority"),
        ("bad priority name", lambda app, t: t.options(priority="urgent").delay(1), ValueError, "priority"),
        ("negative delay", lambda app, t: t.options(delay=-1).delay(1), ValueError, "delay"),
        ("NaN delay", lambda app, t: t.options(delay=math.nan).delay(1), ValueError, "delay"),
        ("delay and eta", lambda app, t: t.options(delay=1, eta=datetime.now(UTC)).delay(1), ValueError, "eta"),
        ("unknown option", lambda app, t: t.options(bogus=1).delay(1), TypeError, "bogus"),
        ("empty queue", lambda app, t: t.options(queue="").delay(1), ValueError, "queue"),
        ("negative max_retries", lambda app, t: t.options(max_retries=-1).delay(1), ValueError, "max_retries"),
        ("zero timeout", lambda app, t: t.options(timeout=0).delay(1), ValueError, "timeout"),
        ("empty id", lambda app, t: t.options(id="").delay(1), ValueError, "id"),
        ("empty key", lambda app, t: t.options(key="").delay(1), ValueError, "key"),
        ("by name, non-JSON", lambda app, t: app.enqueue(t.name, [object()]), TypeError, "JSON"),
        ("by name, unknown option", lambda app, t: app.enqueue(t.name, [1], colour="red"), TypeError, "colour"),
        ("by name, bad priority", lambda app, t: app.enqueue(t.name, [1], priority=0), ValueError, "priority"),
        ("by name, args a str", lambda app, t: app.enqueue(t.name, "abc"), TypeError, "list or tuple"),
        ("by name, args a dict", lambda app, t: app.enqueue(t.name, {"x": 1}), TypeError, "list or tuple"),
        ("priority True", lambda app, t: t.options(priority=True).delay(1), ValueError, "priority"),
        ("delay True", lambda app, t: t.options(delay=True).delay(1), ValueError, "delay"),
        ("eta not a datetime", lambda app, t: t.options(eta="tomorrow").delay(1), ValueError, "eta"),
        ("kwargs not a dict", lambda app, t: app.enqueue(t.name, [1], kwargs=[1]), TypeError, "kwargs"),  # type: ignore[arg-type]
        ("NUL in a queue", lambda app, t: t.options(queue="q\x00").delay(1), ValueError, "queue must not contain"),
        ("NUL in a key", lambda app, t: t.options(key="k\x00").delay(1), ValueError, "key must not contain a NUL"),
        ("NUL in an id", lambda app, t: t.options(id="i\x00").delay(1), ValueError, "id must not contain a NUL"),
        ("NUL in an owner", lambda app, t: t.options(owner="o\x00").delay(1), ValueError, "owner must not contain"),
        ("NUL in a task name", lambda app, t: app.enqueue("t\x00", [1]), ValueError, "task name must not contain"),
    ]


@pytest.mark.parametrize(("call", "error", "fragment"), [c[1:] for c in _bad_calls()], ids=[c[0] for c in _bad_calls()])
def test_bad_call_raises_at_the_call_and_stores_nothing(app: App, count_rows, call, error, fragment) -> None:
    @app.task
    def echo(x: object = None) -> object:
        return x

    echo.delay("already here")
    assert count_rows() == 1
    with pytest.raises(error, match=fragment):
        call(app, echo)
    assert count_rows() == 1
    [only] = app.jobs()
    assert only.args == ["already here"] and only.status is Status.QUEUED


def test_bad_task_options_are_refused_at_declaration(app: App) -> None:
    with pytest.raises(ValueError, match="priority"):
        app.task(priority=0)(lambda: None)
    with pytest.raises(ValueError, match="jitter"):
        app.task(jitter=2.0)(lambda: None)
    with pytest.raises(TypeError, match="retries_max"):
        app.task(retries_max=3)(lambda: None)


def test_duplicate_id_raises_and_leaves_the_existing_job_untouched(app: App, count_rows) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    first = echo.options(id="order-42", priority=Priority.HIGH).delay("original")
    with pytest.raises(DuplicateJob) as info:
        echo.options(id="order-42", priority=Priority.LOW, queue="other").delay("intruder")
    assert info.value.job_id == "order-42"
    assert "order-42" in str(info.value)
    job = app.job("order-42")
    assert (job.args, job.priority, job.queue, job.status) == (["original"], Priority.HIGH, "default", Status.QUEUED)
    assert count_rows() == 1

    app.run_until_empty()
    assert first.result(timeout=1) == "original"
    with pytest.raises(DuplicateJob):  # ids stay taken after the job finished
        echo.options(id="order-42").delay("again")
    assert app.job("order-42").result == "original"
    assert count_rows() == 1


def test_unique_key_returns_the_unfinished_job(app: App, count_rows) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    first = echo.options(key="welcome:a@b.c").delay("first")
    second = echo.options(key="welcome:a@b.c").delay("second")
    assert second.id == first.id
    assert count_rows() == 1
    assert app.job(first.id).args == ["first"]

    other_key = echo.options(key="welcome:z@b.c").delay("other")
    assert other_key.id != first.id

    assert app.run_until_empty() == 2
    assert first.result(timeout=1) == "first"
    # finished: the key is free again, a new job is created
    third = echo.options(key="welcome:a@b.c").delay("third")
    assert third.id != first.id
    assert app.job(third.id).args == ["third"]
    assert count_rows() == 3


def test_unique_key_holds_while_the_job_runs(app: App) -> None:
    @app.task
    def same_key() -> bool:
        again = app.tasks[same_key.name].options(key="k").delay()
        return again.id == current_job().id

    handle = same_key.options(key="k").delay()
    app.run_until_empty()
    assert handle.result(timeout=1) is True
    assert len(app.jobs()) == 1


def test_unique_key_inside_one_batch(app: App, count_rows) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    a, b = app.enqueue_many([echo.options(key="k").s(1), echo.options(key="k").s(2)])
    assert a.id == b.id
    assert count_rows() == 1


@pytest.mark.parametrize("value", [math.nan, math.inf, [1.0, -math.inf]])
def test_non_finite_float_argument_is_refused(app: App, count_rows, value: object) -> None:
    @app.task
    def echo(x: object) -> object:
        return x

    with pytest.raises(TypeError, match="NaN and infinite"):
        echo.delay(value)
    assert count_rows() == 0
