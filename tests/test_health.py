"""``app.health()``: the report's fields, and each way it turns unhealthy: no live worker for a
queue that has due jobs (a paused one excepted) or that the caller named, a worker whose
heartbeat is too old, a schema that is not current, a store that cannot be reached (never raised:
reported)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App, Health, WorkerInfo


def test_a_running_worker_makes_a_healthy_report(
    app: App, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    runner = start_worker(queues=("default", "emails"))
    wait_for(lambda: app.health().leader == runner.worker.id, what="the worker to lead")
    app.enqueue("slow.nobody.knows", queue="emails", delay=3600)  # scheduled, not due: no age
    report = app.health()
    assert isinstance(report, Health)
    assert report.healthy and report.problems == []
    assert report.reachable and report.latency_ms is not None and report.latency_ms >= 0
    assert report.schema_current and report.schema_version == report.schema_latest
    assert report.workers_alive == {"default": 1, "emails": 1}
    assert report.oldest_due_age == {}
    assert report.store == f"sqlite:///{app.url.split(':///', 1)[1]}"
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["healthy"] is True and as_json["workers_alive"] == {"default": 1, "emails": 1}


def test_due_jobs_without_a_live_worker_are_unhealthy_unless_paused(app: App) -> None:
    now = [time.time()]
    app.clock = lambda: now[0]
    app.enqueue("some.task", queue="orphans")
    now[0] += 42
    report = app.health()
    assert not report.healthy
    assert report.problems == ["queue 'orphans': jobs due (the oldest for 42 s) and no live worker"]
    assert report.oldest_due_age == {"orphans": 42.0} and report.workers_alive == {"orphans": 0}
    app.pause_queue("orphans")
    paused = app.health()
    assert paused.healthy and paused.paused_queues == ["orphans"]  # paused on purpose: not a fault
    app.resume_queue("orphans")
    app.disable_all()
    assert app.health().healthy and app.health().everything_disabled


def test_a_named_queue_needs_a_live_worker(app: App, start_worker: Callable[..., Any], wait_for: Any) -> None:
    app.backend.setup()  # the store exists (a missing file is its own finding, below)
    report = app.health(queues=["emails"])
    assert not report.healthy and report.problems == ["queue 'emails': no live worker"]
    start_worker(queues=("emails",))
    wait_for(lambda: app.health(queues="emails").healthy, what="the worker to count as alive")


def test_a_worker_not_seen_lately_is_not_alive(app: App) -> None:
    now = time.time()
    app.backend.register_worker(
        WorkerInfo(id="gone", host="h", pid=1, queues=["default"], concurrency=1, version="x",
                   started_at=now - 100, last_seen=now - 100),
        now - 100,
    )  # fmt: skip
    assert app.health(queues=["default"]).workers_alive == {"default": 0}
    assert app.health(queues=["default"], stale_after=1000).workers_alive == {"default": 1}
    with pytest.raises(ValueError, match="stale_after must be > 0"):
        app.health(stale_after=0)
    with pytest.raises(ValueError, match="queue name must be a non-empty string"):
        app.health(queues=[""])


def test_a_schema_that_is_not_current_is_unhealthy(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    latest = app.backend.schema_versions()[1]
    monkeypatch.setattr(app.backend, "schema_versions", lambda: (latest - 1, latest))
    report = app.health()
    assert not report.healthy and not report.schema_current
    assert report.problems == [f"schema version {latest - 1}, this conveyor needs {latest}: run `conveyor migrate`"]


def test_an_unreachable_store_is_reported_not_raised() -> None:
    app = App("postgresql://postgres@127.0.0.1:1/none?pool_timeout=0.5&connect_timeout=1")
    report = app.health()
    assert not report.healthy and not report.reachable
    assert len(report.problems) == 1 and report.problems[0].startswith("store unreachable: ")
    assert report.latency_ms is None and report.schema_version is None
    assert json.loads(json.dumps(report.to_dict()))["reachable"] is False


def test_a_broken_store_is_reported_not_raised(tmp_path: Any) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"\x00not a database" * 512)
    report = App(f"sqlite:///{path}").health()
    assert not report.healthy and not report.reachable
    assert report.problems[0].startswith("store error: ")


def test_a_missing_sqlite_store_is_reported_and_not_created(tmp_path: Any) -> None:
    path = tmp_path / "nowhere.db"
    report = App(f"sqlite:///{path}").health()
    assert not report.healthy and not report.reachable
    assert report.problems == [f"no store at {path} (a relative SQLite path is relative to the working directory)"]
    assert not path.exists()
