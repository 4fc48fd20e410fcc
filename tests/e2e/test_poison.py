"""A poison job (its run kills its process every time) ends, and stops eating workers.

Under a real supervisor (`conveyor worker -p 1`), a task that os._exit(1)s on every run is
rescued ``max_rescues`` times (App default 2), then failed with exit code 137 and a clear error
on the next lost run; the replaced worker processes go on serving other jobs."""

from __future__ import annotations

import pytest

from conveyor import ExitCode, Status

from .conftest import Cluster

pytestmark = pytest.mark.slow

MAX_RESCUES = 2  #: the App default, which the end-to-end app keeps


def test_a_job_that_kills_its_worker_every_time_fails_after_max_rescues(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=1, concurrency=2, grace=1)
    cluster.wait_started(supervisor, workers=1)

    poison = cluster.app.enqueue("poison", ["poison.log"])
    job = cluster.wait_status(poison.id, Status.FAILED, Status.SUCCEEDED, timeout=90)

    assert job.status is Status.FAILED, job
    assert job.exit_code == ExitCode.WORKER_DIED == 137
    assert job.error is not None and job.error.type == "WorkerDied"
    assert job.error.message == f"worker died {MAX_RESCUES + 1} times while running this job"
    assert (job.rescues, job.attempts, job.retries) == (MAX_RESCUES, MAX_RESCUES + 1, 0)
    runs = [line for line in cluster.lines("poison.log") if line.startswith("run ")]
    assert len(runs) == MAX_RESCUES + 1, runs
    assert len({line.split()[1] for line in runs}) == MAX_RESCUES + 1  # each run killed a different process

    # The supervisor replaced every dead child and its workers keep serving.
    assert supervisor.poll() is None
    record = cluster.app.tasks["record"]
    handles = cluster.app.enqueue_many(record.s(f"after-{i}") for i in range(10))
    for handle in handles:
        assert cluster.wait_status(handle.id, Status.SUCCEEDED, Status.FAILED, timeout=60).status is Status.SUCCEEDED
    assert len(cluster.lines("poison.log")) == MAX_RESCUES + 1  # the failed poison job never ran again
    assert cluster.app.job(poison.id).status is Status.FAILED
