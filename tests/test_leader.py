"""Leader duties, one behaviour per test, on a real SQLite store with an injected clock.

The store holds the truth and the leader decides in Python: a lost run is rescued (no retry
used), a job lost too often fails as poison (exit 137), an overdue run is aborted as a time-out
with its task's back-off, a renewed lease is left alone, and only one leader leads."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from clock import Clock

from conveyor import App, ExitCode, Job, Status
from conveyor.leader import LOCK, Leader
from conveyor.leader.rescue import decide
from conveyor.outcome import Report

T0 = 1_000_000.0
LEASE = 10.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def make_app(url: str, clock: Clock) -> Iterator[Callable[..., App]]:
    """``make_app(**options)``: an App on this test's store with the injected clock; closed after."""
    made: list[App] = []

    def make(**options: object) -> App:
        app = App(url, lease=LEASE, clock=clock, **options)  # type: ignore[arg-type]
        made.append(app)

        @app.task(name="work", timeout=5, max_retries=2, backoff=7.0, jitter=0.0)
        def work() -> str:
            return "done"

        @app.task(name="plain")
        def plain() -> str:
            return "done"

        return app

    yield make
    for app in made:
        app.close()


def claim_one(app: App, worker: str = "w1") -> Job:
    [job] = app.backend.claim(["default"], worker, 1, LEASE, app.clock())
    return job


def test_a_run_whose_lease_ran_out_is_rescued(make_app, clock: Clock) -> None:
    app = make_app()
    handle = app.enqueue("work")
    run = claim_one(app)
    leader = Leader(app, "leader-1")

    clock.now = T0 + LEASE - 1  # lease still valid: nothing to do
    leader.tick(clock.now)
    assert leader.is_leader
    assert app.job(handle.id).status is Status.RUNNING

    clock.now = T0 + LEASE + 1
    leader.tick(clock.now)
    job = app.job(handle.id)
    assert (job.status, job.rescues, job.retries, job.attempts) == (Status.QUEUED, 1, 0, 1)
    assert job.token is None and job.error is None
    assert app.backend.heartbeat("w1", [run.token or ""], LEASE, clock.now) == {run.token}  # the old run is gone
    again = claim_one(app, "w2")
    assert again.id == handle.id and again.token != run.token


@pytest.mark.parametrize("max_rescues", [0, 2])
def test_a_job_lost_more_than_max_rescues_times_fails_as_poison(make_app, clock: Clock, max_rescues: int) -> None:
    app = make_app(max_rescues=max_rescues)
    handle = app.enqueue("work")
    leader = Leader(app, "leader-1")
    for rescue in range(1, max_rescues + 1):
        claim_one(app)
        clock.now += LEASE + 1
        leader.tick(clock.now)
        job = app.job(handle.id)
        assert (job.status, job.rescues) == (Status.QUEUED, rescue)

    claim_one(app)
    clock.now += LEASE + 1
    leader.tick(clock.now)
    job = app.job(handle.id)
    assert job.status is Status.FAILED
    assert job.exit_code == ExitCode.WORKER_DIED == 137
    assert job.error is not None and job.error.type == "WorkerDied"
    assert job.error.message == f"worker died {max_rescues + 1} times while running this job"
    assert job.attempts == max_rescues + 1 and job.retries == 0
    assert job.token is None


def test_max_rescues_is_validated(url: str) -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_rescues"):
            App(url, max_rescues=bad)  # type: ignore[arg-type]
    assert App(url).max_rescues == 2


def test_an_overdue_run_is_aborted_as_a_time_out_with_the_tasks_backoff(make_app, clock: Clock) -> None:
    app = make_app()
    handle = app.enqueue("work")  # timeout 5 s, max_retries 2, back-off 7 s without jitter
    run = claim_one(app)
    leader = Leader(app, "leader-1")

    clock.now = T0 + LEASE - 1  # the worker renews its lease (to T0 + 2 * LEASE - 1)
    assert app.backend.heartbeat("w1", [run.token or ""], LEASE, clock.now) == set()
    clock.now = T0 + 5 + LEASE - 1  # past the timeout, within the margin
    leader.tick(clock.now)
    assert app.job(handle.id).status is Status.RUNNING

    clock.now = T0 + 5 + LEASE + 1  # past timeout + margin, lease still valid: the worker hung
    leader.tick(clock.now)
    job = app.job(handle.id)
    assert job.status is Status.SCHEDULED
    assert job.scheduled_at == pytest.approx(clock.now + 7.0)
    assert (job.retries, job.rescues, job.exit_code) == (1, 0, ExitCode.ABORTED)
    assert job.error is not None and job.error.type == "TimeoutError"


