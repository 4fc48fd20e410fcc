"""``conveyor users``, ``conveyor tokens`` and ``conveyor web``: accounts made from the shell work
against the store (a printed token authenticates; a revoked one does not; no command shows a
digest), and ``conveyor web`` serves for real (a process on a free port answering over HTTP),
refusing to run without authentication on an address other machines can reach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_output import one_line_error
from click.testing import Result
from pg_instance import free_port

from conveyor import App
from conveyor.accounts import Permission
from conveyor.cli.web import is_loopback, server_url

Cli = Callable[..., Result]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[App]:
    """The store the ``cli`` fixture's commands use by default: conveyor.db in the test's directory."""
    application = App(f"sqlite:///{tmp_path / 'conveyor.db'}")
    yield application
    application.close()


# users ------------------------------------------------------------------------------------------------
def test_users_add_list_update_and_remove(cli: Cli, store: App) -> None:
    added = cli("users", "add", "ada")
    assert added.exit_code == 0, added.output
    assert added.stdout.strip() == "user ada added: (own rows only)"
    assert added.stderr.startswith("store: ")
    assert cli("users", "add", "ops", "--role", "operator").stdout.strip() == "user ops added: read-only, view-others"
    assert cli("users", "add", "root", "-p", "system").exit_code == 0
    updated = cli("users", "add", "ada", "--permission", "view-others", "--permission", "modify-others")
    assert updated.stdout.strip() == "user ada updated: modify-others, view-others"
    assert store.user("ada").has(Permission.MODIFY_OTHERS)
    assert store.user("ops").read_only

    listed = cli("users", "list")
    assert listed.exit_code == 0, listed.output
    for name in ("ada", "ops", "root", "read-only, view-others", "system"):
        assert name in listed.stdout
    as_json = json.loads(cli("users", "list", "--json").stdout)
    assert [(row["name"], row["permissions"], row["tokens"]) for row in as_json] == [
        ("ada", ["modify-others", "view-others"], 0), ("ops", ["read-only", "view-others"], 0), ("root", ["system"], 0),
    ]  # fmt: skip

    cli("tokens", "create", "ada")
    removed = cli("users", "remove", "ada")
    assert removed.stdout.strip() == "user ada removed and 1 token"
    assert [user.name for user in store.users()] == ["ops", "root"]
    one_line_error(cli("users", "remove", "ada"), 1, "no user named 'ada'")


def test_users_add_refuses_a_bad_name_permission_or_role(cli: Cli, store: App) -> None:
    one_line_error(cli("users", "add", "-x"), 2)
    one_line_error(cli("users", "add", "a b"), 2, "a user name is 1-100 characters")
    one_line_error(cli("users", "add", "ada", "--permission", "root"), 2, "root")
    one_line_error(cli("users", "add", "ada", "--role", "king"), 2, "king")
    assert store.users() == []


def test_users_list_on_a_missing_store_is_an_error_and_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    one_line_error(cli("users", "list"), 1, "no store at")
    assert not (tmp_path / "conveyor.db").exists()


# tokens -----------------------------------------------------------------------------------------------
def test_a_created_token_is_printed_once_alone_and_authenticates(cli: Cli, store: App) -> None:
    cli("users", "add", "ada")
    made = cli("tokens", "create", "ada", "--label", "laptop")
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert made.stdout == token + "\n"  # alone on stdout: TOKEN=$(conveyor tokens create ada)
    assert "not shown again" in made.stderr and "laptop" in made.stderr
    user = store.authenticate(token)
    assert user is not None and user.name == "ada"
    record = store.tokens("ada")[0]
    assert record.label == "laptop" and f"token {record.id} for ada" in made.stderr

    for args in (("tokens", "list"), ("tokens", "list", "ada"), ("tokens", "list", "--json")):
        shown = cli(*args)
        assert shown.exit_code == 0, shown.output
        assert record.id in shown.stdout
        assert record.digest not in shown.output and token not in shown.output and "digest" not in shown.output
    rows = json.loads(cli("tokens", "list", "--json").stdout)
    assert [(row["id"], row["user"], row["label"], row["revoked_at"]) for row in rows] == [
        (record.id, "ada", "laptop", None)
    ]
    as_json = json.loads(cli("tokens", "create", "ada", "--json").stdout)
    assert set(as_json) == {"id", "user", "label", "created_at", "last_used_at", "revoked_at", "token"}
    assert store.authenticate(as_json["token"]) is not None


def test_a_revoked_token_no_longer_authenticates(cli: Cli, store: App) -> None:
    cli("users", "add", "ada")
    first = cli("tokens", "create", "ada").stdout.strip()
    second = cli("tokens", "create", "ada").stdout.strip()
    first_id = next(r.id for r in store.tokens("ada") if first.startswith(f"cv_{r.id}_"))
    revoked = cli("tokens", "revoke", first_id)
    assert revoked.exit_code == 0, revoked.output
    assert revoked.stdout.strip() == f"token {first_id} revoked"
    assert store.authenticate(first) is None
    assert store.authenticate(second) is not None
    one_line_error(cli("tokens", "revoke", first_id), 1, "no token", "revoked already")
    assert cli("tokens", "revoke", second).exit_code == 0  # the whole token names its id too
    assert store.authenticate(second) is None
    assert "revoked" in cli("tokens", "list").stdout


def test_tokens_for_an_unknown_user_are_an_error(cli: Cli, store: App) -> None:
    cli("users", "add", "ada")
    one_line_error(cli("tokens", "create", "bob"), 1, "no user named 'bob'")
    one_line_error(cli("tokens", "list", "bob"), 1, "no user named 'bob'")
    assert store.tokens() == []


# conveyor web -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("192.168.1.2", False),
    ("example.com", False), ("localhost.example.com", False),
])  # fmt: skip
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_server_url_brackets_an_ipv6_address() -> None:
    assert server_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert server_url("::1", 9000) == "http://[::1]:9000/"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2", "example.com"])
def test_web_refuses_no_auth_on_an_address_others_can_reach(cli: Cli, tmp_path: Path, host: str) -> None:
    result = cli("web", "--no-auth", "--host", host)
    one_line_error(result, 2, "--no-auth", "loopback", repr(host))
    assert not (tmp_path / "conveyor.db").exists()  # refused before anything is opened


MODULE = """
from conveyor import App

