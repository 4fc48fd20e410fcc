"""The JobStore protocol (conveyor/backends/base.py), method by method, against every store
(see conftest.STORES). Times are injected: every call passes ``now`` (T0 onwards), as the
worker does, so a store that read its own clock would fail here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App
from conveyor.backends import Backend
from conveyor.backends.base import JobQuery, Outcome, OutcomeKind, Report
from conveyor.errors import DuplicateJob, InvalidTransition, JobNotFound
from conveyor.job import ExitCode, JobError, Status

from .conftest import OpenStore
from .jobdata import LEASE, T0, claim_one, new, stored, token

TIMEOUT_ERROR = JobError("TimeoutError", "job exceeded its timeout of 5.0 s", "")


# enqueue ---------------------------------------------------------------------------------------
def test_enqueue_stores_every_field_and_get_reads_it_back(backend: Backend) -> None:
    job = new("a", args=[1, 2.5, "é", None, [True]], kwargs={"z": 1, "a": {"b": [1]}}, timeout=5.0, max_retries=3)
    (returned,) = backend.enqueue([job], T0 - 1)
    got = stored(backend, "a")
    for record in (returned, got):
        assert record.status is Status.QUEUED
        assert (record.task, record.queue, record.priority) == ("tests.task", "q", 2)
        assert record.args == [1, 2.5, "é", None, [True]]
        assert list(record.kwargs) == ["z", "a"]  # key order survives the round trip
        assert record.kwargs == {"z": 1, "a": {"b": [1]}}
        assert (record.created_at, record.scheduled_at) == (T0 - 1, T0)
        assert (record.attempts, record.retries, record.max_retries, record.timeout) == (0, 0, 3, 5.0)
        assert (record.token, record.worker_id, record.result, record.error) == (None, None, None, None)
        assert (record.results, record.stages, record.stage, record.result_ttl) == ([], None, 0, 100.0)
        assert record.rescues == 0
    assert backend.get("missing") is None


def test_a_batch_round_trips_awkward_text_exactly_in_order(backend: Backend) -> None:
    """A bulk enqueue (PostgreSQL streams it by COPY, whose text format escapes tabs, newlines and
    backslashes) stores every field verbatim, in the batch's order."""
    awkward = "tab\there\nnew line \\ back\\slash \\N 'quote\" é \u2028 \x01"
    jobs = [new(f"id\t{i}\\{awkward}", queue=f"q\n{i % 2}", args=[awkward, i, 0.1, None], kwargs={awkward: [awkward]})
            for i in range(20)]  # fmt: skip
    jobs[3].stages = [{"task": awkward, "args": [1]}]
    jobs[4].timeout, jobs[4].result_ttl = 2.5, None
    returned = backend.enqueue(jobs, T0 - 1)
    assert [job.id for job in returned] == [job.id for job in jobs]
    for job in jobs:
        got = stored(backend, job.id)
        assert (got.id, got.queue, got.args, got.kwargs) == (job.id, job.queue, job.args, job.kwargs)
        assert (got.stages, got.timeout, got.result_ttl) == (job.stages, job.timeout, job.result_ttl)
        assert (got.status, got.created_at, got.scheduled_at) == (Status.QUEUED, T0 - 1, T0)
    claimed = backend.claim(["q\n0", "q\n1"], "w1", 20, LEASE, T0)
    assert [job.id for job in claimed] == [job.id for job in jobs]


def test_a_taken_id_raises_duplicate_job_and_inserts_nothing_of_the_batch(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    with pytest.raises(DuplicateJob) as raised:
        backend.enqueue([new("b"), new("a"), new("c")], T0)
    assert raised.value.job_id == "a"
    assert backend.get("b") is None and backend.get("c") is None


def test_a_key_is_unique_among_unfinished_jobs(backend: Backend) -> None:
    first, again = backend.enqueue([new("a", key="k"), new("b", key="k")], T0)
    assert first.id == again.id == "a"
    (third,) = backend.enqueue([new("c", key="k")], T0)
    assert third.id == "a" and backend.get("c") is None
    job = claim_one(backend)
    (running,) = backend.enqueue([new("d", key="k")], T0)
    assert running.id == "a" and running.status is Status.RUNNING
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0)
    (fresh,) = backend.enqueue([new("e", key="k")], T0)
    assert fresh.id == "e" and fresh.status is Status.QUEUED


