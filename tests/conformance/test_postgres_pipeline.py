"""What only the PostgreSQL store's pipeline part has to get right (test_pipeline_store.py pins the
contract for every store): idle workers are woken, through the jobs' trigger, when a wait ends,
a message resumes a job or a stage is queued; concurrent senders and a finish racing a send take
turns on the job's row; a batch mixing plain and pipeline reports is written by both of finish_many's paths."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

psycopg = pytest.importorskip("psycopg")

from conveyor.backends.base import Outcome, OutcomeKind, Report  # noqa: E402
from conveyor.backends.postgres import PostgresBackend  # noqa: E402
from conveyor.events import EventQuery  # noqa: E402
from conveyor.job import NewJob, Status  # noqa: E402
from conveyor.messages import Delivery, NewMessage  # noqa: E402
from conveyor.outcome import NextStage, Notice, StageRecord  # noqa: E402

from .jobdata import LEASE, T0, claim_one, new, stored, token  # noqa: E402

#: Seconds a woken wait may take at most (its timeout is far longer): it was woken, not timed out.
WOKEN = 5.0


@pytest.fixture
def store(pg_store: PostgresBackend) -> PostgresBackend:
    return pg_store


@pytest.fixture
def listener(postgres_url: str) -> Iterator[Any]:
    """A session listening on the workers' channel, as an idle worker's does."""
    conn = psycopg.connect(postgres_url, autocommit=True)
    conn.execute("LISTEN conveyor_jobs")
    yield conn
    conn.close()


def heard(listener: Any, timeout: float = 0.5) -> list[str]:
    """The queues named by the notifications heard within ``timeout``."""
    return [note.payload for note in listener.notifies(timeout=timeout, stop_after=10)]


def pipeline(job_id: str, **fields: Any) -> NewJob:
    return msgspec.structs.replace(new(job_id), stages=[{"task": "a"}, {"task": "b"}], pipeline={}, **fields)


def step(stage: int, **fields: Any) -> NextStage:
    values: dict[str, Any] = {"stage": stage, "task": "tests.next", "queue": "q", "args": [], "kwargs": {},
                              "timeout": None, "scheduled_at": T0}  # fmt: skip
    return NextStage(**{**values, **fields})


def advanced(nxt: NextStage) -> Outcome:
    return Outcome(kind=OutcomeKind.ADVANCED, record=StageRecord(stage=nxt.stage, results=[1], stage_log=[], next=nxt))


def kinds(store: PostgresBackend, job_id: str) -> list[str]:
    return [event.kind for event in store.events(EventQuery(job_id=job_id))]


def test_a_batch_takes_each_jobs_status_and_wakes_workers_of_queued_ones_only(
    store: PostgresBackend, listener: Any
) -> None:
    """COPY writes the status from the row: a waiting job in a batch stays waiting, and only the
    queues of its queued jobs are notified."""
    jobs = [
        pipeline("w1", queue="waits", status=Status.WAITING, wait_until=T0 + 10),
        pipeline("w2", queue="waits", status=Status.WAITING, waiting_for="go"),
        new("plain", queue="work"),
    ]
    store.enqueue(jobs, T0)
    assert [stored(store, j).status for j in ("w1", "w2", "plain")] == [Status.WAITING, Status.WAITING, Status.QUEUED]
    assert stored(store, "w2").waiting_for == "go"
    assert heard(listener) == ["work"]


def test_a_released_wait_wakes_an_idle_worker(store: PostgresBackend, postgres_url: str) -> None:
    """A worker idle in wait_for_work (nothing queued: it would sleep its whole timeout) wakes when
    the leader's release_waits queues a job of its queue."""
    store.enqueue([pipeline("t", status=Status.WAITING, wait_until=T0 + 5)], T0)
    worker = PostgresBackend(postgres_url)
    returned: list[float] = []

    def idle() -> None:
        worker.wait_for_work(["q"], timeout=60.0, now=T0)
        returned.append(time.monotonic())

    thread = threading.Thread(target=idle)
    thread.start()
    time.sleep(0.5)  # the worker is listening by now
    released_at = time.monotonic()
    assert store.release_waits(T0 + 5, 10) == 1
    thread.join(timeout=WOKEN)
    assert not thread.is_alive(), "release_waits did not wake the idle worker"
    assert returned[0] - released_at < WOKEN
    worker.close()
    assert claim_one(store, now=T0 + 5).id == "t"


def test_a_job_queued_by_a_message_a_stage_or_a_restart_wakes_workers(store: PostgresBackend, listener: Any) -> None:
    store.enqueue([pipeline("m", queue="inbox", status=Status.WAITING, waiting_for="go")], T0)
    assert heard(listener) == []  # inserted waiting: no worker to wake
    assert store.send_message("m", NewMessage(id="1", name="go", payload=1), T0) is Delivery.RESUMED
    assert heard(listener) == ["inbox"]

    job = claim_one(store, now=T0, queues=("inbox",))
    assert store.finish("m", token(job), advanced(step(1, queue="next")), T0 + 1)
    assert heard(listener) == ["next"]  # the next stage is queued on its own queue

    job = claim_one(store, now=T0 + 1, queues=("next",))
    assert store.finish("m", token(job), advanced(step(2, waiting=True, wait_until=T0 + 9)), T0 + 2)
    assert heard(listener) == []  # a stage that waits wakes no one

    store.enqueue([pipeline("r", queue="again")], T0)
    heard(listener)
    job = claim_one(store, now=T0, queues=("again",))
    assert store.finish("r", token(job), Outcome(kind=OutcomeKind.FAILED, exit_code=1), T0 + 1)
    assert store.requeue("r", T0 + 2, reset=True, first=step(0, queue="again")) is not None
    assert heard(listener) == ["again"]


