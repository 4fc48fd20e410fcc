"""The event log through the App: ``app.events`` filters and validation, a task's own events
(``current_job().emit``), progress events, ``JobHandle.result`` waking on events instead of
sleeping, ``event_ttl`` and its pruning by the leader. Real stores: a SQLite file, and PostgreSQL
for the ones that matter on both."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App, EventKind, JobFailed, Status, current_job
from conveyor.leader import Leader

WAIT = 10.0  # generous bound for cross-thread hand-offs; never a speed assertion


def kinds(events: list[Any]) -> list[str]:
    return [event.kind for event in events]


def test_a_jobs_history_is_its_events_in_order(any_app: App, start_worker: Callable[..., Any]) -> None:
    app = any_app

    @app.task(name="loader")
    def loader(n: int) -> int:
        job = current_job()
        assert job.progress(50, "half way") is True
        assert job.emit("rows_loaded", {"n": n, "table": "t"}) is True
        return n

    start_worker(on=app)
    handle = loader.delay(1200)
    assert handle.result(timeout=WAIT) == 1200
    history = app.events(job_id=handle.id)
    assert kinds(history) == ["enqueued", "started", "progress", "rows_loaded", "succeeded"]
    assert [event.seq for event in history] == sorted(event.seq for event in history)
    assert all(event.job_id == handle.id and event.task == "loader" and event.queue == "default" for event in history)
    assert [event.attempt for event in history] == [0, 1, 1, 1, 1]
    assert history[2].data == {"percent": 50.0, "message": "half way"}
    assert history[3].data == {"n": 1200, "table": "t"}
    assert history[1].worker_id is not None and history[3].worker_id == history[1].worker_id


def test_events_filters_by_job_task_queue_kinds_after_and_limit(app: App) -> None:
    @app.task(name="a")
    def a() -> None: ...

    @app.task(name="b", queue="other")
    def b() -> None: ...

    first = a.delay()
    second = b.delay()
    app.run_until_empty()
    everything = app.events()
    assert kinds(everything) == ["enqueued", "enqueued", "started", "succeeded", "started", "succeeded"]
    assert {event.job_id for event in app.events(job_id=first.id)} == {first.id}
    assert {event.job_id for event in app.events(task="b")} == {second.id}
    assert {event.job_id for event in app.events(queue="other")} == {second.id}
    assert kinds(app.events(kinds=["succeeded"])) == ["succeeded", "succeeded"]
    assert kinds(app.events(kinds=EventKind.STARTED)) == ["started", "started"]  # one kind, as an EventKind
    assert kinds(app.events(kinds=("started", EventKind.SUCCEEDED), task="a")) == ["started", "succeeded"]
    middle = everything[2].seq
    assert [event.seq for event in app.events(after=middle)] == [event.seq for event in everything[3:]]
    assert [event.seq for event in app.events(limit=2)] == [event.seq for event in everything[:2]]
    assert app.events(after=everything[-1].seq) == []


@pytest.mark.parametrize(
    "arguments, said",
    [
        ({"limit": 0}, "limit must be an int >= 1"),
        ({"limit": True}, "limit must be an int >= 1"),
        ({"after": -1}, "after must be an event sequence number"),
        ({"after": 1.5}, "after must be an event sequence number"),
        ({"kinds": []}, "kinds= must name at least one kind"),
        ({"kinds": ["ok", ""]}, "an event kind must be a non-empty string"),
    ],
)
def test_events_refuses_bad_arguments(app: App, arguments: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        app.events(**arguments)


def test_emit_refuses_bad_kinds_and_data_with_a_clear_error(app: App) -> None:
    errors: dict[str, BaseException] = {}

    @app.task(name="emitter")
    def emitter() -> str:
        job = current_job()
        for label, kind, data in [
            ("uppercase", "Rows", None),
            ("empty", "", None),
            ("reserved", "succeeded", None),
            ("not a dict", "rows", ["a", "list"]),
            ("not JSON", "rows", {"when": object()}),
        ]:
            try:
                job.emit(kind, data)
            except (TypeError, ValueError) as exc:
                errors[label] = exc
        job.emit("all.good:1", None)
        return "done"

    handle = emitter.delay()
    app.run_until_empty()
    assert handle.result(timeout=1) == "done"
    assert isinstance(errors["uppercase"], ValueError) and "a-z" in str(errors["uppercase"])
    assert isinstance(errors["empty"], ValueError)
    assert isinstance(errors["reserved"], ValueError) and "conveyor's own" in str(errors["reserved"])
    assert isinstance(errors["not a dict"], TypeError) and "must be a dict" in str(errors["not a dict"])
    assert isinstance(errors["not JSON"], TypeError) and "JSON" in str(errors["not JSON"])
    assert kinds(app.events(job_id=handle.id)) == ["enqueued", "started", "all.good:1", "succeeded"]
    assert app.events(kinds=["all.good:1"])[0].data == {}


def test_a_stale_run_emits_nothing(app: App) -> None:
    """Fenced like progress: once the run no longer owns the job (cancelled), emit returns False
    and writes no event."""
    said: list[bool] = []

    @app.task(name="late")
    def late() -> None:
        app.cancel(current_job().id)
        said.append(current_job().emit("too_late", {"x": 1}))

    handle = late.delay()
    app.run_until_empty()
    assert said == [False]
    assert "too_late" not in kinds(app.events(job_id=handle.id))
    assert app.job(handle.id).status is Status.CANCELLED


def test_result_waits_for_events_not_sleep(any_app: App, start_worker: Callable[..., Any]) -> None:
    """``result()`` returns the result (with and without a timeout), raising JobFailed for a
    failure, and between reads it waits on the store's event wake-up: every pause is a
    ``wait_for_events`` call, past the sequence number read before the job."""
    app = any_app
    gate = threading.Event()

    @app.task(name="gated")
    def gated(x: int) -> int:
        gate.wait(WAIT)
        return x * 2

    @app.task(name="broken")
    def broken() -> None:
        raise RuntimeError("nope")

    waits: list[tuple[int, float]] = []
    backend = app.backend
    real_wait = backend.wait_for_events

    def spy(after: int, timeout: float) -> None:
        waits.append((after, timeout))
        gate.set()  # the waiter is waiting: let the job finish, its events wake the waiter
        real_wait(after, timeout)

    backend.wait_for_events = spy  # type: ignore[method-assign]
    start_worker(on=app)
    assert gated.delay(21).result() == 42  # no timeout
    assert waits and all(timeout <= 1.0 for _, timeout in waits)
    assert all(after <= backend.last_event_seq() for after, _ in waits)
    gate.clear()
    waits.clear()
    assert gated.delay(5).result(timeout=WAIT) == 10
    assert waits and all(0 < timeout <= 1.0 for _, timeout in waits)
    with pytest.raises(JobFailed, match="RuntimeError: nope"):
        broken.delay().result(timeout=WAIT)


def test_result_times_out_while_nobody_runs_the_job(app: App) -> None:
    handle = app.enqueue("nobody.runs.this")
    with pytest.raises(TimeoutError, match=r"not finished after 0\.3 s"):
        handle.result(timeout=0.3)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0)


@pytest.mark.parametrize("bad", [0, -1.0, True, "1"])
def test_event_ttl_is_validated(url: str, bad: Any) -> None:
    with pytest.raises(ValueError, match="event_ttl must be > 0 seconds"):
        App(url, event_ttl=bad)


def test_the_leader_prunes_events_past_event_ttl(url: str) -> None:
    now = [1_000_000.0]
    app = App(url, lease=10.0, clock=lambda: now[0], event_ttl=100.0)
    assert App(url).event_ttl == 7 * 86400.0
    old = app.enqueue("unrun.task")
    now[0] += 150
    recent = app.enqueue("unrun.task")
    Leader(app, "leader").tick(now[0])
    remaining = app.events()
    assert [event.job_id for event in remaining] == [recent.id]  # older than event_ttl: gone
    assert app.job(old.id).status is Status.QUEUED  # the job itself stays: only its event aged out
    app.close()