def test_concurrent_enqueues_of_one_key_make_one_job(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(4)]
    ids: list[str] = []
    barrier = threading.Barrier(len(stores) * 2)

    def enqueue(store: Backend) -> None:
        barrier.wait()
        ids.extend(job.id for job in store.enqueue([new(key="once")], T0))

    threads = [threading.Thread(target=enqueue, args=(s,)) for s in stores * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert sum(stores[0].counts(T0).values()) == 1


# claim, start ------------------------------------------------------------------------------------
def test_claim_order_is_priority_then_due_time_then_insertion(backend: Backend) -> None:
    backend.enqueue([new("low", priority=1, due=T0 - 9)], T0)
    backend.enqueue([new("late", due=T0 - 1), new("fifo1", due=T0 - 5), new("fifo2", due=T0 - 5)], T0)
    backend.enqueue([new("high", priority=4, due=T0), new("crit-later", priority=4, due=T0 + 1)], T0)
    order = [job.id for job in backend.claim(["q"], "w1", 10, LEASE, T0)]
    assert order == ["high", "fifo1", "fifo2", "late", "low"]
    one_at_a_time = []
    backend.destroy_all()
    backend.enqueue([new(str(i), priority=1 + i % 3, due=T0 - (i % 2)) for i in range(12)], T0)
    while jobs := backend.claim(["q"], "w1", 1, LEASE, T0):
        one_at_a_time.append(jobs[0])
    keys = [(-j.priority, j.scheduled_at, int(j.id)) for j in one_at_a_time]
    assert keys == sorted(keys) and len(keys) == 12


def test_claim_takes_due_jobs_of_the_named_queues_up_to_the_limit(backend: Backend) -> None:
    backend.enqueue([new(f"q{i}") for i in range(5)] + [new("other", queue="other"), new("later", due=T0 + 10)], T0)
    assert len(backend.claim(["q"], "w1", 3, LEASE, T0)) == 3
    assert {j.id for j in backend.claim(["q", "other"], "w1", 10, LEASE, T0)} == {"q3", "q4", "other"}
    assert backend.claim(["q"], "w1", 10, LEASE, T0 + 9.99) == []
    assert [j.id for j in backend.claim(["q"], "w1", 10, LEASE, T0 + 10)] == ["later"]
    assert backend.claim(["nothing"], "w1", 10, LEASE, T0 + 100) == []


def test_claim_across_queues_keeps_priority_order(backend: Backend) -> None:
    backend.enqueue([new("a1", queue="a", priority=1), new("b3", queue="b", priority=3)], T0)
    backend.enqueue([new("a4", queue="a", priority=4), new("b2", queue="b", priority=2)], T0)
    assert [j.id for j in backend.claim(["a", "b"], "w1", 2, LEASE, T0)] == ["a4", "b3"]
    assert [j.id for j in backend.claim(["b", "a"], "w1", 5, LEASE, T0)] == ["b2", "a1"]


def test_a_claimed_job_is_running_with_a_fresh_token_and_a_lease(backend: Backend) -> None:
    backend.enqueue([new("a")], T0 - 5)
    job = claim_one(backend, now=T0, worker="w7")
    again = stored(backend, "a")
    for record in (job, again):
        assert record.status is Status.RUNNING
        assert record.worker_id == "w7" and record.token
        assert (record.attempts, record.started_at, record.lease_expires_at) == (1, T0, T0 + LEASE)
    backend.finish("a", token(job), Outcome(kind=OutcomeKind.RELEASED), T0)
    second = claim_one(backend, now=T0 + 1)
    assert second.attempts == 2 and second.token != job.token


def test_start_claims_one_given_queued_job_due_or_not(backend: Backend) -> None:
    backend.enqueue([new("later", due=T0 + 100), new("other")], T0)
    job = backend.start("later", "eager", LEASE, T0)
    assert job is not None
    again = stored(backend, "later")
    for record in (job, again):
        assert (record.status, record.worker_id, record.attempts) == (Status.RUNNING, "eager", 1)
        assert (record.started_at, record.lease_expires_at) == (T0, T0 + LEASE)
        assert record.token == job.token and record.token
    assert backend.start("later", "eager", LEASE, T0) is None  # already running
    assert backend.start("missing", "eager", LEASE, T0) is None
    backend.cancel("other", T0)
    assert backend.start("other", "eager", LEASE, T0) is None  # not queued
    assert backend.claim(["q"], "w1", 10, LEASE, T0 + 200) == []  # started jobs are not claimed again
    assert backend.finish("later", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result="inline"), T0 + 1)
    assert stored(backend, "later").result == "inline"


