"""Fixtures for the web tests: a REAL server process (uvicorn on a free port, serving
``conveyor.web.create_app``) on a real store, users of every permission kind with a token each,
and small HTTP clients.

    def test_something(web_server: WebServer) -> None:
        alice = web_server.client("owner")              # an httpx.Client sending alice's token
        job = alice.post("/api/jobs", json={"task": "add", "args": [1, 2]}).json()
        assert web_server.client("other").get(f"/api/jobs/{job['id']}").status_code == 404
        web_server.app.run_until_empty()                # the same store, from this process

- ``web_server``: one server for the whole session, on a SQLite file (tests share it: make your own
  rows, with a queue or key of your own when a test counts them).
- ``any_web_server``: parametrised: that one, and one on PostgreSQL (a throwaway database; skipped
  without a server, failed on CI), for the tests every store must pass.
- ``start_web_server(**options)``: a server of a test's own (auth off, a small body limit, mounted
  inside a host app at a path, /metrics public, another app module), stopped at the test's end.
- ``serve(...)``: the context manager behind them, for a module that wants its own fixture.

The app served is ``tests/web/server_app.py`` (tasks ``add``, ``fail``, ``echo``, ``strict``, the
pipeline ``order``, the service ``ticker``) unless ``factory``/``app_dir`` name another one. The
users, by kind (``USERS``): owner (alice), other (bob), viewer (view-others), admin (modify-others),
reader (read-only), operator (view-others + read-only), system. ``WebServer.tokens[kind]`` is each
one's token; ``client(None)`` sends none.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from conveyor import App
from conveyor.accounts import Permission

from .server_app import build

HERE = Path(__file__).parent
FACTORY = "server_app:make_web"

Users = dict[str, tuple[str, tuple[Permission, ...]]]  #: user kind -> (name, permissions)

#: The test users, by kind: (name, permissions).
USERS: Users = {
    "owner": ("alice", ()),
    "other": ("bob", ()),
    "viewer": ("vera", (Permission.VIEW_OTHERS,)),
    "admin": ("adam", (Permission.MODIFY_OTHERS,)),
    "reader": ("rita", (Permission.READ_ONLY,)),
    "operator": ("otto", (Permission.VIEW_OTHERS, Permission.READ_ONLY)),
    "system": ("root", (Permission.SYSTEM,)),
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class WebServer:
    """A running server: its base URL (with the mount path, if mounted), an App on the same store
    (in this process: enqueue, run jobs, check rows), the users and their tokens, and its log."""

    url: str
    app: App
    tokens: dict[str, str]
    users: dict[str, str]  #: kind -> user name
    log: Path
    process: subprocess.Popen[bytes]
    _clients: dict[str | None, httpx.Client] = field(default_factory=dict)

    def client(self, who: str | None = "system", **options: Any) -> httpx.Client:
        """An HTTP client of the server sending the token of user kind ``who`` (None: no token);
        ``options``: httpx.Client's (a new client then, not the shared one)."""
        if options:
            return httpx.Client(base_url=self.url, headers=self.auth(who), timeout=15.0, **options)
        if who not in self._clients:
            self._clients[who] = httpx.Client(base_url=self.url, headers=self.auth(who), timeout=15.0)
        return self._clients[who]

    def auth(self, who: str | None) -> dict[str, str]:
        """The Authorization header of user kind ``who`` (none for None)."""
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    def name(self, who: str) -> str:
        """The user name of a user kind."""
        return self.users[who]

    def output(self) -> str:
        """What the server process wrote so far (its log)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        """Close the clients."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def add_users(app: App, users: Users = USERS) -> tuple[dict[str, str], dict[str, str]]:
    """Create the users (or set their permissions) and a new token for each: (tokens, names) by kind."""
    tokens, names = {}, {}
    for kind, (name, permissions) in users.items():
        app.add_user(name, permissions)
        tokens[kind] = app.create_token(name, "web tests")[1]
        names[kind] = name
    return tokens, names


