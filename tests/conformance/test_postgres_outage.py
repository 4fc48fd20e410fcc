"""The database goes away mid-drain and comes back: nothing is lost, nothing runs twice.

Three worker processes (each with its own connection pools, as separate hosts would have)
drain a queue while the PostgreSQL server is restarted under them. Afterwards every job has
succeeded and every task body ran exactly once.

The server is one of the test's own (tests/pg_instance.py: initdb into a temporary directory,
a free port), so restarting it disturbs no other test or user of the machine's server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_instance import PostgresInstance, postgres_instance

from conveyor import App, Status
from conveyor.errors import StoreError

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.slow

JOBS = 240
APP = textwrap.dedent(
    """
    import os
    import time

    from conveyor import App

    app = App(os.environ["CONVEYOR_URL"], lease=6.0)


    @app.task(name="record")
    def record(i):
        time.sleep(0.25)  # 240 jobs on 12 slots: a drain of about 5 s, for the restart to land in
        fd = os.open(os.environ["OUTAGE_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{i} {os.getpid()}\\n".encode())
        os.close(fd)
        return i
    """
)


def _server_start(url: str) -> object:
    """When the PostgreSQL server started: changes with every restart."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def _counts(app: App) -> dict[str, int]:
    """Job counts by status, riding out the moments the server is away."""
    for _ in range(100):
        try:
            return app.stats().get("all", {})
        except StoreError:
            time.sleep(0.2)
    raise AssertionError("the store did not come back")


@pytest.fixture
def server() -> Iterator[PostgresInstance]:
    """A PostgreSQL server of this test's own, free to restart."""
    with postgres_instance() as instance:
        yield instance


def test_a_server_restart_during_a_drain_loses_nothing_and_runs_nothing_twice(
    server: PostgresInstance, tmp_path: Path
) -> None:
    postgres_url = server.url
    (tmp_path / "outage_app.py").write_text(APP)
    log = tmp_path / "ran.txt"
    env = {**os.environ, "CONVEYOR_URL": postgres_url, "OUTAGE_LOG": str(log), "PYTHONUNBUFFERED": "1"}
    app = App(postgres_url, lease=6.0)
    app.backend.destroy_all()

    @app.task(name="record")
    def record(i: int) -> int: ...

    app.enqueue_many([record.s(i) for i in range(JOBS)])
    workers = []
    for n in range(3):
        out = open(tmp_path / f"worker-{n}.log", "wb")  # noqa: SIM115 - closed below
        cmd = [sys.executable, "-m", "conveyor", "worker", "outage_app:app", "-c", "4", "--poll", "0.5"]
        workers.append((subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT), out))
    try:
        deadline = time.monotonic() + 60
        while _counts(app).get("succeeded", 0) < JOBS // 4:
            assert time.monotonic() < deadline, "the workers did not start draining"
            time.sleep(0.05)
        started_before = _server_start(postgres_url)
        server.stop()  # the outage: long enough that calls in flight fail and are retried
        time.sleep(1.5)
        server.start()
        assert _counts(app).get("succeeded", 0) < JOBS, "the drain ended before the outage: make tasks longer"
        deadline = time.monotonic() + 120
        while _counts(app).get("succeeded", 0) < JOBS:
            assert time.monotonic() < deadline, f"not drained after the restart: {_counts(app)}"
            time.sleep(0.2)
        # Every job succeeded, once; every task body ran exactly once.
        ran = Counter(line.split()[0] for line in log.read_text().splitlines())
        assert sorted(ran, key=int) == [str(i) for i in range(JOBS)]
        assert [i for i, n in ran.items() if n > 1] == [], "ran twice after the restart"
        jobs = app.jobs(limit=JOBS + 10)
        assert len(jobs) == JOBS and {job.status for job in jobs} == {Status.SUCCEEDED}
        assert sorted(job.result for job in jobs) == list(range(JOBS))
        logs = "".join((tmp_path / f"worker-{n}.log").read_text(errors="replace") for n in range(3))
        assert _server_start(postgres_url) != started_before, "the server was not restarted"
        # Workers see the outage (their LISTEN sessions are cut; calls in flight fail or wait
        # for the pools to reconnect) and say so.
        assert any(word in logs for word in ("unreachable", "lost", "failed")), logs
    finally:
        for proc, _ in workers:
            proc.send_signal(signal.SIGTERM)
        for proc, out in workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            out.close()
        app.close()