def test_an_overdue_run_of_a_task_the_leader_does_not_know(make_app, clock: Clock) -> None:
    app = make_app()
    retried = app.enqueue("elsewhere", timeout=1, max_retries=1)
    runs = {job.id: job for job in app.backend.claim(["default"], "w1", 1, LEASE, clock.now)}
    leader = Leader(app, "leader-1")

    clock.now = T0 + LEASE - 1  # renew the lease so that only the time-out applies
    app.backend.heartbeat("w1", [runs[retried.id].token or ""], LEASE, clock.now)
    clock.now = T0 + 1 + LEASE + 0.5  # past timeout + margin
    leader.tick(clock.now)
    job = app.job(retried.id)
    assert (job.status, job.retries, job.exit_code) == (Status.QUEUED, 1, ExitCode.ABORTED)
    assert job.scheduled_at == pytest.approx(clock.now)  # retried at once: no task, no back-off

    [again] = app.backend.claim(["default"], "w1", 1, LEASE, clock.now)
    started = clock.now
    clock.now = started + LEASE - 1
    app.backend.heartbeat("w1", [again.token or ""], LEASE, clock.now)
    clock.now = started + 1 + LEASE + 0.5
    leader.tick(clock.now)
    job = app.job(retried.id)
    assert (job.status, job.retries, job.exit_code) == (Status.FAILED, 1, ExitCode.ABORTED)


def test_a_lease_renewed_in_time_is_not_rescued(make_app, clock: Clock) -> None:
    app = make_app()
    handle = app.enqueue("plain")
    run = claim_one(app)
    clock.now = T0 + LEASE - 1
    assert app.backend.heartbeat("w1", [run.token or ""], LEASE, clock.now) == set()
    clock.now = T0 + LEASE + 1  # past the first lease, within the renewed one
    Leader(app, "leader-1").tick(clock.now)
    assert app.job(handle.id).status is Status.RUNNING


def test_a_lease_renewed_after_the_leader_read_it_keeps_its_run(make_app, clock: Clock) -> None:
    """The rescue is written with lease_before=now: a worker (or supervisor) that renews between
    the leader's read and its write keeps its job."""
    app = make_app()
    handle = app.enqueue("plain")
    run = claim_one(app)
    clock.now = T0 + LEASE + 1
    [expired] = app.backend.expired(clock.now, abort_margin=LEASE, limit=10)
    outcome = decide(app, expired, clock.now)
    assert outcome is not None and outcome.lease_before == clock.now

    assert app.backend.extend_worker_leases(["w1"], LEASE, clock.now) == 1  # renewed from outside
    assert app.backend.finish_many([Report(expired.id, expired.token or "", outcome)], clock.now) == [False]
    job = app.job(handle.id)
    assert (job.status, job.token, job.rescues) == (Status.RUNNING, run.token, 0)


def test_only_one_of_two_leaders_leads(url: str, clock: Clock) -> None:
    first_app = App(url, lease=LEASE, clock=clock)
    second_app = App(url, lease=LEASE, clock=clock)  # its own store object, as in another process
    try:
        first, second = Leader(first_app, "a"), Leader(second_app, "b")
        handle = first_app.enqueue("work")
        claim_one(first_app)
        first.tick(clock.now)
        second.tick(clock.now)
        assert (first.is_leader, second.is_leader) == (True, False)

        clock.now = T0 + LEASE + 1  # the run's lease ran out, and so did a's lock: nobody renewed
        second.tick(clock.now)  # b takes over and rescues
        first.tick(clock.now)
        assert (first.is_leader, second.is_leader) == (False, True)
        assert first_app.job(handle.id).rescues == 1

        clock.now += 1
        second.resign()  # a stopping leader gives the lock up: the other leads at once
        first.tick(clock.now)
        assert first.is_leader and not second.is_leader
        assert not second_app.backend.acquire_lock(LOCK, "b", LEASE, clock.now)
    finally:
        first_app.close()
        second_app.close()


