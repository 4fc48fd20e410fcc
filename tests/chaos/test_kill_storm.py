"""A SIGKILL storm: producers enqueue while worker processes are killed at random and replaced.

Invariants, read from the side-effect log and the store: no acknowledged job lost, none stuck, one
committed success per job, and every duplicate run explained by a kill of the process running it."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from .conftest import MODE, Cluster, make_cluster, report
from .producers import Producers
from .sidelog import Kill, check_runs, read_runs

pytestmark = pytest.mark.chaos


def _in_flight(cluster: Cluster) -> set[int]:
    """Pids with a run whose body started and has not ended, per the side-effect log."""
    runs = read_runs(cluster.side_log)
    return {run.pid for job_runs in runs.values() for run in job_runs if run.done is None}


def _children(pid: int) -> list[int]:
    """Live worker processes a supervisor ``pid`` spawned (multiprocessing's spawn_main children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


class Storm:
    """Worker processes, and how one of them is killed: a standalone worker (its process group;
    the test starts a replacement) or a supervised child (the supervisor starts the replacement)."""

    def __init__(self, cluster: Cluster, supervised: bool) -> None:
        self.cluster = cluster
        self.supervised = supervised
        self.workers = [self._start() for _ in range(2 if supervised else MODE.workers)]
        for proc in self.workers:
            cluster.wait_started(proc, workers=2 if supervised else 1)

    def _start(self) -> subprocess.Popen[bytes]:
        if self.supervised:
            return self.cluster.worker(concurrency=2, processes=2, max_rescues=1000)
        return self.cluster.worker(concurrency=4, max_rescues=1000)

    def kill_one(self) -> Kill:
        """SIGKILL a worker process with a run in flight if there is one (so the kill costs a run)."""
        busy = _in_flight(self.cluster)
        if self.supervised:
            children = [child for sup in self.workers for child in _children(sup.pid)]
            assert children, "no live supervised worker to kill"
            pid = random.choice([c for c in children if c in busy] or children)
            os.kill(pid, signal.SIGKILL)
            return Kill(pid, time.time())  # read after the signal, as Cluster.kill does
        victim = random.choice([w for w in self.workers if w.pid in busy] or self.workers)
        kill = Kill(victim.pid, self.cluster.kill(victim))
        self.workers[self.workers.index(victim)] = self._start()
        return kill


@pytest.fixture
def storm_cluster(tmp_path: Path, store_url: str) -> Iterator[Cluster]:
    """Workers with a 4-second lease: a heartbeat (every second) would have to stall for 3 s on a
    loaded machine before a live run is rescued, so a duplicate run not caused by a kill is a defect,
    not a slow machine."""
    yield from make_cluster(tmp_path, store_url, lease=4.0)


@pytest.mark.parametrize("supervised", [False, True], ids=["standalone", "supervised"])
def test_no_acknowledged_job_is_lost_or_stuck_and_every_duplicate_run_is_explained_by_a_kill(
    storm_cluster: Cluster, store_url: str, supervised: bool
) -> None:
    """Standalone: 3 workers (-c 4), a killed one replaced by the test. Supervised: 2 supervisors
    (-p 2 -c 2) whose children are killed: the supervisor must stop renewing a dead child's leases."""
    cluster = storm_cluster
    began = time.monotonic()
    storm, kills, acknowledged = drive_storm(cluster, store_url, supervised)
    jobs = cluster.all_jobs()
    verdict = check_runs(acknowledged, jobs, read_runs(cluster.side_log), kills)
    store = store_url.split(":", 1)[0]
    kind = "supervised children" if supervised else "standalone workers"
    report(f"kill storm on {store}, {kind}: {verdict.jobs} jobs acknowledged, {len(jobs)} in the store, "
           f"{len(kills)} SIGKILLs, {verdict.runs} runs, {verdict.duplicate_runs} duplicate runs, "
           f"{verdict.explained} explained by a kill, {len(verdict.problems)} problems, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert verdict.explained == verdict.duplicate_runs
    assert len(jobs) == len(acknowledged), "the store holds jobs nobody acknowledged enqueuing"
    assert verdict.duplicate_runs > 0, "no kill cut a run short: the storm tested nothing"
    if supervised:
        assert all(proc.poll() is None for proc in storm.workers), "a supervisor died"


def drive_storm(cluster: Cluster, store_url: str, supervised: bool) -> tuple[Storm, list[Kill], set[str]]:
    """The storm itself: producers enqueue MODE.jobs jobs while MODE.kills workers (or supervised
    children) are SIGKILLed, spread over the drain; returns once every job has finished (nothing
    stuck), with the storm's workers, the kills and the ids of the acknowledged jobs."""
    storm = Storm(cluster, supervised)
    producers = Producers(store_url, cluster.lease).start(MODE.jobs)
    kills: list[Kill] = []
    for k in range(1, MODE.kills + 1):
        # Spread the kills over the drain: the k-th once k/(kills+1) of the jobs have run.
        due = k * MODE.jobs // (MODE.kills + 1)
        cluster.wait_for(partial(_done_at_least, cluster, due), 120, f"{due} jobs done before kill {k}", every=0.05)
        kills.append(storm.kill_one())
    producers.join()
    assert not producers.errors, f"producers failed: {producers.errors}"
    acknowledged = producers.ids()
    assert len(acknowledged) == MODE.jobs
    cluster.wait_for(lambda: cluster.unfinished() == 0, 60 + 2 * cluster.lease * MODE.kills,
                     "every job to finish after the last kill (nothing stuck)")  # fmt: skip
    return storm, kills, acknowledged


def _done_at_least(cluster: Cluster, count: int) -> bool:
    """True once the side-effect log holds ``count`` done lines."""
    text = cluster.side_log.read_bytes() if cluster.side_log.exists() else b""
    return text.count(b"\ndone ") + text.startswith(b"done ") >= count