@contextlib.contextmanager
def serve(
    store_url: str,
    root: Path,
    *,
    auth: bool = True,
    max_body: int | None = None,
    mount: str | None = None,
    metrics_public: bool = False,
    factory: str = FACTORY,
    app_dir: Path = HERE,
    env: dict[str, str] | None = None,
    make_app: Callable[[str], App] = build,
    users: Users = USERS,
) -> Iterator[WebServer]:
    """Run ``uvicorn --factory FACTORY`` (from ``app_dir``) on a free port of 127.0.0.1, on the store
    ``store_url``, until the block ends; yields the WebServer once ``/healthz`` answers. The server's
    settings go through the environment (see tests/web/server_app.py); its log is ``root/server-PORT.log``.
    ``users``: the users to make, by kind (USERS by default)."""
    app = make_app(store_url)
    tokens, names = add_users(app, users)
    port = free_port()
    log = root / f"server-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    environment.update(CONVEYOR_WEB_TEST_URL=store_url, CONVEYOR_WEB_TEST_AUTH="1" if auth else "0",
                       CONVEYOR_WEB_TEST_METRICS_PUBLIC="1" if metrics_public else "0",
                       PYTHONUNBUFFERED="1", **(env or {}))  # fmt: skip
    if max_body is not None:
        environment["CONVEYOR_WEB_TEST_MAX_BODY"] = str(max_body)
    if mount:
        environment["CONVEYOR_WEB_TEST_MOUNT"] = mount
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--app-dir", str(app_dir), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "1"]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}{mount or ''}"
    server = WebServer(url=base, app=app, tokens=tokens, users=names, log=log, process=process)
    try:
        _wait_until_up(server)
        yield server
    finally:
        server.close()
        stop_process(process)
        app.close()


def _wait_until_up(server: WebServer, timeout: float = 30.0) -> None:
    """Wait for ``/healthz`` to answer 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited ({server.process.returncode}):\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the server did not answer within {timeout} s:\n{server.output()}")


def stop_process(process: subprocess.Popen[bytes], within: float = 10.0) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it is still there after ``within`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server for the session, on a SQLite file."""
    root = tmp_path_factory.mktemp("web")
    with serve(f"sqlite:///{root / 'store.db'}", root) as server:
        yield server


@pytest.fixture(scope="session")
def web_server_pg(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server for the session, on a throwaway PostgreSQL database of its own."""
    from conftest import throwaway_database

    root = tmp_path_factory.mktemp("web-pg")
    with throwaway_database("conveyor_web") as url, serve(url, root) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def any_web_server(request: pytest.FixtureRequest) -> WebServer:
    """The session's server on each store: SQLite, then PostgreSQL."""
    server: WebServer = request.getfixturevalue("web_server" if request.param == "sqlite" else "web_server_pg")
    return server


@pytest.fixture
def start_web_server(tmp_path: Path) -> Iterator[Callable[..., WebServer]]:
    """``start_web_server(store_url=None, **serve_options)``: a server of the test's own (on a new
    SQLite file unless ``store_url`` is given), stopped when the test ends."""
    stack = contextlib.ExitStack()
    started: list[WebServer] = []

    def start(store_url: str | None = None, **options: Any) -> WebServer:
        url = store_url or f"sqlite:///{tmp_path / f'store-{len(started)}.db'}"
        started.append(stack.enter_context(serve(url, tmp_path, **options)))
        return started[-1]

    with stack:
        yield start


# reading answers -------------------------------------------------------------------------------------------------
def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of an answer that must have ``status`` (the answer's text in the failure otherwise)."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
        f"{response.status_code} {response.text}"  # fmt: skip
    return response.json()


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The JSON error of an answer that must have ``status`` (and ``code``): ``{"error", "message"}``."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
        f"{response.status_code} {response.text}"  # fmt: skip
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body


@dataclass
class SseEvent:
    """One Server-Sent Event as read: its id, event name and data (parsed as JSON)."""

    id: str | None
    event: str | None
    data: Any


def read_sse(response: httpx.Response, count: int, timeout: float = 15.0) -> list[SseEvent]:
    """The first ``count`` events of a streaming answer (comments skipped), or fail after ``timeout`` s."""
    found: list[SseEvent] = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            break
        if line == "":
            if "data" in fields:
                found.append(SseEvent(fields.get("id"), fields.get("event"), msgspec.json.decode(fields["data"])))
                if len(found) >= count:
                    return found
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
    raise AssertionError(f"read {len(found)} of {count} events within {timeout} s: {found}")