def test_a_follower_does_no_duties(url: str, clock: Clock) -> None:
    holder = App(url, lease=LEASE, clock=clock)
    app = App(url, lease=LEASE, clock=clock)
    try:
        assert holder.backend.acquire_lock(LOCK, "someone-else", 1000.0, clock.now)
        handle = app.enqueue("work")
        app.backend.claim(["default"], "w1", 1, LEASE, clock.now)
        clock.now = T0 + LEASE + 1
        follower = Leader(app, "follower")
        follower.tick(clock.now)
        assert not follower.is_leader
        assert app.job(handle.id).status is Status.RUNNING
    finally:
        app.close()
        holder.close()


def test_after_an_outage_rescue_waits_one_lease(make_app, clock: Clock) -> None:
    app = make_app()
    handle = app.enqueue("plain")
    claim_one(app)
    leader = Leader(app, "leader-1")
    leader.store_unreachable()  # as when the store could not be reached at the last pass
    clock.now = T0 + LEASE + 1
    leader.tick(clock.now)  # back: leads again, but workers cut off too get a lease to renew first
    assert leader.is_leader
    assert app.job(handle.id).status is Status.RUNNING
    clock.now += LEASE
    leader.tick(clock.now)
    assert app.job(handle.id).status is Status.QUEUED


def test_after_a_stall_rescue_waits_one_lease(make_app, clock: Clock) -> None:
    """A leader that saw nothing for a while (its process paused, or a task held its GIL) treats
    the lapse as an outage: the workers' renewals may have been held up just as long."""
    app = make_app()
    handle = app.enqueue("plain")
    claim_one(app)
    leader = Leader(app, "leader-1")
    leader.stalled(2 * LEASE, "paused")
    clock.now = T0 + LEASE + 1
    leader.tick(clock.now)
    assert leader.is_leader
    assert app.job(handle.id).status is Status.RUNNING
    clock.now += LEASE
    leader.tick(clock.now)
    assert app.job(handle.id).status is Status.QUEUED


def test_a_pass_that_waited_for_the_write_lock_does_not_rescue_at_once(url: str) -> None:
    """Another process held SQLite's write lock for longer than a renewal interval (a task held
    the GIL in mid-write): the workers could not renew meanwhile either, so the leases that ran
    out are not rescued until the workers had a lease to renew them."""
    lease = 0.6  # renewals every 0.2 s
    app = App(url, lease=lease)
    try:
        handle = app.enqueue("plain")
        app.backend.claim(["default"], "w1", 1, lease, app.clock())
        time.sleep(lease + 0.1)  # its lease ran out while the lock was held (below)
        leader = Leader(app, "leader-1")
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        passing = threading.Thread(target=lambda: leader.tick(app.clock()))
        passing.start()
        time.sleep(3 * leader.every)
        holder.execute("COMMIT")
        holder.close()
        passing.join()
        assert leader.is_leader
        assert app.job(handle.id).status is Status.RUNNING  # without the stall rule: rescued here
        leader.tick(app.clock() + 2 * lease)
        assert app.job(handle.id).status is Status.QUEUED
    finally:
        app.close()


def test_prune_runs_on_its_own_timer(make_app, clock: Clock) -> None:
    app = make_app()

    @app.task(name="short_lived", result_ttl=5)
    def short_lived() -> int:
        return 1

    handle = short_lived.delay()
    app.run_until_empty()
    leader = Leader(app, "leader-1")
    leader.tick(clock.now)  # the first pass prunes (nothing expired yet)
    clock.now += 6
    leader.tick(clock.now)  # expired now, but the prune duty is not due for a minute
    assert app.job(handle.id).status is Status.SUCCEEDED
    clock.now += 60
    leader.tick(clock.now)
    assert app.jobs() == []


def test_run_loops_until_stopped_and_releases_the_lock(url: str) -> None:
    app = App(url, lease=0.3)
    other = App(url, lease=0.3)
    try:
        leader = Leader(app, "runner")
        stopping = threading.Event()
        thread = threading.Thread(target=leader.run, args=(stopping,))
        thread.start()
        try:
            for _ in range(200):
                if leader.is_leader:
                    break
                stopping.wait(0.05)
            assert leader.is_leader
            assert not other.backend.acquire_lock(LOCK, "other", 30.0, other.clock())
        finally:
            stopping.set()
            thread.join(10)
        assert not thread.is_alive()
        assert other.backend.acquire_lock(LOCK, "other", 30.0, other.clock())  # released on the way out
    finally:
        app.close()
        other.close()