# finish ----------------------------------------------------------------------------------------
def test_success_stores_the_result_and_expiry(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    backend.progress("a", token(job), 40.0, "half", T0)
    result = {"z": [1, 2.5, "ü"], "a": None, "big": 2**62}
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=result, exit_code=0), T0 + 2)
    done = stored(backend, "a")
    assert done.status is Status.SUCCEEDED
    assert done.result == result and list(done.result) == ["z", "a", "big"]
    assert done.results == [result]
    assert (done.exit_code, done.progress, done.error) == (0, 100.0, None)
    assert (done.finished_at, done.expires_at) == (T0 + 2, T0 + 102)
    assert (done.token, done.lease_expires_at) == (None, None)
    assert done.worker_id == "w1"


def test_failure_stores_the_error(backend: Backend) -> None:
    backend.enqueue([new("a", result_ttl=None)], T0)
    job = claim_one(backend)
    error = JobError("ValueError", "bad", "Traceback ...")
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.FAILED, error=error, exit_code=1), T0 + 1)
    done = stored(backend, "a")
    assert (done.status, done.error, done.exit_code, done.finished_at) == (Status.FAILED, error, 1, T0 + 1)
    assert done.expires_at is None and done.token is None


def test_retry_queues_again_at_retry_at_using_one_retry(backend: Backend) -> None:
    backend.enqueue([new("a", max_retries=2)], T0)
    job = claim_one(backend)
    error = JobError("OSError", "flaky")
    outcome = Outcome(kind=OutcomeKind.RETRY, error=error, exit_code=1, retry_at=T0 + 5)
    assert backend.finish("a", token(job), outcome, T0 + 1)
    queued = stored(backend, "a")
    assert (queued.status, queued.retries, queued.attempts, queued.scheduled_at) == (Status.QUEUED, 1, 1, T0 + 5)
    assert (queued.error, queued.token, queued.finished_at) == (error, None, None)
    assert backend.claim(["q"], "w1", 1, LEASE, T0 + 4) == []
    assert claim_one(backend, now=T0 + 5).attempts == 2


def test_release_hands_the_job_back_without_using_a_retry(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.RELEASED), T0 + 1)
    back = stored(backend, "a")
    assert (back.status, back.retries, back.attempts, back.scheduled_at, back.token) == (Status.QUEUED, 0, 1, T0, None)
    assert back.rescues == 0


def test_a_release_can_delay_the_job_and_say_why_still_using_no_retry(backend: Backend) -> None:
    """A worker that cannot run a job (its app lacks the task) hands it back due later, with the
    reason stored for a user to read; a later plain release keeps that reason and the due time."""
    backend.enqueue([new("a", max_retries=0)], T0)
    job = claim_one(backend)
    error = JobError("UnknownTask", "no task of that name in worker w1's app")
    outcome = Outcome(kind=OutcomeKind.RELEASED, error=error, retry_at=T0 + 60)
    assert backend.finish("a", token(job), outcome, T0 + 1)
    back = stored(backend, "a")
    assert (back.status, back.retries, back.attempts, back.scheduled_at) == (Status.QUEUED, 0, 1, T0 + 60)
    assert (back.error, back.token, back.finished_at) == (error, None, None)
    assert backend.claim(["q"], "w1", 1, LEASE, T0 + 59) == []
    again = claim_one(backend, now=T0 + 60)
    assert again.attempts == 2 and again.error == error
    assert backend.finish("a", token(again), Outcome(kind=OutcomeKind.RELEASED), T0 + 61)
    plain = stored(backend, "a")
    assert (plain.status, plain.retries, plain.scheduled_at, plain.error) == (Status.QUEUED, 0, T0 + 60, error)


