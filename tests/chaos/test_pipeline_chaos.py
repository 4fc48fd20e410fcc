"""Pipelines under fault injection (issue 11): a worker SIGKILLed during a stage, and a worker paused
past its lease (SIGSTOP) whose job another worker rescued and moved on. The side-effect log
(tests/chaos/pipeline_app.py) says which process ran each stage how often; the store must hold
exactly what the live runs wrote: resume, never redo; a stale run writes nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import App, Delivery, Job, Message, Ref, Status, Task

from .conftest import Cluster, report
from .pausing import pause_between_writes

pytestmark = pytest.mark.chaos


class PipelineCluster(Cluster):
    """The chaos Cluster, its workers running ``pipeline_app:app`` (chaos_app's app plus stage tasks)."""

    APP = "pipeline_app:app"


class Stages:
    """pipeline_app's stage tasks on the test's client App (stubs: their bodies never run here)."""

    def __init__(self, app: App) -> None:
        def step(name: str, value: Any = None) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def slow_once(name: str, seconds: float, value: Any = None) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def gate(name: str, path: str, value: Any = None) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        self.step: Task[Any, Any] = app.task(name="pipe.step")(step)
        self.slow_once: Task[Any, Any] = app.task(name="pipe.slow_once")(slow_once)
        self.gate: Task[Any, Any] = app.task(name="pipe.gate")(gate)


@pytest.fixture
def cluster(tmp_path: Path, store_url: str) -> Iterator[PipelineCluster]:
    """Worker processes on this test's store with the chaos suite's 2-second lease."""
    c = PipelineCluster(tmp_path, store_url, lease=2.0)
    try:
        yield c
    finally:
        c.kill_all()
        c.app.close()


@pytest.fixture
def stages(cluster: PipelineCluster) -> Stages:
    return Stages(cluster.app)


@dataclasses.dataclass
class StageRun:
    """One run of a stage's body, as the side-effect log tells it."""

    token: str
    pid: int
    started: float
    done: float | None = None


def stage_runs(path: Path, job_id: str) -> dict[str, list[StageRun]]:
    """The job's stage runs, by stage name, in the order they began."""
    runs: dict[str, list[StageRun]] = defaultdict(list)
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[1] != job_id:
            continue
        if fields[0] == "stage":
            runs[fields[2]].append(StageRun(fields[3], int(fields[4]), float(fields[5])))
        elif fields[0] == "staged":
            pid = int(fields[3])
            open_run = next((r for r in runs[fields[2]] if r.pid == pid and r.done is None), None)
            assert open_run is not None, f"an end without its start: {line!r}"
            open_run.done = float(fields[4])
    return runs


def pids(runs: list[StageRun]) -> list[int]:
    return [run.pid for run in runs]


def test_a_worker_killed_during_a_stage_resumes_the_job_at_that_stage_without_rerunning_earlier_ones(
    cluster: PipelineCluster, stages: Stages, store_url: str
) -> None:
    first = cluster.worker()
    cluster.wait_started(first)
    job_id = (
        cluster.app.pipeline(
            stages.step.s("s0", 1),
            stages.step.s("s1", Ref.stage(0)["value"]),
            stages.slow_once.s("s2", 60, Ref.stage(1)["pid"]),  # killed long before it ends; its rerun is quick
            stages.step.s("s3", Ref.stage(2)["token"]),
            restart="current",
            timeout=300,
        )
        .delay()
        .id
    )
    cluster.wait_for(lambda: stage_runs(cluster.side_log, job_id).get("s2"), 60, "stage 2 to start")
    running = cluster.app.job(job_id)
    assert running.status is Status.RUNNING and running.stage == 2
    assert [r["name"] for r in running.results] == ["s0", "s1"], "each stage's result is stored as it ends"

    cluster.kill(first)
    second = cluster.worker()
    done = cluster.wait_finished(job_id, timeout=90)

    assert done.status is Status.SUCCEEDED, done
    runs = stage_runs(cluster.side_log, job_id)
    assert pids(runs["s0"]) == [first.pid], "stage 0 was not run again"
    assert pids(runs["s1"]) == [first.pid], "stage 1 was not run again"
    assert pids(runs["s2"]) == [first.pid, second.pid], "stage 2 ran again, on the surviving worker"
    assert runs["s2"][0].done is None and runs["s2"][1].done is not None
    assert pids(runs["s3"]) == [second.pid]
    assert [(r["name"], r["pid"]) for r in done.results] == [
        ("s0", first.pid),
        ("s1", first.pid),
        ("s2", second.pid),
        ("s3", second.pid),
    ], "the earlier stages' results are the killed worker's, kept in the record"
    assert done.results[1]["value"] == 1 and done.results[2]["value"] == first.pid, "the rerun took the kept results"
    assert done.results[3]["value"] == runs["s2"][1].token == done.results[2]["token"]
    assert done.rescues == 1 and done.retries == 0, "a rescue is not a retry"
    assert [entry["status"] for entry in done.stage_log] == ["succeeded"] * 4
    report(f"pipeline kill on {store_url.split(':', 1)[0]}: SIGKILL during stage 2 of 4; stages 0-1 ran once, "
           f"stage 2 twice (killed, then resumed), stage 3 once")  # fmt: skip


@pytest.mark.parametrize("moved_on", ["to-a-later-stage", "to-a-wait"])
def test_a_stale_worker_can_neither_write_a_stage_result_nor_park_the_job(
    cluster: PipelineCluster, stages: Stages, store_url: str, moved_on: str
) -> None:
    stale = cluster.worker()
    cluster.wait_started(stale)
    gate = cluster.dir / "s3.gate"
    job_id = (
        cluster.app.pipeline(
            stages.step.s("s0", "a"),
            stages.slow_once.s("s1", 3 * cluster.lease, "b"),  # long enough to be paused in; the rerun is quick
            Message("go"),
            stages.gate.s("s3", str(gate), Ref.stage(2)),
            stages.step.s("s4", Ref.stage(1)["pid"]),
            timeout=300,
        )
        .delay()
        .id
    )
    cluster.wait_for(lambda: stage_runs(cluster.side_log, job_id).get("s1"), 60, "stage 1 to start")
    if moved_on == "to-a-later-stage":  # in the mailbox: the live run passes the wait at once, on to stage 3
        assert cluster.app.send_message(job_id, {"ok": 1}, name="go", message_id="go-1") is Delivery.STORED

    pause_between_writes(stale.pid)  # SIGSTOP, but not inside a SQLite write (pausing.py says why)
    try:
        fresh = cluster.worker()
        if moved_on == "to-a-later-stage":
            cluster.wait_for(lambda: stage_runs(cluster.side_log, job_id).get("s3"), 60, "stage 3 to start")
            moved = cluster.app.job(job_id)
            assert moved.status is Status.RUNNING and moved.stage == 3, moved
        else:

            def parked() -> Job | None:
                job = cluster.app.job(job_id)
                return job if job.status is Status.WAITING else None

            moved = cluster.wait_for(parked, 60, "the rescued job to reach the wait")
            assert moved.stage == 2 and moved.waiting_for == "go" and moved.token is None
        assert moved.results[1]["pid"] == fresh.pid, "the live worker ran stage 1 again and stored its result"
    finally:
        os.killpg(stale.pid, signal.SIGCONT)

    # The paused run wakes, ends its body and tries to report stage 1 done (and the job parked at the
    # Message stage); stopping the worker flushes its reports.
    cluster.wait_for(
        lambda: any(r.pid == stale.pid and r.done for r in stage_runs(cluster.side_log, job_id)["s1"]),
        60,
        "the paused run to end its stage",
    )
    stale.send_signal(signal.SIGTERM)
    assert stale.wait(60) == 0, "the paused worker, woken, stops cleanly"

    after = cluster.app.job(job_id)
    assert after.status is moved.status and after.stage == moved.stage, "the stale run did not park the job"
    assert after.results == moved.results, "the stale run did not write its stage result"
    assert after.stage_log == moved.stage_log
    assert (after.task, after.token, after.worker_id) == (moved.task, moved.token, moved.worker_id)
    assert (after.wait_until, after.waiting_for, after.inbox) == (moved.wait_until, moved.waiting_for, moved.inbox)

    if moved_on == "to-a-wait":
        assert cluster.app.send_message(job_id, {"ok": 1}, name="go", message_id="go-1") is Delivery.RESUMED
    gate.touch()
    done = cluster.wait_finished(job_id, timeout=60)
    assert done.status is Status.SUCCEEDED, done
    runs = stage_runs(cluster.side_log, job_id)
    assert pids(runs["s0"]) == [stale.pid]
    assert pids(runs["s1"]) == [stale.pid, fresh.pid]
    assert pids(runs["s3"]) == [fresh.pid] and pids(runs["s4"]) == [fresh.pid]
    assert [r["pid"] if isinstance(r, dict) and "pid" in r else r for r in done.results] == [
        stale.pid,
        fresh.pid,
        {"ok": 1},
        fresh.pid,
        fresh.pid,
    ]
    assert done.results[1]["token"] == runs["s1"][1].token, "stage 1's result is the live run's"
    assert done.results[3]["value"] == {"ok": 1} and done.results[4]["value"] == fresh.pid
    (message,) = cluster.app.messages(job_id)
    assert message.id == "go-1" and message.stage == 2 and message.consumed_at is not None, "taken once"

    stale_log = cluster.log_text(stale)
    how = ("by the store (stale token)" if "refused a stale" in stale_log
           else "by the worker itself (its heartbeat learned the run was lost)" if " lost: " in stale_log
           else "(no log line says how)")  # fmt: skip
    report(f"pipeline fencing on {store_url.split(':', 1)[0]}, moved on {moved_on.removeprefix('to-')}: the paused "
           f"run's stage result and park refused {how}")  # fmt: skip
