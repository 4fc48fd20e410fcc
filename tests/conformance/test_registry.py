"""The Registry protocol (the worker registry) and the operations' reads (lock_owner,
schema_versions), against every store: each worker's row as it registers, beats and ends, stop
requests that its heartbeat reads back, the leader marking dead workers and pruning old rows, and
the events each of those writes."""

from __future__ import annotations

from conveyor.backends import Backend
from conveyor.events import Event, EventQuery
from conveyor.operations import WorkerInfo, WorkerState

from .conftest import OpenStore
from .jobdata import T0


def info(worker_id: str, started_at: float = T0, **fields: object) -> WorkerInfo:
    """A worker as it registers itself."""
    values: dict[str, object] = {
        "id": worker_id, "host": "host-a", "pid": 4242, "queues": ["default", "mail"], "concurrency": 8,
        "version": "1.2.3", "started_at": started_at, "last_seen": started_at,
    }  # fmt: skip
    values.update(fields)
    return WorkerInfo(**values)  # type: ignore[arg-type]


def workers(backend: Backend) -> dict[str, WorkerInfo]:
    return {worker.id: worker for worker in backend.list_workers()}


def worker_events(backend: Backend) -> list[tuple[str, str | None, float]]:
    return [(e.kind, e.worker_id, e.at) for e in backend.events(EventQuery()) if e.kind.startswith(("worker", "stop"))]


def newest(backend: Backend) -> Event:
    return backend.events(EventQuery())[-1]


def test_register_stores_the_worker_and_writes_worker_started(backend: Backend) -> None:
    backend.register_worker(info("w1", in_flight=2, leader=True), T0 + 1)
    (stored,) = backend.list_workers()
    assert stored == info("w1", in_flight=2, leader=True, last_seen=T0 + 1)
    event = newest(backend)
    assert (event.kind, event.worker_id, event.job_id, event.at) == ("worker_started", "w1", None, T0 + 1)
    assert event.data == {"host": "host-a", "pid": 4242, "queues": ["default", "mail"]}


def test_registering_again_replaces_the_row(backend: Backend) -> None:
    backend.register_worker(info("w1"), T0)
    backend.request_worker_stop(["w1"], T0 + 1)
    backend.register_worker(info("w1", pid=99, queues=["other"], started_at=T0 + 5), T0 + 5)
    assert backend.list_workers() == [info("w1", pid=99, queues=["other"], started_at=T0 + 5, last_seen=T0 + 5)]


def test_list_workers_is_newest_first(backend: Backend) -> None:
    backend.register_worker(info("old", started_at=T0), T0)
    backend.register_worker(info("new", started_at=T0 + 20), T0 + 20)
    backend.register_worker(info("mid", started_at=T0 + 10), T0 + 21)
    assert [w.id for w in backend.list_workers()] == ["new", "mid", "old"]


def test_beat_refreshes_the_row_and_says_whether_a_stop_was_asked(backend: Backend) -> None:
    backend.register_worker(info("w1"), T0)
    assert backend.beat_worker("w1", 5, WorkerState.RUNNING, True, T0 + 2) is False
    row = workers(backend)["w1"]
    assert (row.in_flight, row.state, row.leader, row.last_seen, row.started_at) == (5, "running", True, T0 + 2, T0)
    assert backend.beat_worker("w1", 1, WorkerState.STOPPING, False, T0 + 3) is False
    row = workers(backend)["w1"]
    assert (row.in_flight, row.state, row.leader, row.last_seen) == (1, WorkerState.STOPPING, False, T0 + 3)
    assert backend.beat_worker("unknown", 0, WorkerState.RUNNING, False, T0) is None  # no row: register again


def test_a_stop_request_reaches_running_and_stopping_workers_only(open_store: OpenStore) -> None:
    cli, worker = open_store(), open_store()
    for worker_id in ("running", "stopping", "stopped", "dead"):
        worker.register_worker(info(worker_id), T0)
    worker.beat_worker("stopping", 0, WorkerState.STOPPING, False, T0)
    worker.end_worker("stopped", T0)
    worker.beat_worker("running", 0, WorkerState.RUNNING, False, T0 + 5)
    worker.beat_worker("stopping", 0, WorkerState.STOPPING, False, T0 + 5)
    assert worker.mark_dead_workers(T0 + 1, T0 + 5) == ["dead"]
    before = cli.last_event_seq()
    asked = cli.request_worker_stop(["running", "stopping", "stopped", "dead", "unknown"], T0 + 6)
    assert sorted(asked) == ["running", "stopping"]
    requested = [(e.kind, e.worker_id, e.at) for e in cli.events(EventQuery(after=before))]
    assert sorted(requested) == [("stop_requested", "running", T0 + 6), ("stop_requested", "stopping", T0 + 6)]
    assert worker.beat_worker("running", 3, WorkerState.RUNNING, False, T0 + 7) is True
    assert worker.beat_worker("stopping", 0, WorkerState.STOPPING, False, T0 + 7) is True
    assert {w.id: w.stop_requested for w in worker.list_workers()} == {
        "running": True, "stopping": True, "stopped": False, "dead": False,
    }  # fmt: skip
    assert cli.request_worker_stop([], T0 + 8) == []