def test_rescued_queues_again_counting_a_rescue_and_no_retry(backend: Backend) -> None:
    backend.enqueue([new("a", max_retries=1, due=T0 - 3)], T0 - 3)
    first = claim_one(backend)
    rescue = Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + LEASE + 1)
    assert backend.finish("a", token(first), rescue, T0 + LEASE + 1)
    back = stored(backend, "a")
    assert (back.status, back.rescues, back.retries, back.attempts) == (Status.QUEUED, 1, 0, 1)
    assert (back.token, back.lease_expires_at, back.scheduled_at, back.finished_at) == (None, None, T0 - 3, None)
    second = claim_one(backend, now=T0 + LEASE + 2)
    assert (second.attempts, second.rescues) == (2, 1)
    rescue = Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + 2 * LEASE + 3)
    assert backend.finish("a", token(second), rescue, T0 + 2 * LEASE + 3)
    assert (stored(backend, "a").rescues, stored(backend, "a").retries) == (2, 0)


def test_discard_deletes_the_job(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.DISCARDED), T0)
    assert backend.get("a") is None


def test_finish_many_writes_each_report_on_its_own_in_order(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b"), new("c")], T0)
    a, b, c = backend.claim(["q"], "w1", 3, LEASE, T0)
    backend.cancel(b.id, T0 + 1)  # b's run is no longer current
    reports = [
        Report(a.id, token(a), Outcome(kind=OutcomeKind.SUCCEEDED, result="a")),
        Report(b.id, token(b), Outcome(kind=OutcomeKind.SUCCEEDED, result="b")),
        Report(c.id, token(c), Outcome(kind=OutcomeKind.FAILED, error=JobError("E", "c"), exit_code=1)),
    ]
    assert backend.finish_many(reports, T0 + 2) == [True, False, True]
    assert [stored(backend, j.id).status for j in (a, b, c)] == [Status.SUCCEEDED, Status.CANCELLED, Status.FAILED]
    assert stored(backend, b.id).result is None
    assert backend.finish_many([], T0) == []


# fencing ---------------------------------------------------------------------------------------
def test_a_stale_run_can_write_nothing(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    stale = claim_one(backend)
    expired = backend.expired(T0 + LEASE + 1, abort_margin=LEASE, limit=100)
    assert [job.id for job in expired] == ["a"] and expired[0].token == stale.token
    rescue = Report("a", token(stale), Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + LEASE + 1))
    assert backend.finish_many([rescue], T0 + LEASE + 1) == [True]
    current = claim_one(backend, now=T0 + LEASE + 2, worker="w2")
    assert current.attempts == 2 and current.token != stale.token
    for kind in OutcomeKind:
        outcome = Outcome(kind=kind, result="stale", error=JobError("E", "stale"), retry_at=T0)
        assert backend.finish("a", token(stale), outcome, T0 + 50) is False
    assert backend.progress("a", token(stale), 99.0, "stale", T0) is False
    assert backend.heartbeat("w1", [token(stale)], LEASE, T0 + 50) == {token(stale)}
    now = stored(backend, "a")
    assert (now.status, now.token, now.worker_id, now.progress, now.result, now.rescues) == (
        Status.RUNNING, current.token, "w2", 0.0, None, 1,
    )  # fmt: skip
    assert backend.finish("a", token(current), Outcome(kind=OutcomeKind.SUCCEEDED, result="fresh"), T0 + 51)
    assert stored(backend, "a").result == "fresh"


def test_a_finished_run_cannot_finish_twice(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0)
    assert not backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=2), T0)
    assert stored(backend, "a").results == [1]


