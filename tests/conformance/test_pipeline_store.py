"""The pipeline part of the storage contract (conveyor/backends/base.py: ``finish`` with a record,
``requeue`` with ``first``, ``Waits``, ``Notifications``), against every store. The outcomes are
built by hand here, as conveyor.pipeline would decide them: a store only writes them."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import msgspec
import pytest

from conveyor.backends import Backend
from conveyor.backends.base import Outcome, OutcomeKind, Report
from conveyor.events import Event, EventQuery, outcome_event
from conveyor.job import Job, JobError, NewJob, Status
from conveyor.messages import Delivery, NewMessage
from conveyor.outcome import NextStage, Notice, StageRecord

from .conftest import OpenStore
from .jobdata import LEASE, T0, claim_one, new, stored, token
from .threads import at_once

FLAKY = JobError("OSError", "flaky", "tb")
SETTINGS = {"kws": {"user": 7}, "restart": "stage", "timeout": 3600.0}


def pipeline(job_id: str, **fields: Any) -> NewJob:
    """A pipeline job at its first stage (queue q, task tests.task), with its pipeline's settings."""
    base = {"stages": [{"task": "tests.task"}, {"task": "tests.next"}], "pipeline": SETTINGS, "owner": "ann"}
    return msgspec.structs.replace(new(job_id), **{**base, **fields})


def step(stage: int, **fields: Any) -> NextStage:
    """A next stage: queued on q at T0 as task tests.next, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "stage": stage, "task": "tests.next", "queue": "q", "args": [stage], "kwargs": {"k": "v"},
        "timeout": None, "scheduled_at": T0,
    }  # fmt: skip
    return NextStage(**{**values, **fields})


def record(stage: int, results: list[Any], nxt: NextStage | None = None, done: int | None = None) -> StageRecord:
    """A stage record whose log says each stage of ``results`` succeeded."""
    stage_log = [{"stage": i, "status": "succeeded", "at": T0 + i} for i in range(len(results))]
    return StageRecord(stage=stage, results=results, stage_log=stage_log, next=nxt, done=done)


def advanced(nxt: NextStage, results: list[Any], done: int = 0) -> Outcome:
    """ADVANCED from stage ``done`` to ``nxt``."""
    return Outcome(kind=OutcomeKind.ADVANCED, record=record(nxt.stage, results, nxt, done))


def running(backend: Backend, job_id: str = "p", now: float = T0, **fields: Any) -> Job:
    """A pipeline job enqueued and claimed (running at stage 0)."""
    backend.enqueue([pipeline(job_id, **fields)], now)
    return claim_one(backend, now=now)


def log(backend: Backend, job_id: str | None = None, **filters: Any) -> list[Event]:
    """A job's events (or every event), oldest first."""
    return backend.events(EventQuery(job_id=job_id, **filters))


def kinds(backend: Backend, job_id: str) -> list[str]:
    """The kinds of a job's events, in order."""
    return [event.kind for event in log(backend, job_id)]


def message(message_id: str, name: str = "approve", payload: Any = None) -> NewMessage:
    """A message for the stage named ``name``."""
    return NewMessage(id=message_id, name=name, payload={"ok": True} if payload is None else payload)


# insert, claim ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True], ids=["one", "batch"])
def test_a_waiting_pipeline_job_is_inserted_with_its_wait_and_settings(backend: Backend, batch: bool) -> None:
    waiting = pipeline(
        "w", status=Status.WAITING, wait_until=T0 + 60, waiting_for="approve", deadline=T0 + 3600, notify=True
    )
    jobs = [waiting, pipeline("other", owner=None)] if batch else [waiting]
    returned = backend.enqueue(jobs, T0)
    for job in (returned[0], stored(backend, "w")):
        assert job.status is Status.WAITING
        assert (job.wait_until, job.waiting_for, job.deadline) == (T0 + 60, "approve", T0 + 3600)
        assert (job.owner, job.notify, job.pipeline) == ("ann", True, SETTINGS)
        assert (job.inbox, job.stage_log, job.results, job.stage) == (None, [], [], 0)
    if batch:
        other = stored(backend, "other")
        assert (other.status, other.owner, other.notify, other.wait_until) == (Status.QUEUED, None, False, None)
    assert [e.kind for e in log(backend, "w")] == ["enqueued"]


