"""Time-outs: enforced by the worker itself, late results dropped, stuck processes replaced."""

from __future__ import annotations

import signal
import time

import pytest

from conveyor import ExitCode, Status

from .conftest import Cluster, alive, worker_children

pytestmark = pytest.mark.slow

# The leader would abort an overdue job only a lease after its timeout; with this lease the
# deadlines below can only be met by the worker enforcing the time-out itself.
LONG_LEASE = 15.0


def test_sync_task_past_its_timeout_fails_with_130_and_its_late_result_is_discarded(cluster: Cluster) -> None:
    worker = cluster.worker(lease=LONG_LEASE)
    job = cluster.app.enqueue("slow", ["late.log", 3], timeout=1)
    cluster.wait_line("late.log", "started 1", timeout=30)

    failed = cluster.wait_status(job.id, Status.FAILED, Status.SUCCEEDED, timeout=1 + 4)
    assert failed.status is Status.FAILED, failed
    assert failed.exit_code == ExitCode.ABORTED == 130
    assert failed.error is not None and failed.error.type == "TimeoutError"
    assert failed.started_at is not None and failed.finished_at is not None
    assert failed.finished_at - failed.started_at >= 1.0 - 0.05
    assert failed.result is None

    cluster.wait_line("late.log", "done 1", timeout=10)  # the task ran on to its end...
    time.sleep(0.5)  # ...and the worker had time to (wrongly) report its result
    after = cluster.app.job(job.id)
    assert after.status is Status.FAILED and after.exit_code == 130
    assert after.result is None and after.results == []

    later = cluster.app.enqueue("record", ["after-timeout"])  # the worker keeps serving
    assert cluster.wait_status(later.id, Status.SUCCEEDED, timeout=15).result == "after-timeout"
    assert worker.poll() is None


def test_async_task_past_its_timeout_is_cancelled(cluster: Cluster) -> None:
    cluster.worker(lease=LONG_LEASE)
    job = cluster.app.enqueue("async_slow", ["atimeout.log", 30], timeout=1)
    cluster.wait_line("atimeout.log", "started", timeout=30)

    cluster.wait_line("atimeout.log", "cancelled", timeout=1 + 4)
    failed = cluster.wait_status(job.id, Status.FAILED, Status.SUCCEEDED, timeout=5)
    assert failed.status is Status.FAILED, failed
    assert failed.exit_code == 130
    assert failed.error is not None and failed.error.type == "TimeoutError"
    assert failed.result is None
    time.sleep(0.3)
    assert "done" not in cluster.lines("atimeout.log")
    assert cluster.lines("atimeout.log")[1:] == ["cancelled", "finally"]


def test_supervised_child_stuck_in_a_timed_out_sync_task_is_replaced(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=1, concurrency=2, extra=("--stuck-after", "1"))
    cluster.wait_started(supervisor)
    # A healthy job runs beside the stuck one in the same child: it must be handed back, not lost.
    bystander = cluster.app.enqueue("slow", ["bystander.log", 30], {"quick_on_retry": True})
    cluster.wait_line("bystander.log", "started 1", timeout=30)
    job = cluster.app.enqueue("slow", ["stuck.log", 120], timeout=1)
    line = cluster.wait_line("stuck.log", "started 1", timeout=30)
    stuck_pid = int(line.split()[2])
    assert worker_children(supervisor.pid) == {stuck_pid}

    failed = cluster.wait_status(job.id, Status.FAILED, timeout=1 + 4)
    assert failed.exit_code == 130

    cluster.wait_for(lambda: not alive(stuck_pid), 15, f"stuck child {stuck_pid} to exit")
    replacement = cluster.wait_for(
        lambda: worker_children(supervisor.pid) - {stuck_pid} or None, 15, "a replacement child", proc=supervisor
    )
    log = cluster.log_text(supervisor)
    assert "exited with code 75" in log  # EXIT_STUCK, not a crash

    later = cluster.app.enqueue("whoami")
    done = cluster.wait_status(later.id, Status.SUCCEEDED, timeout=30)
    assert done.result in replacement and done.result != stuck_pid
    assert cluster.app.job(job.id).status is Status.FAILED
    moved = cluster.wait_status(bystander.id, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert moved.status is Status.SUCCEEDED and moved.attempts == 2 and moved.retries == 0, moved
    assert cluster.lines("bystander.log")[1:] == [f"started 2 {done.result}", f"done 2 {done.result}"]
    assert supervisor.poll() is None
    assert cluster.signal_and_wait(supervisor, signal.SIGTERM) == 0
