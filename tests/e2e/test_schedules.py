"""Schedules (issue 12) with real `conveyor worker` processes, on every store: each tick makes
exactly one job however many workers fire (with a leader or none), 200 schedules due at once all
fire within 5 s, killed workers neither fire a tick twice nor leave a gap within the grace, a real
outage longer than the grace is caught up per policy (latest, earliest: one job; skip: none),
pause/resume without a burst, and overlap "skip" never runs two jobs of a schedule at once.

Jobs are read through the client App (``scheduled_by``, ``tick_at``) and the audit trail
(``schedule_ticks``); tasks log each run to a file (tests/e2e/schedkit.py)."""

from __future__ import annotations

import itertools
import math
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from subprocess import Popen

import pytest

from conveyor import Job, Status, TickOutcome, TickRecord

from .conftest import Cluster
from .schedkit import Tasks, install_schedule_app

pytestmark = pytest.mark.slow

Start = Callable[..., Popen[bytes]]


@pytest.fixture
def tasks(cluster: Cluster) -> Tasks:
    return Tasks(cluster.app)


@pytest.fixture
def start(cluster: Cluster) -> Iterator[Start]:
    """``start(*flags, concurrency=4)``: a worker process of the schedule app, started and ready."""
    path = install_schedule_app(cluster.dir)

    def start_worker(*flags: str, concurrency: int = 4) -> Popen[bytes]:
        proc = cluster.worker(concurrency=concurrency, app_path=path, extra=flags)
        cluster.wait_started(proc)
        return proc

    yield start_worker


def jobs_of(cluster: Cluster, name: str) -> list[Job]:
    """Every job the schedule made, by tick."""
    found = [job for job in cluster.app.jobs(limit=100_000) if job.scheduled_by == name]
    return sorted(found, key=lambda job: (job.tick_at or 0.0, job.id))


def wait_jobs(cluster: Cluster, name: str, count: int, timeout: float = 30) -> list[Job]:
    def enough() -> list[Job] | None:
        found = jobs_of(cluster, name)
        return found if len(found) >= count else None

    return cluster.wait_for(enough, timeout, f"{count} job(s) of schedule {name}", every=0.2)


def all_finished(cluster: Cluster, name: str, timeout: float = 30) -> list[Job]:
    """Wait until every job of the (paused) schedule has finished; return them."""

    def finished() -> list[Job] | None:
        found = jobs_of(cluster, name)
        return found if all(job.status.finished for job in found) else None

    return cluster.wait_for(finished, timeout, f"every job of schedule {name} to finish", every=0.2)


def assert_once_each(ticks: list[float], every: float = 1.0) -> None:
    """Each tick once, and no gap: consecutive ticks ``every`` apart."""
    duplicates = {tick: n for tick, n in Counter(ticks).items() if n > 1}
    assert not duplicates, f"ticks fired more than once: {duplicates}"
    ordered = sorted(ticks)
    gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b - a != every]
    assert not gaps, f"gaps between ticks: {gaps} in {ordered}"


def kill(cluster: Cluster, proc: Popen[bytes]) -> None:
    cluster.send(proc, signal.SIGKILL, group=True)
    proc.wait(10)


def missed_record(cluster: Cluster, name: str) -> TickRecord | None:
    return next((t for t in cluster.app.schedule_ticks(name, 1000) if t.outcome is TickOutcome.MISSED), None)