@pytest.mark.parametrize("batch", [False, True], ids=["one", "batch"])
def test_notify_is_stored_as_given_whatever_wakes_event_readers(backend: Backend, batch: bool) -> None:
    """PostgreSQL once named its readers' wake-up flag like the column, and an enqueue of one job
    stored notify=True for every owner who had asked for none."""
    jobs = [pipeline("quiet", notify=False), pipeline("loud", notify=True)]
    for job in [jobs] if batch else [[j] for j in jobs]:
        backend.enqueue(job, T0)
    assert (stored(backend, "quiet").notify, stored(backend, "loud").notify) == (False, True)
    chained = Outcome(kind=OutcomeKind.SUCCEEDED, result=1, then=pipeline("next", notify=False))
    first = claim_one(backend)
    assert backend.finish(first.id, token(first), chained, T0 + 1)
    assert stored(backend, "next").notify is False


def test_claim_never_takes_a_waiting_job(backend: Backend) -> None:
    backend.enqueue([pipeline("w", status=Status.WAITING, wait_until=T0), pipeline("q")], T0)
    assert [job.id for job in backend.claim(["q"], "w1", 10, LEASE, T0 + 100)] == ["q"]
    assert backend.start("w", "eager", LEASE, T0) is None
    assert stored(backend, "w").status is Status.WAITING
    assert backend.counts(T0)[("q", Status.WAITING)] == 1


# finish: ADVANCED, pipeline RETRY --------------------------------------------------------------------------
def test_advanced_writes_the_next_stage_and_a_stage_done_event(backend: Backend) -> None:
    job = running(backend, deadline=T0 + 500)
    assert backend.progress("p", token(job), 50.0, "half", T0 + 1)
    nxt = step(1, task="tests.ship", queue="ship", args=[1, "a"], kwargs={"z": 1}, timeout=9.5, scheduled_at=T0 + 5,
               deadline=T0 + 400)  # fmt: skip
    outcome = advanced(nxt, [{"r": 0}])
    assert outcome.record is not None
    assert backend.finish("p", token(job), outcome, T0 + 2)
    got = stored(backend, "p")
    assert (got.status, got.stage, got.task, got.queue) == (Status.QUEUED, 1, "tests.ship", "ship")
    assert (got.args, got.kwargs, got.timeout) == ([1, "a"], {"z": 1}, 9.5)
    assert (got.scheduled_at, got.wait_until, got.waiting_for, got.deadline) == (T0 + 5, None, None, T0 + 400)
    assert (got.results, got.stage_log) == ([{"r": 0}], outcome.record.stage_log)
    assert (got.token, got.lease_expires_at, got.progress, got.progress_message) == (None, None, 0.0, "")
    assert (got.error, got.inbox, got.retries, got.attempts) == (None, None, 0, 1)
    assert (got.owner, got.pipeline, got.stages) == ("ann", SETTINGS, pipeline("x").stages)
    event = log(backend, "p")[-1]
    assert (event.kind, event.at, event.data) == ("stage_done", T0 + 2, {"stage": 0, "next": 1})
    assert event.data == json.loads(outcome_event(outcome)[1])
    assert backend.claim(["ship"], "w1", 1, LEASE, T0 + 4) == []
    assert claim_one(backend, now=T0 + 5, queues=("ship",)).stage == 1


def test_advanced_to_a_timer_leaves_the_job_waiting(backend: Backend) -> None:
    job = running(backend)
    nxt = step(1, task="conveyor.timer", waiting=True, wait_until=T0 + 30, scheduled_at=T0 + 30)
    outcome = Outcome(kind=OutcomeKind.ADVANCED, record=StageRecord(
        stage=1, results=[1], stage_log=[], next=nxt, done=0, skipped=[]))  # fmt: skip
    assert backend.finish("p", token(job), outcome, T0 + 1)
    got = stored(backend, "p")
    assert (got.status, got.stage, got.wait_until, got.waiting_for) == (Status.WAITING, 1, T0 + 30, None)
    assert log(backend, "p")[-1].data == {"stage": 0, "next": 1, "waiting": "timer"}
    assert backend.claim(["q"], "w1", 1, LEASE, T0 + 100) == []