app = App("sqlite:///served.db")


@app.task(name="shop.add")
def add(a: int, b: int) -> int:
    return a + b
"""


class Served:
    """A ``conveyor web`` process, its port, and what it printed."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM, and its exit code and output."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(*args)``: ``conveyor web shop:app --port FREE ARGS`` in ``tmp_path``, once it answers."""
    (tmp_path / "shop.py").write_text(textwrap.dedent(MODULE))
    started: list[Served] = []

    def start(*args: str) -> Served:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
        process = subprocess.Popen([sys.executable, "-m", "conveyor", "web", "shop:app", "--port", str(port), *args],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        served = Served(process, port)
        started.append(served)
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"conveyor web exited {process.returncode}: {process.communicate()}"
            try:
                if served.get("/healthz")[0] == 200:
                    return served
            except OSError:
                pass
            assert time.monotonic() < deadline, "conveyor web did not answer within 30 s"
            time.sleep(0.1)

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.communicate()


def test_web_serves_the_api_and_metrics_with_a_token(serve: Callable[..., Served], tmp_path: Path) -> None:
    store = App(f"sqlite:///{tmp_path / 'served.db'}")
    store.add_user("ada", [Permission.SYSTEM])
    _, token = store.create_token("ada")
    store.enqueue("shop.add", args=(1, 2))
    served = serve()

    assert served.get("/metrics")[0] == 401
    status, text = served.get("/metrics", token)
    assert status == 200, text
    assert 'conveyor_jobs_enqueued_total{queue="default",task="shop.add"} 1.0' in text
    assert served.get("/api/jobs")[0] == 401
    status, body = served.get("/api/jobs", token)
    assert status == 200, body
    assert [job["task"] for job in json.loads(body)["items"]] == ["shop.add"]

    code, out, err = served.stop()
    assert code == 0, err
    assert out.splitlines()[0] == f"dashboard: http://127.0.0.1:{served.port}/"
    assert err.startswith(f"store: sqlite:///{tmp_path / 'served.db'} (from App(url) in code)")
    assert token not in out + err
    store.close()


def test_web_without_auth_and_with_public_metrics(serve: Callable[..., Served]) -> None:
    open_server = serve("--no-auth")
    assert open_server.get("/api/me")[0] == 200
    assert open_server.get("/metrics")[0] == 200
    code, _, err = open_server.stop()
    assert code == 0 and "authentication is off" in err

    public = serve("--metrics-public")
    assert public.get("/metrics")[0] == 200
    assert public.get("/api/me")[0] == 401
    code, _, err = public.stop()
    assert code == 0 and "conveyor users add NAME --role system" in err  # no user yet: how to make one
