"""The jobs routes against a real server process: enqueue (every option, the task's own defaults,
owners), pipelines, listing (filters, search, pages, owners), one job (404 for a job the caller may
not see), its events, cancel / retry / reset / messages with every permission case, bulk actions,
and bad requests (malformed JSON, unknown task, bad arguments, oversized bodies), which answer a
4xx JSON error and store nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conveyor import App, Status

from .conftest import WebServer, error, ok

KINDS = ("owner", "other", "viewer", "admin", "reader", "operator", "system")


def fresh_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def total_jobs(app: App) -> int:
    return sum(app.stats()["all"].values())


def enqueue(server: WebServer, who: str = "owner", **body: Any) -> dict[str, Any]:
    body.setdefault("task", "add")
    body.setdefault("args", [1, 2])
    result: dict[str, Any] = ok(server.client(who).post("/api/jobs", json=body), 201)
    return result


def job_of(server: WebServer, owner: str, queue: str | None = None, task: str = "add", args: Any = (1, 2)) -> str:
    """A job made in this process (any owner, even one who may not enqueue through the API)."""
    return server.app.enqueue(task, list(args), queue=queue or fresh_queue(), owner=owner).id


def failed_job(server: WebServer, owner: str) -> str:
    queue = fresh_queue()
    job_id = server.app.enqueue("fail", queue=queue, owner=owner).id
    server.app.run_until_empty([queue])
    assert server.app.job(job_id).status is Status.FAILED
    return job_id


# enqueue --------------------------------------------------------------------------------------------------------
def test_enqueue_answers_the_new_job_owned_by_the_caller(any_web_server: WebServer) -> None:
    job = enqueue(any_web_server, task="add", args=[2, 3], queue=fresh_queue())
    assert job["owner"] == "alice" and job["status"] == "queued" and job["args"] == [2, 3]
    assert job["token"] is None
    stored = any_web_server.app.job(job["id"])
    assert stored.owner == "alice" and stored.task == "add"
    any_web_server.app.run_until_empty([job["queue"]])
    assert ok(any_web_server.client("owner").get(f"/api/jobs/{job['id']}"))["result"] == 5


def test_enqueue_takes_every_option(web_server: WebServer) -> None:
    queue = fresh_queue()
    job = enqueue(web_server, task="echo", args=["x"], kwargs={"k": [1, {"a": None}]}, queue=queue, priority="high",
                  delay=60, key=f"key-{queue}", id=f"id-{queue}", max_retries=3, timeout=9.5, result_ttl=120,
                  notify=True)  # fmt: skip
    assert job["id"] == f"id-{queue}" and job["status"] == "scheduled"
    stored = web_server.app.job(job["id"])
    assert (stored.queue, stored.priority, stored.key, stored.max_retries, stored.timeout, stored.result_ttl) == (
        queue, 3, f"key-{queue}", 3, 9.5, 120.0)  # fmt: skip
    assert stored.kwargs == {"k": [1, {"a": None}]} and stored.notify and stored.owner == "alice"
    assert stored.scheduled_at > time.time() + 50


def test_enqueue_uses_the_tasks_own_options_when_left_out(web_server: WebServer) -> None:
    job = enqueue(web_server, task="strict", args=[4])
    assert (job["queue"], job["max_retries"], job["timeout"]) == ("strict", 2, 30.0)
    numbered = enqueue(web_server, task="strict", args=[4], priority=4, eta="2030-01-01T00:00:00Z")
    assert numbered["priority"] == 4 and numbered["scheduled_at"] == 1893456000.0


def test_a_key_held_by_the_callers_job_answers_it_and_one_held_by_anothers_is_a_conflict(web_server: WebServer) -> None:
    key = f"key-{uuid.uuid4().hex}"
    first = enqueue(web_server, key=key)
    again = web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "key": key})
    assert ok(again, 200)["id"] == first["id"]
    body = error(web_server.client("other").post("/api/jobs", json={"task": "add", "args": [1, 2], "key": key}), 409)
    assert first["id"] not in body["message"]


def test_a_taken_id_is_a_conflict(web_server: WebServer) -> None:
    job = enqueue(web_server)
    error(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "id": job["id"]}), 409)


def test_only_a_system_user_gives_another_owner(web_server: WebServer) -> None:
    made = enqueue(web_server, "system", owner="bob")
    assert made["owner"] == "bob"
    ok(web_server.client("other").get(f"/api/jobs/{made['id']}"))
    error(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "owner": "bob"}), 403)
    assert enqueue(web_server, owner="alice")["owner"] == "alice"  # naming oneself is fine


@pytest.mark.parametrize("who", ["reader", "operator"])
def test_read_only_users_enqueue_nothing(web_server: WebServer, who: str) -> None:
    before = total_jobs(web_server.app)
    error(web_server.client(who).post("/api/jobs", json={"task": "add", "args": [1, 2]}), 403, "forbidden")
    error(web_server.client(who).post("/api/pipelines", json={"pipeline": "order"}), 403, "forbidden")
    assert total_jobs(web_server.app) == before


def test_anonymous_requests_are_refused(web_server: WebServer) -> None:
    before = total_jobs(web_server.app)
    anonymous = web_server.client(None)
    error(anonymous.post("/api/jobs", json={"task": "add", "args": [1, 2]}), 401, "unauthorized")
    assert anonymous.post("/api/jobs", json={}).headers["www-authenticate"] == "Bearer"
    bad = {"Authorization": "Bearer cv_000000000000_" + "x" * 40}
    error(anonymous.post("/api/jobs", json={"task": "add"}, headers=bad), 401)
    error(anonymous.get("/api/jobs", headers={"Authorization": "Basic abc"}), 401)
    error(anonymous.get("/api/jobs", headers={"Authorization": "Bearer not-a-token"}), 401)
    assert total_jobs(web_server.app) == before


BAD_BODIES: list[tuple[str, bytes | str, int]] = [
    ("malformed JSON", b'{"task": "add", "args": [1, 2', 400),
    ("not an object", b"[1, 2]", 400),
    ("a field of the wrong type", b'{"task": "add", "args": "1, 2"}', 400),
    ("an unknown field", b'{"task": "add", "args": [1, 2], "retries": 3}', 400),
    ("a bad priority", b'{"task": "add", "args": [1, 2], "priority": 7}', 400),
    ("a negative delay", b'{"task": "add", "args": [1, 2], "delay": -1}', 400),
    ("no task", b'{"args": [1, 2]}', 400),
    ("deep nesting", b'{"task": "echo", "args": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    ("an unknown task", b'{"task": "nope", "args": []}', 422),
    ("arguments the function cannot take", b'{"task": "add", "args": [1, 2, 3]}', 422),
    ("a keyword the function does not have", b'{"task": "add", "args": [1], "kwargs": {"c": 2}}', 422),
    ("notify without an owner is fine: the caller owns it", b'{"task": "add", "args": [1, 2], "notify": true}', 201),
]


@pytest.mark.parametrize(("what", "body", "status"), BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_bad_bodies_answer_a_json_error_and_store_nothing(
    web_server: WebServer, what: str, body: bytes | str, status: int
) -> None:
    app = web_server.app
    before = total_jobs(app)
    answer = web_server.client("owner").post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    if status == 201:
        ok(answer, 201)
        assert total_jobs(app) == before + 1
        return
    found = error(answer, status, {400: "bad_request", 422: "invalid"}[status])
    assert total_jobs(app) == before, found
    if what == "an unknown task":
        assert "nope" in found["message"] and "add" in found["message"]
    if what == "an unknown field":
        assert "retries" in found["message"]


def test_an_oversized_body_is_refused_with_413_whether_its_length_is_given_or_not(web_server: WebServer) -> None:
    app = web_server.app
    before = total_jobs(app)
    big = '{"task": "echo", "args": ["' + "x" * 1_100_000 + '"]}'
    error(web_server.client("owner").post("/api/jobs", content=big), 413, "too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"task": "echo", "args": ["'
        for _ in range(120):
            yield b"y" * 10_000
        yield b'"]}'

    error(web_server.client("owner").post("/api/jobs", content=chunks()), 413, "too_large")
    assert total_jobs(app) == before
    enqueue(web_server, task="echo", args=["z" * 900_000])  # under the limit


def test_a_small_body_limit_is_the_servers_to_set(start_web_server: Any) -> None:
    server = start_web_server(max_body=200)
    error(server.client("owner").post("/api/jobs", json={"task": "echo", "args": ["x" * 300]}), 413)
    enqueue(server, task="echo", args=["x" * 50])


# pipelines --------------------------------------------------------------------------------------------------------
def test_a_pipeline_by_name_waits_for_its_message_and_resumes(any_web_server: WebServer) -> None:
    server = any_web_server
    alice = server.client("owner")
    job = ok(alice.post("/api/pipelines", json={"pipeline": "order", "notify": True}), 201)
    assert job["owner"] == "alice" and job["stages"] is not None
    server.app.run_until_empty([job["queue"]])
    detail = ok(alice.get(f"/api/jobs/{job['id']}"))
    assert detail["status"] == "waiting"
    assert [row["status"] for row in detail["stage_view"]] == ["succeeded", "waiting", "pending"]
    assert detail["stage_view"][1]["waiting_for"] == "go"
    sent = ok(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": "go", "payload": {"paid": 10}, "id": "m1"}))
    assert sent == {"delivery": "resumed"}
    assert ok(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": "go", "id": "m1"}))["delivery"] == (
        "duplicate")  # fmt: skip
    server.app.run_until_empty([job["queue"]])
    detail = ok(alice.get(f"/api/jobs/{job['id']}"))
    assert detail["status"] == "succeeded"
    assert detail["messages"][0]["payload"] == {"paid": 10}
    assert detail["results"][1] == {"paid": 10}
    notes = ok(alice.get("/api/notifications"))["items"]
    assert any(note["job_id"] == job["id"] for note in notes)


def test_a_pipeline_from_its_dict_form(web_server: WebServer) -> None:
    declared = web_server.app.pipelines["order"].to_dict()
    job = ok(web_server.client("owner").post("/api/pipelines", json={"pipeline": declared, "owner": "alice"}), 201)
    assert job["owner"] == "alice"
    bad = {**declared, "stages": [{"kind": "call", "task": "nope"}]}
    before = total_jobs(web_server.app)
    error(web_server.client("owner").post("/api/pipelines", json={"pipeline": bad}), 422)
    error(web_server.client("owner").post("/api/pipelines", json={"pipeline": "unknown"}), 422)
    assert total_jobs(web_server.app) == before


def test_the_declared_pipelines_are_listed(web_server: WebServer) -> None:
    (order,) = ok(web_server.client("reader").get("/api/pipelines"))
    assert order["name"] == "order" and order["stages"][1] == "Message('go')"


# reading ----------------------------------------------------------------------------------------------------------
def test_lists_hold_only_the_callers_jobs_without_view_others(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    mine = {enqueue(server, "owner", queue=queue)["id"] for _ in range(2)}
    theirs = {enqueue(server, "other", queue=queue)["id"]}

    def listed(who: str, **params: Any) -> set[str]:
        return {
            job["id"] for job in ok(server.client(who).get("/api/jobs", params={"queue": queue, **params}))["items"]
        }

    assert listed("owner") == mine and listed("other") == theirs
    assert listed("viewer") == listed("operator") == listed("admin") == listed("system") == mine | theirs
    assert listed("other", owner="alice") == set() and listed("viewer", owner="alice") == mine
    assert listed("reader") == set()


def test_list_filters_search_and_pages(web_server: WebServer) -> None:
    queue = fresh_queue()
    alice = web_server.client("owner")
    made = [enqueue(web_server, task="echo", args=[f"needle-{i}"], queue=queue)["id"] for i in range(5)]
    failed = enqueue(web_server, task="fail", args=[], queue=queue)["id"]
    web_server.app.run_until_empty([queue])

    def listed(**params: Any) -> dict[str, Any]:
        result: dict[str, Any] = ok(alice.get("/api/jobs", params={"queue": queue, **params}))
        return result

    assert [j["id"] for j in listed(status="failed")["items"]] == [failed]
    assert {j["id"] for j in listed(task="echo")["items"]} == set(made)
    assert [j["id"] for j in listed(q="needle-3")["items"]] == [made[3]]
    assert [j["id"] for j in listed(q=made[2][:12])["items"]] == [made[2]]
    first = listed(limit=4)
    assert len(first["items"]) == 4 and first["next_offset"] == 4
    second = listed(limit=4, offset=4)
    assert len(second["items"]) == 2 and second["next_offset"] is None
    assert {j["id"] for j in first["items"] + second["items"]} == {*made, failed}
    for bad in ({"limit": 501}, {"limit": 0}, {"offset": -1}, {"status": "done"}, {"limit": "ten"}):
        error(alice.get("/api/jobs", params=bad), 400, "bad_request")


JOB_VIEW = {"owner": 200, "other": 404, "viewer": 200, "admin": 200, "reader": 404, "operator": 200, "system": 200}


@pytest.mark.parametrize("who", KINDS)
def test_who_sees_a_job(web_server: WebServer, who: str) -> None:
    job_id = job_of(web_server, "alice")
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/events"):
        answer = web_server.client(who).get(path)
        if JOB_VIEW[who] == 404:  # exactly as for a job that does not exist
            assert error(answer, 404, "not_found")["message"] == f"no job with id {job_id!r}"
            assert error(web_server.client(who).get(path.replace(job_id, "0" * 32)), 404)["message"] == (
                f"no job with id {'0' * 32!r}")  # fmt: skip
        else:
            ok(answer)
    error(web_server.client(None).get(f"/api/jobs/{job_id}"), 401)


def test_a_jobs_events(web_server: WebServer) -> None:
    job = enqueue(web_server, queue=fresh_queue())
    web_server.app.run_until_empty([job["queue"]])
    page = ok(web_server.client("owner").get(f"/api/jobs/{job['id']}/events"))
    assert [e["kind"] for e in page["items"]] == ["enqueued", "started", "succeeded"]
    assert page["next_after"] == page["items"][-1]["seq"]
    params = {"after": page["items"][0]["seq"], "kinds": "succeeded"}
    later = ok(web_server.client("owner").get(f"/api/jobs/{job['id']}/events", params=params))
    assert [e["kind"] for e in later["items"]] == ["succeeded"]


# controls ---------------------------------------------------------------------------------------------------------
#: What each kind of user gets changing alice's job: seen and changed; seen, not changed (403); not seen (404).
CHANGE_OTHERS = {"owner": 200, "other": 404, "viewer": 403, "admin": 200, "reader": 404, "operator": 403,
                 "system": 200}  # fmt: skip


@pytest.mark.parametrize("who", KINDS)
def test_who_cancels_a_job(web_server: WebServer, who: str) -> None:
    job_id = job_of(web_server, "alice")
    answer = web_server.client(who).post(f"/api/jobs/{job_id}/cancel")
    expected = CHANGE_OTHERS[who]
    if expected == 200:
        assert ok(answer)["status"] == "cancelled"
    else:
        error(answer, expected, {403: "forbidden", 404: "not_found"}[expected])
        assert web_server.app.job(job_id).status is Status.QUEUED
    error(web_server.client(None).post(f"/api/jobs/{job_id}/cancel"), 401)


@pytest.mark.parametrize("who", KINDS)
def test_who_retries_and_resets_a_job(web_server: WebServer, who: str) -> None:
    job_id = failed_job(web_server, "alice")
    expected = CHANGE_OTHERS[who]
    answer = web_server.client(who).post(f"/api/jobs/{job_id}/retry", json={"reset": True})
    if expected == 200:
        assert ok(answer)["status"] == "queued" and ok(answer)["attempts"] == 0
        web_server.app.run_until_empty([web_server.app.job(job_id).queue])  # fails again
        assert ok(web_server.client(who).post(f"/api/jobs/{job_id}/reset"))["status"] == "queued"
    else:
        error(answer, expected)
        error(web_server.client(who).post(f"/api/jobs/{job_id}/reset"), expected)
        assert web_server.app.job(job_id).status is Status.FAILED


def test_read_only_users_cannot_change_even_their_own_jobs(web_server: WebServer) -> None:
    job_id = job_of(web_server, "rita")
    reader = web_server.client("reader")
    ok(reader.get(f"/api/jobs/{job_id}"))
    for action in ("cancel", "reset"):
        assert "read-only" in error(reader.post(f"/api/jobs/{job_id}/{action}"), 403)["message"]
    error(reader.post(f"/api/jobs/{job_id}/messages", json={"name": "go"}), 403)
    error(reader.post("/api/jobs/bulk", json={"action": "cancel", "ids": [job_id]}), 403)
    assert web_server.app.job(job_id).status is Status.QUEUED


def test_states_that_do_not_allow_the_change_are_conflicts(any_web_server: WebServer) -> None:
    server = any_web_server
    alice = server.client("owner")
    queue = fresh_queue()
    job = enqueue(server, queue=queue)
    error(alice.post(f"/api/jobs/{job['id']}/retry"), 409, "conflict")
    error(alice.post(f"/api/jobs/{job['id']}/reset"), 409)
    server.app.backend.claim([queue], "test-worker", 1, 30.0, server.app.clock())  # now running
    assert ok(alice.get(f"/api/jobs/{job['id']}"))["status"] == "running"
    error(alice.post(f"/api/jobs/{job['id']}/retry"), 409)
    ok(alice.post(f"/api/jobs/{job['id']}/cancel"))
    error(alice.post(f"/api/jobs/{job['id']}/cancel"), 409)  # finished: nothing to cancel
    error(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": "go", "payload": [1]}), 409)  # finished
    assert ok(alice.post(f"/api/jobs/{job['id']}/retry"))["status"] == "queued"
    plain = failed_job(server, "alice")
    assert ok(alice.post(f"/api/jobs/{plain}/reset"))["status"] == "queued"  # a failed plain job starts afresh


def test_a_message_body_is_checked(web_server: WebServer) -> None:
    job = ok(web_server.client("owner").post("/api/pipelines", json={"pipeline": "order"}), 201)
    alice = web_server.client("owner")
    error(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": ""}), 400)
    error(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": "go", "extra": 1}), 400)
    assert ok(alice.post(f"/api/jobs/{job['id']}/messages", json={"name": "go"}))["delivery"] == "stored"


# bulk ---------------------------------------------------------------------------------------------------------------
def test_bulk_cancel_of_a_filter_with_a_dry_run_first(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    mine = [enqueue(server, queue=queue)["id"] for _ in range(3)]
    later = enqueue(server, queue=queue, delay=3600)["id"]
    theirs = enqueue(server, "other", queue=queue)["id"]
    alice = server.client("owner")
    dry = ok(alice.post("/api/jobs/bulk", json={"action": "cancel", "filter": {"queue": queue}, "dry_run": True}))
    assert dry["matched"] == 4 and dry["changed"] == 0 and set(dry["ids"]) == {*mine, later}
    assert all(server.app.job(i).status is Status.QUEUED for i in mine)
    done = ok(alice.post("/api/jobs/bulk", json={"action": "cancel", "filter": {"queue": queue}}))
    assert done["matched"] == done["changed"] == 4 and set(done["ids"]) == {*mine, later}
    assert server.app.job(theirs).status is Status.QUEUED  # not alice's to change
    everyone = ok(server.client("admin").post("/api/jobs/bulk", json={"action": "cancel", "filter": {"queue": queue}}))
    assert everyone["ids"] == [theirs]
    entries = ok(server.client("system").get("/api/audit", params={"user": "alice", "limit": 500}))["items"]
    assert any(e["action"] == "jobs.bulk_cancel" and e["data"]["changed"] == 4 for e in entries)


def test_bulk_retry_of_ids_changes_only_what_the_caller_may(web_server: WebServer) -> None:
    mine = [failed_job(web_server, "alice") for _ in range(2)]
    theirs = failed_job(web_server, "bob")
    queued = job_of(web_server, "alice")
    body = {"action": "retry", "ids": [*mine, theirs, queued, "no-such-job"]}
    done = ok(web_server.client("owner").post("/api/jobs/bulk", json=body))
    assert done["matched"] == 2 and sorted(done["ids"]) == sorted(mine)
    assert web_server.app.job(theirs).status is Status.FAILED
    assert ok(web_server.client("system").post("/api/jobs/bulk", json={"action": "retry", "ids": [theirs]}))[
        "changed"] == 1  # fmt: skip


def test_bulk_filter_by_status(web_server: WebServer) -> None:
    queue = fresh_queue()
    due = enqueue(web_server, queue=queue)["id"]
    later = enqueue(web_server, queue=queue, delay=3600)["id"]
    alice = web_server.client("owner")
    body = {"action": "cancel", "filter": {"queue": queue, "status": "scheduled"}, "dry_run": True}
    assert ok(alice.post("/api/jobs/bulk", json=body))["ids"] == [later]
    body["filter"] = {"queue": queue, "status": "queued"}
    assert ok(alice.post("/api/jobs/bulk", json=body))["ids"] == [due]
    body["filter"] = {"queue": queue, "status": "succeeded"}
    assert ok(alice.post("/api/jobs/bulk", json=body))["matched"] == 0
    body["action"], body["filter"] = "retry", {"queue": queue}
    assert ok(alice.post("/api/jobs/bulk", json=body))["matched"] == 0


@pytest.mark.parametrize("body", [
    {"action": "cancel"},
    {"action": "cancel", "ids": ["a"], "filter": {"queue": "q"}},
])  # fmt: skip
def test_bulk_needs_exactly_one_of_ids_and_filter(web_server: WebServer, body: dict[str, Any]) -> None:
    error(web_server.client("owner").post("/api/jobs/bulk", json=body), 422, "invalid")


def test_bulk_refuses_a_bad_action(web_server: WebServer) -> None:
    error(web_server.client("owner").post("/api/jobs/bulk", json={"action": "delete", "ids": ["a"]}), 400)
    error(web_server.client("owner").post("/api/jobs/bulk", json={"action": "cancel", "ids": ["a"] * 10_001}), 400)


# notifications --------------------------------------------------------------------------------------------------------
def test_notifications_are_the_callers_own(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = fresh_queue()
    job = enqueue(server, queue=queue, notify=True)
    other = enqueue(server, "other", queue=queue, notify=True)
    server.app.run_until_empty([queue])
    alice, bob = server.client("owner"), server.client("other")

    def unread(client: httpx.Client) -> list[str]:
        return [n["job_id"] for n in ok(client.get("/api/notifications", params={"unread": "true"}))["items"]]

    assert job["id"] in unread(alice) and other["id"] not in unread(alice)
    assert other["id"] in unread(bob) and job["id"] not in unread(bob)
    assert job["id"] not in unread(server.client("system"))  # own only, whatever the permissions
    note = next(n for n in ok(alice.get("/api/notifications"))["items"] if n["job_id"] == job["id"])
    assert note["status"] == "succeeded" and not note["read"]
    assert ok(bob.post("/api/notifications/read", json={"ids": [note["id"]]}))["changed"] == 0  # not bob's
    assert ok(alice.post("/api/notifications/read", json={"ids": [note["id"]]}))["changed"] == 1
    assert job["id"] not in unread(alice)
    ok(alice.post("/api/notifications/read", json={}))
    assert unread(alice) == []
    error(server.client("reader").post("/api/notifications/read", json={}), 403)
    error(server.client(None).get("/api/notifications"), 401)


def test_nul_characters_are_refused_where_a_store_cannot_keep_them(any_web_server: WebServer) -> None:
    """PostgreSQL's text holds no NUL: names, queues, ids and labels refuse one (a 400, not a 500);
    arguments are JSON, where it is escaped, and keep it."""
    client = any_web_server.client("system")
    error(client.get("/api/jobs/a%00b"), 400)
    error(client.post("/api/queues/a%00b/pause"), 400)
    error(client.post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": "a\x00b"}), 400)
    error(client.get("/api/jobs", params={"q": "a\x00b"}), 400)
    error(client.post("/api/users/root/tokens", json={"label": "a\x00"}), 400)
    bad = {"stages": [{"kind": "message", "name": "a\x00"}]}
    error(client.post("/api/pipelines", json={"pipeline": bad}), 422)
    job = ok(client.post("/api/jobs", json={"task": "echo", "args": ["a\x00b"], "kwargs": {"k\x00": 1}}), 201)
    assert any_web_server.app.job(job["id"]).args == ["a\x00b"]