def test_a_stale_advanced_writes_nothing(backend: Backend) -> None:
    job = running(backend)
    backend.send_message("p", message("m1"), T0 + 1)
    backend.cancel("p", T0 + 2)
    before = backend.last_event_seq()
    nxt = step(1, waiting=True, waiting_for="approve", wait_until=T0 + 99)
    assert backend.finish("p", token(job), advanced(nxt, [1]), T0 + 3) is False
    got = stored(backend, "p")
    assert (got.status, got.stage, got.task, got.results) == (Status.CANCELLED, 0, "tests.task", [])
    assert backend.last_event_seq() == before
    assert [m.consumed_at for m in backend.messages("p")] == [None]


def test_a_lease_guarded_advanced_is_fenced_like_any_finish(backend: Backend) -> None:
    job = running(backend)
    guarded = advanced(step(1), [1])
    guarded.lease_before = T0 + 1  # the lease runs to T0 + LEASE: the guard refuses
    assert backend.finish_many([Report("p", token(job), guarded)], T0 + 2) == [False]
    assert stored(backend, "p").status is Status.RUNNING


def test_advanced_to_a_message_already_in_the_mailbox_resumes_at_once(backend: Backend) -> None:
    job = running(backend)
    assert backend.send_message("p", message("other", name="else"), T0 + 1) is Delivery.STORED
    assert backend.send_message("p", message("m1", payload=[1, {"a": "é"}]), T0 + 2) is Delivery.STORED
    assert backend.send_message("p", message("m2", payload="second"), T0 + 3) is Delivery.STORED
    nxt = step(1, task="conveyor.message", waiting=True, waiting_for="approve", wait_until=T0 + 99)
    assert backend.finish("p", token(job), advanced(nxt, [0]), T0 + 4)
    got = stored(backend, "p")
    assert (got.status, got.stage, got.scheduled_at, got.wait_until) == (Status.QUEUED, 1, T0 + 4, None)
    assert (got.waiting_for, got.inbox) == ("approve", {"id": "m1", "payload": [1, {"a": "é"}]})
    mailbox = {m.id: m for m in backend.messages("p")}
    assert (mailbox["m1"].consumed_at, mailbox["m1"].stage) == (T0 + 4, 1)
    assert (mailbox["m2"].consumed_at, mailbox["other"].consumed_at) == (None, None)
    done, resumed = log(backend, "p")[-2:]
    assert (done.kind, resumed.kind, resumed.at) == ("stage_done", "resumed", T0 + 4)
    assert resumed.data == {"stage": 1, "by": "message", "message_id": "m1"}
    again = claim_one(backend, now=T0 + 4)
    assert again.inbox == {"id": "m1", "payload": [1, {"a": "é"}]}
    assert backend.finish("p", token(again), advanced(step(2), [0, [1]], done=1), T0 + 5)
    assert stored(backend, "p").inbox is None  # the next stage starts without it


def test_advanced_to_a_message_wait_with_an_empty_mailbox_waits(backend: Backend) -> None:
    job = running(backend)
    backend.send_message("p", message("x", name="else"), T0 + 1)
    nxt = step(1, waiting=True, waiting_for="approve", wait_until=T0 + 99, deadline=T0 + 50)
    assert backend.finish("p", token(job), advanced(nxt, [0]), T0 + 2)
    got = stored(backend, "p")
    assert (got.status, got.waiting_for, got.wait_until, got.deadline) == (Status.WAITING, "approve", T0 + 99, T0 + 50)
    assert log(backend, "p")[-1].kind == "stage_done"


