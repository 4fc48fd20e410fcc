"""Tasks that hold the GIL past their lease under a supervisor (-p): the supervising parent renews its
live children's leases from outside, so each busy job keeps its run and runs once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Status

from .conftest import MODE, Cluster, make_cluster, report
from .sidelog import read_runs

pytestmark = pytest.mark.chaos

LEASE = 1.5  #: short, so that each busy job (3 leases) outlasts it; the supervisor renews every 0.5 s


@pytest.fixture
def short_lease_cluster(tmp_path: Path, store_url: str) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, store_url, lease=LEASE)


def test_jobs_holding_the_gil_past_the_lease_under_a_supervisor_each_run_once(
    short_lease_cluster: Cluster, store_url: str
) -> None:
    cluster = short_lease_cluster
    supervisor = cluster.worker(concurrency=2, processes=2)
    cluster.wait_started(supervisor, workers=2)
    busy = [cluster.app.enqueue("chaos.busy", [3 * LEASE]).id for _ in range(MODE.busy_jobs)]
    jobs = [cluster.wait_finished(job_id, timeout=60 + 10 * LEASE * MODE.busy_jobs) for job_id in busy]

    assert [job.status for job in jobs] == [Status.SUCCEEDED] * len(busy)
    runs = read_runs(cluster.side_log)
    counts = {job_id: len(runs.get(job_id, [])) for job_id in busy}
    assert counts == dict.fromkeys(busy, 1), f"runs per busy job: {counts}"
    assert [(job.attempts, job.rescues) for job in jobs] == [(1, 0)] * len(busy)
    assert supervisor.poll() is None
    report(f"busy task on {store_url.split(':', 1)[0]}: {len(busy)} jobs each holding the GIL for 3 leases "
           f"under -p 2, {sum(counts.values())} runs in all (each once)")  # fmt: skip