def test_end_worker_marks_it_stopped_and_writes_worker_stopped(backend: Backend) -> None:
    backend.register_worker(info("w1", in_flight=3, leader=True), T0)
    backend.end_worker("w1", T0 + 9)
    row = workers(backend)["w1"]
    assert (row.state, row.last_seen, row.in_flight, row.leader) == (WorkerState.STOPPED, T0 + 9, 0, False)
    assert worker_events(backend) == [("worker_started", "w1", T0), ("worker_stopped", "w1", T0 + 9)]
    before = backend.last_event_seq()
    backend.end_worker("unknown", T0 + 10)  # no row: nothing to end
    assert backend.last_event_seq() == before


def test_mark_dead_workers_takes_the_silent_running_and_stopping_ones(backend: Backend) -> None:
    for worker_id in ("silent", "quiet-stopping", "alive", "ended"):
        backend.register_worker(info(worker_id), T0)
    backend.beat_worker("quiet-stopping", 0, WorkerState.STOPPING, False, T0 + 1)
    backend.beat_worker("alive", 0, WorkerState.RUNNING, True, T0 + 50)
    backend.end_worker("ended", T0 + 2)
    assert sorted(backend.mark_dead_workers(T0 + 40, T0 + 60)) == ["quiet-stopping", "silent"]
    states = {w.id: (w.state, w.leader) for w in backend.list_workers()}
    assert states == {
        "silent": (WorkerState.DEAD, False), "quiet-stopping": (WorkerState.DEAD, False),
        "alive": (WorkerState.RUNNING, True), "ended": (WorkerState.STOPPED, False),
    }  # fmt: skip
    dead = [(kind, worker_id, at) for kind, worker_id, at in worker_events(backend) if kind == "worker_dead"]
    assert sorted(dead) == [("worker_dead", "quiet-stopping", T0 + 60), ("worker_dead", "silent", T0 + 60)]
    assert backend.mark_dead_workers(T0 + 40, T0 + 61) == []  # already dead: no second event
    assert backend.beat_worker("silent", 0, WorkerState.RUNNING, False, T0 + 70) is False  # it was only paused
    assert workers(backend)["silent"].state is WorkerState.RUNNING


def test_prune_workers_deletes_old_rows_of_ended_workers_only(backend: Backend) -> None:
    for worker_id in ("stopped-old", "dead-old", "stopped-recent", "running-old"):
        backend.register_worker(info(worker_id), T0)
    backend.end_worker("stopped-old", T0 + 1)
    backend.beat_worker("running-old", 0, WorkerState.RUNNING, False, T0 + 1)
    backend.beat_worker("stopped-recent", 0, WorkerState.RUNNING, False, T0 + 500)
    backend.end_worker("stopped-recent", T0 + 500)
    assert backend.mark_dead_workers(T0 + 0.5, T0 + 2) == ["dead-old"]
    assert backend.prune_workers(T0 + 100) == 2
    assert sorted(workers(backend)) == ["running-old", "stopped-recent"]
    assert backend.prune_workers(T0 + 100) == 0


# operations' reads -----------------------------------------------------------------------------------
def test_lock_owner_names_the_holder_while_unexpired(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.lock_owner("leader", T0) is None
    assert first.acquire_lock("leader", "a", 30.0, T0)
    assert second.lock_owner("leader", T0 + 29) == "a"
    assert second.lock_owner("other", T0) is None
    assert second.lock_owner("leader", T0 + 31) is None  # expired: anyone may take it
    assert second.acquire_lock("leader", "b", 30.0, T0 + 31)
    assert first.lock_owner("leader", T0 + 32) == "b"
    assert second.release_lock("leader", "b")
    assert first.lock_owner("leader", T0 + 33) is None


def test_schema_versions_says_the_store_is_current_after_setup(backend: Backend) -> None:
    applied, latest = backend.schema_versions()
    assert isinstance(latest, int) and latest >= 3  # 0003: events, switches, workers
    assert applied == latest