def test_a_pipeline_retry_restarts_a_stage_using_a_retry_and_keeping_the_error(backend: Backend) -> None:
    job = running(backend)
    first = step(0, task="tests.task", args=[0], scheduled_at=T0 + 10, deadline=T0 + 900)
    outcome = Outcome(kind=OutcomeKind.RETRY, error=FLAKY, exit_code=1, retry_at=T0 + 10,
                      record=record(0, [], first))  # fmt: skip
    assert backend.finish("p", token(job), outcome, T0 + 1)
    got = stored(backend, "p")
    assert (got.status, got.stage, got.scheduled_at, got.deadline) == (Status.QUEUED, 0, T0 + 10, T0 + 900)
    assert (got.retries, got.error, got.exit_code, got.token) == (1, FLAKY, 1, None)
    assert got.args == [0]
    event = log(backend, "p")[-1]
    assert (event.kind, event.data) == ("retry_scheduled", json.loads(outcome_event(outcome)[1]))
    again = claim_one(backend, now=T0 + 10)
    assert backend.finish("p", token(again), advanced(step(1), [5]), T0 + 11)
    after = stored(backend, "p")
    assert (after.retries, after.error, after.exit_code) == (1, None, None)  # ADVANCED clears the error


# finish: SUCCEEDED, FAILED with a record, then, notice ------------------------------------------------------
def test_succeeded_and_failed_with_a_record_write_the_stages(backend: Backend) -> None:
    backend.enqueue([pipeline("ok"), pipeline("bad")], T0)
    ok, bad = backend.claim(["q"], "w1", 2, LEASE, T0)
    kept = record(1, [1, {"total": 3}])
    win = Outcome(kind=OutcomeKind.SUCCEEDED, result={"total": 3}, exit_code=0, record=kept)
    lose = Outcome(kind=OutcomeKind.FAILED, error=FLAKY, exit_code=1, record=record(1, [1, None]))
    assert backend.finish_many([Report("ok", token(ok), win), Report("bad", token(bad), lose)], T0 + 1) == [True, True]
    done = stored(backend, "ok")
    assert (done.status, done.result, done.stage) == (Status.SUCCEEDED, {"total": 3}, 1)
    assert (done.results, done.stage_log) == ([1, {"total": 3}], kept.stage_log)  # as the record says
    failed = stored(backend, "bad")
    assert (failed.status, failed.error, failed.stage, failed.results) == (Status.FAILED, FLAKY, 1, [1, None])
    assert [kinds(backend, "ok")[-1], kinds(backend, "bad")[-1]] == ["succeeded", "failed"]


def test_a_stale_finish_with_a_record_then_and_notice_writes_none_of_them(backend: Backend) -> None:
    job = running(backend, notify=True)
    backend.cancel("p", T0 + 1)
    notice = Notice(owner="ann", job_id="p", status="succeeded", exit_code=0, data={"task": "tests.task"})
    outcome = Outcome(kind=OutcomeKind.SUCCEEDED, result=1, record=record(1, [0, 1]), then=new("child"), notice=notice)
    assert backend.finish("p", token(job), outcome, T0 + 2) is False
    assert backend.get("child") is None
    assert backend.notifications(None, False, 10) == []
    assert (stored(backend, "p").stage, stored(backend, "p").results) == (0, [])


def test_then_is_enqueued_with_its_event_after_the_finish(backend: Backend) -> None:
    job = running(backend)
    child = pipeline("child", status=Status.WAITING, wait_until=T0 + 7, queue="next")
    outcome = Outcome(kind=OutcomeKind.SUCCEEDED, result=1, record=record(1, [0, 1]), then=child)
    assert backend.finish("p", token(job), outcome, T0 + 1)
    got = stored(backend, "child")
    assert (got.status, got.queue, got.wait_until, got.created_at) == (Status.WAITING, "next", T0 + 7, T0 + 1)
    order = [(e.kind, e.job_id) for e in log(backend) if e.at == T0 + 1]
    assert order == [("succeeded", "p"), ("enqueued", "child")]


