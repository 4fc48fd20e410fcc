"""Multi-stage pipeline jobs (issue 11) with real worker processes, on every store: results that
flow between stages, restarts from the failed stage or the first, timers and messages that hold
no worker, conditions, chaining, the owner's notifications and reset.

Each stage's task appends a line per run to its own file (tests/e2e/pipekit.py): the files say
how often each stage ran; the job's record, read through the App, says what the job holds."""

from __future__ import annotations

import json
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from subprocess import Popen

import pytest

from conveyor import Delivery, ExitCode, InvalidTransition, Job, JobNotFound, Message, Ref, Status, Timer

from .conftest import Cluster
from .pipekit import Tasks, install_pipeline_app

pytestmark = pytest.mark.slow

FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

Start = Callable[..., Popen[bytes]]


@pytest.fixture
def tasks(cluster: Cluster) -> Tasks:
    return Tasks(cluster.app)


@pytest.fixture
def start(cluster: Cluster) -> Iterator[Start]:
    """``start(concurrency=2)``: a worker process running the pipeline app, started and ready."""
    path = install_pipeline_app(cluster.dir)

    def start_worker(concurrency: int = 2) -> Popen[bytes]:
        proc = cluster.worker(concurrency=concurrency, app_path=path)
        cluster.wait_started(proc)
        return proc

    yield start_worker


def finished(cluster: Cluster, job_id: str, timeout: float = 60) -> Job:
    return cluster.wait_status(job_id, *FINISHED, timeout=timeout)


def json_lines(cluster: Cluster, name: str) -> list[object]:
    return [json.loads(line) for line in cluster.lines(name)]


