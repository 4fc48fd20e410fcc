"""The supervisor (`worker -p N`) keeps its children running and stops them all cleanly."""

from __future__ import annotations

import os
import signal

import pytest

from conveyor import Status

from .conftest import Cluster, alive, worker_children

pytestmark = pytest.mark.slow


def test_supervisor_replaces_a_killed_child_and_stops_everything_on_sigterm(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=2, concurrency=2, grace=1)
    cluster.wait_started(supervisor, workers=2)

    def two_children(without: int = 0) -> set[int] | None:
        found = worker_children(supervisor.pid)
        return found if len(found) == 2 and without not in found else None

    children = cluster.wait_for(two_children, 15, "two worker children", proc=supervisor)

    # Kill the child that runs a job: the job comes back after the lease, the child is replaced.
    job = cluster.app.enqueue("slow", ["sup.log", 2])
    line = cluster.wait_line("sup.log", "started 1", timeout=30)
    victim = int(line.split()[2])
    assert victim in children
    os.kill(victim, signal.SIGKILL)

    now = cluster.wait_for(lambda: two_children(without=victim), 20, "the killed child's replacement", proc=supervisor)
    assert not alive(victim)
    assert supervisor.poll() is None
    assert "exited with code -9" in cluster.log_text(supervisor)

    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert done.status is Status.SUCCEEDED, done
    assert done.attempts == 2 and done.retries == 0
    assert [x.split()[0] for x in cluster.lines("sup.log")] == ["started", "started", "done"]

    record = cluster.app.tasks["record"]
    handles = cluster.app.enqueue_many(record.s(f"after-{i}") for i in range(20))
    for handle in handles:
        cluster.wait_status(handle.id, Status.SUCCEEDED, timeout=30)
    assert supervisor.poll() is None

    # SIGTERM to the supervisor alone: it stops its children, which hand back a long job after
    # their grace period, and exits 0.
    long_job = cluster.app.enqueue("slow", ["handback.log", 30], {"quick_on_retry": True})
    cluster.wait_line("handback.log", "started 1", timeout=30)
    assert cluster.signal_and_wait(supervisor, signal.SIGTERM, timeout=20) == 0
    everyone = children | now
    cluster.wait_for(lambda: not any(alive(pid) for pid in everyone), 10, "every worker child to exit")
    back = cluster.app.job(long_job.id)
    assert back.status is Status.QUEUED and back.attempts == 1 and back.retries == 0, back


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_stops_supervisor_and_children_gracefully(
    cluster: Cluster, signum: int
) -> None:
    """What a service manager (SIGTERM to the group) or a terminal's Ctrl-C (SIGINT) does."""
    supervisor = cluster.worker(processes=2, concurrency=2, grace=1)
    cluster.wait_started(supervisor, workers=2)
    children = worker_children(supervisor.pid)
    job = cluster.app.enqueue("slow", ["group.log", 30], {"quick_on_retry": True})
    cluster.wait_line("group.log", "started 1", timeout=30)

    cluster.send(supervisor, signum, group=True)
    try:
        assert supervisor.wait(20) == 0
    except Exception:
        pytest.fail("the supervisor did not exit 0 within 20 s")
    cluster.wait_for(lambda: not any(alive(pid) for pid in children), 10, "every worker child to exit")
    log = cluster.log_text(supervisor)
    assert "exited with code" not in log  # no child died (or was restarted) on the way down
    back = cluster.app.job(job.id)
    assert back.status is Status.QUEUED and back.attempts == 1 and back.retries == 0, back

    finisher = cluster.worker()
    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert done.status is Status.SUCCEEDED and done.attempts == 2, done
    assert [x.split()[:2] for x in cluster.lines("group.log")] == [["started", "1"], ["started", "2"], ["done", "2"]]
    assert cluster.lines("group.log")[-1].endswith(str(finisher.pid))
