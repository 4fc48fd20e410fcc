"""``app.start_background_worker``: a worker inside a web server's processes. Two App instances
(two processes of one web server on one host) both start it: exactly one runs the worker; when
it stops, the other takes over; when its process is SIGKILLed, another takes over once the lock's
ttl has run out."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waiting

from conveyor import App, BackgroundWorker, WorkerState
from conveyor.background import lock_name

WAIT = 30.0


def web_process(url: str) -> App:
    """One web server process's app."""
    app = App(url, lease=1.0)

    @app.task(name="pid")
    def pid() -> int:
        return os.getpid()

    return app


wait_until = functools.partial(waiting.wait_for, timeout=WAIT, interval=0.02)  #: tests/waiting.py


@pytest.fixture
def started() -> Iterator[list[BackgroundWorker]]:
    made: list[BackgroundWorker] = []
    yield made
    for background in made:
        background.stop(timeout=WAIT)


def test_exactly_one_of_two_processes_runs_it_and_the_other_takes_over(url: str, started: list[Any]) -> None:
    first_app, second_app = web_process(url), web_process(url)
    first = first_app.start_background_worker(concurrency=2, poll=0.05, grace=1.0)
    second = second_app.start_background_worker(concurrency=2, poll=0.05, grace=1.0)
    started += [first, second]
    runner = wait_until(lambda: first if first.running else second if second.running else None, "one to run it")
    standby = second if runner is first else first
    for _ in range(20):  # it stays one: the other keeps trying, and failing, for the lock
        assert runner.running and not standby.running
        time.sleep(0.05)
    handle = first_app.enqueue("pid")
    assert handle.result(timeout=WAIT) == os.getpid()
    assert runner.worker is not None and first_app.job(handle.id).worker_id == runner.worker.id
    [registered] = [w for w in first_app.workers() if w.state is WorkerState.RUNNING]
    assert registered.id == runner.worker.id

    assert runner.stop(timeout=WAIT) is True
    assert not runner.running
    wait_until(lambda: standby.running, "the other process to take over")
    later = first_app.enqueue("pid")
    assert later.result(timeout=WAIT) == os.getpid()
    assert standby.worker is not None and first_app.job(later.id).worker_id == standby.worker.id
    first_app.close()
    second_app.close()


def test_a_worker_stopped_through_the_store_ends_its_process_candidacy(url: str, started: list[Any]) -> None:
    app = web_process(url)
    background = app.start_background_worker(poll=0.05, grace=0.5)
    started.append(background)
    worker = wait_until(lambda: background.worker, "it to run")
    wait_until(lambda: any(w.id == worker.id for w in app.workers()), "its worker to register")
    app.stop_workers(worker_ids=[worker.id])
    wait_until(lambda: background.ended, "the background worker to stand down")
    assert not background.running
    assert app.backend.lock_owner(background.lock.name, app.clock()) is None  # the lock given up
    app.close()


def test_the_scope_names_the_lock() -> None:
    assert lock_name("host").startswith("background-worker:") and lock_name("cluster") == "background-worker"
    with pytest.raises(ValueError, match="scope must be 'host' or 'cluster'"):
        lock_name("planet")


def test_bad_settings_fail_before_anything_starts(app: App) -> None:
    with pytest.raises(ValueError, match="scope must be"):
        app.start_background_worker(scope="planet")
    with pytest.raises(ValueError, match="concurrency must be"):
        app.start_background_worker(concurrency=0)


WEB_PROCESS = textwrap.dedent(
    """
    import os, sys, time
    from conveyor import App

    app = App(sys.argv[1], lease=1.0)

    @app.task(name="pid")
    def pid():
        return os.getpid()

    background = app.start_background_worker(poll=0.05, scope="cluster")
    while not background.running:
        time.sleep(0.02)
    print("running", flush=True)
    time.sleep(600)
    """
)


def test_when_the_running_process_is_killed_another_takes_over_after_the_ttl(url: str, tmp_path: Path,
                                                                              started: list[Any]) -> None:  # fmt: skip
    script = tmp_path / "web.py"
    script.write_text(WEB_PROCESS)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    other = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, env=env)
    app = web_process(url)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"running"
        here = app.start_background_worker(poll=0.05, scope="cluster")
        started.append(here)
        assert app.enqueue("pid").result(timeout=WAIT) == other.pid  # the other process runs it
        assert not here.running
        other.send_signal(signal.SIGKILL)
        other.wait(WAIT)
        wait_until(lambda: here.running, "this process to take over once the lock's ttl ran out")
        assert app.enqueue("pid").result(timeout=WAIT) == os.getpid()
        assert app.backend.lock_owner("background-worker", app.clock()) == here.lock.owner
    finally:
        other.kill()
        other.wait()
        app.close()
