"""The EventLog protocol and the events every job step writes (conveyor/backends/base.py,
conveyor/events.py), against every store: each transition appends exactly the event the plan names,
in the same transaction as the change, and only when the change was written (a stale run, a key
that returns an existing job, a rolled-back transaction write none)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.backends import Backend
from conveyor.backends.base import Outcome, OutcomeKind, Report
from conveyor.errors import DuplicateJob
from conveyor.events import Event, EventQuery, outcome_event
from conveyor.job import ExitCode, JobError
from conveyor.operations import SwitchScope

from .conftest import OpenStore
from .jobdata import LEASE, T0, claim_one, new, token


def log(backend: Backend, **filters: Any) -> list[Event]:
    """The whole log (or what the filters select), oldest first."""
    return backend.events(EventQuery(**filters))


def kinds(backend: Backend, job_id: str | None = None) -> list[str]:
    """The kinds of a job's events (or of every event), in order."""
    return [event.kind for event in log(backend, job_id=job_id)]


def last(backend: Backend) -> Event:
    """The newest event (the test fails on an empty log)."""
    events = log(backend)
    assert events, "the log is empty"
    return events[-1]


# each step's event -----------------------------------------------------------------------------------
def test_enqueue_writes_enqueued_with_the_due_time_only_when_delayed(backend: Backend) -> None:
    backend.enqueue([new("now")], T0)
    backend.enqueue([new("later", due=T0 + 60, queue="mail")], T0)
    first, second = log(backend)
    assert (first.kind, first.job_id, first.task, first.queue) == ("enqueued", "now", "tests.task", "q")
    assert (first.attempt, first.at, first.data, first.worker_id) == (0, T0, {}, None)
    assert (second.kind, second.job_id, second.queue) == ("enqueued", "later", "mail")
    assert second.data == {"scheduled_at": T0 + 60}
    assert 0 < first.seq < second.seq


def test_a_batch_writes_one_enqueued_per_job_in_its_order(backend: Backend) -> None:
    ids = [f"j{i}" for i in range(25)]
    backend.enqueue([new(job_id) for job_id in ids], T0)
    events = log(backend)
    assert [(e.kind, e.job_id) for e in events] == [("enqueued", job_id) for job_id in ids]
    assert [e.seq for e in events] == sorted({e.seq for e in events})


def test_a_key_that_returns_the_existing_job_writes_no_event(backend: Backend) -> None:
    backend.enqueue([new("a", key="k")], T0)
    backend.enqueue([new("b", key="k"), new("c")], T0)
    backend.enqueue([new("d", key="k")], T0)
    assert [(e.kind, e.job_id) for e in log(backend)] == [("enqueued", "a"), ("enqueued", "c")]


def test_a_taken_id_writes_no_event_for_the_batch(backend: Backend) -> None:
    backend.enqueue([new("taken")], T0)
    with pytest.raises(DuplicateJob):
        backend.enqueue([new("fresh"), new("taken"), new("other")], T0)
    assert [e.job_id for e in log(backend)] == ["taken"]


