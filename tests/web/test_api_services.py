"""The services routes against a real server process: a new instance is the caller's (its
parameters checked against the function first: nothing is stored otherwise); the list holds the
caller's own instances without view-others; start, stop, restart, reload and remove with every
permission case; 404 for an instance the caller may not see."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from .conftest import WebServer, error, ok

KINDS = ("owner", "other", "viewer", "admin", "reader", "operator", "system")
CHANGE = {"owner": 200, "other": 404, "viewer": 403, "admin": 200, "reader": 404, "operator": 403, "system": 200}
CHANGE_NOBODYS = {"owner": 404, "other": 404, "viewer": 403, "admin": 200, "reader": 404, "operator": 403,
                  "system": 200}  # fmt: skip


def instance_name() -> str:
    return f"tick-{uuid.uuid4().hex[:8]}"


def start_new(server: WebServer, who: str = "owner", **body: Any) -> list[dict[str, Any]]:
    body.setdefault("service", "ticker")
    body.setdefault("name", instance_name())
    body.setdefault("params", {"every": 1.5})
    rows: list[dict[str, Any]] = ok(server.client(who).post("/api/services", json=body), 201)["items"]
    return rows


def nobodys(server: WebServer) -> str:
    name = instance_name()
    server.app.start_service("ticker", name=name, every=1.0)
    assert server.app.services(name)[0].owner is None
    return name


def test_a_new_instance_is_the_callers(any_web_server: WebServer) -> None:
    rows = start_new(any_web_server, replicas=2)
    assert len(rows) == 2 and {r["owner"] for r in rows} == {"alice"} and rows[0]["status"] == "pending"
    assert rows[0]["params"] == {"every": 1.5} and rows[0]["token"] is None
    stored = any_web_server.app.services(rows[0]["name"])
    assert [r.owner for r in stored] == ["alice", "alice"]
    made = start_new(any_web_server, "system", owner="bob")
    assert made[0]["owner"] == "bob"
    error(any_web_server.client("owner").post("/api/services", json={"service": "ticker", "params": {"every": 1},
                                                                     "owner": "bob"}), 403)  # fmt: skip


@pytest.mark.parametrize(("what", "body", "status"), [
    ("an unknown service", {"service": "nope"}, 422),
    ("a missing parameter", {"service": "ticker", "params": {}}, 422),
    ("an unknown parameter", {"service": "ticker", "params": {"every": 1, "speed": 2}}, 422),
    ("a bad instance name", {"service": "ticker", "name": "a b", "params": {"every": 1}}, 422),
    ("no replicas", {"service": "ticker", "replicas": 0, "params": {"every": 1}}, 400),
    ("params not an object", {"service": "ticker", "params": [1]}, 400),
])  # fmt: skip
def test_bad_instances_store_nothing(web_server: WebServer, what: str, body: dict[str, Any], status: int) -> None:
    before = len(web_server.app.services())
    error(web_server.client("owner").post("/api/services", json=body), status)
    assert len(web_server.app.services()) == before


def test_an_existing_name_is_a_conflict(web_server: WebServer) -> None:
    rows = start_new(web_server)
    name = rows[0]["name"]
    assert "start" in error(web_server.client("owner").post("/api/services", json={
        "service": "ticker", "name": name, "params": {"every": 1}}), 409)["message"]  # fmt: skip
    message = error(web_server.client("other").post("/api/services", json={
        "service": "ticker", "name": name, "params": {"every": 1}}), 409)["message"]  # fmt: skip
    assert "taken" in message


@pytest.mark.parametrize("who", ["reader", "operator"])
def test_read_only_users_start_nothing(web_server: WebServer, who: str) -> None:
    before = len(web_server.app.services())
    error(web_server.client(who).post("/api/services", json={"service": "ticker", "params": {"every": 1}}), 403)
    assert len(web_server.app.services()) == before


def test_the_list_holds_the_callers_own_instances_without_view_others(web_server: WebServer) -> None:
    mine, theirs, nobody = start_new(web_server)[0]["name"], start_new(web_server, "other")[0]["name"], nobodys(
        web_server)  # fmt: skip

    def listed(who: str) -> set[str]:
        return {r["name"] for r in ok(web_server.client(who).get("/api/services", params={"limit": 500}))["items"]}

    assert mine in listed("owner") and not {theirs, nobody} & listed("owner")
    assert {mine, theirs, nobody} <= listed("viewer")
    assert {mine, theirs, nobody} <= listed("operator")
    ok(web_server.client("owner").get(f"/api/services/{mine}"))
    assert error(web_server.client("other").get(f"/api/services/{mine}"), 404)["message"] == (
        f"no service instance named {mine!r}")  # fmt: skip
    error(web_server.client("owner").get(f"/api/services/{nobody}"), 404)
    error(web_server.client(None).get("/api/services"), 401)


@pytest.mark.parametrize("who", KINDS)
def test_who_controls_an_instance(web_server: WebServer, who: str) -> None:
    for name, expected in ((start_new(web_server)[0]["name"], CHANGE), (nobodys(web_server), CHANGE_NOBODYS)):
        client = web_server.client(who)
        if expected[who] != 200:
            for action in ("stop", "start", "restart"):
                error(client.post(f"/api/services/{name}/{action}"), expected[who])
            error(client.post(f"/api/services/{name}/reload", json={"params": {"every": 3}}), expected[who])
            error(client.delete(f"/api/services/{name}"), expected[who])
            assert web_server.app.services(name)[0].wanted is True
            continue
        stopped = ok(client.post(f"/api/services/{name}/stop"))["items"]
        assert stopped[0]["status"] == "stopped" and stopped[0]["wanted"] is False
        started = ok(client.post(f"/api/services/{name}/start"))["items"]
        assert started[0]["status"] == "pending" and started[0]["wanted"] is True
        generation = started[0]["generation"]
        assert ok(client.post(f"/api/services/{name}/restart"))["items"][0]["generation"] == generation + 1
        reloaded = ok(client.post(f"/api/services/{name}/reload", json={"params": {"every": 3}}))["items"]
        assert reloaded[0]["params"] == {"every": 3} and reloaded[0]["generation"] == generation + 2
        error(client.post(f"/api/services/{name}/reload", json={"params": {"speed": 3}}), 422)
        error(client.post(f"/api/services/{name}/reload", json={"unset": ["every"]}), 422)  # it has no default
        error(client.post(f"/api/services/{name}/reload", json={"unset": ["speed"]}), 422)  # not a stored one
        assert web_server.app.services(name)[0].params == {"every": 3}
        assert ok(client.delete(f"/api/services/{name}")) == {"removed": True}
        assert web_server.app.services(name) == []
        error(client.delete(f"/api/services/{name}"), 404)
        entries = ok(web_server.client("system").get("/api/audit", params={"user": web_server.name(who),
                                                                           "limit": 500}))["items"]  # fmt: skip
        assert [e["action"] for e in entries if e["target"] == name and e["action"] != "service.create"] == [
            "service.stop", "service.start", "service.restart", "service.reload", "service.remove"]  # fmt: skip