@pytest.mark.parametrize("kind", list(OutcomeKind))
def test_lease_before_writes_nothing_when_the_lease_was_renewed_meanwhile(backend: Backend, kind: OutcomeKind) -> None:
    backend.enqueue([new("renewed"), new("lapsed")], T0)
    renewed, lapsed = backend.claim(["q"], "w1", 2, LEASE, T0)
    seen_expired_at = T0 + LEASE + 1  # the leader saw both leases run out ...
    assert {j.id for j in backend.expired(seen_expired_at, LEASE, 10)} == {"renewed", "lapsed"}
    assert backend.heartbeat("w1", [token(renewed)], LEASE, seen_expired_at) == set()  # ... then one was renewed
    outcome = Outcome(
        kind=kind, result="leader", error=JobError("E", "died"), exit_code=ExitCode.WORKER_DIED,
        retry_at=seen_expired_at, lease_before=seen_expired_at,
    )  # fmt: skip
    written = backend.finish_many(
        [Report(renewed.id, token(renewed), outcome), Report(lapsed.id, token(lapsed), outcome)], seen_expired_at
    )
    assert written == [False, True]
    kept = stored(backend, "renewed")
    assert (kept.status, kept.token, kept.rescues, kept.retries) == (Status.RUNNING, renewed.token, 0, 0)
    assert kept.lease_expires_at == seen_expired_at + LEASE
    after = backend.get("lapsed")
    assert after is None if kind is OutcomeKind.DISCARDED else after is not None and after.token is None
    assert backend.finish("renewed", token(renewed), Outcome(kind=OutcomeKind.SUCCEEDED, result="w1"), T0 + 40)


