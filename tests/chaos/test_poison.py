"""A poison job (its run kills the process every time) fails with exit code 137 after the configured
rescues, while the supervised workers keep serving other jobs."""

from __future__ import annotations

import inspect

import pytest

from conveyor import App, Status
from conveyor.job import ExitCode

from .conftest import Cluster, report
from .sidelog import read_runs

pytestmark = pytest.mark.chaos

MAX_RESCUES = 2


NO_RESCUE_COUNT = "max_rescues" not in inspect.signature(App).parameters


@pytest.mark.skipif(NO_RESCUE_COUNT, reason="this conveyor has no App(max_rescues=): a poison job is rescued forever")
def test_a_job_that_kills_its_worker_every_time_fails_after_its_rescues_and_others_still_run(
    cluster: Cluster, store_url: str
) -> None:
    # One job per process: a job sharing a process with the poison job dies with it, and is rescued
    # (and after MAX_RESCUES such deaths failed) like it; docs/guarantees.md says so.
    supervisor = cluster.worker(concurrency=1, processes=2, max_rescues=MAX_RESCUES)
    cluster.wait_started(supervisor, workers=2)
    poison = cluster.app.enqueue("chaos.poison").id
    others = [cluster.app.enqueue("chaos.work", [0.05]).id for _ in range(20)]

    job = cluster.wait_finished(poison, timeout=60 + 10 * cluster.lease * MAX_RESCUES)
    assert job.status is Status.FAILED
    assert job.exit_code == ExitCode.WORKER_DIED, job.exit_code  # 137, as for a process SIGKILLed
    assert job.rescues == MAX_RESCUES
    assert job.error is not None and f"died {MAX_RESCUES + 1} times" in job.error.message, job.error
    runs = read_runs(cluster.side_log)[poison]
    assert len(runs) == MAX_RESCUES + 1, "one run, then one per rescue, then no more"

    for job_id in others:
        assert cluster.wait_finished(job_id, timeout=60).status is Status.SUCCEEDED
    after = [cluster.app.enqueue("chaos.work", [0.05]).id for _ in range(5)]
    for job_id in after:
        assert cluster.wait_finished(job_id, timeout=60).status is Status.SUCCEEDED, "workers still serve"
    assert supervisor.poll() is None, "the supervisor is still up"
    report(f"poison job on {store_url.split(':', 1)[0]}: {len(runs)} runs, failed with exit code {job.exit_code} "
           f"after {job.rescues} rescues; 25 other jobs succeeded meanwhile")  # fmt: skip