def test_claim_and_start_write_started_with_the_worker_and_the_attempt(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b"), new("eager", due=T0 + 100)], T0)
    claimed = backend.claim(["q"], "w1", 2, LEASE, T0 + 1)
    assert backend.start("eager", "inline", LEASE, T0 + 2) is not None
    started = log(backend, kinds=("started",))
    assert sorted((e.job_id, e.worker_id, e.attempt, e.at) for e in started) == [
        ("a", "w1", 1, T0 + 1), ("b", "w1", 1, T0 + 1), ("eager", "inline", 1, T0 + 2),
    ]  # fmt: skip
    assert {(e.task, e.queue) for e in started} == {("tests.task", "q")}
    backend.finish("a", token(claimed[0]), Outcome(kind=OutcomeKind.RELEASED), T0 + 3)
    again = claim_one(backend, now=T0 + 4, worker="w2")
    assert again.id == "a"
    assert (last(backend).kind, last(backend).attempt, last(backend).worker_id) == ("started", 2, "w2")


def test_progress_writes_progress_and_a_stale_run_writes_none(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    job = claim_one(backend)
    assert backend.progress("a", token(job), 42.5, "almost half", T0 + 1)
    event = last(backend)
    assert (event.kind, event.job_id, event.attempt, event.at) == ("progress", "a", 1, T0 + 1)
    assert event.data == {"percent": 42.5, "message": "almost half"}
    before = backend.last_event_seq()
    assert backend.progress("a", "not-a-token", 50.0, "", T0 + 2) is False
    assert backend.last_event_seq() == before


OUTCOMES = {
    "succeeded": Outcome(kind=OutcomeKind.SUCCEEDED, result={"ok": 1}, exit_code=0),
    "failed": Outcome(kind=OutcomeKind.FAILED, error=JobError("ValueError", "bad", "tb"), exit_code=1),
    "timed_out": Outcome(kind=OutcomeKind.FAILED, error=JobError("TimeoutError", "slow"), exit_code=ExitCode.ABORTED),
    "retry_scheduled": Outcome(
        kind=OutcomeKind.RETRY, error=JobError("OSError", "flaky"), exit_code=1, retry_at=T0 + 9
    ),
    "handed_back": Outcome(kind=OutcomeKind.RELEASED),
    "rescued": Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + LEASE + 1),
    "discarded": Outcome(kind=OutcomeKind.DISCARDED),
}  # fmt: skip


@pytest.mark.parametrize("expected", list(OUTCOMES))
def test_each_outcome_writes_its_event(backend: Backend, expected: str) -> None:
    outcome = OUTCOMES[expected]
    backend.enqueue([new("a", queue="mail", max_retries=3)], T0)
    job = claim_one(backend, queues=("mail",), worker="w9")
    now = T0 + LEASE + 2
    assert backend.finish_many([Report("a", token(job), outcome)], now) == [True]
    event = last(backend)
    kind, data = outcome_event(outcome)
    assert event.kind == kind.value == expected
    assert (event.job_id, event.task, event.queue, event.attempt, event.at) == ("a", "tests.task", "mail", 1, now)
    assert event.data == json.loads(data)
    if expected == "retry_scheduled":
        assert event.data == {"error": {"type": "OSError", "message": "flaky"}, "exit_code": 1, "retry_at": T0 + 9}
    if expected == "timed_out":
        assert event.data["exit_code"] == ExitCode.ABORTED
    assert kinds(backend, "a") == ["enqueued", "started", expected]


def test_stale_reports_write_no_event(backend: Backend) -> None:
    backend.enqueue([new("a"), new("renewed")], T0)
    stale, renewed = backend.claim(["q"], "w1", 2, LEASE, T0)
    backend.cancel("a", T0 + 1)
    before = backend.last_event_seq()
    for kind in OutcomeKind:
        outcome = Outcome(kind=kind, result="stale", error=JobError("E", "stale"), retry_at=T0)
        assert backend.finish("a", token(stale), outcome, T0 + 2) is False
    seen = T0 + LEASE + 1
    backend.heartbeat("w1", [token(renewed)], LEASE, seen)  # renewed after the leader looked
    lost = Outcome(kind=OutcomeKind.RESCUED, lease_before=seen)
    assert backend.finish_many([Report("renewed", token(renewed), lost)], seen) == [False]
    assert backend.last_event_seq() == before
    assert kinds(backend, "a") == ["enqueued", "started", "cancelled"]


def test_finish_many_writes_the_events_of_the_written_reports_only(backend: Backend) -> None:
    backend.enqueue([new(f"j{i}") for i in range(4)], T0)
    jobs = backend.claim(["q"], "w1", 4, LEASE, T0)
    backend.cancel(jobs[1].id, T0 + 1)
    reports = [
        Report(jobs[0].id, token(jobs[0]), Outcome(kind=OutcomeKind.SUCCEEDED, result=0)),
        Report(jobs[1].id, token(jobs[1]), Outcome(kind=OutcomeKind.SUCCEEDED, result=1)),  # stale
        Report(jobs[2].id, token(jobs[2]), Outcome(kind=OutcomeKind.DISCARDED)),
        Report(jobs[3].id, token(jobs[3]), Outcome(kind=OutcomeKind.FAILED, error=JobError("E", "x"), exit_code=1)),
    ]
    assert backend.finish_many(reports, T0 + 2) == [True, False, True, True]
    written = [(e.job_id, e.kind) for e in log(backend) if e.at == T0 + 2]
    assert sorted(written) == [(jobs[0].id, "succeeded"), (jobs[2].id, "discarded"), (jobs[3].id, "failed")]


def test_cancel_writes_cancelled_only_when_it_cancels(backend: Backend) -> None:
    backend.enqueue([new("queued"), new("running")], T0)
    job = backend.start("running", "w1", LEASE, T0)
    assert job is not None
    backend.cancel("queued", T0 + 1)
    backend.cancel("running", T0 + 2)
    cancelled = log(backend, kinds=("cancelled",))
    assert [(e.job_id, e.attempt, e.at) for e in cancelled] == [("queued", 0, T0 + 1), ("running", 1, T0 + 2)]
    before = backend.last_event_seq()
    backend.cancel("queued", T0 + 3)  # already finished: nothing changes
    backend.cancel("missing", T0 + 3)
    assert backend.last_event_seq() == before


def test_requeue_writes_requeued_saying_whether_it_reset(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b")], T0)
    for job in backend.claim(["q"], "w1", 2, LEASE, T0):
        backend.finish(job.id, token(job), Outcome(kind=OutcomeKind.FAILED, error=JobError("E", "x")), T0 + 1)
    backend.requeue("a", T0 + 2)
    backend.requeue("b", T0 + 3, reset=True)
    a, b = log(backend, kinds=("requeued",))
    assert (a.job_id, a.data, a.attempt, a.at) == ("a", {"reset": False}, 1, T0 + 2)
    assert (b.job_id, b.data, b.attempt, b.at) == ("b", {"reset": True}, 0, T0 + 3)  # the job starts over
    before = backend.last_event_seq()
    backend.requeue("a", T0 + 4)  # queued, not failed: nothing changes
    assert backend.last_event_seq() == before


def test_emit_appends_the_tasks_own_event_fenced_by_its_run(backend: Backend) -> None:
    backend.enqueue([new("a", queue="mail")], T0)
    job = claim_one(backend, queues=("mail",))
    assert backend.emit("a", token(job), "order.shipped", '{"carrier": "ups", "n": [1, 2]}', T0 + 1)
    event = last(backend)
    assert (event.kind, event.job_id, event.task, event.queue, event.attempt) == (
        "order.shipped", "a", "tests.task", "mail", 1,
    )  # fmt: skip
    assert (event.data, event.at) == ({"carrier": "ups", "n": [1, 2]}, T0 + 1)
    before = backend.last_event_seq()
    assert backend.emit("a", "not-a-token", "order.shipped", "{}", T0 + 2) is False
    assert backend.emit("missing", token(job), "order.shipped", "{}", T0 + 2) is False
    backend.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=None), T0 + 3)
    after_finish = backend.last_event_seq()
    assert backend.emit("a", token(job), "too.late", "{}", T0 + 4) is False  # the run has ended
    assert backend.last_event_seq() == after_finish > before


