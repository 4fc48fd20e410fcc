"""A worker process whose helper thread fails stops itself with EXIT_HELPER_FAILED (70), so that a
service manager or ``conveyor worker -p`` replaces it, instead of renewing leases forever.

Real ``python -m conveyor worker`` processes on a real SQLite file. The failure is real too: an
async task stops the worker's event loop, which ends the loop's helper thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import App, Status
from conveyor.worker import EXIT_HELPER_FAILED

WAIT = 60.0  # generous upper bound; never a speed assertion

APP = textwrap.dedent(
    """
    import asyncio
    import os

    from conveyor import App, current_job

    app = App(os.environ["CONVEYOR_URL"], lease=1.0)


    @app.task(name="saboteur")
    async def saboteur():
        if current_job().attempt == 1:  # the first run breaks its worker; a rerun succeeds
            asyncio.get_running_loop().stop()
            await asyncio.sleep(60)
        return "rerun"


    @app.task(name="echo")
    def echo(value):
        return value
    """
)


def _client(url: str) -> App:
    app = App(url, lease=1.0)

    @app.task(name="saboteur")
    async def saboteur() -> str: ...

    @app.task(name="echo")
    def echo(value: object) -> object: ...

    return app


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "wedgeapp.py").write_text(APP)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _worker(workdir: Path, url: str, procs: list[subprocess.Popen[bytes]], *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "conveyor", "worker", "wedgeapp:app", "-c", "2", "--poll", "0.2", "--grace", "1",
           *extra]  # fmt: skip
    log = open(workdir / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115 - the child writes it
    env = {**os.environ, "CONVEYOR_URL": url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    procs.append(proc)
    return proc


def _wait(predicate, what: str) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_standalone_worker_whose_helper_fails_exits_70(workdir: Path, procs) -> None:
    url = f"sqlite:///{workdir / 'conveyor.db'}"
    client = _client(url)
    proc = _worker(workdir, url, procs)
    handle = client.enqueue("saboteur")
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail("the worker kept running after its event loop thread ended")
    log = (workdir / "worker-0.log").read_text(errors="replace")
    assert proc.returncode == EXIT_HELPER_FAILED, log
    assert "CRITICAL" in log and "'loop'" in log
    job = client.job(handle.id)
    assert job.status is Status.QUEUED and job.token is None, job  # handed back on the way out
    # another worker runs it
    _worker(workdir, url, procs)
    assert handle.result(timeout=WAIT) == "rerun"
    client.close()


def test_a_supervised_child_whose_helper_fails_is_replaced(workdir: Path, procs) -> None:
    url = f"sqlite:///{workdir / 'conveyor.db'}"
    client = _client(url)
    _worker(workdir, url, procs, "-p", "1")
    handle = client.enqueue("saboteur")
    assert handle.result(timeout=WAIT) == "rerun"
    log = (workdir / "worker-0.log").read_text(errors="replace")
    assert "exited with code 70" in log, log
    assert client.enqueue("echo", ["after"]).result(timeout=WAIT) == "after"  # the replacement works
    assert client.job(handle.id).attempts == 2
    client.close()
