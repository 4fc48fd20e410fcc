"""The accounts routes against a real server process: who am I, users (system), tokens (system, or
one's own; shown once, never listed), the audit log and prune (system); every route refuses an
anonymous request with 401; a revoked token stops working (at once through this server, within the
cache's 5 s otherwise); and the server with authentication off, and mounted inside a host app."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from conveyor.web.server import endpoints

from .conftest import WebServer, error, ok

KINDS = ("owner", "other", "viewer", "admin", "reader", "operator", "system")
ME = {  # kind -> (view_others, modify_others, system, can_write)
    "owner": (False, False, False, True),
    "other": (False, False, False, True),
    "viewer": (True, False, False, True),
    "admin": (True, True, False, True),
    "reader": (False, False, False, False),
    "operator": (True, False, False, False),
    "system": (True, True, True, True),
}


@pytest.mark.parametrize("who", KINDS)
def test_me(web_server: WebServer, who: str) -> None:
    me = ok(web_server.client(who).get("/api/me"))
    assert me["name"] == web_server.name(who)
    assert (me["view_others"], me["modify_others"], me["system"], me["can_write"]) == ME[who]


@pytest.mark.parametrize("endpoint", [e for e in endpoints() if not e.public],
                         ids=lambda e: f"{e.method} {e.path}")  # fmt: skip
def test_every_route_refuses_an_anonymous_request(web_server: WebServer, endpoint: Any) -> None:
    path = re.sub(r"{[^}]+}", "x", endpoint.path)
    answer = web_server.client(None).request(endpoint.method, path, json={})
    error(answer, 401, "unauthorized")
    assert answer.headers["www-authenticate"] == "Bearer"


# users ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("who", [kind for kind in KINDS if kind != "system"])
def test_only_system_manages_users(web_server: WebServer, who: str) -> None:
    client = web_server.client(who)
    someone = "bob" if who != "other" else "alice"
    error(client.get("/api/users"), 403, "forbidden")
    error(client.post("/api/users", json={"name": "mallory", "permissions": ["system"]}), 403)
    error(client.delete(f"/api/users/{someone}"), 403)
    error(client.get(f"/api/users/{someone}/tokens"), 403)
    error(client.post(f"/api/users/{someone}/tokens", json={}), 403)
    error(client.get("/api/audit"), 403)
    error(client.post("/api/prune", json={}), 403)
    assert all(user.name != "mallory" for user in web_server.app.users())


def test_users_are_added_changed_listed_and_removed(web_server: WebServer) -> None:
    root = web_server.client("system")
    name = f"u-{uuid.uuid4().hex[:8]}"
    made = ok(root.post("/api/users", json={"name": name, "role": "operator"}), 201)
    assert made["name"] == name and made["permissions"] == ["read-only", "view-others"]
    changed = ok(root.post("/api/users", json={"name": name, "permissions": ["modify-others"]}), 200)
    assert changed["permissions"] == ["modify-others"]
    assert name in {u["name"] for u in ok(root.get("/api/users", params={"limit": 500}))["items"]}
    token = ok(root.post(f"/api/users/{name}/tokens", json={"label": "ci"}), 201)["token"]
    assert ok(web_server.client(None).get("/api/me", headers={"Authorization": f"Bearer {token}"}))["name"] == name
    assert ok(root.delete(f"/api/users/{name}")) == {"removed": True}
    error(web_server.client(None).get("/api/me", headers={"Authorization": f"Bearer {token}"}), 401)  # at once
    error(root.delete(f"/api/users/{name}"), 404)
    actions = [e["action"] for e in ok(root.get("/api/audit", params={"user": "root", "limit": 500}))["items"]
               if e["target"] == name]  # fmt: skip
    assert actions == ["user.add", "user.update", "user.remove"]


@pytest.mark.parametrize(("body", "status"), [
    ({"name": "bad name!"}, 422),
    ({"name": ""}, 400),
    ({"name": "x", "permissions": ["root"]}, 400),
    ({"name": "x", "role": "god"}, 400),
    ({"permissions": []}, 400),
])  # fmt: skip
def test_bad_users_are_refused(web_server: WebServer, body: dict[str, Any], status: int) -> None:
    before = len(web_server.app.users())
    error(web_server.client("system").post("/api/users", json=body), status)
    assert len(web_server.app.users()) == before


def test_a_system_user_cannot_remove_themselves(web_server: WebServer) -> None:
    error(web_server.client("system").delete("/api/users/root"), 409)
    ok(web_server.client("system").get("/api/me"))


# tokens ------------------------------------------------------------------------------------------------------------
def test_a_user_manages_their_own_tokens(any_web_server: WebServer) -> None:
    server = any_web_server
    alice = server.client("owner")
    made = ok(alice.post("/api/users/alice/tokens", json={"label": "laptop"}), 201)
    assert made["user"] == "alice" and made["label"] == "laptop" and made["token"].startswith(f"cv_{made['id']}_")
    listed = ok(alice.get("/api/users/alice/tokens"))["items"]
    assert made["id"] in {t["id"] for t in listed}
    assert all(set(t) == {"id", "user", "label", "created_at", "last_used_at", "revoked_at"} for t in listed)
    assert made["token"] not in str(listed)
    fresh = {"Authorization": f"Bearer {made['token']}"}
    assert ok(server.client(None).get("/api/me", headers=fresh))["name"] == "alice"
    error(server.client("other").delete(f"/api/tokens/{made['id']}"), 404)  # not bob's: not seen
    revoked = ok(alice.delete(f"/api/tokens/{made['id']}"))
    assert revoked["revoked_at"] is not None
    error(server.client(None).get("/api/me", headers=fresh), 401)  # at once, through this server
    error(alice.delete(f"/api/tokens/{made['id']}"), 409)
    error(alice.delete("/api/tokens/000000000000"), 404)
    entries = ok(server.client("system").get("/api/audit", params={"user": "alice", "limit": 500}))["items"]
    assert {"token.create", "token.revoke"} <= {e["action"] for e in entries if e["target"] == made["id"]}


def test_system_manages_anyones_tokens(web_server: WebServer) -> None:
    root = web_server.client("system")
    made = ok(root.post("/api/users/bob/tokens", json={}), 201)
    assert made["user"] == "bob"
    assert made["id"] in {t["id"] for t in ok(root.get("/api/users/bob/tokens"))["items"]}
    ok(root.delete(f"/api/tokens/{made['id']}"))
    error(root.get("/api/users/nobody-here/tokens"), 404)
    error(root.post("/api/users/nobody-here/tokens", json={}), 404)


@pytest.mark.parametrize("who", ["reader", "operator"])
def test_read_only_users_make_no_tokens(web_server: WebServer, who: str) -> None:
    name = web_server.name(who)
    ok(web_server.client(who).get(f"/api/users/{name}/tokens"))
    error(web_server.client(who).post(f"/api/users/{name}/tokens", json={}), 403)


def test_a_token_revoked_elsewhere_stops_working_within_the_cache_time(web_server: WebServer) -> None:
    record, token = web_server.app.create_token("bob", "short-lived")
    headers = {"Authorization": f"Bearer {token}"}
    ok(web_server.client(None).get("/api/me", headers=headers))  # cached now
    web_server.app.revoke_token(record.id)  # not through the server: its cache does not know
    started = time.monotonic()
    while web_server.client(None).get("/api/me", headers=headers).status_code == 200:
        assert time.monotonic() - started < 7, "the revoked token still works after the cache's 5 s"
        time.sleep(0.2)


# the audit log and prune ---------------------------------------------------------------------------------------
def test_the_audit_log_pages_by_sequence_number(web_server: WebServer) -> None:
    root = web_server.client("system")
    for _ in range(3):
        ok(web_server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2]}), 201)
    entries = ok(root.get("/api/audit", params={"user": "alice", "limit": 500}))["items"]
    assert len(entries) >= 3 and all(e["user"] == "alice" for e in entries)
    assert entries[-1]["action"] == "job.enqueue" and entries[-1]["data"]["task"] == "add"
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs)
    page = ok(root.get("/api/audit", params={"after": seqs[-3], "limit": 1, "user": "alice"}))
    assert [e["seq"] for e in page["items"]] == [seqs[-2]] and page["next_after"] == seqs[-2]


def test_prune_deletes_finished_jobs(any_web_server: WebServer) -> None:
    server = any_web_server
    queue = f"q-{uuid.uuid4().hex[:8]}"
    job = ok(server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2], "queue": queue}), 201)
    server.app.run_until_empty([queue])
    time.sleep(0.05)
    pruned = ok(server.client("system").post("/api/prune", json={"older_than": 0}))
    assert pruned["deleted"] >= 1
    error(server.client("owner").get(f"/api/jobs/{job['id']}"), 404)
    error(server.client("system").post("/api/prune", json={"older_than": -1}), 400)
    assert any(e["action"] == "prune" for e in ok(server.client("system").get("/api/audit", params={
        "user": "root", "limit": 500}))["items"])  # fmt: skip


# the server's modes ---------------------------------------------------------------------------------------------
def test_with_authentication_off_every_request_is_the_local_system_user(
    start_web_server: Callable[..., WebServer],
) -> None:
    server = start_web_server(auth=False)
    anonymous = server.client(None)
    me = ok(anonymous.get("/api/me"))
    assert me["name"] == "local" and me["system"] is True
    job = ok(anonymous.post("/api/jobs", json={"task": "add", "args": [1, 2]}), 201)
    assert job["owner"] == "local"
    assert ok(anonymous.get("/api/users"))["items"]
    assert ok(server.client("owner").get("/api/me"))["name"] == "local"  # a token changes nothing
    assert [e["user"] for e in ok(anonymous.get("/api/audit"))["items"]] == ["local"]


def test_mounted_inside_a_host_app_at_a_path(start_web_server: Callable[..., WebServer]) -> None:
    server = start_web_server(mount="/conveyor")
    assert server.url.endswith("/conveyor")
    assert ok(server.client("owner").get("/api/me"))["name"] == "alice"
    job = ok(server.client("owner").post("/api/jobs", json={"task": "add", "args": [1, 2]}), 201)
    ok(server.client("owner").get(f"/api/jobs/{job['id']}"))
    document = ok(server.client(None).get("/openapi.json"))
    assert document["servers"] == [{"url": "/conveyor"}]
    error(server.client(None).get("/api/me"), 401)
    error(server.client("owner").get("/api/nothing-here"), 404, "not_found")
    error(server.client("owner").delete("/api/me"), 405, "method_not_allowed")
    host = server.url.removesuffix("/conveyor")
    assert server.client(None).get(f"{host}/").text == "the host app"
    with server.client("owner").stream("GET", "/api/events/stream", params={"after": 0}) as answer:
        assert answer.status_code == 200
        assert any(line.startswith("event: enqueued") for line, _ in zip(answer.iter_lines(), range(20), strict=False))