# heartbeat, leases, progress -------------------------------------------------------------------
def test_heartbeat_extends_leases_and_reports_runs_no_longer_held(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b"), new("c")], T0)
    a, b, c = backend.claim(["q"], "w1", 3, LEASE, T0)
    backend.cancel(b.id, T0 + 1)
    lost = backend.heartbeat("w1", [token(a), token(b), token(c)], 60.0, T0 + 2)
    assert lost == {token(b)}
    assert stored(backend, a.id).lease_expires_at == T0 + 62
    assert backend.heartbeat("someone-else", [token(c)], 60.0, T0 + 3) == {token(c)}
    assert backend.heartbeat("w1", [], 60.0, T0 + 3) == set()
    backend.heartbeat("w1", [token(a)], 60.0, T0 + 40)
    assert [job.id for job in backend.expired(T0 + 63, abort_margin=LEASE, limit=100)] == [c.id]


def test_extend_worker_leases_renews_only_those_workers_running_jobs(backend: Backend) -> None:
    backend.enqueue([new(name) for name in ("a1", "a2", "b1", "c1", "a3")], T0)
    for worker, count in (("wa", 2), ("wb", 1), ("wc", 1)):
        backend.claim(["q"], worker, count, LEASE, T0)
    a3 = claim_one(backend, worker="wa")
    backend.finish("a3", token(a3), Outcome(kind=OutcomeKind.SUCCEEDED), T0 + 1)
    assert backend.extend_worker_leases(["wa", "wc"], 100.0, T0 + 10) == 3
    leases = {job_id: stored(backend, job_id).lease_expires_at for job_id in ("a1", "a2", "b1", "c1", "a3")}
    assert leases == {"a1": T0 + 110, "a2": T0 + 110, "b1": T0 + LEASE, "c1": T0 + 110, "a3": None}
    assert stored(backend, "a3").status is Status.SUCCEEDED
    assert backend.extend_worker_leases([], 100.0, T0 + 10) == 0
    assert backend.extend_worker_leases(["nobody"], 100.0, T0 + 10) == 0
    assert [job.id for job in backend.expired(T0 + LEASE + 1, abort_margin=1000.0, limit=10)] == ["b1"]


def test_progress_is_recorded_for_the_current_run(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.progress("a", token(job), 42.5, "almost half", T0)
    record = stored(backend, "a")
    assert (record.progress, record.progress_message) == (42.5, "almost half")
    assert backend.progress("a", "not-a-token", 50.0, "", T0) is False


# expired runs: the leader's reads, and what it writes ----------------------------------------------
def test_expired_finds_lapsed_leases_and_overdue_runs_for_the_leader_to_decide(backend: Backend) -> None:
    backend.enqueue([new("lease"), new("retryable", timeout=5.0, max_retries=1), new("final", timeout=2.5)], T0)
    backend.enqueue([new("healthy", timeout=1000.0)], T0)
    jobs = {j.id: j for j in backend.claim(["q"], "w1", 4, LEASE, T0)}
    backend.heartbeat("w1", [token(jobs[n]) for n in ("retryable", "final", "healthy")], 100.0, T0 + 1)
    assert backend.expired(T0 + 1, abort_margin=LEASE, limit=100) == []
    # overdue: started + timeout + margin < now, while every lease still holds (lease: until T0 + 30)
    assert [j.id for j in backend.expired(T0 + 4, abort_margin=1.0, limit=100)] == ["final"]
    assert sorted(j.id for j in backend.expired(T0 + 7, abort_margin=1.0, limit=100)) == ["final", "retryable"]
    now = T0 + LEASE + 6
    found = {j.id: j for j in backend.expired(now, abort_margin=LEASE, limit=100)}
    assert sorted(found) == ["final", "lease", "retryable"]  # a lapsed lease, and two runs past timeout + margin
    assert all(j.status is Status.RUNNING and j.token == jobs[j.id].token for j in found.values())
    assert found["lease"].lease_expires_at == T0 + LEASE and found["retryable"].lease_expires_at == T0 + 101
    final_error = JobError("TimeoutError", "job exceeded its timeout of 2.5 s", "")
    reports = [
        Report("lease", token(found["lease"]), Outcome(kind=OutcomeKind.RESCUED, lease_before=now)),
        Report("retryable", token(found["retryable"]), Outcome(
            kind=OutcomeKind.RETRY, error=TIMEOUT_ERROR, exit_code=ExitCode.ABORTED, retry_at=now)),
        Report("final", token(found["final"]), Outcome(
            kind=OutcomeKind.FAILED, error=final_error, exit_code=ExitCode.ABORTED)),
    ]  # fmt: skip
    assert backend.finish_many(reports, now) == [True, True, True]
    lease = stored(backend, "lease")
    assert (lease.status, lease.attempts, lease.retries, lease.rescues, lease.token) == (Status.QUEUED, 1, 0, 1, None)
    retryable = stored(backend, "retryable")
    assert (retryable.status, retryable.retries, retryable.exit_code) == (Status.QUEUED, 1, 130)
    assert retryable.scheduled_at == now and retryable.error == TIMEOUT_ERROR
    final = stored(backend, "final")
    assert (final.status, final.exit_code, final.finished_at) == (Status.FAILED, 130, now)
    assert final.error == final_error
    assert backend.expired(now, abort_margin=LEASE, limit=100) == []
    assert stored(backend, "healthy").status is Status.RUNNING


def test_expired_returns_at_most_limit_runs(backend: Backend) -> None:
    backend.enqueue([new(f"j{i}") for i in range(7)], T0)
    backend.claim(["q"], "w1", 7, LEASE, T0)
    assert len(backend.expired(T0 + LEASE + 1, abort_margin=LEASE, limit=3)) == 3
    assert len(backend.expired(T0 + LEASE + 1, abort_margin=LEASE, limit=100)) == 7
    assert backend.expired(T0 + LEASE, abort_margin=LEASE, limit=100) == []  # not before the lease runs out


# cancel, requeue ---------------------------------------------------------------------------------
def test_cancel_stops_unfinished_jobs_only(backend: Backend) -> None:
    backend.enqueue([new("queued", due=T0 + 5), new("running"), new("done")], T0)
    running = claim_one(backend)
    done = claim_one(backend)
    backend.finish(done.id, token(done), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0)
    cancelled = backend.cancel("queued", T0 + 1)
    assert cancelled is not None
    assert (cancelled.status, cancelled.exit_code, cancelled.finished_at, cancelled.expires_at) == (
        Status.CANCELLED, 130, T0 + 1, T0 + 101,
    )  # fmt: skip
    running_cancelled = backend.cancel("running", T0 + 1)
    assert running_cancelled is not None and running_cancelled.status is Status.CANCELLED
    assert running_cancelled.token is None
    assert not backend.finish("running", token(running), Outcome(kind=OutcomeKind.SUCCEEDED), T0 + 2)
    unchanged = backend.cancel("done", T0 + 3)
    assert unchanged is not None and unchanged.status is Status.SUCCEEDED and unchanged.result == 1
    assert backend.cancel("missing", T0) is None
    assert backend.claim(["q"], "w1", 10, LEASE, T0 + 10) == []


def test_requeue_brings_back_failed_or_cancelled_jobs(backend: Backend) -> None:
    backend.enqueue([new("a", max_retries=1)], T0)
    job = claim_one(backend)
    outcome = Outcome(kind=OutcomeKind.FAILED, error=JobError("E", "x"), exit_code=1)
    backend.finish("a", token(job), outcome, T0 + 1)
    again = backend.requeue("a", T0 + 2)
    assert again is not None
    assert (again.status, again.scheduled_at) == (Status.QUEUED, T0 + 2)
    assert (again.finished_at, again.expires_at) == (None, None)
    assert (again.attempts, again.error, again.exit_code) == (1, JobError("E", "x"), None)
    job = claim_one(backend, now=T0 + 2)
    backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=5), T0 + 3)
    assert backend.requeue("a", T0 + 4) is not None and stored(backend, "a").status is Status.SUCCEEDED
    backend.enqueue([new("b")], T0)
    job = claim_one(backend, now=T0 + 5)
    backend.finish("b", token(job), Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + 100), T0 + 6)
    backend.cancel("b", T0 + 7)
    reset = backend.requeue("b", T0 + 8, reset=True)
    assert reset is not None
    assert (reset.status, reset.attempts, reset.retries, reset.error, reset.results) == (Status.QUEUED, 0, 0, None, [])
    assert reset.rescues == 0
    assert backend.requeue("missing", T0) is None


