"""Services from the command line (issue 13): ``services [NAME]`` (the table, one row per replica,
and --json), ``service start`` (a new instance with --name, --replicas, --param, --params, checked
against the app's function; an existing one by name, without the app), ``service stop|restart|
reload|remove``, one-line errors for unknown instances and bad parameters. In-process through
click's CliRunner against a real SQLite file; replicas are held and crashed through the store's own
calls (what a worker's keeper does), and one test runs a real worker thread and a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_output import one_line_error
from click.testing import Result

from conveyor import App, ServiceStatus
from conveyor.cli import common
from conveyor.events import EventKind
from conveyor.service_types import ServiceEnd, ServiceError

Cli = Callable[..., Result]

SERVICES = """
    @app.service(queue="feeds", autostart=False)
    def poll_feed(ctx, url, every=1.0, tags=None):
        while not ctx.wait(every):
            pass

    @app.service(queue="feeds")
    def heartbeat(ctx):
        while not ctx.wait(0.05):
            pass

    @heartbeat.on_stop
    def _(ctx):
        (pathlib.Path(__file__).parent / f"stopped-{ctx.name}-{ctx.generation}").write_text(str(ctx.params))
"""


def app_module(tmp_path: Path, url: str, body: str = SERVICES) -> str:
    """Write a user's app module (a unique name: never a cached import) and return MODULE:APP."""
    name = f"svc_cli_{uuid.uuid4().hex[:8]}"
    source = f"import pathlib\n\nfrom conveyor import App\n\napp = App({url!r}, lease=1.0)\n" + textwrap.dedent(body)
    (tmp_path / f"{name}.py").write_text(source)
    return f"{name}:app"


@pytest.fixture
def store(url: str) -> Iterator[App]:
    """A client of the test's store (made, with its schema)."""
    client = App(url)
    client.services()
    yield client
    client.close()


@pytest.fixture
def mod(tmp_path: Path, url: str) -> str:
    return app_module(tmp_path, url)


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 220-column terminal: tables are not folded, so the tests read whole cells."""
    monkeypatch.setattr(common.console, "width", 220)


def flat(text: str) -> str:
    return " ".join(text.split())


def table_rows(text: str) -> dict[tuple[str, str], str]:
    """The table's rows by (name, replica), each flattened to one line."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) >= 2 and cells[1].isdigit():
            rows[(cells[0], cells[1])] = flat(line)
    return rows


# start ----------------------------------------------------------------------------------------------------------
def test_start_makes_a_new_instance_with_name_replicas_and_params(cli: Cli, store: App, mod: str) -> None:
    result = cli("service", "start", "poll_feed", "--app", mod, "--name", "feed-eu", "--replicas", "2", "--param",
                 "url=https://eu.example/feed", "--param", "every=2.5", "--param", 'tags=["a", "b"]')  # fmt: skip
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == ('service feed-eu created, of poll_feed on queue feeds with '
                                   '{"url":"https://eu.example/feed","every":2.5,"tags":["a","b"]} '
                                   "(2 replicas: 2 pending)")  # fmt: skip
    rows = store.services("feed-eu")
    assert [(row.replica, row.status, row.queue, row.service) for row in rows] == [
        (0, ServiceStatus.PENDING, "feeds", "poll_feed"),
        (1, ServiceStatus.PENDING, "feeds", "poll_feed"),
    ]
    assert rows[0].params == {"url": "https://eu.example/feed", "every": 2.5, "tags": ["a", "b"]}