# exactly once -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "seconds"), [((), 15.0), (("--no-leader",), 10.0)], ids=["leader", "no-leader"])
def test_three_workers_fire_each_tick_of_a_one_second_code_schedule_exactly_once(
    cluster: Cluster, start: Start, flags: tuple[str, ...], seconds: float
) -> None:
    cluster.env["SCHED_BEAT"] = "1"  # every worker declares s.beat (every second) and syncs it
    cluster.env["SCHED_REPEAT"] = "1"
    procs = [start(*flags) for _ in range(3)]
    wait_jobs(cluster, "s.beat", 1, timeout=15)
    time.sleep(seconds)
    cluster.app.pause_schedule("s.beat")
    jobs = all_finished(cluster, "s.beat")

    ticks = [job.tick_at for job in jobs if job.tick_at is not None]
    assert len(ticks) == len(jobs) and len(ticks) >= seconds - 1, ticks
    assert_once_each(ticks)
    assert all(job.status is Status.SUCCEEDED for job in jobs)
    ran = sorted(float(line.split()[0]) for line in cluster.lines("beat.log"))
    assert ran == sorted(ticks), "each tick's job ran once"
    trail = cluster.app.schedule_ticks("s.beat", 1000)
    assert sorted(t.tick_at for t in trail if t.outcome is TickOutcome.ENQUEUED) == sorted(ticks)
    assert {t.job_id for t in trail if t.outcome is TickOutcome.ENQUEUED} == {job.id for job in jobs}
    assert [t for t in trail if t.outcome is not TickOutcome.ENQUEUED] == [], "nothing skipped or missed"
    if "--no-leader" in flags:
        assert not any(info.leader for info in cluster.app.workers()), "no worker led: firing needs no leader"
    pids = {int(line) for line in cluster.lines("repeat.log")}
    assert {proc.pid for proc in procs} <= pids, "the @app.repeat function ran in every worker process"


def test_two_hundred_schedules_due_in_the_same_minute_all_fire_within_five_seconds_of_their_tick(
    cluster: Cluster, start: Start, tasks: Tasks
) -> None:
    for _ in range(3):
        start()
    tick = math.ceil(time.time()) + 10.0
    names = [f"many-{i:03d}" for i in range(200)]
    for name in names:  # every=60 from the anchor: the first tick is the anchor itself
        cluster.app.schedule(name, tasks.record.s("many.log"), every=60, anchor=tick)
    assert time.time() < tick - 1, "the schedules were stored before their tick"

    def fired() -> list[Job] | None:
        found = [job for job in cluster.app.jobs(limit=10_000) if (job.scheduled_by or "").startswith("many-")]
        return found if len(found) >= len(names) else None

    jobs = cluster.wait_for(fired, tick - time.time() + 20, "a job of each of the 200 schedules", every=0.25)
    assert sorted(job.scheduled_by or "" for job in jobs) == names, "one job per schedule"
    assert {job.tick_at for job in jobs} == {tick}
    late = max(job.created_at - tick for job in jobs)
    assert late <= 5.0, f"the slowest tick fired {late:.2f} s after it fell due"


# failures --------------------------------------------------------------------------------------------------
def test_killed_workers_fire_no_tick_twice_and_an_outage_within_the_grace_is_filled(
    cluster: Cluster, start: Start, tasks: Tasks
) -> None:
    cluster.app.schedule("k", tasks.record.s("k.log"), every=1, overlap="allow")  # grace 30 s (the default)
    procs = [start() for _ in range(3)]
    wait_jobs(cluster, "k", 1, timeout=15)
    for proc in procs:  # one after another, mid-run, wherever each is (a fire's transaction included)
        time.sleep(2.5)
        kill(cluster, proc)
    down = time.time()
    time.sleep(3.0)  # no scheduler at all: about three ticks fall due, within the grace
    start()
    wait_jobs(cluster, "k", len(jobs_of(cluster, "k")) + 4, timeout=20)
    cluster.app.pause_schedule("k")
    jobs = all_finished(cluster, "k", timeout=40)

    ticks = [job.tick_at for job in jobs if job.tick_at is not None]
    assert_once_each(ticks)
    assert any(down < tick < down + 3 for tick in ticks), "the ticks of the outage were fired late, once each"
    trail = cluster.app.schedule_ticks("k", 1000)
    assert {t.outcome for t in trail} == {TickOutcome.ENQUEUED}, "within the grace nothing counts as missed"


