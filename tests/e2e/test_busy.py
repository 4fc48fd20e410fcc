"""Liveness a busy task cannot fake, and a stopped process cannot fake either.

A task that holds the GIL starves its worker's own heartbeat thread. Under a supervisor
(`-p`), the parent renews the leases of its live children from outside, so such a job keeps
its lease and runs once (a standalone worker cannot do this: see docs/guide.md). A SIGSTOPped
child is alive but not running: the supervisor does not renew for it, so its jobs come back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from conveyor import Status
from conveyor.supervisor import runnable

from .conftest import Cluster, worker_children

pytestmark = pytest.mark.slow

LEASE = 3.0  #: the app's lease in the workers; the busy task holds the GIL for three of them


def test_a_task_holding_the_gil_past_its_lease_runs_once_under_the_supervisor(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=2, concurrency=2, grace=1, lease=LEASE)
    cluster.wait_started(supervisor, workers=2)

    busy = cluster.app.enqueue("busy", ["busy.log", 3 * LEASE])
    job = cluster.wait_status(busy.id, Status.SUCCEEDED, Status.FAILED, timeout=120)

    assert job.status is Status.SUCCEEDED, job
    assert (job.attempts, job.rescues, job.retries) == (1, 0, 0)
    lines = cluster.lines("busy.log")
    assert [line.split()[0] for line in lines] == ["started", "done"], lines  # exactly one run
    held = float(lines[1].split()[1])
    assert held > LEASE, f"the task held the GIL only {held} s: this test proves nothing"  # its premise
    assert supervisor.poll() is None


def test_a_stopped_child_loses_its_jobs_to_the_other(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=2, concurrency=2, grace=1, lease=1.0)
    cluster.wait_started(supervisor, workers=2)
    cluster.wait_for(lambda: len(worker_children(supervisor.pid)) == 2 or None, 15, "two children", proc=supervisor)

    job = cluster.app.enqueue("slow", ["stopped.log", 1.5])
    line = cluster.wait_line("stopped.log", "started 1", timeout=30)
    victim = int(line.split()[2])
    os.kill(victim, signal.SIGSTOP)
    try:
        done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=60)
        assert done.status is Status.SUCCEEDED, done
        assert done.rescues == 1 and done.attempts == 2
        finished_by = [entry.split()[2] for entry in cluster.lines("stopped.log") if entry.startswith("done")]
        assert finished_by and finished_by[0] != str(victim)
    finally:
        os.kill(victim, signal.SIGCONT)


def test_runnable_reads_a_real_process_state() -> None:
    """What the supervisor's renewal asks of each child: running, not stopped, not a zombie."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert runnable(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        assert wait_until(lambda: not runnable(child.pid)), "a stopped process reads as runnable"
        os.kill(child.pid, signal.SIGCONT)
        assert wait_until(lambda: runnable(child.pid))
        os.kill(child.pid, signal.SIGKILL)
        assert wait_until(lambda: not runnable(child.pid)), "a zombie reads as runnable"  # not yet reaped
    finally:
        child.kill()
        child.wait()
    assert not runnable(child.pid)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