def test_param_values_are_json_if_they_parse_else_strings_and_beat_params(cli: Cli, store: App, mod: str) -> None:
    result = cli("service", "start", "poll_feed", "--app", mod, "--params", '{"url": "https://a", "every": 5}',
                 "--param", "every=7", "--param", "tags=true", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [entry["name"] for entry in listed] == ["poll_feed"], "the instance is named like the service"
    assert listed[0]["params"] == {"url": "https://a", "every": 7, "tags": True}
    cli("service", "start", "poll_feed", "--app", mod, "--name", "texts", "--param", "url=007",
        "--param", "tags=not json", "--param", "every=")  # fmt: skip
    assert store.services("texts")[0].params == {"url": "007", "tags": "not json", "every": ""}


def test_start_uses_the_services_replicas_by_default(cli: Cli, store: App, tmp_path: Path, url: str) -> None:
    path = app_module(tmp_path, url, """
        @app.service(replicas=3, autostart=False)
        def trio(ctx):
            pass
    """)  # fmt: skip
    assert cli("service", "start", "trio", "--app", path).exit_code == 0
    assert [row.replica for row in store.services("trio")] == [0, 1, 2]


def test_start_again_by_name_needs_no_app_and_clears_a_failure(cli: Cli, store: App, mod: str) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--param", "url=https://a")
    assert cli("service", "stop", "feed", "--url", store.url).exit_code == 0
    assert store.services("feed")[0].status is ServiceStatus.STOPPED
    result = cli("service", "start", "feed", "--url", store.url)
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == "service feed: start requested (1 replica: 1 pending)"
    assert store.services("feed")[0].status is ServiceStatus.PENDING
    # a FAILED replica starts again with its crashes forgotten
    fail_replica(store, "feed", 0)
    assert store.services("feed")[0].status is ServiceStatus.FAILED
    assert cli("service", "start", "feed", "--url", store.url).exit_code == 0
    row = store.services("feed")[0]
    assert row.status is ServiceStatus.PENDING and row.crashes == [] and row.last_error is None


def test_start_of_a_declared_service_whose_instance_exists_starts_it(cli: Cli, store: App, mod: str) -> None:
    assert cli("service", "start", "heartbeat", "--app", mod).exit_code == 0
    cli("service", "stop", "heartbeat", "--url", store.url)
    result = cli("service", "start", "heartbeat", "--app", mod)
    assert result.exit_code == 0 and "start requested" in result.stdout
    assert store.services("heartbeat")[0].status is ServiceStatus.PENDING


# start: errors ------------------------------------------------------------------------------------------------------
def test_start_of_an_unknown_instance_without_the_app_says_to_give_it(cli: Cli, store: App) -> None:
    one_line_error(cli("service", "start", "poll_feed", "--url", store.url), 1,
                   "no service instance named 'poll_feed'", "give --app MODULE:APP")  # fmt: skip
    one_line_error(cli("service", "start", "poll_feed", "--name", "x", "--url", store.url), 1,
                   "no service 'poll_feed'", "--app")  # fmt: skip
    assert store.services() == []


def test_start_of_a_service_the_app_does_not_declare_names_those_it_does(cli: Cli, store: App, mod: str) -> None:
    one_line_error(cli("service", "start", "nope", "--app", mod), 1,
                   f"{mod} declares no service 'nope'", "heartbeat, poll_feed")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        ([], ["cannot take these parameters", "url"]),  # url has no default
        (["--param", "url=a", "--param", "colour=red"], ["cannot take these parameters", "colour"]),
        (["--param", "url"], ["--param", "KEY=VALUE"]),
        (["--param", "=1"], ["--param", "KEY=VALUE"]),
        (["--params", "[1, 2]"], ["--params", "JSON object"]),
        (["--params", "{nope"], ["--params", "not valid JSON"]),
        (["--param", "url=a", "--replicas", "0"], ["--replicas"]),
        (["--param", "url=a", "--name", "bad name!"], ["name must be"]),
    ],
)
def test_bad_parameters_are_one_line_and_exit_2(
    cli: Cli, store: App, mod: str, args: list[str], phrases: list[str]
) -> None:
    one_line_error(cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", *args), 2, *phrases)
    assert store.services() == [], "nothing was written"


def test_params_for_an_instance_that_exists_are_refused(cli: Cli, store: App, mod: str) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--param", "url=a")
    one_line_error(cli("service", "start", "feed", "--url", store.url, "--param", "url=b"), 2,
                   "service instance 'feed' exists", "conveyor service reload feed")  # fmt: skip
    one_line_error(cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--replicas", "2"), 2,
                   "service instance 'feed' exists", "--replicas")  # fmt: skip
    assert store.services("feed")[0].params == {"url": "a"}


def test_a_local_service_has_no_instances_to_start(cli: Cli, store: App, tmp_path: Path, url: str) -> None:
    path = app_module(tmp_path, url, """
        @app.service(local=True)
        def sidecar(ctx):
            pass
    """)  # fmt: skip
    one_line_error(cli("service", "start", "sidecar", "--app", path), 2, "is local")


# listing ----------------------------------------------------------------------------------------------------------
def test_services_on_an_empty_store_says_so_and_a_missing_store_is_an_error(cli: Cli, store: App) -> None:
    result = cli("services", "--url", store.url)
    assert result.exit_code == 0 and result.stdout == "" and "no services" in result.stderr
    assert json.loads(cli("services", "--url", store.url, "--json").stdout) == []
    one_line_error(cli("services", "--url", "sqlite:///missing.db"), 1, "no store at")


def test_the_table_has_a_row_per_replica_with_status_worker_age_restarts_error_and_params(
    cli: Cli, store: App, mod: str, wide: None
) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--replicas", "3",
        "--param", "url=https://example.com/feed")  # fmt: skip
    cli("service", "start", "poll_feed", "--app", mod, "--name", "idle", "--param", "url=x")
    cli("service", "stop", "idle", "--url", store.url)
    now = time.time()
    backend = store.backend
    # replica 0 runs on w1 (started 2 minutes ago); replica 1 crashed on w2 and waits its back-off;
    # replica 2 is held by w3, whose lease ran out long ago
    [first] = backend.claim_services("w1", ["poll_feed"], [], 1, 600, now, now)
    assert (first.name, first.replica) == ("feed", 0)
    assert backend.service_running("feed", 0, first.token or "", now - 120)
    [second] = backend.claim_services("w2", ["poll_feed"], [], 1, 600, now, now)
    crash = ServiceEnd(status=ServiceStatus.PENDING, not_before=now + 300, restarted=True, crashes=[now],
                       error=ServiceError(type="ConnectionError", message="refused by https://example.com " * 3),
                       event=EventKind.SERVICE_CRASHED.value)  # fmt: skip
    assert backend.end_service_run("feed", second.replica, second.token or "", crash, now)
    [third] = backend.claim_services("w3", ["poll_feed"], [], 1, 0.001, now, now)
    assert third.replica == 2
    time.sleep(0.01)
    result = cli("services", "--url", store.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = flat(next(line for line in lines if line.strip()))
    assert header == "name replica service queue status worker started restarts last error params"
    rows = table_rows(result.stdout)
    assert set(rows) == {("feed", "0"), ("feed", "1"), ("feed", "2"), ("idle", "0")}, result.stdout
    assert rows[("feed", "0")] == 'feed 0 poll_feed feeds running w1 2m {"url":"https://example.com/feed"}'
    crashed = rows[("feed", "1")]
    assert crashed.startswith("feed 1 poll_feed feeds pending (in 4m) w2 1 ConnectionError: refused by"), crashed
    assert "…" in crashed, "a long error is cut"
    assert rows[("feed", "2")].startswith("feed 2 poll_feed feeds starting (lease expired) w3 "), rows[("feed", "2")]
    assert rows[("idle", "0")] == 'idle 0 poll_feed feeds stopped {"url":"x"}'
    only = table_rows(cli("services", "idle", "--url", store.url).stdout)
    assert set(only) == {("idle", "0")}


def test_the_table_cuts_long_params_and_json_gives_them_whole(cli: Cli, store: App, mod: str, wide: None) -> None:
    long_url = "https://example.com/" + "x" * 100
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--param", f"url={long_url}")
    row = table_rows(cli("services", "--url", store.url).stdout)[("feed", "0")]
    assert row.endswith("…") and long_url not in row
    [entry] = json.loads(cli("services", "feed", "--url", store.url, "--json").stdout)
    assert entry["params"] == {"url": long_url}
    assert {"name", "replica", "service", "queue", "status", "worker_id", "started_at", "restarts", "last_error",
            "generation", "wanted", "lease_until", "source"} <= set(entry)  # fmt: skip
    assert (entry["status"], entry["source"], entry["wanted"], entry["generation"]) == ("pending", "api", True, 0)


def test_a_narrow_terminal_gets_fewer_columns_and_the_errors_below(cli: Cli, store: App, mod: str) -> None:
    """Under 120 columns: 'name[replica]' in one cell, no queue, error or params columns; each last
    error on a line of its own. A worker id is shown as it is (':100:' is no emoji code here)."""
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--replicas", "2", "--param", "url=a")
    now = time.time()
    [row] = store.backend.claim_services("web:100:ab", ["poll_feed"], [], 1, 600, now, now)
    crash = ServiceEnd(status=ServiceStatus.PENDING, not_before=now, restarted=True, crashes=[now],
                       error=ServiceError(type="KeyError", message="'topic'"),
                       event=EventKind.SERVICE_CRASHED.value)  # fmt: skip
    assert store.backend.end_service_run("feed", row.replica, row.token or "", crash, now)
    result = cli("services", "--url", store.url)  # CliRunner: 80 columns
    assert result.exit_code == 0, result.output
    lines = [flat(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == "replica service status worker started restarts"
    assert lines[2] == "feed[0] poll_feed pending web:100:ab 1", lines
    assert lines[3] == "feed[1] poll_feed pending"
    assert lines[4] == "feed[0] last error: KeyError: 'topic'"


def test_json_gives_the_last_error_whole(cli: Cli, store: App, mod: str) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--param", "url=a")
    fail_replica(store, "feed", 0)
    [entry] = json.loads(cli("services", "--url", store.url, "--json").stdout)
    assert entry["status"] == "failed"
    assert entry["last_error"] == {"type": "RuntimeError", "message": "broken", "traceback": "Traceback: ..."}


# stop, restart, reload, remove -------------------------------------------------------------------------------------
def test_stop_restart_reload_and_remove(cli: Cli, store: App, mod: str) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--replicas", "2", "--param", "url=a")
    now = time.time()
    [held] = store.backend.claim_services("w1", ["poll_feed"], [], 1, 600, now, now)
    stopped = cli("service", "stop", "feed", "--url", store.url)
    assert stopped.exit_code == 0, stopped.output
    assert flat(stopped.stdout) == "service feed: stop requested (2 replicas: 1 stopping, 1 stopped)"
    assert [(row.wanted, row.status) for row in store.services("feed")] == [
        (False, ServiceStatus.STOPPING), (False, ServiceStatus.STOPPED),
    ]  # fmt: skip
    restarted = cli("service", "restart", "feed", "--url", store.url, "--json")
    assert restarted.exit_code == 0, restarted.output
    assert [(entry["wanted"], entry["generation"]) for entry in json.loads(restarted.stdout)] == [(True, 1), (True, 1)]
    reloaded = cli("service", "reload", "feed", "--url", store.url, "--param", "every=3", "--params", '{"tags": ["x"]}')
    assert reloaded.exit_code == 0, reloaded.output
    assert flat(reloaded.stdout) == ('service feed: reload requested with {"url":"a","tags":["x"],"every":3} '
                                     "(2 replicas: 1 stopping, 1 pending)")  # fmt: skip
    rows = store.services("feed")
    assert {row.generation for row in rows} == {2} and rows[0].params == {"url": "a", "every": 3, "tags": ["x"]}
    unset = cli("service", "reload", "feed", "--url", store.url, "--unset", "tags", "--unset", "every")
    assert unset.exit_code == 0, unset.output
    assert store.services("feed")[0].params == {"url": "a"}
    one_line_error(cli("service", "reload", "feed", "--url", store.url, "--unset", "tags"), 2,
                   "no stored parameter to unset: tags")  # fmt: skip
    assert held.token is not None
    removed = cli("service", "remove", "feed", "--url", store.url)
    assert removed.exit_code == 0 and flat(removed.stdout) == "service feed removed"
    assert store.services() == []
    kinds = [event.kind for event in store.events(kinds=[kind.value for kind in EventKind
                                                         if kind.value.startswith("service_")])]  # fmt: skip
    assert kinds == ["service_created", "service_assigned", "service_requested", "service_requested",
                     "service_requested", "service_requested", "service_removed"]  # fmt: skip


def test_reload_checks_params_against_the_function_with_the_app_and_only_json_without(
    cli: Cli, store: App, mod: str
) -> None:
    cli("service", "start", "poll_feed", "--app", mod, "--name", "feed", "--param", "url=a")
    one_line_error(cli("service", "reload", "feed", "--app", mod, "--param", "colour=red"), 2,
                   "cannot take these parameters", "colour")  # fmt: skip
    assert store.services("feed")[0].generation == 0, "nothing was written"
    assert cli("service", "reload", "feed", "--url", store.url, "--param", "colour=red").exit_code == 0
    assert store.services("feed")[0].params == {"url": "a", "colour": "red"}
    one_line_error(cli("service", "reload", "feed", "--url", store.url, "--params", "3"), 2, "JSON object")


@pytest.mark.parametrize(
    "args",
    [
        ["services", "nope"],
        ["service", "stop", "nope"],
        ["service", "restart", "nope"],
        ["service", "reload", "nope"],
        ["service", "reload", "nope", "--param", "a=1"],
        ["service", "remove", "nope"],
    ],
)
def test_an_unknown_instance_is_one_line_and_exit_1(cli: Cli, store: App, args: list[str]) -> None:
    one_line_error(cli(*args, "--url", store.url), 1, "no service instance named 'nope'")


@pytest.mark.parametrize("command", ["start", "stop", "restart", "reload", "remove"])
def test_commands_on_an_existing_instance_need_an_existing_store(cli: Cli, tmp_path: Path, command: str) -> None:
    one_line_error(cli("service", command, "feed", "--url", f"sqlite:///{tmp_path / 'none.db'}"), 1, "no store at")
    assert not (tmp_path / "none.db").exists(), "no empty store is made"


def test_a_new_instance_makes_the_store(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert cli("service", "start", "poll_feed", "--app", app_module(tmp_path, url), "--param", "url=a").exit_code == 0
    assert [row.name for row in App(url).services()] == ["poll_feed"]


# with real workers --------------------------------------------------------------------------------------------------
def test_a_worker_runs_what_the_cli_starts_and_stops_it_with_its_hook(
    cli: Cli, url: str, tmp_path: Path, request: pytest.FixtureRequest, start_worker: Callable[..., object],
    wait_for: Callable[..., object], monkeypatch: pytest.MonkeyPatch, wide: None,
) -> None:  # fmt: skip
    from conveyor.app import load_app

    path = app_module(tmp_path, url)
    monkeypatch.syspath_prepend(str(tmp_path))
    worker_app = load_app(path)
    request.addfinalizer(worker_app.close)
    start_worker(queues=("feeds",), on=worker_app)

    def status() -> ServiceStatus | None:
        rows = worker_app.services("heartbeat")
        return rows[0].status if rows else None

    wait_for(lambda: status() is ServiceStatus.RUNNING, what="the worker starts the autostart instance")
    running = table_rows(cli("services", "--url", url).stdout)[("heartbeat", "0")]
    assert " running " in f"{running} " and worker_app.services("heartbeat")[0].worker_id in running
    assert cli("service", "stop", "heartbeat", "--url", url).exit_code == 0
    wait_for(lambda: status() is ServiceStatus.STOPPED, what="the worker stops it")
    assert (tmp_path / "stopped-heartbeat-0").exists(), "its stop hook ran"
    assert cli("service", "start", "heartbeat", "--url", url).exit_code == 0
    wait_for(lambda: status() is ServiceStatus.RUNNING, what="started again")


def test_conveyor_services_as_a_process(tmp_path: Path, url: str, store: App) -> None:
    path = app_module(tmp_path, url)
    clean = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    run = [sys.executable, "-m", "conveyor"]
    started = subprocess.run([*run, "service", "start", "poll_feed", "--app", path, "--param", "url=https://a"],
                             cwd=tmp_path, env=clean, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "service poll_feed created" in started.stdout and started.stderr.startswith("store: ")
    listed = subprocess.run([*run, "services", "--url", url, "--json"], cwd=tmp_path, env=clean,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert [entry["params"] for entry in json.loads(listed.stdout)] == [{"url": "https://a"}]
    missing = subprocess.run([*run, "service", "stop", "nope", "--url", url], cwd=tmp_path, env=clean,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "error: no service instance named 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


# helpers --------------------------------------------------------------------------------------------------------------
def fail_replica(app: App, name: str, replica: int) -> None:
    """Make one replica FAILED as a worker's keeper would: take it, then end its run FAILED."""
    now = time.time()
    [row] = [row for row in app.backend.claim_services("w9", [app.services(name)[0].service], [], 10, 600, now, now)
             if row.name == name and row.replica == replica]  # fmt: skip
    end = ServiceEnd(status=ServiceStatus.FAILED, not_before=now, crashes=[now],
                     error=ServiceError(type="RuntimeError", message="broken", traceback="Traceback: ..."),
                     event=EventKind.SERVICE_FAILED.value)  # fmt: skip
    assert app.backend.end_service_run(name, replica, row.token or "", end, now)