def test_requeue_refuses_when_another_unfinished_job_holds_the_key(backend: Backend) -> None:
    backend.enqueue([new("a", key="k")], T0)
    backend.cancel("a", T0)
    backend.enqueue([new("b", key="k")], T0)
    with pytest.raises(InvalidTransition):
        backend.requeue("a", T0 + 1)
    assert stored(backend, "a").status is Status.CANCELLED


# readers -----------------------------------------------------------------------------------------
def test_list_jobs_filters_newest_first_and_counts_group(backend: Backend) -> None:
    backend.enqueue([new(f"a{i}", queue="a") for i in range(3)] + [new("b0", queue="b", due=T0 + 10)], T0)
    claim_one(backend, queues=("a",))
    assert [j.id for j in backend.list_jobs(JobQuery())] == ["b0", "a2", "a1", "a0"]
    assert [j.id for j in backend.list_jobs(JobQuery(queue="a", status=Status.QUEUED))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(status=Status.RUNNING))] == ["a0"]
    assert [j.id for j in backend.list_jobs(JobQuery(status=Status.QUEUED, due_after=T0))] == ["b0"]
    assert [j.id for j in backend.list_jobs(JobQuery(status=Status.QUEUED, due_before=T0))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(limit=2, offset=1))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(task="tests.task", limit=1))] == ["b0"]
    assert backend.list_jobs(JobQuery(task="nope")) == []
    assert backend.counts(T0) == {("a", Status.QUEUED): 2, ("a", Status.RUNNING): 1, ("b", Status.SCHEDULED): 1}
    assert backend.counts(T0 + 10) == {("a", Status.QUEUED): 2, ("a", Status.RUNNING): 1, ("b", Status.QUEUED): 1}


def test_counts_split_queued_jobs_not_yet_due_as_scheduled(backend: Backend) -> None:
    backend.enqueue([new("now"), new("soon", due=T0 + 5), new("later", due=T0 + 50), new("done")], T0)
    backend.enqueue([new("retry", max_retries=1)], T0)
    done = claim_one(backend)
    backend.finish(done.id, token(done), Outcome(kind=OutcomeKind.SUCCEEDED), T0)
    retry = claim_one(backend)
    backend.finish(retry.id, token(retry), Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 5), T0)
    assert backend.counts(T0) == {("q", Status.QUEUED): 1, ("q", Status.SCHEDULED): 3, ("q", Status.SUCCEEDED): 1}
    assert backend.counts(T0 + 5) == {("q", Status.QUEUED): 3, ("q", Status.SCHEDULED): 1, ("q", Status.SUCCEEDED): 1}
    assert backend.counts(T0 + 50) == {("q", Status.QUEUED): 4, ("q", Status.SUCCEEDED): 1}
    assert all(isinstance(status, Status) for _, status in backend.counts(T0))
    assert backend.list_jobs(JobQuery(status=Status.SCHEDULED)) == []  # a stored status: nothing is stored as that