# transactions ------------------------------------------------------------------------------------------
def test_a_rolled_back_transactional_enqueue_leaves_no_event(
    backend: Backend, native_connection: Callable[[], Any]
) -> None:
    conn = native_connection()
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id integer)")
    conn.commit()
    conn.execute("INSERT INTO orders VALUES (1)")
    backend.enqueue([new("rolled-back"), new("too")], T0, connection=conn)
    conn.rollback()
    assert log(backend) == []
    conn.execute("INSERT INTO orders VALUES (2)")
    backend.enqueue([new("committed")], T0, connection=conn)
    assert log(backend) == []  # not before the caller commits
    conn.commit()
    assert [(e.kind, e.job_id) for e in log(backend)] == [("enqueued", "committed")]


# reading ----------------------------------------------------------------------------------------------------
def test_events_filter_by_job_task_queue_and_kinds(backend: Backend) -> None:
    jobs = [new("a", queue="mail"), new("b", queue="mail"), new("c")]
    jobs[1].task = "other.task"
    backend.enqueue(jobs, T0)
    mail = backend.claim(["mail"], "w1", 2, LEASE, T0)
    backend.finish(mail[0].id, token(mail[0]), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 1)
    assert kinds(backend, "a") == ["enqueued", "started", "succeeded"]
    assert [e.job_id for e in log(backend, task="other.task")] == ["b", "b"]
    assert {e.job_id for e in log(backend, queue="mail")} == {"a", "b"}
    assert [e.job_id for e in log(backend, queue="q")] == ["c"]
    assert sorted(e.job_id or "" for e in log(backend, kinds=("started", "succeeded"))) == ["a", "a", "b"]
    assert [e.kind for e in log(backend, job_id="a", kinds=("succeeded",))] == ["succeeded"]
    assert log(backend, job_id="missing") == [] and log(backend, kinds=("nothing",)) == []


