"""SIGSTOP fencing: a worker paused past its lease loses its job to another worker, and when it wakes,
its late outcome is refused: the store keeps the newer run's result."""

from __future__ import annotations

import os
import signal

import pytest

from conveyor import Status

from .conftest import Cluster, report
from .pausing import pause_between_writes
from .sidelog import read_runs

pytestmark = pytest.mark.chaos


def test_a_worker_paused_past_its_lease_cannot_overwrite_the_run_that_replaced_it(
    cluster: Cluster, store_url: str
) -> None:
    stale = cluster.worker(concurrency=1)
    cluster.wait_started(stale)
    # Long enough to still be running when paused; the rerun is quick.
    job_id = cluster.app.enqueue("chaos.work", [3 * cluster.lease], {"quick_on_rerun": True}).id
    cluster.wait_for(lambda: read_runs(cluster.side_log).get(job_id), 60, "the first run to start")

    pause_between_writes(stale.pid)  # SIGSTOP, but not inside a SQLite write (pausing.py says why)
    try:
        fresh = cluster.worker(concurrency=1)
        job = cluster.wait_finished(job_id, timeout=60)
        assert job.status is Status.SUCCEEDED
        assert job.result["pid"] == fresh.pid, "the rescued run on the fresh worker committed"
    finally:
        os.killpg(stale.pid, signal.SIGCONT)

    # The paused run wakes, ends its body and tries to report; stopping the worker flushes its reports.
    cluster.wait_for(lambda: all(r.done is not None for r in read_runs(cluster.side_log)[job_id]), 60,
                     "the paused run to reach its done line")  # fmt: skip
    stale.send_signal(signal.SIGTERM)
    assert stale.wait(60) == 0, "the paused worker, woken, stops cleanly"

    runs = read_runs(cluster.side_log)[job_id]
    assert [r.pid for r in runs] == [stale.pid, fresh.pid], "two runs: the paused one, then the rescue"
    assert all(r.done is not None for r in runs), "both bodies ran to the end"
    after = cluster.app.job(job_id)
    assert after.status is Status.SUCCEEDED
    assert after.result == {"token": runs[1].token, "pid": fresh.pid}, "the newer run's result is kept"
    assert after.attempts == 2
    stale_log = cluster.log_text(stale)
    how = ("by the store (stale token)" if "refused a stale" in stale_log
           else "by the worker itself (its heartbeat learned the run was lost)" if " lost: " in stale_log
           else "(no log line says how)")  # fmt: skip
    report(f"fencing on {store_url.split(':', 1)[0]}: 2 runs, 1 committed (the rescue); the paused run's late "
           f"outcome refused {how}")  # fmt: skip