def test_a_then_whose_key_or_id_is_taken_inserts_nothing_and_keeps_the_finish(backend: Backend) -> None:
    backend.enqueue([new("holder", key="k", queue="other"), new("taken", queue="other")], T0)
    backend.enqueue([pipeline("a"), pipeline("b")], T0)
    a, b = backend.claim(["q"], "w1", 2, LEASE, T0)
    keyed = msgspec.structs.replace(new("fresh", queue="other"), key="k")
    reports = [
        Report("a", token(a), Outcome(kind=OutcomeKind.SUCCEEDED, result=1, then=keyed)),
        Report("b", token(b), Outcome(kind=OutcomeKind.SUCCEEDED, result=2, then=new("taken", args=["new"]))),
    ]
    assert backend.finish_many(reports, T0 + 1) == [True, True]
    assert backend.get("fresh") is None
    assert stored(backend, "taken").args == [1, "two"]  # the job that had the id, unchanged
    assert (stored(backend, "a").status, stored(backend, "b").status) == (Status.SUCCEEDED, Status.SUCCEEDED)
    assert [e.job_id for e in log(backend, kinds=("enqueued",))] == ["holder", "taken", "a", "b"]


def test_a_notice_is_stored_with_the_finish_that_writes_it(backend: Backend) -> None:
    job = running(backend, notify=True)
    data = {"task": "tests.task", "results": [1, {"x": None}], "error": None, "stage": 1}
    notice = Notice(owner="ann", job_id="p", status="succeeded", exit_code=0, data=data)
    outcome = Outcome(kind=OutcomeKind.SUCCEEDED, result=1, exit_code=0, record=record(1, [1, 2]), notice=notice)
    assert backend.finish("p", token(job), outcome, T0 + 3)
    (note,) = backend.notifications("ann", False, 10)
    assert (note.owner, note.job_id, note.at, note.status, note.exit_code) == ("ann", "p", T0 + 3, "succeeded", 0)
    assert (note.data, note.read) == (data, False)


# send_message, messages ---------------------------------------------------------------------------------------
def test_send_message_to_no_job_or_a_finished_one_stores_nothing(backend: Backend) -> None:
    assert backend.send_message("missing", message("m"), T0) is Delivery.NOT_FOUND
    job = running(backend)
    backend.finish("p", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 1)
    before = backend.last_event_seq()
    assert backend.send_message("p", message("m"), T0 + 2) is Delivery.FINISHED
    assert backend.messages("p") == [] and backend.messages("missing") == []
    assert backend.last_event_seq() == before


def test_send_message_to_a_running_job_stores_it_with_an_event(backend: Backend) -> None:
    running(backend)
    assert backend.send_message("p", message("m1", payload={"n": [1, 2]}), T0 + 1) is Delivery.STORED
    (stored_message,) = backend.messages("p")
    assert (stored_message.job_id, stored_message.id, stored_message.name) == ("p", "m1", "approve")
    assert (stored_message.payload, stored_message.at) == ({"n": [1, 2]}, T0 + 1)
    assert (stored_message.consumed_at, stored_message.stage) == (None, None)
    event = log(backend, "p")[-1]
    assert (event.kind, event.at, event.data) == ("message_received", T0 + 1, {"name": "approve", "message_id": "m1"})
    assert stored(backend, "p").status is Status.RUNNING


def test_send_message_resumes_a_job_waiting_on_that_name(backend: Backend) -> None:
    waiting = pipeline("w", status=Status.WAITING, waiting_for="approve", wait_until=T0 + 60)
    backend.enqueue([waiting, pipeline("v", status=Status.WAITING, waiting_for="other")], T0)
    assert backend.send_message("v", message("m0"), T0 + 1) is Delivery.STORED
    assert stored(backend, "v").status is Status.WAITING
    assert backend.send_message("w", message("m1", payload=["yes"]), T0 + 2) is Delivery.RESUMED
    got = stored(backend, "w")
    assert (got.status, got.scheduled_at, got.wait_until, got.waiting_for) == (Status.QUEUED, T0 + 2, None, "approve")
    assert got.inbox == {"id": "m1", "payload": ["yes"]}
    (taken,) = backend.messages("w")
    assert (taken.consumed_at, taken.stage) == (T0 + 2, 0)
    assert kinds(backend, "w") == ["enqueued", "message_received", "resumed"]
    assert log(backend, "w")[-1].data == {"stage": 0, "by": "message", "message_id": "m1"}
    assert claim_one(backend, now=T0 + 2).id == "w"


