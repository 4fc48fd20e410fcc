"""The worker registry from the worker's side: a Worker registers at start (id, host, pid, queues,
concurrency, version), refreshes its row with its heartbeat (jobs in flight, state, leader flag),
says STOPPING while it stops and STOPPED at a clean exit, registers again if its row is gone; a
worker with ``leader=False`` (``--no-leader``) never takes the leader lock; the staggered start
keeps the first claim and heartbeat within bounds. (A killed worker process marked dead by the
leader, and the supervisor's side: tests/e2e/test_operations.py.)"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor import App, Status, Worker, WorkerInfo, WorkerState
from conveyor.leader import LOCK
from conveyor.worker import WorkerOptions
from conveyor.worker.options import MAX_START_JITTER, renew_interval, start_jitter
from conveyor.worker.registration import beat_interval

WAIT = 10.0


def row_of(app: App, worker_id: str) -> WorkerInfo | None:
    return next((w for w in app.workers() if w.id == worker_id), None)


def test_a_worker_registers_and_beats_its_jobs_in_flight_and_leader_flag(
    app: App, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    gate = threading.Event()

    @app.task(name="gated")
    def gated() -> None:
        gate.wait(WAIT)

    runner = start_worker(queues=("default", "extra"), concurrency=3)
    worker_id = runner.worker.id
    row = wait_for(lambda: row_of(app, worker_id), what="the worker's row")
    assert (row.host, row.pid) == (runner.worker.host, os.getpid())
    assert (row.queues, row.concurrency) == (["default", "extra"], 3)
    assert row.version == conveyor.__version__ and row.state is WorkerState.RUNNING
    assert row.started_at <= row.last_seen
    [started] = app.events(kinds=["worker_started"])
    assert started.worker_id == worker_id
    assert started.data == {"host": row.host, "pid": os.getpid(), "queues": ["default", "extra"]}

    wait_for(lambda: (r := row_of(app, worker_id)) and r.leader, what="the leader flag (the only worker leads)")
    first_seen = row_of(app, worker_id).last_seen  # type: ignore[union-attr]
    handles = [gated.delay(), gated.delay()]
    wait_for(lambda: (r := row_of(app, worker_id)) and r.in_flight == 2, what="two jobs in flight")
    gate.set()
    for handle in handles:
        handle.result(timeout=WAIT)
    wait_for(lambda: (r := row_of(app, worker_id)) and r.in_flight == 0, what="nothing in flight")
    assert row_of(app, worker_id).last_seen > first_seen  # type: ignore[union-attr]


def test_a_stopping_worker_says_so_and_a_clean_exit_marks_it_stopped(
    app: App, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    gate = threading.Event()

    @app.task(name="gated")
    def gated() -> str:
        gate.wait(WAIT)
        return "done"

    runner = start_worker(grace=WAIT)
    handle = gated.delay()
    wait_for(lambda: app.job(handle.id).status is Status.RUNNING, what="the job to start")
    runner.worker.stop()  # as SIGTERM: the running job gets the grace period
    wait_for(lambda: row_of(app, runner.worker.id).state is WorkerState.STOPPING,  # type: ignore[union-attr]
             what="the row to say stopping")  # fmt: skip
    gate.set()
    runner.stop()
    row = row_of(app, runner.worker.id)
    assert row is not None and row.state is WorkerState.STOPPED and not row.leader
    assert app.job(handle.id).status is Status.SUCCEEDED
    assert [e.kind for e in app.events(kinds=["worker_started", "worker_stopped"])] == [
        "worker_started",
        "worker_stopped",
    ]


def test_a_worker_whose_row_is_gone_registers_again(
    app: App, db_path: Path, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    runner = start_worker()
    wait_for(lambda: row_of(app, runner.worker.id), what="the worker's row")
    with sqlite3.connect(db_path) as conn:  # as if pruned while the worker was cut off
        conn.execute("DELETE FROM conveyor_workers")
    assert row_of(app, runner.worker.id) is None
    row = wait_for(lambda: row_of(app, runner.worker.id), what="the row to come back")
    assert row.state is WorkerState.RUNNING
    assert len(app.events(kinds=["worker_started"])) == 2


def test_a_no_leader_worker_never_takes_the_leader_lock(
    app: App, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    @app.task(name="echo")
    def echo(x: int) -> int:
        return x

    taken: list[str] = []
    backend = app.backend
    acquire = backend.acquire_lock

    def watching(name: str, owner: str, ttl: float, now: float) -> bool:
        taken.append(name)
        return acquire(name, owner, ttl, now)

    backend.acquire_lock = watching  # type: ignore[method-assign]
    runner = start_worker(leader=False)
    assert echo.delay(7).result(timeout=WAIT) == 7
    first_seen = wait_for(lambda: row_of(app, runner.worker.id), what="the worker's row").last_seen
    wait_for(lambda: row_of(app, runner.worker.id).last_seen > first_seen,  # type: ignore[union-attr]
             what="a few beats")  # fmt: skip
    assert LOCK not in taken
    assert backend.lock_owner(LOCK, app.clock()) is None
    assert not runner.worker.is_leader and not row_of(app, runner.worker.id).leader  # type: ignore[union-attr]
    assert "leader" not in runner.worker._helpers
    runner.stop()
    with pytest.raises(ValueError, match="leader must be True or False"):
        WorkerOptions(leader="no").check()  # type: ignore[arg-type]


def test_the_staggered_start_stays_within_bounds(app: App) -> None:
    for poll in (0.01, 0.3, 1.0, 5.0):
        delays = [start_jitter(poll) for _ in range(200)]
        assert all(0.0 <= d <= min(MAX_START_JITTER, poll) for d in delays)
        assert len(set(delays)) > 1  # random: workers started together spread out
    for poll in (0.05, 1.0):
        worker = Worker(app, WorkerOptions(poll=poll))
        assert 0.0 <= worker.first_poll <= min(MAX_START_JITTER, poll)
        assert 0.0 <= worker.monitor.first_beat <= min(MAX_START_JITTER, poll, renew_interval(app.lease))
        worker._job_loop.loop.close()  # never run
        worker._threads.shutdown()
    assert beat_interval(30.0) == renew_interval(30.0) and beat_interval(0.3) == 1.0
