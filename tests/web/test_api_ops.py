"""The operations routes against a real server process: queues (pause and resume need
modify-others), the app's tasks (disable and enable too), the switches (turning everything off is
system's), workers (stopping them is system's), stats, the health report, the public probe and the
OpenAPI document. Every change is audited."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from conveyor.operations import WorkerInfo

from .conftest import WebServer, error, ok

KINDS = ("owner", "other", "viewer", "admin", "reader", "operator", "system")
#: Who may pause a queue or disable a task (nobody's rows): modify-others, not read-only.
OPERATORS = {"owner": 403, "other": 403, "viewer": 403, "admin": 200, "reader": 403, "operator": 403, "system": 200}


def audited(server: WebServer, action: str, target: str | None = None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = ok(server.client("system").get("/api/audit", params={"after": after, "limit": 500}))
        entries += page["items"]
        if not page["items"]:
            break
        after = page["next_after"]
    return [e for e in entries if e["action"] == action and (target is None or e["target"] == target)]


@pytest.mark.parametrize("who", KINDS)
def test_who_pauses_and_resumes_a_queue(web_server: WebServer, who: str) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    client = web_server.client(who)
    answer = client.post(f"/api/queues/{queue}/pause")
    if OPERATORS[who] == 403:
        error(answer, 403, "forbidden")
        assert queue not in web_server.app.switches().paused_queues
        error(client.post(f"/api/queues/{queue}/resume"), 403)
        return
    assert ok(answer) == {"changed": True}
    assert ok(client.post(f"/api/queues/{queue}/pause")) == {"changed": False}
    assert queue in web_server.app.switches().paused_queues
    listed = {q["name"]: q for q in ok(web_server.client("reader").get("/api/queues", params={"limit": 500}))["items"]}
    assert listed[queue]["paused"] is True
    assert ok(client.post(f"/api/queues/{queue}/resume")) == {"changed": True}
    assert queue not in web_server.app.switches().paused_queues
    entry = audited(web_server, "queue.pause", queue)[0]
    assert entry["user"] == web_server.name(who) and entry["data"] == {"changed": True}
    assert audited(web_server, "queue.resume", queue)


def test_queues_list_their_jobs(web_server: WebServer) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    for name in (queue, queue, f"{queue}-b"):
        ok(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": name}), 201)
    listed = {q["name"]: q for q in ok(web_server.client("other").get("/api/queues", params={"limit": 500}))["items"]}
    assert listed[queue]["queued"] == 2 and listed[queue]["oldest_due"] is not None
    page = ok(web_server.client("other").get("/api/queues", params={"limit": 1}))
    assert len(page["items"]) == 1 and page["next_offset"] == 1
    error(web_server.client(None).get("/api/queues"), 401)


@pytest.mark.parametrize("who", KINDS)
def test_who_disables_and_enables_a_task(web_server: WebServer, who: str) -> None:
    client = web_server.client(who)
    answer = client.post("/api/tasks/echo/disable")
    if OPERATORS[who] == 403:
        error(answer, 403)
        error(client.post("/api/tasks/echo/enable"), 403)
        assert "echo" not in web_server.app.switches().disabled_tasks
        return
    assert ok(answer)["changed"] is True
    tasks = {t["name"]: t for t in ok(web_server.client("owner").get("/api/tasks"))["items"]}
    assert tasks["echo"]["disabled"] is True and tasks["add"]["disabled"] is False
    assert ok(web_server.client("viewer").get("/api/switches"))["disabled_tasks"] == ["echo"]
    assert ok(client.post("/api/tasks/echo/enable"))["changed"] is True
    assert "echo" not in web_server.app.switches().disabled_tasks
    assert audited(web_server, "task.disable", "echo") and audited(web_server, "task.enable", "echo")


def test_the_tasks_are_listed_with_their_options(web_server: WebServer) -> None:
    tasks = {t["name"]: t for t in ok(web_server.client("reader").get("/api/tasks"))["items"]}
    assert set(tasks) == {"add", "fail", "echo", "strict"}
    assert tasks["strict"] == {"name": "strict", "queue": "strict", "priority": 2, "max_retries": 2, "timeout": 30.0,
                               "result_ttl": 604800.0, "disabled": False}  # fmt: skip


@pytest.mark.parametrize("who", KINDS)
def test_only_system_turns_everything_off(web_server: WebServer, who: str) -> None:
    client = web_server.client(who)
    if who != "system":
        error(client.post("/api/switches/all/disable"), 403)
        error(client.post("/api/switches/all/enable"), 403)
        return
    assert ok(client.post("/api/switches/all/disable")) == {"changed": True}
    assert ok(client.get("/api/switches"))["everything"] is True
    assert ok(client.post("/api/switches/all/enable")) == {"changed": True}
    assert web_server.app.switches().everything is False
    assert audited(web_server, "all.disable") and audited(web_server, "all.enable")


def _register_worker(server: WebServer, queue: str) -> str:
    worker_id = f"w-{uuid.uuid4().hex[:8]}"
    now = server.app.clock()
    info = WorkerInfo(id=worker_id, host="test-host", pid=4242, queues=[queue], concurrency=2, version="test",
                      started_at=now, last_seen=now)  # fmt: skip
    server.app.backend.register_worker(info, now)
    return worker_id


@pytest.mark.parametrize("who", KINDS)
def test_workers_are_listed_and_only_system_stops_them(any_web_server: WebServer, who: str) -> None:
    server = any_web_server
    queue = f"q-{uuid.uuid4().hex[:8]}"
    worker_id = _register_worker(server, queue)
    client = server.client(who)
    listed = ok(client.get("/api/workers", params={"limit": 500}))["items"]
    assert any(w["id"] == worker_id and w["queues"] == [queue] for w in listed)
    answer = client.post("/api/workers/stop", json={"queues": [queue]})
    if who != "system":
        error(answer, 403)
        assert not next(w for w in server.app.workers() if w.id == worker_id).stop_requested
        return
    assert ok(answer) == {"worker_ids": [worker_id]}
    assert next(w for w in server.app.workers() if w.id == worker_id).stop_requested
    assert audited(server, "workers.stop")
    error(client.post("/api/workers/stop", json={}), 422)
    error(client.post("/api/workers/stop", json={"queues": [queue], "worker_ids": [worker_id]}), 422)
    error(client.post("/api/workers/stop", json={"worker_ids": ["no-such-worker"]}), 422)


def test_stats_count_jobs_by_queue_and_status(web_server: WebServer) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    ok(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": queue}), 201)
    ok(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": queue,
                                                          "delay": 600}), 201)  # fmt: skip
    stats = ok(web_server.client("reader").get("/api/stats"))
    assert stats[queue] == {"queued": 1, "scheduled": 1}
    assert stats["all"]["queued"] >= 1
    error(web_server.client(None).get("/api/stats"), 401)


def test_the_health_report(any_web_server: WebServer) -> None:
    report = ok(any_web_server.client("reader").get("/api/health", params={"queues": "nobody-serves-this"}))
    assert report["reachable"] is True and report["schema_current"] is True
    assert report["healthy"] is False and any("nobody-serves-this" in p for p in report["problems"])
    error(any_web_server.client(None).get("/api/health"), 401)


def test_the_probe_and_the_document_are_public(any_web_server: WebServer) -> None:
    anonymous = any_web_server.client(None)
    assert ok(anonymous.get("/healthz")) == {"ok": True, "message": ""}
    document = ok(anonymous.get("/openapi.json"))
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "bearer" in document["components"]["securitySchemes"]


def test_metrics_need_a_user_unless_served_public(web_server: WebServer, start_web_server: Any) -> None:
    scrape = web_server.client("reader").get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    assert "conveyor_jobs_enqueued_total" in scrape.text
    error(web_server.client(None).get("/metrics"), 401)
    error(web_server.client(None).get("/metrics", headers={"Authorization": "Bearer nope"}), 401)
    assert "/metrics" in ok(web_server.client(None).get("/openapi.json"))["paths"]
    public = start_web_server(metrics_public=True)
    assert public.client(None).get("/metrics").status_code == 200
    assert ok(public.client(None).get("/openapi.json"))["paths"]["/metrics"]["get"]["security"] == []