def test_a_repeated_message_id_is_a_duplicate_even_once_the_job_finished(backend: Backend) -> None:
    backend.enqueue([pipeline("w", status=Status.WAITING, waiting_for="approve")], T0)
    assert backend.send_message("w", message("m1"), T0 + 1) is Delivery.RESUMED
    before = backend.last_event_seq()
    assert backend.send_message("w", message("m1", payload="changed"), T0 + 2) is Delivery.DUPLICATE
    assert backend.last_event_seq() == before
    job = claim_one(backend, now=T0 + 2)
    backend.finish("w", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 3)
    assert backend.send_message("w", message("m1"), T0 + 4) is Delivery.DUPLICATE
    assert backend.send_message("w", message("m2"), T0 + 4) is Delivery.FINISHED
    assert [(m.id, m.payload) for m in backend.messages("w")] == [("m1", {"ok": True})]


def test_concurrent_sends_of_one_message_store_it_once(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(10)]
    stores[0].enqueue([pipeline("w", status=Status.WAITING, waiting_for="approve")], T0)
    answers: list[Delivery] = []

    def send(store: Backend) -> None:
        answers.append(store.send_message("w", message("once"), T0 + 1))

    assert at_once([partial(send, store) for store in stores]) == []
    assert sorted(answers) == sorted([Delivery.RESUMED] + [Delivery.DUPLICATE] * 9)
    assert len(stores[0].messages("w")) == 1
    assert kinds(stores[0], "w") == ["enqueued", "message_received", "resumed"]


def test_messages_are_listed_oldest_first_then_in_the_order_sent(backend: Backend) -> None:
    running(backend)
    backend.send_message("p", message("late"), T0 + 5)
    backend.send_message("p", message("b", name="x"), T0 + 1)
    backend.send_message("p", message("a", name=""), T0 + 1)
    backend.send_message("p", message("early"), T0)
    assert [m.id for m in backend.messages("p")] == ["early", "b", "a", "late"]
    running(backend, "other")
    backend.send_message("other", message("mine"), T0)
    assert [m.id for m in backend.messages("other")] == ["mine"]


# release_waits ----------------------------------------------------------------------------------------------
def test_release_waits_queues_ended_timers_and_runs_out_budgets(backend: Backend) -> None:
    backend.enqueue([
        pipeline("timer", status=Status.WAITING, wait_until=T0 + 10),
        pipeline("message", status=Status.WAITING, waiting_for="approve", wait_until=T0 + 20),
        pipeline("budget", status=Status.WAITING, waiting_for="approve", deadline=T0 + 5),
        pipeline("both", status=Status.WAITING, wait_until=T0 + 3, deadline=T0 + 3),
        pipeline("later", status=Status.WAITING, wait_until=T0 + 100, deadline=T0 + 200),
        pipeline("queued", deadline=T0),
    ], T0)  # fmt: skip
    assert backend.release_waits(T0 + 2, 100) == 0
    assert backend.release_waits(T0 + 10, 100) == 3
    statuses = {job_id: stored(backend, job_id).status for job_id in ("timer", "budget", "both", "message", "later")}
    assert statuses == {"timer": Status.QUEUED, "budget": Status.QUEUED, "both": Status.QUEUED,
                        "message": Status.WAITING, "later": Status.WAITING}  # fmt: skip
    timer = stored(backend, "timer")
    assert (timer.scheduled_at, timer.wait_until, timer.stage) == (T0 + 10, T0 + 10, 0)  # wait_until kept
    resumed = {e.job_id: e.data for e in log(backend, kinds=("resumed",))}
    assert resumed == {"timer": {"stage": 0, "by": "timer"}, "budget": {"stage": 0, "by": "deadline"},
                       "both": {"stage": 0, "by": "deadline"}}  # fmt: skip
    assert backend.release_waits(T0 + 300, 1) == 1
    assert stored(backend, "message").status is Status.QUEUED  # the earliest ended first
    assert stored(backend, "later").status is Status.WAITING
    assert backend.release_waits(T0 + 300, 1) == 1
    assert backend.release_waits(T0 + 300, 1) == 0
    assert {job.id for job in backend.claim(["q"], "w1", 10, LEASE, T0 + 300)} == {
        "timer", "message", "budget", "both", "later", "queued",
    }  # fmt: skip