def test_concurrent_sends_of_one_id_from_many_connections_store_it_once(
    store: PostgresBackend, postgres_url: str
) -> None:
    """To a job that waits on nothing: one STORED, the rest DUPLICATE, never a unique violation."""
    store.enqueue([new("j")], T0)
    senders = [PostgresBackend(postgres_url) for _ in range(8)]
    barrier = threading.Barrier(len(senders))
    answers: list[Delivery] = []
    errors: list[BaseException] = []

    def send(sender: PostgresBackend) -> None:
        try:
            barrier.wait()
            answers.append(sender.send_message("j", NewMessage(id="same", name="x", payload=[1]), T0))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sender in senders:
        sender.close()
    assert errors == []
    assert sorted(answers) == sorted([Delivery.STORED] + [Delivery.DUPLICATE] * 7)
    assert [m.id for m in store.messages("j")] == ["same"]
    assert kinds(store, "j") == ["enqueued", "message_received"]


@pytest.mark.parametrize("round_", range(10))
def test_a_send_racing_the_finish_that_starts_the_wait_is_never_missed(
    store: PostgresBackend, postgres_url: str, round_: int
) -> None:
    """A message sent while the stage before its wait is being finished either resumes the job
    (the finish committed first) or is taken by the finish (the send committed first): the job is
    queued with it as its inbox, once, either way."""
    store.enqueue([pipeline("r")], T0)
    job = claim_one(store)
    sender = PostgresBackend(postgres_url)
    barrier = threading.Barrier(2)
    answers: list[Any] = []

    def send() -> None:
        barrier.wait()
        answers.append(sender.send_message("r", NewMessage(id="m", name="go", payload={"n": round_}), T0 + 1))

    def finish() -> None:
        barrier.wait()
        answers.append(store.finish("r", token(job), advanced(step(1, waiting=True, waiting_for="go")), T0 + 1))

    threads = [threading.Thread(target=send), threading.Thread(target=finish)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sender.close()
    assert True in answers and ({Delivery.RESUMED, Delivery.STORED} & set(answers))
    got = stored(store, "r")
    assert (got.status, got.stage, got.inbox) == (Status.QUEUED, 1, {"id": "m", "payload": {"n": round_}})
    assert kinds(store, "r").count("resumed") == 1
    assert [(m.consumed_at, m.stage) for m in store.messages("r")] == [(T0 + 1, 1)]


def test_a_batch_of_plain_and_pipeline_reports_is_written_by_both_paths(store: PostgresBackend) -> None:
    """finish_many sends the plain reports in one pipeline (the successes in one statement) and
    writes each pipeline report in a transaction of its own, its extras only if it was written."""
    store.enqueue([new(f"plain{i}") for i in range(3)] + [pipeline("adv"), pipeline("done"), pipeline("stale")], T0)
    jobs = {job.id: job for job in store.claim(["q"], "w1", 10, LEASE, T0)}
    notice = Notice(owner="ann", job_id="done", status="succeeded", exit_code=0, data={})
    finished = Outcome(kind=OutcomeKind.SUCCEEDED, result=9, record=StageRecord(stage=1, results=[1, 9], stage_log=[]),
                       then=new("chained"), notice=notice)  # fmt: skip
    stale = msgspec.structs.replace(finished, then=new("never"), notice=msgspec.structs.replace(notice, job_id="stale"))
    reports = [Report(f"plain{i}", token(jobs[f"plain{i}"]), Outcome(kind=OutcomeKind.SUCCEEDED, result=i))
               for i in range(3)]  # fmt: skip
    reports += [
        Report("adv", token(jobs["adv"]), advanced(step(1))),
        Report("done", token(jobs["done"]), finished),
        Report("stale", "not-its-token", stale),
        Report("plain9", "no-such-job", Outcome(kind=OutcomeKind.FAILED, exit_code=1)),
    ]
    assert store.finish_many(reports, T0 + 1) == [True, True, True, True, True, False, False]
    assert [stored(store, f"plain{i}").result for i in range(3)] == [0, 1, 2]
    assert (stored(store, "adv").status, stored(store, "adv").stage) == (Status.QUEUED, 1)
    done = stored(store, "done")
    assert (done.status, done.result, done.results, done.stage) == (Status.SUCCEEDED, 9, [1, 9], 1)
    assert stored(store, "chained").status is Status.QUEUED
    assert store.get("never") is None
    assert [n.job_id for n in store.notifications(None, False, 10)] == ["done"]
    assert stored(store, "stale").status is Status.RUNNING