# results, restarts -------------------------------------------------------------------------------
def test_results_flow_and_a_failed_stage_restarts_where_it_failed_with_current(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    worker = start()
    job = cluster.app.pipeline(
        tasks.add.s("s0.log", Ref.kws("x"), 1),
        tasks.add.s("s1.log", Ref.stage(0)["sum"], Ref.stage(0)["parts"][0], fail_first=True),
        tasks.add.s("s2.log", Ref.stage(1)["sum"], Ref.kws("y")),
        kws={"x": 5, "y": 100},
        restart="current",
        max_retries=2,
        timeout=60,
    ).delay()

    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert len(cluster.lines("s0.log")) == 1, "stage 0 ran once: a CURRENT restart keeps its result"
    assert len(cluster.lines("s1.log")) == 2, "stage 1 failed once and ran again"
    assert len(cluster.lines("s2.log")) == 1
    pid = worker.pid
    assert done.results == [
        {"sum": 6, "parts": [5, 1], "run": 1, "pid": pid},
        {"sum": 11, "parts": [6, 5], "run": 2, "pid": pid},  # its second run, on stage 0's kept result
        {"sum": 111, "parts": [11, 100], "run": 1, "pid": pid},
    ]
    assert done.result == done.results[-1]
    assert done.retries == 1
    assert done.stage == 2
    assert done.error is None and done.exit_code == ExitCode.SUCCESS
    assert [entry["status"] for entry in done.stage_log] == ["succeeded"] * 3
    assert [entry["attempts"] for entry in done.stage_log] == [1, 2, 1], "the stage log counts stage 1's runs"


def test_a_failed_stage_restarts_from_the_first_with_first_and_the_old_results_are_cleared(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.add.s("s0.log", Ref.kws("x"), 1),
        tasks.add.s("s1.log", Ref.stage(0)["sum"], Ref.stage(0)["parts"][0], fail_first=True),
        tasks.add.s("s2.log", Ref.stage(1)["sum"], Ref.kws("y")),
        kws={"x": 5, "y": 100},
        restart="first",
        max_retries=2,
        timeout=60,
    ).delay()

    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert len(cluster.lines("s0.log")) == 2, "FIRST reruns stage 0"
    assert len(cluster.lines("s1.log")) == 2
    assert len(cluster.lines("s2.log")) == 1
    assert len(done.results) == 3, f"exactly one result per stage, the first run's cleared: {done.results}"
    assert [(r["sum"], r["run"]) for r in done.results] == [(6, 2), (11, 2), (111, 1)], "every result from the rerun"
    assert done.retries == 1
    assert [entry["status"] for entry in done.stage_log] == ["succeeded"] * 3


def test_a_pipeline_whose_stage_fails_past_its_retries_fails_keeping_the_results_so_far(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.add.s("s0.log", 1, 2),
        tasks.fail.s("s1.log"),
        tasks.add.s("s2.log", 3),
        max_retries=1,
        timeout=60,
    ).delay()
    done = finished(cluster, job.id)
    assert done.status is Status.FAILED, done
    assert done.exit_code == ExitCode.EXECUTION_ERROR
    assert done.error is not None and done.error.type == "RuntimeError"
    assert done.retries == 1 and done.stage == 1
    assert [r["sum"] for r in done.results] == [3]
    assert len(cluster.lines("s1.log")) == 2 and cluster.lines("s2.log") == []


# timers -----------------------------------------------------------------------------------------------
def test_a_timer_stage_waits_holding_no_worker_and_resumes_after_its_seconds_with_none(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start(concurrency=1)  # one slot: if the wait held it, nothing else could run meanwhile
    job = cluster.app.pipeline(
        tasks.echo.s("timer.log", "before"),
        Timer(3),
        tasks.echo.s("timer.log", Ref.stage(1)),
        timeout=60,
    ).delay()

    waiting = cluster.wait_status(job.id, Status.WAITING, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert waiting.status is Status.WAITING, waiting
    assert waiting.stage == 1 and waiting.results == ["before"]
    assert waiting.token is None and waiting.lease_expires_at is None, "a waiting job holds no run, no lease"
    assert waiting.wait_until is not None

    others = [tasks.echo.delay(f"other-{i}.log", i) for i in range(3)]
    for other in others:
        ran = finished(cluster, other.id, timeout=30)
        assert ran.status is Status.SUCCEEDED
        assert ran.finished_at is not None and ran.finished_at < waiting.wait_until, (
            "the only slot ran other jobs while the pipeline waited"
        )

    done = finished(cluster, job.id, timeout=30)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == ["before", None, None], "a timer's result is None, and the next stage got it"
    assert json_lines(cluster, "timer.log") == ["before", None]
    waited = done.stage_log[2]["started_at"] - done.stage_log[0]["finished_at"]
    assert waited >= 3.0, f"the stage after Timer(3) started {waited:.2f} s after the stage before it ended"


def test_a_timer_longer_than_the_pipeline_timeout_aborts_the_job_with_130_at_the_timeout(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.echo.s("abort.log", "before"),
        Timer(30),
        tasks.echo.s("abort.log", "after"),
        timeout=10,
        owner="tim",
        notify=True,
    ).delay()
    cluster.wait_status(job.id, Status.WAITING, timeout=30)

    done = finished(cluster, job.id, timeout=30)  # well under the 30 s timer
    assert done.status is Status.FAILED, done
    assert done.exit_code == ExitCode.ABORTED == 130
    assert done.error is not None and "time-out" in done.error.message, done.error
    assert done.finished_at is not None
    took = done.finished_at - done.created_at
    assert 10.0 - 0.5 <= took < 30.0, f"aborted {took:.1f} s after enqueue: at the 10 s budget, not the timer"
    assert done.results == ["before"]
    assert json_lines(cluster, "abort.log") == ["before"], "the stage after the timer never ran"
    assert cluster.app.notifications(owner="tim") == [], "a time-out abort notifies nobody"


# messages ---------------------------------------------------------------------------------------------
def test_a_message_stage_resumes_with_the_payload_as_its_result(cluster: Cluster, tasks: Tasks, start: Start) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.echo.s("msg.log", "before"),
        Message("approval"),
        tasks.echo.s("msg.log", Ref.stage(1)["by"]),
        timeout=60,
    ).delay()
    waiting = cluster.wait_status(job.id, Status.WAITING, timeout=30)
    assert waiting.stage == 1 and waiting.waiting_for == "approval"
    assert waiting.token is None and waiting.lease_expires_at is None

    # A message of another name is kept, and does not resume this stage.
    assert cluster.app.send_message(job.id, {"no": 1}, name="other") is Delivery.STORED
    assert cluster.app.job(job.id).status is Status.WAITING

    payload = {"ok": True, "by": "bob", "items": [1, 2]}
    assert cluster.app.send_message(job.id, payload, name="approval", message_id="m-1") is Delivery.RESUMED
    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == ["before", payload, "bob"]
    assert json_lines(cluster, "msg.log") == ["before", "bob"]
    other, taken = cluster.app.messages(job.id)  # oldest first
    assert other.name == "other" and other.payload == {"no": 1} and other.consumed_at is None
    assert taken.id == "m-1" and taken.name == "approval" and taken.payload == payload
    assert taken.consumed_at is not None and taken.stage == 1

    with pytest.raises(InvalidTransition):
        cluster.app.send_message(job.id, {"late": True}, name="approval")
    assert cluster.app.send_message(job.id, payload, name="approval", message_id="m-1") is Delivery.DUPLICATE, (
        "a sender's retry of a message that resumed the job is still a duplicate, not an error"
    )
    with pytest.raises(JobNotFound):
        cluster.app.send_message("no-such-job-" + uuid.uuid4().hex, {"x": 1})
    assert len(cluster.app.messages(job.id)) == 2, "nothing stored by the refused sends"


def test_a_message_stage_with_its_own_timeout_goes_on_with_none_or_fails_as_asked(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    goes_on = cluster.app.pipeline(
        tasks.echo.s("mt-on.log", "a"),
        Message("maybe", timeout=1, on_timeout="continue"),
        tasks.echo.s("mt-on.log", Ref.stage(1)),
        timeout=60,
    ).delay()
    fails = cluster.app.pipeline(
        tasks.echo.s("mt-fail.log", "a"),
        Message("needed", timeout=1),
        tasks.echo.s("mt-fail.log", "never"),
        timeout=60,
    ).delay()

    done = finished(cluster, goes_on.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == ["a", None, None]
    assert json_lines(cluster, "mt-on.log") == ["a", None]
    assert done.stage_log[2]["started_at"] - done.stage_log[0]["finished_at"] >= 1.0

    failed = finished(cluster, fails.id)
    assert failed.status is Status.FAILED, failed
    assert failed.error is not None and failed.error.type == "MessageTimeout", failed.error
    assert "'needed'" in failed.error.message
    assert failed.exit_code == ExitCode.EXECUTION_ERROR and failed.stage == 1 and failed.results == ["a"]
    assert json_lines(cluster, "mt-fail.log") == ["a"]


def test_a_message_sent_before_the_job_reaches_the_wait_is_taken_when_it_gets_there(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.gate.s("early.log", "early.gate", "first"),
        Message(),
        tasks.echo.s("early-after.log", Ref.stage(1)),
        timeout=60,
    ).delay()
    cluster.wait_line("early.log", "started")
    assert cluster.app.job(job.id).status is Status.RUNNING  # stage 0 holds until the gate opens

    assert cluster.app.send_message(job.id, "paid", message_id="pay-1") is Delivery.STORED
    (kept,) = cluster.app.messages(job.id)
    assert kept.consumed_at is None
    (cluster.dir / "early.gate").touch()

    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == ["first", "paid", "paid"]
    assert json_lines(cluster, "early-after.log") == ["paid"]
    (taken,) = cluster.app.messages(job.id)
    assert taken.id == "pay-1" and taken.consumed_at is not None and taken.stage == 1


def test_the_same_message_id_sent_ten_times_at_once_resumes_the_job_once(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.echo.s("dup.log", "before"),
        Message("pay"),
        tasks.echo.s("dup-after.log", Ref.stage(1)),
        timeout=60,
    ).delay()
    cluster.wait_status(job.id, Status.WAITING, timeout=30)

    senders = 10
    barrier = threading.Barrier(senders)
    deliveries: list[tuple[int, Delivery]] = []
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait(30)
            deliveries.append((i, cluster.app.send_message(job.id, {"sender": i}, name="pay", message_id="pay-42")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    counts = Counter(delivery for _, delivery in deliveries)
    assert counts == {Delivery.RESUMED: 1, Delivery.DUPLICATE: senders - 1}, counts
    (winner,) = [i for i, delivery in deliveries if delivery is Delivery.RESUMED]

    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == ["before", {"sender": winner}, {"sender": winner}]
    assert json_lines(cluster, "dup-after.log") == [{"sender": winner}], "the stage after the wait ran once"
    (message,) = cluster.app.messages(job.id)
    assert message.id == "pay-42" and message.payload == {"sender": winner}
    kinds = Counter(event.kind for event in cluster.app.events(job_id=job.id))
    assert kinds["message_received"] == 1 and kinds["resumed"] == 1, kinds


# conditions and chaining ------------------------------------------------------------------------------
def test_a_stage_whose_condition_is_false_is_skipped_with_result_none(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.echo.s("cond.log", {"score": 0.2, "tags": ["a", "b"]}),
        tasks.echo.s("cond.log", "high").when(Ref.stage(0)["score"] > 0.5),
        tasks.echo.s("cond.log", "low").when((Ref.stage(0)["score"] <= 0.5) & (Ref.stage(0)["tags"][-1] == "b")),
        tasks.echo.s("cond.log", "after-high").when(Ref.stage(1)),
        tasks.echo.s("cond.log", [Ref.stage(1), Ref.stage(3)]),
        timeout=60,
    ).delay()
    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert done.results == [{"score": 0.2, "tags": ["a", "b"]}, None, "low", None, [None, None]]
    assert json_lines(cluster, "cond.log") == [{"score": 0.2, "tags": ["a", "b"]}, "low", [None, None]], (
        "the skipped stages' task never ran"
    )
    assert [entry["status"] for entry in done.stage_log] == [
        "succeeded",
        "skipped",
        "succeeded",
        "skipped",
        "succeeded",
    ]


def test_a_reference_that_fails_fails_the_job_naming_it_before_its_stage_runs(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    job = cluster.app.pipeline(
        tasks.echo.s("tpl.log", {"doc": {"tags": ["a"]}}),
        tasks.echo.s("tpl.log", Ref.stage(0)["doc"]["tags"][1]),
        max_retries=2,
        timeout=60,
    ).delay()
    done = finished(cluster, job.id)
    assert done.status is Status.FAILED, done
    assert done.error is not None and done.error.type == "TemplateError"
    assert "Ref.stage(0)['doc']['tags'][1]" in done.error.message and "out of range" in done.error.message
    assert json_lines(cluster, "tpl.log") == [{"doc": {"tags": ["a"]}}], "the failing stage's task never ran"
    assert done.results == [{"doc": {"tags": ["a"]}}] and done.retries == 0


def test_then_starts_the_next_job_only_when_the_pipeline_succeeds(cluster: Cluster, tasks: Tasks, start: Start) -> None:
    start()
    failing = cluster.app.pipeline(
        tasks.add.s("fail-s0.log", 1, 1),
        tasks.fail.s("fail-s1.log"),
        then=tasks.echo.s("then.log", Ref.stage(0)["sum"]),
        timeout=60,
        owner="olga",
    ).delay()
    assert finished(cluster, failing.id).status is Status.FAILED

    job = cluster.app.pipeline(
        tasks.add.s("ok-s0.log", Ref.kws("x"), 1),
        tasks.add.s("ok-s1.log", Ref.stage(0)["sum"], 10),
        then=tasks.echo.s(
            "then.log", {"total": Ref.stage(1)["sum"], "first": Ref.stage(0)["parts"], "id": Ref.job_id()}
        ),
        kws={"x": 1},
        timeout=60,
        owner="olga",
    ).delay()
    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done

    def chained() -> list[Job] | None:
        return [j for j in cluster.app.jobs(task="p.echo") if j.status is Status.SUCCEEDED] or None

    (nxt,) = cluster.wait_for(chained, 30, "the chained job to succeed")
    expected = {"total": 12, "first": [1, 1], "id": job.id}
    assert nxt.args == ["then.log", expected], "the chained job's arguments come from the finished job"
    assert nxt.result == expected
    assert nxt.owner == "olga"
    assert nxt.stages is None and nxt.stage == 0 and nxt.results == [expected], "it starts fresh, a plain job"
    assert json_lines(cluster, "then.log") == [expected], "the failed pipeline started nothing"
    assert len(cluster.app.jobs(task="p.echo")) == 1


def test_then_may_start_a_whole_pipeline_whose_keywords_come_from_the_finished_job(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    follow_up = cluster.app.pipeline(
        tasks.echo.s("next.log", Ref.kws("total")),
        tasks.add.s("next-add.log", Ref.stage(0), 1000),
        kws={"total": Ref.stage(1)["sum"]},
        timeout=60,
    )
    job = cluster.app.pipeline(
        tasks.add.s("a.log", 2, 3),
        tasks.add.s("b.log", Ref.stage(0)["sum"], 4),
        then=follow_up,
        timeout=60,
    ).delay()
    assert finished(cluster, job.id).status is Status.SUCCEEDED

    def chained() -> Job | None:
        jobs = [j for j in cluster.app.jobs() if j.id != job.id]
        return jobs[0] if jobs and jobs[0].status.finished else None

    nxt = cluster.wait_for(chained, 30, "the chained pipeline to finish")
    assert nxt.status is Status.SUCCEEDED, nxt
    assert nxt.is_pipeline and nxt.pipeline is not None and nxt.pipeline["kws"] == {"total": 9}
    assert nxt.results[0] == 9 and nxt.results[1]["sum"] == 1009
    assert len(nxt.results) == 2, "the next pipeline starts fresh: its own results only"


# owners and notifications -------------------------------------------------------------------------------
def test_notifications_reach_the_owner_and_only_them_and_can_be_marked_read(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    start()
    app = cluster.app
    ok = app.pipeline(tasks.add.s("n-ok.log", 1, 2), tasks.add.s("n-ok.log", Ref.stage(0)["sum"], 3),
                      owner="alice", notify=True, timeout=60).delay()  # fmt: skip
    bad = app.pipeline(tasks.add.s("n-bad.log", 1, 2), tasks.fail.s("n-bad.log"),
                       owner="alice", notify=True, timeout=60).delay()  # fmt: skip
    quiet = app.pipeline(tasks.add.s("n-quiet.log", 1, 2), owner="bob", notify=False, timeout=60).delay()
    plain = tasks.echo.options(owner="carol", notify=True).delay("n-plain.log", 7)
    for handle in (ok, bad, quiet, plain):
        finished(cluster, handle.id)

    assert app.notifications(owner="bob") == [], "bob's job did not ask to notify"
    assert app.notifications(owner="nobody") == []
    alices = app.notifications(owner="alice")
    assert {n.job_id for n in alices} == {ok.id, bad.id}
    assert all(n.owner == "alice" and not n.read for n in alices)
    by_job = {n.job_id: n for n in alices}
    assert by_job[ok.id].status == "succeeded" and by_job[ok.id].exit_code == 0
    assert [r["sum"] for r in by_job[ok.id].data["results"]] == [3, 6]
    assert by_job[bad.id].status == "failed" and by_job[bad.id].exit_code == ExitCode.EXECUTION_ERROR
    assert by_job[bad.id].data["error"]["type"] == "RuntimeError"
    (carols,) = app.notifications(owner="carol")
    assert carols.job_id == plain.id and carols.status == "succeeded", "a plain job notifies its owner too"
    assert {n.owner for n in app.notifications()} == {"alice", "carol"}

    assert app.mark_read("bob", [by_job[ok.id].id]) == 0, "nobody marks another owner's notifications"
    assert {n.job_id for n in app.notifications(owner="alice", unread=True)} == {ok.id, bad.id}
    assert app.mark_read("alice", [by_job[ok.id].id]) == 1
    assert [n.job_id for n in app.notifications(owner="alice", unread=True)] == [bad.id]
    assert app.mark_read("alice") == 1
    assert app.notifications(owner="alice", unread=True) == []
    assert all(n.read for n in app.notifications(owner="alice"))
    assert app.notifications(owner="carol", unread=True) != [], "marking alice's left carol's unread"


# reset --------------------------------------------------------------------------------------------------
def test_reset_runs_a_succeeded_pipeline_again_from_stage_0_with_fresh_results(
    cluster: Cluster, tasks: Tasks, start: Start
) -> None:
    worker = start()
    job = cluster.app.pipeline(
        tasks.add.s("r0.log", Ref.kws("x"), 1),
        tasks.add.s("r1.log", Ref.stage(0)["sum"], 1),
        tasks.add.s("r2.log", Ref.stage(1)["sum"], 1),
        kws={"x": 0},
        timeout=60,
    ).delay()
    first = finished(cluster, job.id)
    assert first.status is Status.SUCCEEDED, first
    assert [r["run"] for r in first.results] == [1, 1, 1]
    assert cluster.signal_and_wait(worker, signal.SIGTERM) == 0  # no worker: the reset record stays as written

    again = cluster.app.reset(job.id)
    assert again.status is Status.QUEUED, again
    assert again.stage == 0 and again.task == "p.add" and again.args == ["r0.log", 0, 1]
    assert again.results == [] and again.stage_log == [] and again.result is None
    assert again.retries == 0 and again.error is None and again.exit_code is None
    waiting = cluster.app.pipeline(Message(), tasks.echo.s("rw.log", Ref.stage(0)), timeout=60).delay()
    assert cluster.app.job(waiting.id).status is Status.WAITING, "a first stage that waits: WAITING at once"
    with pytest.raises(InvalidTransition):
        cluster.app.reset(waiting.id)
    with pytest.raises(JobNotFound):
        cluster.app.reset("no-such-job")

    start()
    done = finished(cluster, job.id)
    assert done.status is Status.SUCCEEDED, done
    assert [(r["sum"], r["run"]) for r in done.results] == [(1, 2), (2, 2), (3, 2)], "every stage ran again"
    assert len(done.results) == 3
    for name in ("r0.log", "r1.log", "r2.log"):
        assert len(cluster.lines(name)) == 2
    assert cluster.app.send_message(waiting.id, "go") is Delivery.RESUMED
    assert finished(cluster, waiting.id).results == ["go", "go"]