# waking ------------------------------------------------------------------------------------------
def test_wait_for_work_wakes_on_an_enqueue_from_elsewhere(open_store: OpenStore) -> None:
    waiter, producer = open_store(), open_store()
    waiter.wait_for_work(["q"], 0.01, T0)  # warm up (connections, listeners)
    timer = threading.Timer(0.3, lambda: producer.enqueue([new()], T0))
    started = time.monotonic()
    timer.start()
    waiter.wait_for_work(["q"], 20.0, T0)
    timer.join()
    assert time.monotonic() - started < 10.0, "wait_for_work slept out its timeout instead of waking"


def test_wait_for_work_wakes_when_a_scheduled_job_falls_due(backend: Backend) -> None:
    backend.enqueue([new(due=T0 + 0.5)], T0)
    started = time.monotonic()
    backend.wait_for_work(["q"], 20.0, T0)  # the injected time says the job is due in 0.5 s
    assert time.monotonic() - started < 10.0


def test_wait_for_work_returns_at_once_when_a_job_is_due(backend: Backend) -> None:
    backend.enqueue([new(due=T0 + 100)], T0)
    started = time.monotonic()
    backend.wait_for_work(["q"], 20.0, T0 + 100)
    assert time.monotonic() - started < 10.0


def test_wait_for_work_returns_after_its_timeout_when_nothing_comes(backend: Backend) -> None:
    started = time.monotonic()
    backend.wait_for_work(["q"], 0.3, T0)
    assert 0.2 <= time.monotonic() - started < 10.0


# transactional enqueue ----------------------------------------------------------------------------
def test_jobs_enqueued_in_a_transaction_exist_only_if_it_commits(
    backend: Backend, native_connection: Callable[[], Any]
) -> None:
    conn = native_connection()
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id integer)")
    conn.commit()
    conn.execute("INSERT INTO orders VALUES (1)")
    (rolled_back,) = backend.enqueue([new("rolled-back")], T0, connection=conn)
    assert rolled_back.id == "rolled-back"
    conn.rollback()
    assert backend.get("rolled-back") is None
    conn.execute("INSERT INTO orders VALUES (2)")
    backend.enqueue([new("committed"), new("too")], T0, connection=conn)
    assert backend.get("committed") is None  # not before the caller commits
    conn.commit()
    assert {j.id for j in backend.claim(["q"], "w1", 10, LEASE, T0)} == {"committed", "too"}


def test_a_failed_transactional_enqueue_leaves_the_callers_transaction_usable(
    backend: Backend, native_connection: Callable[[], Any]
) -> None:
    backend.enqueue([new("taken")], T0)
    conn = native_connection()
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id integer)")
    conn.commit()
    conn.execute("INSERT INTO orders VALUES (7)")
    with pytest.raises(DuplicateJob):
        backend.enqueue([new("fresh"), new("taken")], T0, connection=conn)
    backend.enqueue([new("after")], T0, connection=conn)
    conn.commit()
    assert backend.get("fresh") is None and backend.get("after") is not None
    assert conn.execute("SELECT count(*) FROM orders WHERE id = 7").fetchone()[0] == 1


def test_app_delay_and_enqueue_many_join_the_callers_transaction(
    store_url: str, native_connection: Callable[[], Any]
) -> None:
    app = App(store_url)
    try:

        @app.task(name="send")
        def send(to: str) -> str:
            return to

        conn = native_connection()
        handle = send.options(connection=conn).delay("rolled back")
        many = app.enqueue_many([send.s("a"), send.s("b")], connection=conn)
        conn.rollback()
        for gone in (handle, *many):
            with pytest.raises(JobNotFound):
                app.job(gone.id)
        kept = send.options(connection=conn).delay("kept")
        conn.commit()
        assert app.run_until_empty() == 1 and kept.result(timeout=5) == "kept"
        with pytest.raises(TypeError):
            send.options(connection=object()).delay("wrong kind")
    finally:
        app.close()