def test_after_an_outage_longer_than_the_grace_latest_and_earliest_fire_one_job_and_skip_none(
    cluster: Cluster, start: Start, tasks: Tasks
) -> None:
    policies = ("latest", "earliest", "skip")
    for policy in policies:
        cluster.app.schedule(f"out-{policy}", tasks.record.s(f"{policy}.log"), every=1, grace=2, missed=policy,
                             overlap="allow")  # fmt: skip
    first = start()
    for policy in policies:
        wait_jobs(cluster, f"out-{policy}", 2, timeout=15)
    cluster.signal_and_wait(first, signal.SIGTERM)
    time.sleep(6.0)  # every worker stopped for longer than the grace
    second = start()
    for policy in policies:
        cluster.wait_for(lambda p=policy: missed_record(cluster, f"out-{p}"), 15, f"the missed ticks of {policy}",
                         every=0.2)  # fmt: skip
    time.sleep(1.5)
    cluster.signal_and_wait(second, signal.SIGTERM)

    for policy in policies:
        name = f"out-{policy}"
        trail = cluster.app.schedule_ticks(name, 1000)
        missed = [t for t in trail if t.outcome is TickOutcome.MISSED]
        assert len(missed) == 1, f"{policy}: the missed ticks are recorded once: {missed}"
        record = missed[0]
        until = record.data["until"]
        assert record.data["count"] >= 3, record
        # the catch-up tick (if any) is written by the same fire, at the same time, as the missed record
        caught_up = [t.tick_at for t in trail if t.outcome is TickOutcome.ENQUEUED and t.at == record.at]
        expected = {"latest": [until + 1], "earliest": [record.tick_at - 1], "skip": []}[policy]
        assert caught_up == expected, (policy, record, trail)
        first_due = record.tick_at - 1 if policy == "earliest" else record.tick_at  # the ticks due at the restart
        last_due = until + 1 if policy == "latest" else until
        ticks = [job.tick_at for job in jobs_of(cluster, name) if job.tick_at is not None]
        in_outage = [tick for tick in ticks if first_due <= tick <= last_due]
        assert len(in_outage) == (0 if policy == "skip" else 1), (policy, in_outage, record)
        assert Counter(ticks).most_common(1)[0][1] == 1, f"{policy}: no tick fired twice"


# pause, overlap ----------------------------------------------------------------------------------------------------
def test_pause_stops_ticks_and_resume_fires_no_burst(cluster: Cluster, start: Start, tasks: Tasks) -> None:
    cluster.app.schedule("p", tasks.record.s("p.log"), every=1, overlap="allow")
    start()
    wait_jobs(cluster, "p", 2, timeout=15)
    cluster.app.pause_schedule("p")
    paused = time.time()
    time.sleep(4.0)
    assert all((job.tick_at or 0) <= paused for job in jobs_of(cluster, "p")), "no tick while paused"
    resumed = time.time()
    cluster.app.resume_schedule("p")
    time.sleep(3.0)
    cluster.app.pause_schedule("p")

    ticks = [job.tick_at or 0.0 for job in all_finished(cluster, "p")]
    after = [tick for tick in ticks if tick > paused]
    assert after and all(tick > resumed for tick in after), "resuming fired none of the skipped ticks"
    assert 1 <= len(after) <= 4, after
    assert_once_each(ticks[: len(ticks) - len(after)])
    assert_once_each(after)
    skipped = [t for t in cluster.app.schedule_ticks("p", 1000) if t.outcome is TickOutcome.SKIPPED_PAUSED]
    assert len(skipped) == 1 and skipped[0].data["count"] >= 3, skipped


def test_overlap_skip_never_runs_two_jobs_of_a_schedule_at_once(cluster: Cluster, start: Start, tasks: Tasks) -> None:
    cluster.app.schedule("o", tasks.slow.s("o.log", 2.2), every=1)  # each job takes longer than the period
    start()
    start()
    cluster.wait_for(lambda: sum(line.startswith("end ") for line in cluster.lines("o.log")) >= 3, 30,
                     "three slow jobs to end", every=0.2)  # fmt: skip
    cluster.app.pause_schedule("o")
    all_finished(cluster, "o")

    spans: dict[str, list[float]] = {}
    for line in cluster.lines("o.log"):
        _what, at, job_id, _pid = line.split()
        spans.setdefault(job_id, []).append(float(at))
    runs = sorted(spans.values())
    assert all(len(run) == 2 for run in runs), spans
    overlaps = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
    assert not overlaps, f"two jobs of the schedule ran at once: {overlaps}"
    trail = cluster.app.schedule_ticks("o", 1000)
    assert any(t.outcome is TickOutcome.SKIPPED_OVERLAP for t in trail), "ticks were skipped while a job ran"