# requeue with first -----------------------------------------------------------------------------------------
def test_requeue_with_first_starts_a_succeeded_pipeline_over(backend: Backend) -> None:
    job = running(backend)
    backend.finish("p", token(job), advanced(step(1), [{"r": 0}]), T0 + 1)
    job = claim_one(backend, now=T0 + 1)
    done = Outcome(kind=OutcomeKind.SUCCEEDED, result=2, exit_code=0, record=record(1, [{"r": 0}, 2]))
    backend.finish("p", token(job), done, T0 + 2)
    assert stored(backend, "p").status is Status.SUCCEEDED
    assert backend.requeue("p", T0 + 3, reset=True) is not None
    assert stored(backend, "p").status is Status.SUCCEEDED  # without first: a succeeded job stays
    first = step(0, task="tests.task", args=[0], scheduled_at=T0 + 3, deadline=T0 + 3603)
    got = backend.requeue("p", T0 + 3, reset=True, first=first)
    assert got is not None and got == stored(backend, "p")
    assert (got.status, got.stage, got.task, got.args, got.kwargs) == (Status.QUEUED, 0, "tests.task", [0], {"k": "v"})
    assert (got.scheduled_at, got.deadline, got.wait_until, got.waiting_for) == (T0 + 3, T0 + 3603, None, None)
    assert (got.results, got.stage_log, got.inbox, got.result, got.error) == ([], [], None, None, None)
    assert (got.attempts, got.retries, got.finished_at, got.exit_code, got.expires_at) == (0, 0, None, None, None)
    event = log(backend, "p")[-1]
    assert (event.kind, event.data, event.attempt) == ("requeued", {"reset": True}, 0)
    assert claim_one(backend, now=T0 + 3).id == "p"


def test_requeue_with_a_first_stage_that_waits_leaves_the_job_waiting(backend: Backend) -> None:
    job = running(backend)
    backend.finish("p", token(job), Outcome(kind=OutcomeKind.FAILED, error=FLAKY, exit_code=1), T0 + 1)
    first = step(0, task="conveyor.timer", waiting=True, wait_until=T0 + 50, scheduled_at=T0 + 50)
    got = backend.requeue("p", T0 + 2, reset=True, first=first)
    assert got is not None
    assert (got.status, got.wait_until, got.task, got.error) == (Status.WAITING, T0 + 50, "conveyor.timer", None)
    assert backend.claim(["q"], "w1", 1, LEASE, T0 + 100) == []
    assert backend.release_waits(T0 + 50, 10) == 1


def test_requeue_with_a_first_stage_empties_the_mailbox(backend: Backend) -> None:
    job = running(backend)
    backend.send_message("p", message("early", payload=7), T0 + 1)
    backend.finish("p", token(job), Outcome(kind=OutcomeKind.FAILED, error=FLAKY, exit_code=1), T0 + 2)
    first = step(0, task="conveyor.message", waiting=True, waiting_for="approve", wait_until=T0 + 90)
    got = backend.requeue("p", T0 + 3, reset=True, first=first)
    assert got is not None
    assert (got.status, got.waiting_for, got.inbox) == (Status.WAITING, "approve", None)
    assert backend.messages("p") == []  # a fresh start: nothing sent before is kept, so it may come again
    assert backend.send_message("p", message("early", payload=8), T0 + 4) is Delivery.RESUMED
    assert stored(backend, "p").inbox == {"id": "early", "payload": 8}


# notifications ----------------------------------------------------------------------------------------------
def notify(backend: Backend, job_id: str, owner: str, now: float) -> None:
    """Run a job to success with a notice for ``owner`` at ``now``."""
    job = running(backend, job_id, now=now, owner=owner, notify=True)
    notice = Notice(owner=owner, job_id=job_id, status="succeeded", exit_code=0, data={"n": job_id})
    assert backend.finish(job_id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED, notice=notice), now)