def test_events_page_by_after_and_limit_in_seq_order(backend: Backend) -> None:
    backend.enqueue([new(f"j{i:02}") for i in range(23)], T0)
    everything = log(backend)
    assert [e.seq for e in everything] == sorted(e.seq for e in everything) and len(everything) == 23
    pages, after = [], 0
    while page := backend.events(EventQuery(after=after, limit=5)):
        assert len(page) <= 5
        pages.append(page)
        after = page[-1].seq
    assert [e for page in pages for e in page] == everything
    assert len(pages) == 5
    middle = everything[10].seq
    assert [e.job_id for e in log(backend, after=middle, limit=2)] == ["j11", "j12"]
    assert [e.job_id for e in log(backend, job_id="j20", after=middle)] == ["j20"]
    assert log(backend, job_id="j05", after=middle) == []


def test_last_event_seq_is_where_new_events_start(backend: Backend) -> None:
    assert log(backend, after=backend.last_event_seq()) == []  # an empty log (a store may start past 0)
    backend.enqueue([new("a"), new("b")], T0)
    start = backend.last_event_seq()
    assert start == log(backend)[-1].seq
    assert log(backend, after=start) == []
    backend.enqueue([new("c")], T0)
    assert [e.job_id for e in log(backend, after=start)] == ["c"]
    assert backend.last_event_seq() > start


def test_wait_for_events_wakes_when_another_process_writes_one(open_store: OpenStore) -> None:
    reader, writer = open_store(), open_store()
    reader.wait_for_events(0, 0.01)  # warm up (connections, listeners)
    seen = reader.last_event_seq()
    timer = threading.Timer(0.3, lambda: writer.enqueue([new("a")], T0))
    started = time.monotonic()
    timer.start()
    reader.wait_for_events(seen, 20.0)
    timer.join()
    assert time.monotonic() - started < 10.0, "wait_for_events slept out its timeout instead of waking"
    assert [e.job_id for e in reader.events(EventQuery(after=seen))] == ["a"]


