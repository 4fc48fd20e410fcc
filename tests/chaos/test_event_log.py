"""The event log under a SIGKILL storm (issue 10): workers are killed and replaced while producers
enqueue and jobs drain; a subscriber in the test process follows the whole run.

Invariants, read from the log and the store afterwards: every job has one ``enqueued`` event, each
run a ``started`` event (attempt 1, 2, ...) followed by exactly one outcome (a ``rescued`` one when
its worker was killed), and exactly one terminal event matching the job's final status; the
subscriber saw the log exactly once, in sequence order."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.eventkit import (  # the event tests' follower and log checks (tests/e2e/eventkit.py)
    Follower,
    assert_same_events,
    by_job,
    job_event_problems,
    read_log,
    stop_followers,
)

from conveyor.events import Event

from .conftest import MODE, Cluster, make_cluster, report
from .test_kill_storm import drive_storm

pytestmark = pytest.mark.chaos


@pytest.fixture
def event_storm_cluster(tmp_path: Path, store_url: str) -> Iterator[Cluster]:
    """Workers with a 4-second lease, as in the kill storm: a run is rescued because its worker
    was killed, not because a loaded machine missed heartbeats."""
    yield from make_cluster(tmp_path, store_url, lease=4.0)


def test_after_a_kill_storm_every_job_has_its_complete_events_and_a_follower_saw_the_log_once_in_order(
    event_storm_cluster: Cluster, store_url: str
) -> None:
    cluster = event_storm_cluster
    began = time.monotonic()
    follower = Follower(cluster.app, after=None)  # before any worker or job
    _, kills, acknowledged = drive_storm(cluster, store_url, supervised=False)

    sentinel_seq = stop_followers(cluster.app, follower, timeout=120)
    log = read_log(cluster.app, after=follower.start_seq, upto=sentinel_seq)
    jobs = cluster.all_jobs()
    events = by_job(log)
    problems: list[str] = []
    for job_id in sorted(acknowledged):
        job = jobs.get(job_id)
        if job is None:
            problems.append(f"lost: acknowledged job {job_id} is not in the store")
            continue
        problems += job_event_problems(job_id, events.get(job_id, []), job.status.value, job.attempts)
    strays = set(events) - set(jobs)
    if strays:
        problems.append(f"events of {len(strays)} job(s) the store does not hold: {sorted(strays)[:5]}")
    kinds = Counter(e.kind for e in log)
    store = store_url.split(":", 1)[0]
    report(f"event log under a kill storm on {store}: {len(acknowledged)} jobs, {len(kills)} SIGKILLs, "
           f"{len(log)} events ({kinds['started']} started, {kinds['rescued']} rescued, "
           f"{kinds['succeeded']} succeeded), subscriber saw {len(follower.events)}, {len(problems)} problems, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip

    assert_same_events(follower.events, log, "the subscriber that followed the storm")
    assert not problems, "\n".join(problems[:30])
    assert kinds["rescued"] > 0, "no kill cut a run short: the storm tested nothing"
    assert kinds["worker_started"] >= MODE.workers + len(kills)


# the check itself can fail --------------------------------------------------------------------------
def _events(*kinds: str) -> list[Event]:
    """A job's history from kinds; a started event carries the next attempt, an outcome the current."""
    attempt, made = 0, []
    for seq, kind in enumerate(kinds, 1):
        attempt += kind == "started"
        made.append(Event(seq=seq, at=float(seq), kind=kind, job_id="a", attempt=attempt))
    return made


def test_a_complete_history_passes_the_check() -> None:
    history = _events("enqueued", "started", "rescued", "started", "progress", "retry_scheduled", "started",
                      "succeeded")  # fmt: skip
    assert job_event_problems("a", history, "succeeded", 3) == []
    assert job_event_problems("a", _events("enqueued", "started", "timed_out"), "failed", 1) == []
    assert job_event_problems("a", _events("enqueued", "cancelled"), "cancelled", 0) == []


@pytest.mark.parametrize(
    ("kinds", "status", "attempts", "problem"),
    [
        (("started", "succeeded"), "succeeded", 1, "enqueued"),
        (("enqueued", "started", "started", "succeeded"), "succeeded", 2, "no outcome before the next start"),
        (("enqueued", "started"), "succeeded", 1, "terminal events []"),
        (("enqueued", "started", "succeeded", "succeeded"), "succeeded", 1, "no run started"),
        (("enqueued", "started", "failed"), "succeeded", 1, "status succeeded but terminal events ['failed']"),
        (("enqueued", "started", "succeeded"), "succeeded", 2, "1 started events but attempts=2"),
        (("enqueued", "started", "rescued"), "running", 1, "not finished"),
    ],
)
def test_each_broken_history_is_reported(kinds: tuple[str, ...], status: str, attempts: int, problem: str) -> None:
    problems = job_event_problems("a", _events(*kinds), status, attempts)
    assert any(problem in text for text in problems), problems
