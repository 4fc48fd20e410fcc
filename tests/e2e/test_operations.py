"""Operations across real worker processes: a SIGKILLed worker is marked dead by the leader (another
process); ``stop_workers`` on one child of a supervisor stops only it (its running job finishes),
the supervisor does not replace it and exits 0 once none is left; ``--no-leader`` processes never
lead. Both stores (the ``cluster`` fixture)."""

from __future__ import annotations

import os
import signal

import pytest

from conveyor import Status, WorkerInfo, WorkerState
from conveyor.leader import LOCK

from .conftest import Cluster, alive, worker_children

pytestmark = pytest.mark.slow


def rows(cluster: Cluster) -> dict[str, WorkerInfo]:
    return {w.id: w for w in cluster.app.workers()}


def by_pid(cluster: Cluster, pid: int) -> WorkerInfo | None:
    return next((w for w in cluster.app.workers() if w.pid == pid and w.state is WorkerState.RUNNING), None)


def test_a_killed_worker_process_is_marked_dead_by_the_leader(cluster: Cluster) -> None:
    leader_proc = cluster.worker()
    leader = cluster.wait_for(lambda: by_pid(cluster, leader_proc.pid), 30, "the first worker to register")
    cluster.wait_for(lambda: cluster.app.backend.lock_owner(LOCK, cluster.app.clock()) == leader.id, 30,
                     "the first worker to lead")  # fmt: skip
    victim_proc = cluster.worker(extra=("--no-leader",))
    victim = cluster.wait_for(lambda: by_pid(cluster, victim_proc.pid), 30, "the second worker to register")

    cluster.send(victim_proc, signal.SIGKILL)
    victim_proc.wait(10)
    # its heartbeat stops: after operations.stale_after(lease) (10 s) the leader marks it dead
    dead = cluster.wait_for(lambda: (r := rows(cluster)[victim.id]).state is WorkerState.DEAD and r, 40,
                            "the leader to mark the killed worker dead")  # fmt: skip
    assert not dead.leader
    [event] = cluster.app.events(kinds=["worker_dead"])
    assert event.worker_id == victim.id
    assert rows(cluster)[leader.id].state is WorkerState.RUNNING  # the live one is never marked
    assert leader_proc.poll() is None


def test_stop_workers_stops_one_supervised_child_which_is_not_replaced(cluster: Cluster) -> None:
    supervisor = cluster.worker(processes=2, concurrency=2, grace=10)
    cluster.wait_started(supervisor, workers=2)

    def two_children() -> set[int] | None:
        found = worker_children(supervisor.pid)
        return found if len(found) == 2 else None

    children = cluster.wait_for(two_children, 15, "two worker children", proc=supervisor)
    cluster.wait_for(lambda: len([w for w in cluster.app.workers() if w.pid in children]) == 2 or None, 30,
                     "both children to register")  # fmt: skip

    job = cluster.app.enqueue("slow", ["stop.log", 1.5])
    line = cluster.wait_line("stop.log", "started 1", timeout=30)
    busy_pid = int(line.split()[2])
    busy = by_pid(cluster, busy_pid)
    assert busy is not None
    assert cluster.app.stop_workers(worker_ids=[busy.id]) == [busy.id]

    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, Status.QUEUED, timeout=30)
    assert done.status is Status.SUCCEEDED and done.attempts == 1  # it finished within the grace period
    cluster.wait_for(lambda: not alive(busy_pid) or None, 30, "the stopped child to exit", proc=supervisor)
    log = cluster.log_text(supervisor)
    cluster.wait_for(lambda: "was stopped on request; not replacing it" in cluster.log_text(supervisor) or None, 10,
                     "the supervisor to say it does not replace it", proc=supervisor)  # fmt: skip
    assert worker_children(supervisor.pid) == children - {busy_pid}  # not replaced
    assert rows(cluster)[busy.id].state is WorkerState.STOPPED
    assert "exited with code" not in log

    after = cluster.app.tasks["record"].delay("after the stop")
    assert cluster.wait_status(after.id, Status.SUCCEEDED).worker_id != busy.id  # the other child goes on

    [other_pid] = children - {busy_pid}
    other = by_pid(cluster, other_pid)
    assert other is not None
    cluster.app.stop_workers(queues=["default"])
    cluster.send(supervisor, 0)  # its exit is the point now
    assert supervisor.wait(30) == 0  # every child stopped on request: the supervisor ends, 0
    assert not alive(other_pid)
    assert "every worker process was stopped on request" in cluster.log_text(supervisor)


def test_no_leader_processes_never_lead(cluster: Cluster) -> None:
    procs = [cluster.worker(extra=("--no-leader",)) for _ in range(2)]
    for proc in procs:
        cluster.wait_for(lambda proc=proc: by_pid(cluster, proc.pid), 30, "the worker to register")
    handle = cluster.app.tasks["record"].delay("no leader")
    assert cluster.wait_status(handle.id, Status.SUCCEEDED).status is Status.SUCCEEDED
    first = {w.id: w.last_seen for w in cluster.app.workers()}
    cluster.wait_for(lambda: all(w.last_seen > first[w.id] for w in cluster.app.workers()) or None, 30,
                     "a few heartbeats")  # fmt: skip
    assert cluster.app.backend.lock_owner(LOCK, cluster.app.clock()) is None
    assert not any(w.leader for w in cluster.app.workers())
    assert os.getpid() not in {w.pid for w in cluster.app.workers()}