def test_wait_for_events_returns_at_once_when_events_are_there(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    started = time.monotonic()
    backend.wait_for_events(0, 20.0)
    assert time.monotonic() - started < 10.0


def test_wait_for_events_times_out_when_nothing_comes(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    started = time.monotonic()
    backend.wait_for_events(backend.last_event_seq(), 0.3)
    assert 0.2 <= time.monotonic() - started < 10.0


# pruning ---------------------------------------------------------------------------------------------------------
def test_prune_deletes_the_pruned_jobs_events_with_them(backend: Backend) -> None:
    backend.enqueue([new("old", result_ttl=10.0), new("kept", result_ttl=1000.0), new("queued")], T0)
    for job in backend.claim(["q"], "w1", 2, LEASE, T0):
        backend.finish(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 1)
    assert backend.prune(T0 + 100) == 1
    assert kinds(backend, "old") == []
    assert kinds(backend, "kept") == ["enqueued", "started", "succeeded"]
    assert kinds(backend, "queued") == ["enqueued"]
    assert backend.prune(T0 + 100, finished_before=T0 + 2) == 1
    assert kinds(backend, "kept") == [] and kinds(backend, "queued") == ["enqueued"]


def test_prune_events_deletes_events_written_before_a_time(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    backend.enqueue([new("b")], T0 + 10)
    backend.enqueue([new("c")], T0 + 20)
    assert backend.prune_events(T0 + 10) == 1
    assert [e.job_id for e in log(backend)] == ["b", "c"]
    assert backend.prune_events(T0 + 10) == 0
    assert backend.prune_events(T0 + 21) == 2
    assert log(backend) == []


def test_a_seq_is_never_given_again_after_pruning(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b")], T0)
    newest = backend.last_event_seq()
    assert backend.prune_events(T0 + 1) == 2
    backend.enqueue([new("c")], T0 + 2)
    assert [(e.job_id, e.seq > newest) for e in log(backend)] == [("c", True)]
    job = backend.start("c", "w1", LEASE, T0 + 2)
    assert job is not None
    backend.finish("c", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 3)
    newest = backend.last_event_seq()
    assert backend.prune(T0 + 1000) == 1 and kinds(backend, "c") == []  # the newest events went with their job
    backend.enqueue([new("d")], T0 + 4)
    assert log(backend, job_id="d")[0].seq > newest


def test_a_seq_is_never_given_again_after_everything_is_deleted(backend: Backend) -> None:
    backend.enqueue([new("a")], T0)
    assert backend.set_switch(SwitchScope.QUEUE, "q", True, T0 + 1)  # a row of its own, not a batch row
    newest = backend.last_event_seq()
    assert backend.prune_events(T0 + 2) == 2 and log(backend) == []
    assert backend.last_event_seq() >= newest  # where a subscriber that wants only new events starts
    assert backend.set_switch(SwitchScope.QUEUE, "q", False, T0 + 3)  # the first event after: a row of its own
    (resumed,) = log(backend)
    assert resumed.seq > newest
    backend.destroy_all()
    assert log(backend) == []
    backend.enqueue([new("b")], T0 + 4)  # the first event after: a batch row
    (enqueued,) = log(backend)
    assert enqueued.seq > resumed.seq and enqueued.job_id == "b"


def test_a_discarded_jobs_history_stays_its_own(backend: Backend) -> None:
    backend.enqueue([new("gone")], T0)
    job = claim_one(backend)
    backend.finish("gone", token(job), Outcome(kind=OutcomeKind.DISCARDED), T0 + 1)
    assert kinds(backend, "gone") == ["enqueued", "started", "discarded"]
    backend.enqueue([new("after")], T0 + 2)  # the newest job was deleted: a store may reuse its row's place
    assert kinds(backend, "after") == ["enqueued"]
    assert kinds(backend, "gone") == ["enqueued", "started", "discarded"]
    job = claim_one(backend, now=T0 + 3)
    backend.finish("after", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 3)
    assert backend.prune(T0 + 1000) == 1
    assert kinds(backend, "after") == [] and kinds(backend, "gone") == ["enqueued", "started", "discarded"]
