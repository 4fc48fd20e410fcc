"""Many worker processes share one store: every job runs exactly once."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.slow

JOBS = 2000


@pytest.mark.timeout(180)
def test_four_worker_processes_drain_2000_jobs_each_exactly_once(cluster: Cluster) -> None:
    # A long lease: this test is about claims, not about rescues of a starved heartbeat
    # (a rescued run may legitimately run twice: at-least-once).
    supervised = cluster.worker(processes=2, concurrency=2, lease=30)
    standalone = [cluster.worker(concurrency=2, lease=30) for _ in range(2)]
    cluster.wait_started(supervised, workers=2)
    for proc in standalone:
        cluster.wait_started(proc)

    record = cluster.app.tasks["record"]
    handles = cluster.app.enqueue_many(record.s(i) for i in range(JOBS))
    assert len({h.id for h in handles}) == JOBS

    def drained() -> bool:
        return cluster.app.stats()["all"].get("succeeded", 0) >= JOBS

    cluster.wait_for(drained, 150, f"{JOBS} jobs to succeed", every=0.25)

    for proc in [supervised, *standalone]:
        assert cluster.signal_and_wait(proc, signal.SIGTERM) == 0

    assert cluster.app.stats()["all"] == {"succeeded": JOBS}
    lines = cluster.lines("record.txt")
    values = Counter(line.split()[0] for line in lines)
    assert len(lines) == JOBS
    assert len(values) == JOBS
    assert set(values) == {str(i) for i in range(JOBS)}
    pids = {line.split()[1] for line in lines}
    assert len(pids) >= 2, f"only {pids} ran jobs"
    succeeded = cluster.app.jobs(status="succeeded", limit=JOBS)
    assert len(succeeded) == JOBS
    assert all(job.attempts == 1 and job.retries == 0 for job in succeeded)
    assert sorted(job.result for job in succeeded) == list(range(JOBS))
