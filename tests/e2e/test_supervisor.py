"""The supervisor (`worker -p N`) keeps its children running and stops them all cleanly."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor import App, Status, WorkerOptions
from conveyor.supervisor import Supervisor, _Child

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
    assert done.attempts == 2 and done.retries == 0 and done.rescues == 1
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


DIES_IN_CHILDREN = """
import multiprocessing

from conveyor import App

if multiprocessing.parent_process() is not None:
    raise RuntimeError("this app cannot start in a worker child")
app = App()
"""


def test_a_supervisor_whose_children_keep_dying_at_start_gives_up(cluster: Cluster) -> None:
    (cluster.dir / "dies.py").write_text(DIES_IN_CHILDREN)
    supervisor = cluster.worker(processes=2, app_path="dies:app")
    cluster.send(supervisor, 0)  # its exit is the point of this test
    try:
        code = supervisor.wait(60)
    except Exception:
        pytest.fail("the supervisor did not give up within 60 s")
    assert code != 0
    log = cluster.log_text(supervisor)
    assert "died before they started" in log
    assert "this app cannot start in a worker child" in log


def test_an_app_that_cannot_be_imported_fails_at_once_in_one_line(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=2, app_path="no_such_app_module:app")
    cluster.send(supervisor, 0)
    assert supervisor.wait(30) == 2  # bad usage (issue 9): a wrong module:app path exits 2
    log = cluster.log_text(supervisor).strip()
    assert log == "error: cannot import app module 'no_such_app_module': No module named 'no_such_app_module'"


def test_the_lease_renewal_survives_store_errors_and_renews_only_live_children(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor's renewal thread: a store error is logged and tried again (it never ends
    the thread), and only a child that is alive and running has its jobs' leases extended."""
    url = f"sqlite:///{tmp_path / 'renew.db'}"
    (tmp_path / "renew.db").write_bytes(b"\x00not a database" * 512)  # every pass fails until replaced
    supervisor = Supervisor("unused:app", 2, WorkerOptions())
    app = App(url, lease=0.6)
    context = multiprocessing.get_context("spawn")
    live, stopped = (context.Process(target=time.sleep, args=(60,)) for _ in range(2))
    for process in (live, stopped):
        process.start()
    supervisor._children = [_Child(live, "live", context.Event()), _Child(stopped, "stopped", context.Event())]
    os.kill(stopped.pid or 0, signal.SIGSTOP)
    renewer = threading.Thread(target=supervisor._renew_leases, args=(app,))
    renewer.start()
    try:
        assert wait_until(lambda: caplog.text.count("renewing the workers' leases failed") >= 2)
        assert renewer.is_alive()
        (tmp_path / "renew.db").unlink()
        store = App(url, lease=0.6)
        claimed = {}
        for worker in ("live", "stopped"):
            store.enqueue("t")
            [claimed[worker]] = store.backend.claim(["default"], worker, 1, 0.6, time.time())
        first_expiry = claimed["live"].lease_expires_at or 0.0
        assert wait_until(lambda: (store.job(claimed["live"].id).lease_expires_at or 0) > first_expiry + 1.0)
        never_renewed = store.job(claimed["stopped"].id)
        assert never_renewed.lease_expires_at == claimed["stopped"].lease_expires_at
        store.close()
    finally:
        supervisor._stopping.set()
        renewer.join(10)
        os.kill(stopped.pid or 0, signal.SIGCONT)
        for process in (live, stopped):
            process.kill()
            process.join()
    assert not renewer.is_alive()


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
