"""PostgreSQL restarts under load: producers keep enqueuing (retrying when the store is unreachable and
counting only acknowledged enqueues) while workers drain; no acknowledged job is lost or stuck.

Runs on a private server (tests/pg_instance.py), never the shared one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from pg_instance import PostgresInstance, postgres_instance

from .conftest import MODE, Cluster, make_cluster, report
from .producers import Producers
from .sidelog import check_runs, read_runs

pytestmark = pytest.mark.chaos


@pytest.fixture
def server() -> Iterator[PostgresInstance]:
    with postgres_instance() as instance:
        yield instance


@pytest.fixture
def pg_cluster(tmp_path: Path, server: PostgresInstance) -> Iterator[Cluster]:
    # A 4-second lease outlasts a restart: a duplicate run then comes from a commit the crash lost.
    yield from make_cluster(tmp_path, server.url, lease=4.0)


def test_postgres_restarts_under_load_lose_no_acknowledged_job(pg_cluster: Cluster, server: PostgresInstance) -> None:
    cluster = pg_cluster
    began = time.monotonic()
    cluster.app.backend  # noqa: B018 - create the schema before the workers race to
    workers = [cluster.worker(concurrency=4, max_rescues=1000) for _ in range(2)]
    for proc in workers:
        cluster.wait_started(proc)
    producers = Producers(server.url, cluster.lease).start(None, pause=0.01)

    outages: list[tuple[float, float]] = []
    started_at = {_server_started_at(server)}
    for n in range(1, MODE.restarts + 1):
        due = MODE.jobs_per_restart * n
        cluster.wait_for(partial(producers.reached, due), 120, f"{due} jobs acknowledged before restart {n}")
        mode = "immediate" if n % 2 else "fast"  # a crash first, then a clean restart, in turn
        down = time.time()
        server.restart(mode)
        outages.append((down, time.time()))
        started_at.add(_server_started_at(server))
    assert len(started_at) == MODE.restarts + 1, "every restart started a new server process"
    before_stop = len(producers.ids())
    cluster.wait_for(partial(producers.reached, before_stop + MODE.jobs_per_restart), 120,
                     "producers to get through again after the last restart")  # fmt: skip
    producers.stop()
    assert not producers.errors, f"producers failed with something other than StoreUnavailable: {producers.errors}"

    cluster.wait_for(lambda: cluster.unfinished() == 0, 120, "every job to finish after the restarts (nothing stuck)")
    acknowledged = producers.ids()
    jobs = cluster.all_jobs()
    verdict = check_runs(acknowledged, jobs, read_runs(cluster.side_log), kills=[], outages=outages)
    for proc in workers:
        assert proc.poll() is None, f"worker {proc.pid} survived the restarts"
    cut_off = sum(1 for proc in workers for line in cluster.log_text(proc).splitlines()
                  if "unreachable" in line or "unavailable" in line)  # fmt: skip
    report(f"PostgreSQL restart: {len(outages)} restart(s) under load, {len(acknowledged)} jobs acknowledged "
           f"({producers.unavailable} enqueues refused while down, retried; {cut_off} worker log lines about "
           f"the store being unreachable), {len(jobs)} in the store, "
           f"{verdict.runs} runs, {verdict.duplicate_runs} duplicate runs ({verdict.explained} overlapping a "
           f"restart), {len(verdict.problems)} problems, {time.monotonic() - began:.0f} s")  # fmt: skip
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert len(jobs) >= len(acknowledged)


def _server_started_at(server: PostgresInstance) -> str:
    """When the server process started (it changes with every restart)."""
    import psycopg

    with psycopg.connect(server.url, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()
    assert row is not None
    return str(row[0])