def test_notifications_newest_first_by_owner_and_unread(backend: Backend) -> None:
    notify(backend, "a", "ann", T0 + 1)
    notify(backend, "b", "bob", T0 + 2)
    notify(backend, "c", "ann", T0 + 3)
    assert [n.job_id for n in backend.notifications(None, False, 10)] == ["c", "b", "a"]
    assert [n.job_id for n in backend.notifications(None, False, 2)] == ["c", "b"]
    anns = backend.notifications("ann", False, 10)
    assert [(n.job_id, n.owner, n.data, n.read) for n in anns] == [("c", "ann", {"n": "c"}, False),
                                                                   ("a", "ann", {"n": "a"}, False)]  # fmt: skip
    assert anns[0].id > anns[1].id
    bobs = backend.notifications("bob", True, 10)
    assert backend.notifications("nobody", False, 10) == []
    assert backend.mark_read("ann", [anns[1].id, bobs[0].id]) == 1  # bob's note is not ann's to mark
    assert [n.job_id for n in backend.notifications("ann", True, 10)] == ["c"]
    assert [n.job_id for n in backend.notifications("bob", True, 10)] == ["b"]
    assert [(n.job_id, n.read) for n in backend.notifications("ann", False, 10)] == [("c", False), ("a", True)]
    assert backend.mark_read("ann", None) == 1
    assert backend.mark_read("ann", None) == 0
    assert [n.job_id for n in backend.notifications(None, True, 10)] == ["b"]
    assert backend.mark_read("bob", []) == 0


def test_prune_notifications_deletes_older_ones_only(backend: Backend) -> None:
    notify(backend, "a", "ann", T0 + 1)
    notify(backend, "b", "ann", T0 + 2)
    notify(backend, "c", "bob", T0 + 3)
    assert backend.prune_notifications(T0 + 2.5) == 2
    assert [n.job_id for n in backend.notifications(None, False, 10)] == ["c"]
    assert backend.prune_notifications(T0 + 2.5) == 0


# prune, discard, destroy_all --------------------------------------------------------------------------------
def test_prune_and_discard_delete_the_jobs_messages(backend: Backend) -> None:
    backend.enqueue([pipeline("done"), pipeline("gone"), pipeline("kept")], T0)
    jobs = {job.id: job for job in backend.claim(["q"], "w1", 3, LEASE, T0)}
    for job_id in jobs:
        backend.send_message(job_id, message(f"m-{job_id}"), T0 + 1)
    backend.finish("done", token(jobs["done"]), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 2)
    assert backend.finish("gone", token(jobs["gone"]), Outcome(kind=OutcomeKind.DISCARDED), T0 + 2)
    assert backend.messages("gone") == []
    assert backend.prune(T0, finished_before=T0 + 3) == 1
    assert backend.messages("done") == []
    assert [m.id for m in backend.messages("kept")] == ["m-kept"]


def test_destroy_all_empties_the_mailboxes_and_notifications(backend: Backend) -> None:
    notify(backend, "a", "ann", T0 + 1)
    running(backend, "b")
    backend.send_message("b", message("m"), T0 + 2)
    backend.destroy_all()
    assert backend.notifications(None, False, 10) == []
    assert backend.messages("b") == []
    running(backend, "b")
    assert backend.send_message("b", message("m"), T0 + 3) is Delivery.STORED  # the id is free again


def test_a_plain_batch_reads_back_as_the_record_enqueue_returned(backend: Backend) -> None:
    """SQLite binds only a plain job's own columns (insert_plain): every other column's default
    must be what a NewJob's default says, so the job reads back as the record enqueue returned."""
    from conveyor.backends.columns import is_plain

    jobs = [new("p1"), new("p2", key=None), msgspec.structs.replace(new("p3"), timeout=5.0, result_ttl=60.0)]
    assert all(is_plain(job) for job in jobs)
    returned = backend.enqueue(jobs, T0)
    assert [stored(backend, job.id) for job in jobs] == returned
    assert not is_plain(pipeline("p4")) and not is_plain(msgspec.structs.replace(new("p5"), owner="ann"))
