"""The schedules routes against a real server process: the list holds the caller's own schedules
without view-others (nobody's, e.g. declared in code, only with it); one schedule with its next
ticks, its tick records; pause, resume and remove with every permission case; 404 for a schedule
the caller may not see, exactly as for one that does not exist."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from .conftest import WebServer, error, ok

KINDS = ("owner", "other", "viewer", "admin", "reader", "operator", "system")
SEE = {"owner": 200, "other": 404, "viewer": 200, "admin": 200, "reader": 404, "operator": 200, "system": 200}
CHANGE = {"owner": 200, "other": 404, "viewer": 403, "admin": 200, "reader": 404, "operator": 403, "system": 200}
#: A schedule of nobody's: seen with view-others only, changed with modify-others only.
SEE_NOBODYS = {"owner": 404, "other": 404, "viewer": 200, "admin": 200, "reader": 404, "operator": 200, "system": 200}
CHANGE_NOBODYS = {"owner": 404, "other": 404, "viewer": 403, "admin": 200, "reader": 404, "operator": 403,
                  "system": 200}  # fmt: skip


def schedule_of(server: WebServer, owner: str | None) -> str:
    """A stored schedule (every hour) of ``owner``."""
    app = server.app
    name = f"sched-{uuid.uuid4().hex[:8]}"
    record = app.schedule(name, app.tasks["add"].s(1, 2), every=3600)
    app.backend.put_schedule(msgspec.structs.replace(record, owner=owner), app.clock())
    assert app.get_schedule(name).owner == owner
    return name


def test_the_list_holds_the_callers_own_schedules_without_view_others(web_server: WebServer) -> None:
    mine, theirs, nobodys = (
        schedule_of(web_server, "alice"),
        schedule_of(web_server, "bob"),
        schedule_of(web_server, None),
    )

    def listed(who: str) -> set[str]:
        return {s["name"] for s in ok(web_server.client(who).get("/api/schedules", params={"limit": 500}))["items"]}

    assert mine in listed("owner") and not {theirs, nobodys} & listed("owner")
    assert theirs in listed("other") and mine not in listed("other")
    assert {mine, theirs, nobodys} <= listed("viewer")
    assert {mine, theirs, nobodys} <= listed("system")
    error(web_server.client(None).get("/api/schedules"), 401)


@pytest.mark.parametrize("who", KINDS)
def test_who_sees_a_schedule(web_server: WebServer, who: str) -> None:
    for owner, expected in (("alice", SEE), (None, SEE_NOBODYS)):
        name = schedule_of(web_server, owner)
        for path in (f"/api/schedules/{name}", f"/api/schedules/{name}/ticks"):
            answer = web_server.client(who).get(path)
            if expected[who] == 404:
                assert error(answer, 404)["message"] == f"no schedule named {name!r}"
            else:
                ok(answer)


def test_a_schedule_with_its_next_ticks_and_its_records(web_server: WebServer) -> None:
    name = schedule_of(web_server, "alice")
    detail = ok(web_server.client("owner").get(f"/api/schedules/{name}"))
    assert detail["schedule"]["name"] == name and detail["schedule"]["owner"] == "alice"
    assert detail["description"] == "every 3600 s"
    assert len(detail["next"]) == 10
    assert detail["next"][1]["at"] - detail["next"][0]["at"] == 3600
    ticks = ok(web_server.client("owner").get(f"/api/schedules/{name}/ticks", params={"limit": 5}))
    assert ticks["items"] == [] and ticks["next_offset"] is None
    error(web_server.client("owner").get("/api/schedules/no-such-schedule"), 404)


@pytest.mark.parametrize("who", KINDS)
def test_who_pauses_resumes_and_removes_a_schedule(web_server: WebServer, who: str) -> None:
    for owner, expected in (("alice", CHANGE), (None, CHANGE_NOBODYS)):
        name = schedule_of(web_server, owner)
        client = web_server.client(who)
        answer = client.post(f"/api/schedules/{name}/pause")
        if expected[who] != 200:
            error(answer, expected[who])
            error(client.post(f"/api/schedules/{name}/resume"), expected[who])
            error(client.delete(f"/api/schedules/{name}"), expected[who])
            assert web_server.app.get_schedule(name).paused is False
            continue
        assert ok(answer) == {"changed": True}
        assert web_server.app.get_schedule(name).paused is True
        assert ok(client.post(f"/api/schedules/{name}/pause")) == {"changed": False}
        assert ok(client.post(f"/api/schedules/{name}/resume")) == {"changed": True}
        assert ok(client.delete(f"/api/schedules/{name}")) == {"removed": True}
        assert web_server.app.backend.get_schedule(name) is None
        error(client.delete(f"/api/schedules/{name}"), 404)
        actions = [e["action"] for e in ok(web_server.client("system").get("/api/audit", params={
            "user": web_server.name(who), "limit": 500}))["items"] if e["target"] == name]  # fmt: skip
        assert actions == ["schedule.pause", "schedule.pause", "schedule.resume", "schedule.remove"]
