"""The storage contract, method by method, against every store (see conftest.STORES).

Times are injected: every call passes ``now`` (T0 onwards), as the worker does, so a store
that read its own clock would fail here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App
from conveyor.backends import Backend
from conveyor.backends.base import JobQuery, Outcome, OutcomeKind
from conveyor.errors import DuplicateJob, InvalidTransition, JobNotFound
from conveyor.job import Job, JobError, NewJob, Status

from .conftest import OpenStore

T0 = 1_000_000.0
LEASE = 30.0


def new(
    job_id: str | None = None,
    *,
    queue: str = "q",
    priority: int = 2,
    due: float = T0,
    key: str | None = None,
    max_retries: int = 0,
    timeout: float | None = None,
    result_ttl: float | None = 100.0,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> NewJob:
    """A job to enqueue; ids are unique unless given."""
    return NewJob(
        id=job_id or uuid.uuid4().hex, task="tests.task", queue=queue, priority=priority,
        args=[1, "two"] if args is None else args, kwargs={"x": 3} if kwargs is None else kwargs,
        scheduled_at=due, max_retries=max_retries, timeout=timeout, key=key, result_ttl=result_ttl,
    )  # fmt: skip


def claim_one(backend: Backend, now: float = T0, queues: tuple[str, ...] = ("q",), worker: str = "w1") -> Job:
    jobs = backend.claim(queues, worker, 1, LEASE, now)
    assert len(jobs) == 1, f"expected one job to claim, got {jobs}"
    return jobs[0]


def token(job: Job) -> str:
    assert job.token is not None
    return job.token


def stored(backend: Backend, job_id: str) -> Job:
    job = backend.get(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job


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
    assert backend.get("missing") is None


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
    assert sum(stores[0].counts().values()) == 1


# claim -----------------------------------------------------------------------------------------
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


# finish ----------------------------------------------------------------------------------------
def test_success_stores_the_result_and_expiry(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    backend.progress("a", token(job), 40.0, "half")
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


def test_discard_deletes_the_job(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.DISCARDED), T0)
    assert backend.get("a") is None


# fencing ---------------------------------------------------------------------------------------
def test_a_stale_run_can_write_nothing(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    stale = claim_one(backend)
    assert backend.rescue(T0 + LEASE + 1, abort_margin=LEASE).requeued == ["a"]
    current = claim_one(backend, now=T0 + LEASE + 2, worker="w2")
    assert current.attempts == 2 and current.token != stale.token
    for kind in OutcomeKind:
        outcome = Outcome(kind=kind, result="stale", error=JobError("E", "stale"), retry_at=T0)
        assert backend.finish("a", token(stale), outcome, T0 + 50) is False
    assert backend.progress("a", token(stale), 99.0, "stale") is False
    assert backend.heartbeat("w1", [token(stale)], LEASE, T0 + 50) == {token(stale)}
    now = stored(backend, "a")
    assert (now.status, now.token, now.worker_id, now.progress, now.result) == (
        Status.RUNNING, current.token, "w2", 0.0, None,
    )  # fmt: skip
    assert backend.finish("a", token(current), Outcome(kind=OutcomeKind.SUCCEEDED, result="fresh"), T0 + 51)
    assert stored(backend, "a").result == "fresh"


def test_a_finished_run_cannot_finish_twice(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0)
    assert not backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=2), T0)
    assert stored(backend, "a").results == [1]


# heartbeat, progress -------------------------------------------------------------------------
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
    assert backend.rescue(T0 + 63, abort_margin=LEASE).requeued == [c.id]


def test_progress_is_recorded_for_the_current_run(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.progress("a", token(job), 42.5, "almost half")
    record = stored(backend, "a")
    assert (record.progress, record.progress_message) == (42.5, "almost half")
    assert backend.progress("a", "not-a-token", 50.0, "") is False


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
    backend.cancel("b", T0 + 1)
    reset = backend.requeue("b", T0 + 5, reset=True)
    assert reset is not None
    assert (reset.status, reset.attempts, reset.retries, reset.error, reset.results) == (Status.QUEUED, 0, 0, None, [])
    assert backend.requeue("missing", T0) is None


def test_requeue_refuses_when_another_unfinished_job_holds_the_key(backend: Backend) -> None:
    backend.enqueue([new("a", key="k")], T0)
    backend.cancel("a", T0)
    backend.enqueue([new("b", key="k")], T0)
    with pytest.raises(InvalidTransition):
        backend.requeue("a", T0 + 1)
    assert stored(backend, "a").status is Status.CANCELLED


# leader duties -------------------------------------------------------------------------------------
def test_rescue_requeues_expired_leases_and_aborts_overdue_jobs(backend: Backend) -> None:
    backend.enqueue([new("lease"), new("retryable", timeout=5.0, max_retries=1), new("final", timeout=2.5)], T0)
    jobs = {j.id: j for j in backend.claim(["q"], "w1", 3, LEASE, T0)}
    backend.heartbeat("w1", [token(jobs["retryable"]), token(jobs["final"])], 100.0, T0 + 1)
    nothing_yet = backend.rescue(T0 + 1, abort_margin=LEASE)
    assert (nothing_yet.requeued, nothing_yet.aborted) == ([], [])
    rescued = backend.rescue(T0 + LEASE + 6, abort_margin=LEASE)
    assert rescued.requeued == ["lease"] and sorted(rescued.aborted) == ["final", "retryable"]
    lease = stored(backend, "lease")
    assert (lease.status, lease.attempts, lease.retries, lease.token) == (Status.QUEUED, 1, 0, None)
    retryable = stored(backend, "retryable")
    assert (retryable.status, retryable.retries, retryable.exit_code) == (Status.QUEUED, 1, 130)
    assert retryable.scheduled_at == T0 + LEASE + 6
    assert retryable.error == JobError("TimeoutError", "job exceeded its timeout of 5.0 s", "")
    final = stored(backend, "final")
    assert (final.status, final.exit_code, final.finished_at) == (Status.FAILED, 130, T0 + LEASE + 6)
    assert final.error == JobError("TimeoutError", "job exceeded its timeout of 2.5 s", "")


def test_prune_deletes_finished_jobs_past_expiry_or_before_a_time(backend: Backend) -> None:
    backend.enqueue([new("short", result_ttl=10.0), new("kept", result_ttl=None), new("waiting")], T0)
    for job in backend.claim(["q"], "w1", 2, LEASE, T0):
        backend.finish(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED), T0)
    assert backend.prune(T0 + 9) == 0
    assert backend.prune(T0 + 10) == 1 and backend.get("short") is None
    assert backend.prune(T0 + 10**6) == 0
    assert backend.prune(T0, finished_before=T0 + 1) == 1 and backend.get("kept") is None
    assert backend.get("waiting") is not None


def test_one_leader_at_a_time_handed_over_when_it_stops(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_leader("a", 30.0, T0)
    assert first.acquire_leader("a", 30.0, T0 + 1)  # keeping it
    assert not first.acquire_leader("b", 30.0, T0 + 2)  # same store object, another worker
    assert not second.acquire_leader("c", 30.0, T0 + 2)  # another process
    assert first.acquire_leader("b", 30.0, T0 + 40)  # a's ttl ran out: b takes over
    assert not first.acquire_leader("a", 30.0, T0 + 41)
    first.close()  # the leader's process goes away
    assert second.acquire_leader("c", 30.0, T0 + 100)
    assert not first.acquire_leader("a", 30.0, T0 + 101)


def test_a_leader_that_stops_renewing_loses_the_lock_after_its_ttl(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    start = time.time()
    assert first.acquire_leader("a", 0.3, start)
    assert not second.acquire_leader("b", 0.3, start + 0.1)
    deadline = time.monotonic() + 5
    while not second.acquire_leader("b", 0.3, time.time()):
        assert time.monotonic() < deadline, "the lock was not handed over after the ttl"
        time.sleep(0.1)


# readers -----------------------------------------------------------------------------------------
def test_list_jobs_filters_newest_first_and_counts_group(backend: Backend) -> None:
    backend.enqueue([new(f"a{i}", queue="a") for i in range(3)] + [new("b0", queue="b", due=T0 + 10)], T0)
    claim_one(backend, queues=("a",))
    assert [j.id for j in backend.list_jobs(JobQuery())] == ["b0", "a2", "a1", "a0"]
    assert [j.id for j in backend.list_jobs(JobQuery(queue="a", status="queued"))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(status="running"))] == ["a0"]
    assert [j.id for j in backend.list_jobs(JobQuery(status="queued", due_after=T0))] == ["b0"]
    assert [j.id for j in backend.list_jobs(JobQuery(status="queued", due_before=T0))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(limit=2, offset=1))] == ["a2", "a1"]
    assert [j.id for j in backend.list_jobs(JobQuery(task="tests.task", limit=1))] == ["b0"]
    assert backend.list_jobs(JobQuery(task="nope")) == []
    assert backend.counts() == {("a", "queued"): 2, ("a", "running"): 1, ("b", "queued"): 1}


def test_destroy_all_empties_the_store(backend: Backend) -> None:
    backend.enqueue([new() for _ in range(3)], T0)
    backend.acquire_leader("a", 30.0, T0)
    backend.destroy_all()
    assert backend.counts() == {}
    assert backend.acquire_leader("b", 30.0, T0)


# waking ------------------------------------------------------------------------------------------
def test_wait_for_work_wakes_on_an_enqueue_from_elsewhere(open_store: OpenStore) -> None:
    waiter, producer = open_store(), open_store()
    waiter.wait_for_work(["q"], 0.01)  # warm up (connections, listeners)
    timer = threading.Timer(0.3, lambda: producer.enqueue([new()], time.time()))
    started = time.monotonic()
    timer.start()
    waiter.wait_for_work(["q"], 20.0)
    timer.join()
    assert time.monotonic() - started < 10.0, "wait_for_work slept out its timeout instead of waking"


def test_wait_for_work_wakes_when_a_scheduled_job_falls_due(backend: Backend) -> None:
    backend.enqueue([new(due=time.time() + 0.5)], time.time())
    started = time.monotonic()
    backend.wait_for_work(["q"], 20.0)
    assert time.monotonic() - started < 10.0


def test_wait_for_work_returns_after_its_timeout_when_nothing_comes(backend: Backend) -> None:
    started = time.monotonic()
    backend.wait_for_work(["q"], 0.3)
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
