"""A worker killed outright, or asked to stop, loses no job and runs none twice."""

from __future__ import annotations

import multiprocessing
import signal

import pytest

from conveyor import Status

from .conftest import Cluster, open_store

pytestmark = pytest.mark.slow

OPENERS = 8


def test_sigkill_mid_job_is_rescued_after_the_lease_and_runs_to_completion_once(cluster: Cluster) -> None:
    first = cluster.worker()
    job = cluster.app.enqueue("slow", ["kill.log", 2.5], max_retries=2)
    line = cluster.wait_line("kill.log", "started 1", timeout=30)
    assert line == f"started 1 {first.pid}"
    running = cluster.app.job(job.id)
    assert running.status is Status.RUNNING and running.attempts == 1

    cluster.send(first, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    second = cluster.worker()

    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, timeout=30)
    assert done.status is Status.SUCCEEDED, done
    assert done.attempts == 2
    assert done.retries == 0  # a rescue does not use up a retry
    assert done.result == "kill.log"
    lines = cluster.lines("kill.log")
    assert lines == [f"started 1 {first.pid}", f"started 2 {second.pid}", f"done 2 {second.pid}"]


def test_sigterm_hands_a_long_job_back_at_once_and_another_worker_finishes_it(cluster: Cluster) -> None:
    first = cluster.worker(grace=1)
    job = cluster.app.enqueue("slow", ["term.log", 30], {"quick_on_retry": True})
    cluster.wait_line("term.log", "started 1", timeout=30)

    cluster.send(first, signal.SIGTERM)
    back = cluster.wait_status(job.id, Status.QUEUED, timeout=5)  # grace 1 s, then handed back
    assert back.attempts == 1 and back.retries == 0 and back.token is None
    assert first.wait(10) == 0

    second = cluster.worker()
    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert done.status is Status.SUCCEEDED, done
    assert done.attempts == 2 and done.retries == 0
    assert cluster.lines("term.log") == [f"started 1 {first.pid}", f"started 2 {second.pid}", f"done 2 {second.pid}"]


def test_sigterm_lets_a_job_finish_within_the_grace_period(cluster: Cluster) -> None:
    worker = cluster.worker(grace=20)
    job = cluster.app.enqueue("slow", ["grace.log", 1.5])
    cluster.wait_line("grace.log", "started 1", timeout=30)

    cluster.send(worker, signal.SIGTERM)
    cluster.wait_for(lambda: "got SIGTERM" in cluster.log_text(worker), 10, "the worker to take the signal")
    late = cluster.app.enqueue("record", ["late"])  # a stopping worker claims nothing new
    try:
        assert worker.wait(20) == 0
    except Exception:
        pytest.fail("the worker did not exit after its job finished")

    done = cluster.app.job(job.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.attempts == 1
    assert cluster.lines("grace.log") == [f"started 1 {worker.pid}", f"done 1 {worker.pid}"]
    assert cluster.app.job(late.id).status is Status.QUEUED
    assert cluster.lines("record.txt") == []


def test_processes_opening_a_new_store_at_the_same_moment_all_succeed(store_url: str) -> None:
    """Backend.setup is safe from many processes at once: workers of a fresh deployment (or the
    children of `worker -p N`) open, and may create, the store together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(OPENERS)
    results = context.Queue()
    procs = [context.Process(target=open_store, args=(store_url, barrier, results)) for _ in range(OPENERS)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert outcomes == ["ok"] * OPENERS
