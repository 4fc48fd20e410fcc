"""The event log's routes against a real server process: the list (filters, pages) and the live
stream over Server-Sent Events, which delivers an event written by another process, resumes after
the ``Last-Event-ID`` a client sends back, and, like the list, shows a user without view-others
only the events of their own jobs, schedules and services (and the operations' events)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .conftest import HERE, WebServer, error, ok, read_sse


def fresh_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def enqueue_elsewhere(server: WebServer, queue: str, owner: str, count: int = 1) -> list[str]:
    """Enqueue ``count`` jobs of ``owner`` from another process (neither the server nor this one)."""
    script = (
        "import sys\nfrom server_app import build\n"
        f"app = build({server.app.url!r})\n"
        f"print(' '.join(app.enqueue('add', [1, 2], queue={queue!r}, owner={owner!r}).id for _ in range({count})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(HERE).parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_stream_delivers_an_event_written_by_another_process_and_resumes(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    with server.client("owner").stream("GET", "/api/events/stream", params={"pattern": queue}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        (first_job,) = enqueue_elsewhere(server, queue, "alice")
        (event,) = read_sse(answer, 1)
    assert event.event == "enqueued" and event.data["job_id"] == first_job and event.data["queue"] == queue
    assert event.id == str(event.data["seq"])
    later = enqueue_elsewhere(server, queue, "alice", count=2)  # while nobody listens
    headers = {"Last-Event-ID": event.id}
    with server.client("owner").stream("GET", "/api/events/stream", params={"pattern": queue, "after": 0},
                                       headers=headers) as answer:  # fmt: skip
        resumed = read_sse(answer, 2)
    assert [e.data["job_id"] for e in resumed] == later  # nothing missed, nothing repeated
    assert all(int(e.id or 0) > int(event.id) for e in resumed)
    with server.client("owner").stream("GET", "/api/events/stream", params={"pattern": queue, "after": event.id,
                                                                           "kinds": "enqueued"}) as answer:  # fmt: skip
        assert [e.data["job_id"] for e in read_sse(answer, 2)] == later


def test_the_stream_shows_only_what_the_user_may_see(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    params = {"pattern": queue}
    with server.client("other").stream("GET", "/api/events/stream", params=params) as bobs, \
            server.client("viewer").stream("GET", "/api/events/stream", params=params) as veras:  # fmt: skip
        (alices,) = enqueue_elsewhere(server, queue, "alice")
        ok(server.client("admin").post(f"/api/queues/{queue}/pause"))  # nobody's: everyone sees it
        (his,) = enqueue_elsewhere(server, queue, "bob")
        seen = read_sse(bobs, 2)
        assert [(e.event, e.data["job_id"]) for e in seen] == [("queue_paused", None), ("enqueued", his)]
        everything = read_sse(veras, 3)
        assert [e.data["job_id"] for e in everything] == [alices, None, his]
    ok(server.client("admin").post(f"/api/queues/{queue}/resume"))


def test_a_jobs_own_stream(web_server: WebServer) -> None:
    job = ok(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2],
                                                                "queue": fresh_queue()}), 201)  # fmt: skip
    with web_server.client("owner").stream("GET", "/api/events/stream", params={"job_id": job["id"],
                                                                               "after": 0}) as answer:  # fmt: skip
        web_server.app.run_until_empty([job["queue"]])
        assert [e.event for e in read_sse(answer, 3)] == ["enqueued", "started", "succeeded"]
    error(web_server.client("other").get("/api/events/stream", params={"job_id": job["id"]}), 404)


def test_bad_stream_requests(web_server: WebServer) -> None:
    error(web_server.client(None).get("/api/events/stream"), 401)
    error(web_server.client("owner").get("/api/events/stream", headers={"Last-Event-ID": "seven"}), 400)
    error(web_server.client("owner").get("/api/events/stream", params={"after": -1}), 400)
    error(web_server.client("owner").get("/api/events/stream", params={"kinds": ","}), 400)


def test_keep_alive_comments_and_a_revoked_token_ends_the_stream(start_web_server: Callable[..., WebServer]) -> None:
    server = start_web_server(env={"CONVEYOR_WEB_TEST_KEEPALIVE": "0.3"})
    record = server.app.tokens("alice")[0]
    comments = 0
    with server.client("owner").stream("GET", "/api/events/stream") as answer:
        lines = answer.iter_lines()
        while comments < 3:
            comments += next(lines) == ": keep-alive"
        revoked = ok(server.client("system").delete(f"/api/tokens/{record.id}"))
        assert revoked["revoked_at"] is not None
        started = time.monotonic()
        rest = list(lines)  # the stream ends at the next keep-alive
    assert time.monotonic() - started < 5 and rest.count(": keep-alive") <= 1
    error(server.client("owner").get("/api/me"), 401)


def test_the_list_filters_pages_and_permissions(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    start = server.app.backend.last_event_seq()
    alices = ok(server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": queue}), 201)
    bobs = ok(server.client("other").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": queue}), 201)
    server.app.run_until_empty([queue])

    def listed(who: str, **params: object) -> list[tuple[str | None, str]]:
        page = ok(server.client(who).get("/api/events", params={"queue": queue, "after": start, **params}))
        return [(e["job_id"], e["kind"]) for e in page["items"]]

    assert {job for job, _ in listed("owner")} == {alices["id"]}
    assert {job for job, _ in listed("other")} == {bobs["id"]}
    assert {job for job, _ in listed("viewer")} == {alices["id"], bobs["id"]}
    assert listed("owner", kinds="succeeded") == [(alices["id"], "succeeded")]
    assert listed("system", job_id=bobs["id"], kinds="enqueued,started") == [(bobs["id"], "enqueued"),
                                                                              (bobs["id"], "started")]  # fmt: skip
    first = ok(server.client("viewer").get("/api/events", params={"queue": queue, "after": start, "limit": 2}))
    assert len(first["items"]) == 2 and first["next_after"] == first["items"][-1]["seq"]
    rest = ok(server.client("viewer").get("/api/events", params={"queue": queue, "after": first["next_after"]}))
    assert len(first["items"]) + len(rest["items"]) == 6
    # a page of only others' events is empty for bob, and still moves him on
    mine_only = ok(server.client("other").get("/api/events", params={"job_id": alices["id"], "after": start}))
    assert mine_only["items"] == [] and mine_only["next_after"] > start
    error(server.client(None).get("/api/events"), 401)
    error(server.client("owner").get("/api/events", params={"limit": 1000}), 400)


def test_service_and_schedule_events_are_their_owners(web_server: WebServer) -> None:
    start = web_server.app.backend.last_event_seq()
    name = f"tick-{uuid.uuid4().hex[:8]}"
    ok(web_server.client("owner").post("/api/services", json={"service": "ticker", "name": name,
                                                              "params": {"every": 1}}), 201)  # fmt: skip
    ok(web_server.client("owner").post(f"/api/services/{name}/stop"))

    def kinds(who: str) -> list[str]:
        page = ok(web_server.client(who).get("/api/events", params={"after": start, "kinds": "service_created,"
                                                                    "service_requested"}))  # fmt: skip
        return [e["kind"] for e in page["items"] if e["data"].get("service") == name]

    assert kinds("owner") == ["service_created", "service_requested"]
    assert kinds("other") == []
    assert kinds("viewer") == ["service_created", "service_requested"]
