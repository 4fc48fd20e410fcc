"""``conveyor.stage_view``: a job's stages as a reader sees them, worked out from the record alone
(no store): each stage's status, result, times and runs, the current stage, what a wait waits
for, and the stage as declared with its references written as in code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor import App, Status, codec
from conveyor.job import Job
from conveyor.refs import Ref
from conveyor.stage_view import StageView, describe_value, stage_views
from conveyor.stages import Message, Timer

T0 = 1_800_000_000.0


@pytest.fixture
def stages(tmp_path: Path) -> list[dict[str, Any]]:
    """Frozen stages: fetch, a skipped-when-false store, Message('pay', timeout=600), Timer(30), store."""
    app = App(f"sqlite:///{tmp_path / 'unused.db'}")

    @app.task(name="t.fetch")
    def fetch(url: str) -> dict[str, Any]:
        return {"doc": url, "n": 3}

    @app.task(name="t.store")
    def store(doc: Any, approval: Any = None) -> str:
        return f"{doc}:{approval}"

    declared = app.pipeline(
        fetch.s(url=Ref.kws("url")),
        store.s(doc=Ref.stage(0)["doc"], approval=1).when(Ref.stage(0)["n"] > 5),
        Message("pay", timeout=600),
        Timer(30),
        store.s([Ref.stage(0)["doc"], 2], approval=Ref.stage(2)),
        kws={"url": "https://example.org"},
    )
    return declared.stages


def make_job(stages: list[dict[str, Any]] | None, **fields: Any) -> Job:
    base: dict[str, Any] = {"id": "j1", "task": "t.fetch", "queue": "default", "priority": 2, "args": [],
                            "kwargs": {}, "status": Status.QUEUED, "created_at": T0, "scheduled_at": T0,
                            "stages": stages}  # fmt: skip
    return Job(**{**base, **fields})


def entry(status: str, started: float | None, finished: float, attempts: int = 1) -> dict[str, Any]:
    return {"status": status, "started_at": started, "finished_at": finished, "attempts": attempts}


def test_a_waiting_message_stage_after_a_skipped_one(stages: list[dict[str, Any]]) -> None:
    job = make_job(stages, status=Status.WAITING, stage=2, scheduled_at=T0 + 2, wait_until=T0 + 602,
                   waiting_for="pay", results=[{"doc": "x", "n": 3}, None],
                   stage_log=[entry("succeeded", T0, T0 + 1), entry("skipped", None, T0 + 1, 0)])  # fmt: skip
    views = stage_views(job, now=T0 + 5)
    assert [v.status for v in views] == ["succeeded", "skipped", "waiting", "pending", "pending"]
    assert [v.current for v in views] == [False, False, True, False, False]
    assert (views[0].has_result, views[0].result, views[0].attempts) == (True, {"doc": "x", "n": 3}, 1)
    assert (views[1].has_result, views[1].result, views[1].attempts) == (True, None, 0)
    assert views[1].condition == "Ref.stage(0)['n'] > 5"
    waiting = views[2]
    assert (waiting.waiting_for, waiting.wait_until, waiting.started_at) == ("pay", T0 + 602, T0 + 2)
    assert not waiting.has_result and waiting.finished_at is None
    assert [v.declared for v in views] == [
        "t.fetch(url=Ref.kws('url'))",
        "t.store(doc=Ref.stage(0)['doc'], approval=1)",
        "Message('pay', timeout=600, on_timeout='fail')",
        "Timer(30)",
        "t.store([Ref.stage(0)['doc'], 2], approval=Ref.stage(2))",
    ]
    assert [v.label for v in views] == ["t.fetch", "t.store", "Message('pay')", "Timer(30)", "t.store"]
    assert [v.kind for v in views] == ["call", "call", "message", "timer", "call"]
    assert views[3].waiting_for is None and views[3].status == "pending"
    assert codec.loads(codec.dumps([v.to_dict() for v in views]))[2]["waiting_for"] == "pay"  # JSON-ready


def test_a_waiting_timer_stage_says_until_when(stages: list[dict[str, Any]]) -> None:
    log = [entry("succeeded", T0, T0), entry("skipped", None, T0, 0), entry("succeeded", T0, T0)]
    job = make_job(stages, status=Status.WAITING, stage=3, wait_until=T0 + 30, results=[{}, None, {"ok": 1}],
                   stage_log=log)  # fmt: skip
    timer = stage_views(job, now=T0)[3]
    assert (timer.status, timer.current, timer.wait_until, timer.waiting_for) == ("waiting", True, T0 + 30, None)


def test_a_running_stage_retried_at_the_same_stage_counts_its_runs(stages: list[dict[str, Any]]) -> None:
    job = make_job(stages, status=Status.RUNNING, stage=0, started_at=T0 + 10,
                   stage_log=[entry("failed", T0, T0 + 1)])  # fmt: skip
    first = stage_views(job, now=T0 + 11)[0]
    assert (first.status, first.current, first.attempts) == ("running", True, 2)
    assert (first.started_at, first.finished_at, first.has_result) == (T0 + 10, None, False)


def test_a_stage_due_later_reads_as_scheduled(stages: list[dict[str, Any]]) -> None:
    job = make_job(stages, status=Status.QUEUED, stage=0, scheduled_at=T0 + 60, stage_log=[entry("failed", T0, T0)])
    first = stage_views(job, now=T0)[0]
    assert (first.status, first.attempts, first.started_at) == ("scheduled", 1, None)


def test_a_failed_and_a_cancelled_job(stages: list[dict[str, Any]]) -> None:
    failed = make_job(stages, status=Status.FAILED, stage=0, stage_log=[entry("failed", T0, T0 + 1, 3)])
    views = stage_views(failed, now=T0)
    assert [v.status for v in views] == ["failed", "pending", "pending", "pending", "pending"]
    assert not any(v.current for v in views) and views[0].attempts == 3
    cancelled = make_job(stages, status=Status.CANCELLED, stage=2, results=[{}, None],
                         stage_log=[entry("succeeded", T0, T0), entry("skipped", None, T0, 0)])  # fmt: skip
    assert [v.status for v in stage_views(cancelled, now=T0)][:3] == ["succeeded", "skipped", "cancelled"]


def test_a_job_failed_with_no_stage_record_shows_its_status_at_its_stage(stages: list[dict[str, Any]]) -> None:
    job = make_job(stages, status=Status.FAILED, stage=0)  # e.g. failed by the leader (a poison job)
    assert stage_views(job, now=T0)[0].status == "failed"


def test_a_succeeded_pipeline_shows_every_result(stages: list[dict[str, Any]]) -> None:
    results = [{"doc": "x"}, None, {"ok": True}, None, "x:ok"]
    log = [entry("succeeded", T0, T0), entry("skipped", None, T0, 0)] + [entry("succeeded", T0, T0)] * 3
    job = make_job(stages, status=Status.SUCCEEDED, stage=4, results=results, stage_log=log, result="x:ok")
    views = stage_views(job, now=T0)
    assert [v.result for v in views] == results and all(v.has_result for v in views)
    assert not any(v.current for v in views)


def test_a_plain_job_is_the_one_stage_case() -> None:
    job = make_job(None, task="t.add", args=[1, 2], kwargs={"z": "a"}, status=Status.SUCCEEDED, result=3,
                   started_at=T0, finished_at=T0 + 1, attempts=1)  # fmt: skip
    [view] = stage_views(job, now=T0)
    assert isinstance(view, StageView)
    assert (view.declared, view.status, view.result, view.has_result, view.current) == (
        "t.add(1, 2, z='a')", "succeeded", 3, True, False)  # fmt: skip


def test_values_render_references_at_any_depth_and_unnamed_messages() -> None:
    frozen = {"a": [{"$conveyor.ref": ["stage", 0, "items", 2]}, None, True], "b": {"$conveyor.ref": ["job_id"]}}
    assert describe_value(frozen) == "{'a': [Ref.stage(0)['items'][2], None, True], 'b': Ref.job_id()}"
    unnamed = make_job([Message(timeout=5, on_timeout="continue").freeze()], status=Status.WAITING,
                       waiting_for="", wait_until=T0 + 5)  # fmt: skip
    [view] = stage_views(unnamed, now=T0)
    assert view.declared == "Message(timeout=5, on_timeout='continue')"
    assert (view.waiting_for, view.status) == ("", "waiting")
