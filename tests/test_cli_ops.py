"""Operating conveyor from the command line (issue 10): ``workers``, ``queues``, ``pause`` /
``resume``, ``disable`` / ``enable``, ``stop-workers``, ``health``, ``events`` and ``worker
--no-leader``, against real SQLite files, with real ``conveyor worker`` processes where it
matters (registration, stopping, health) and ``python -m conveyor`` where the exit code is the
point."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waiting
from cli_output import one_line_error
from click.testing import CliRunner, Result

from conveyor import App
from conveyor.cli import main
from conveyor.operations import WorkerInfo, WorkerState

SHOP = textwrap.dedent("""
    import time

    from conveyor import App, current_job

    app = App()

    @app.task(name="shop.ok")
    def ok(x):
        current_job().progress(50, "half way")
        return x

    @app.task(name="shop.fail")
    def fail():
        raise ValueError("broken on purpose")

    @app.task(name="shop.slow", queue="emails")
    def slow(seconds):
        time.sleep(seconds)
        return seconds
""")


def clean_env() -> dict[str, str]:
    """This process's environment without a store or app chosen."""
    return {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}


def conveyor(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor ARGS`` in ``cwd`` as a user would (``env`` added), and wait for it."""
    return subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=cwd, env={**clean_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


#: Poll until truthy (tests/waiting.py), with room for a worker process to start.
wait_for = functools.partial(waiting.wait_for, timeout=30.0, interval=0.05)


def registered(url: str, pid: int) -> WorkerInfo | None:
    """The running worker process ``pid`` as the registry shows it, once it has registered."""
    app = App(url)
    try:
        return next((w for w in app.workers() if w.pid == pid and w.state is WorkerState.RUNNING), None)
    finally:
        app.close()


@contextlib.contextmanager
def running_worker(tmp_path: Path, url: str, *options: str) -> Iterator[subprocess.Popen[str]]:
    """A real ``conveyor worker shop`` process on the store, yielded once it has registered;
    stopped with SIGTERM at the end if it still runs."""
    (tmp_path / "shop.py").write_text(SHOP)
    log = (tmp_path / f"worker-{time.monotonic_ns()}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "shop", "--url", url, "--poll", "0.1", *options],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: registered(url, process.pid) or process.poll() is not None, "the worker registers")
        assert process.poll() is None, f"the worker exited {process.returncode}: {Path(log.name).read_text()}"
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} #\d+ ")  #: an event's first line in ``events`` at 80 columns


def lines(result: Result) -> list[str]:
    """What a command printed on stdout, line by line, stripped, without blank lines."""
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def json_lines(result: Result) -> list[dict[str, Any]]:
    """What a ``--json`` listing of events printed: one JSON object per line."""
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


# queues, pause and resume ---------------------------------------------------------------------
def test_pause_and_resume_show_in_queues_and_stop_claims(cli, url: str, app: App) -> None:
    for _ in range(2):
        app.enqueue("shop.ok", [1], queue="emails")
    app.enqueue("shop.ok", [1], queue="emails", delay=3600)
    app.enqueue("shop.ok", [2])

    paused = cli("pause", "emails", "reports", "--url", url)
    assert paused.exit_code == 0, paused.output
    assert lines(paused) == ["paused queue emails", "paused queue reports"]
    assert paused.stderr.startswith(f"store: {url}")
    assert lines(cli("pause", "emails", "--url", url)) == ["queue emails was already paused"]
    assert app.switches().paused_queues == {"emails", "reports"}
    assert app.run_until_empty(["emails"]) == 0  # a paused queue is not claimed from

    shown = cli("queues", "--url", url)
    assert shown.exit_code == 0, shown.output
    rows = {line.split()[0]: line.split()[1:] for line in lines(shown)[2:]}
    assert rows["emails"] == ["paused", "2", "1", "0", "0", rows["emails"][-1]]  # the oldest due job's age last
    assert rows["default"] == ["1", "0", "0", "0", rows["default"][-1]]
    assert rows["reports"] == ["paused", "0", "0", "0", "0"]  # paused with no job: listed all the same
    listed = {q["name"]: q for q in json.loads(cli("queues", "--json", "--url", url).stdout)}
    assert listed["emails"]["paused"] is True and listed["emails"]["queued"] == 2
    assert listed["emails"]["scheduled"] == 1 and listed["emails"]["oldest_due"] is not None
    assert listed["default"]["paused"] is False and listed["reports"]["oldest_due"] is None

    resumed = cli("resume", "emails", "--url", url)
    assert resumed.exit_code == 0 and lines(resumed) == ["resumed queue emails"]
    assert lines(cli("resume", "emails", "--url", url)) == ["queue emails was not paused"]
    assert not {q["name"]: q for q in json.loads(cli("queues", "--json", "--url", url).stdout)}["emails"]["paused"]
    assert app.run_until_empty(["emails"]) == 2  # resumed: its due jobs run
    kinds = [e.kind for e in app.events(kinds=["queue_paused", "queue_resumed"])]
    assert kinds == ["queue_paused", "queue_paused", "queue_resumed"]


def test_pause_needs_a_queue_and_refuses_an_empty_name(cli, url: str) -> None:
    missing = cli("pause", "--url", url)
    assert missing.exit_code == 2 and "Missing argument 'QUEUE...'" in missing.output
    one_line_error(cli("pause", "", "--url", url), 2, "queue")


# disable and enable ----------------------------------------------------------------------------
def test_disable_and_enable_tasks_and_everything(cli, url: str, app: App) -> None:
    @app.task(name="shop.ok")
    def ok(x: int) -> int:
        return x

    ok.delay(1)
    app.enqueue("shop.other", queue="default")
    result = cli("disable", "shop.ok", "--url", url)
    assert result.exit_code == 0 and lines(result) == ["disabled task shop.ok"]
    assert lines(cli("disable", "shop.ok", "--url", url)) == ["task shop.ok was already disabled"]
    assert app.switches().disabled_tasks == {"shop.ok"}
    assert app.run_until_empty(["default"]) == 1  # shop.other ran (unknown to the app: failed); shop.ok waits
    assert [j.task for j in app.jobs(status="queued")] == ["shop.ok"]

    assert lines(cli("enable", "shop.ok", "--url", url)) == ["enabled task shop.ok"]
    assert lines(cli("enable", "shop.ok", "--url", url)) == ["task shop.ok was not disabled"]
    assert app.switches().disabled_tasks == frozenset()

    assert lines(cli("disable", "--all", "--url", url)) == ["disabled every task"]
    assert lines(cli("disable", "--all", "--url", url)) == ["every task was already disabled"]
    assert app.switches().everything is True
    assert app.run_until_empty(["default"]) == 0  # nothing is claimed while everything is off
    assert lines(cli("enable", "--all", "--url", url)) == ["enabled every task"]
    assert app.run_until_empty(["default"]) == 1
    kinds = [e.kind for e in app.events(after=0) if e.kind.startswith(("task_", "all_"))]
    assert kinds == ["task_disabled", "task_enabled", "all_disabled", "all_enabled"]


@pytest.mark.parametrize(("args", "said"), [([], "give one or more TASK names, or --all"),
                                            (["t.x", "--all"], "give TASK names or --all, not both")])  # fmt: skip
def test_disable_and_enable_want_names_or_all(cli, url: str, args: list[str], said: str) -> None:
    for command in ("disable", "enable"):
        result = cli(command, *args, "--url", url)
        assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output


# workers and stop-workers -------------------------------------------------------------------------
def test_workers_lists_a_running_worker_then_its_clean_exit(cli, tmp_path: Path, url: str) -> None:
    with running_worker(tmp_path, url, "-q", "default,emails", "-c", "4") as process:
        info = registered(url, process.pid)
        assert info is not None
        table = cli("workers", "--url", url)
        assert table.exit_code == 0, table.output
        row = next(line for line in lines(table) if line.startswith(info.id))
        assert str(process.pid) in row.split() and "running" in row.split()
        listed = json.loads(cli("workers", "--json", "--url", url).stdout)
        mine = next(w for w in listed if w["id"] == info.id)
        assert (mine["pid"], mine["queues"], mine["concurrency"], mine["state"]) == (
            process.pid, ["default", "emails"], 4, "running",
        )  # fmt: skip
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    after = json.loads(cli("workers", "--json", "--url", url).stdout)
    assert next(w for w in after if w["id"] == info.id)["state"] == "stopped"


def test_stop_workers_by_id_prefix_stops_that_worker_only(cli, tmp_path: Path, url: str) -> None:
    with running_worker(tmp_path, url) as first, running_worker(tmp_path, url) as second:
        first_id = registered(url, first.pid).id  # type: ignore[union-attr]
        second_id = registered(url, second.pid).id  # type: ignore[union-attr]
        prefix = next(first_id[:n] for n in range(4, len(first_id) + 1) if not second_id.startswith(first_id[:n]))
        shared = first_id[: len(prefix) - 1]  # a prefix of both ids (the host, at least)
        one_line_error(cli("stop-workers", shared, "--url", url), 1, "is ambiguous")
        result = cli("stop-workers", prefix, "--url", url)
        assert result.exit_code == 0, result.output
        assert lines(result) == [f"stop requested: {first_id}"]
        assert first.wait(30) == 0  # stopped gracefully, as on SIGTERM: exit code 0
        assert second.poll() is None and registered(url, second.pid) is not None
        states = {w["id"]: w["state"] for w in json.loads(cli("workers", "--json", "--url", url).stdout)}
        assert states[first_id] == "stopped" and states[second_id] == "running"

        by_queue = cli("stop-workers", "--queue", "default", "--url", url)
        assert by_queue.exit_code == 0 and lines(by_queue) == [f"stop requested: {second_id}"]
        assert second.wait(30) == 0
    kinds = [e.kind for e in App(url).events(kinds=["stop_requested", "worker_stopped"])]
    assert kinds.count("stop_requested") == 2 and kinds.count("worker_stopped") == 2


def test_stop_workers_refuses_bad_usage_and_unknown_ids(cli, url: str, app: App) -> None:
    app.enqueue("shop.ok", [1])  # a store with something in it
    for args in ([], ["w-1", "--queue", "default"]):
        result = cli("stop-workers", *args, "--url", url)
        assert result.exit_code == 2 and "give WORKER_ID... or --queue QUEUE" in result.output
    one_line_error(cli("stop-workers", "no-such-worker", "--url", url), 1, "no-such-worker")
    empty = cli("stop-workers", "--queue", "emails,", "--url", url)
    assert empty.exit_code == 2 and "queue" in empty.output
    nobody = cli("stop-workers", "--queue", "emails", "--url", url)
    assert nobody.exit_code == 0 and lines(nobody) == ["no running worker serves emails"]


# health -----------------------------------------------------------------------------------------
def test_health_exits_0_with_a_worker_running(tmp_path: Path, url: str, app: App) -> None:
    app.enqueue("shop.slow", [0], queue="default")
    with running_worker(tmp_path, url, "-q", "default,emails"):
        result = conveyor("health", "--url", url, "--queue", "default,emails", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[0] == "healthy"
        assert f"store: {url}" in result.stdout and "schema" in result.stdout
        report = json.loads(conveyor("health", "--json", "--url", url, cwd=tmp_path).stdout)
        assert report["healthy"] is True and report["problems"] == []
        assert report["reachable"] is True and report["schema_current"] is True
        assert report["workers_alive"]["default"] >= 1 and report["workers_alive"]["emails"] >= 1


def test_health_exits_1_when_a_queue_with_due_jobs_has_no_live_worker(tmp_path: Path, url: str, app: App) -> None:
    app.enqueue("shop.ok", [1])
    assert conveyor("health", "--url", url, "--queue", "emails", cwd=tmp_path).returncode == 1  # no worker at all
    with running_worker(tmp_path, url, "-q", "emails"):
        app.enqueue("shop.ok", [2])  # default: due, and nobody serves it
        result = conveyor("health", "--url", url, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "unhealthy: queue 'default': jobs due" in result.stdout and "no live worker" in result.stdout
        report = json.loads(conveyor("health", "--url", url, "--json", cwd=tmp_path).stdout)
        assert report["healthy"] is False and report["workers_alive"] == {"default": 0, "emails": 1}
        assert len(report["problems"]) == 1 and "default" in report["problems"][0]
        paused = conveyor("pause", "default", "--url", url, cwd=tmp_path)
        assert paused.returncode == 0
        assert conveyor("health", "--url", url, cwd=tmp_path).returncode == 0  # paused: nobody is expected to serve it


def test_health_of_an_empty_store_with_no_worker_is_healthy_unless_a_queue_is_named(tmp_path: Path, url: str) -> None:
    App(url).backend.setup()
    assert conveyor("health", "--url", url, cwd=tmp_path).returncode == 0
    named = conveyor("health", "--url", url, "--queue", "reports", cwd=tmp_path)
    assert named.returncode == 1 and "unhealthy: queue 'reports': no live worker" in named.stdout


def test_health_exits_1_with_the_store_unreachable(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://postgres@127.0.0.1:1/test?pool_timeout=1"
    result = conveyor("health", "--url", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stdout.splitlines()
    assert len(said) == 1 and said[0].startswith("unhealthy: store unreachable"), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads(conveyor("health", "--url", url, "--json", cwd=tmp_path).stdout)
    assert (report["healthy"], report["reachable"]) == (False, False)


def test_health_of_a_missing_sqlite_file_is_unhealthy_and_creates_nothing(tmp_path: Path) -> None:
    result = conveyor("health", "--url", "sqlite:///nowhere.db", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout.startswith("unhealthy: no store at")
    assert not (tmp_path / "nowhere.db").exists()


def test_health_usage_errors_exit_2(cli, url: str) -> None:
    assert cli("health", "--bogus", "--url", url).exit_code == 2
    assert cli("health", "--queue", " ", "--url", url).exit_code == 2


# events ----------------------------------------------------------------------------------------
def _history(app: App) -> dict[str, str]:
    @app.task(name="shop.ok")
    def ok(x: int) -> int:
        from conveyor import current_job

        current_job().progress(50, "half way")
        return x

    @app.task(name="shop.fail")
    def failing() -> None:
        raise ValueError("broken on purpose")

    good = ok.delay(1).id
    bad = failing.options(queue="emails").delay().id
    app.run_until_empty()
    return {"good": good, "bad": bad}


def test_events_lists_a_jobs_history(cli, url: str, app: App) -> None:
    ids = _history(app)
    table = cli("events", "--job", ids["good"][:10], "--url", url)
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in lines(table) if ROW.match(line)]  # a long line folds onto more
    assert [row[2] for row in rows] == ["enqueued", "started", "progress", "succeeded"]
    assert all(row[3] == ids["good"] for row in rows)

    listed = json_lines(cli("events", "--job", ids["good"], "--json", "--url", url))
    assert [e["kind"] for e in listed] == ["enqueued", "started", "progress", "succeeded"]
    assert [e["seq"] for e in listed] == sorted(e["seq"] for e in listed)
    assert listed[2]["data"] == {"percent": 50.0, "message": "half way"}
    assert {e["job_id"] for e in listed} == {ids["good"]} and listed[1]["attempt"] == 1

    failed = json_lines(cli("events", "--kind", "failed", "--json", "--url", url))
    assert [(e["job_id"], e["data"]["exit_code"]) for e in failed] == [(ids["bad"], 1)]
    assert failed[0]["data"]["error"]["type"] == "ValueError"
    emails = cli("events", "--queue", "emails", "--json", "--url", url).stdout.splitlines()
    assert {json.loads(line)["job_id"] for line in emails} == {ids["bad"]}
    by_task = cli("events", "--task", "shop.ok", "--kind", "enqueued", "--kind", "succeeded", "--json", "--url", url)
    assert [json.loads(line)["kind"] for line in by_task.stdout.splitlines()] == ["enqueued", "succeeded"]


@pytest.mark.parametrize("columns", ["120", "200"])
def test_events_is_a_table_on_a_wide_terminal(tmp_path: Path, url: str, app: App, columns: str) -> None:
    ids = _history(app)
    result = conveyor("events", "--job", ids["bad"], "--url", url, cwd=tmp_path, env={"COLUMNS": columns})
    assert result.returncode == 0, result.stderr
    shown = [line.split() for line in result.stdout.splitlines() if line.strip()]
    header = ["seq", "time", "kind", "job", "task", "queue", *(["try", "worker"] if columns == "200" else []), "data"]
    assert shown[0] == header
    assert [row[2] for row in shown[2:] if row[0].isdigit()] == ["enqueued", "started", "failed"]
    assert all(len(line) <= int(columns) for line in result.stdout.splitlines())


def test_events_latest_limit_and_after(cli, url: str, app: App) -> None:
    _history(app)
    every = [json.loads(line) for line in cli("events", "--json", "--url", url).stdout.splitlines()]
    seqs = [e["seq"] for e in every]
    assert len(seqs) == 7 and seqs == sorted(seqs)
    latest = cli("events", "--limit", "2", "--json", "--url", url).stdout.splitlines()
    last_two = [json.loads(line)["seq"] for line in latest]
    assert last_two == seqs[-2:]  # without --after: the latest, like tail
    after = cli("events", "--after", str(seqs[1]), "--limit", "3", "--json", "--url", url).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in after] == seqs[2:5]  # with --after: from there, oldest first
    assert cli("events", "--limit", "0", "--url", url).exit_code == 2
    assert cli("events", "--after", "-1", "--url", url).exit_code == 2


def test_events_of_an_unknown_job_is_one_line_and_exit_1(cli, url: str, app: App) -> None:
    _history(app)
    one_line_error(cli("events", "--job", "ghost", "--url", url), 1, "no job with id 'ghost'")


def test_events_of_a_discarded_job_are_listed_by_its_full_id(cli, url: str, app: App) -> None:
    from conveyor import Discard

    @app.task(name="shop.drop")
    def drop() -> None:
        raise Discard()

    job_id = drop.delay().id
    app.run_until_empty()
    listed = cli("events", "--job", job_id, "--json", "--url", url).stdout.splitlines()
    assert [json.loads(line)["kind"] for line in listed] == ["enqueued", "started", "discarded"]


def test_events_on_a_missing_store_creates_nothing(cli, tmp_path: Path) -> None:
    one_line_error(cli("events", "--url", "sqlite:///missing.db"), 1, "no store at")
    assert not (tmp_path / "missing.db").exists()


# worker --no-leader ---------------------------------------------------------------------------------
def test_worker_no_leader_runs_a_worker_that_never_leads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--no-leader`` reaches the worker as WorkerOptions(leader=False); without it, leader=True."""
    import conveyor.cli.worker as worker_command
    import conveyor.worker as worker_package

    seen = []

    class Recorder:
        def __init__(self, app: App, options: Any) -> None:
            seen.append(options)

        def run(self) -> int:
            return 0

    def leave(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(worker_package, "Worker", Recorder)
    monkeypatch.setattr(worker_command.os, "_exit", leave)
    monkeypatch.setattr(worker_command, "configure_logging", lambda *_: None)  # keep this process's logging
    monkeypatch.setattr(worker_command.logging, "shutdown", lambda: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop_nl.py").write_text(SHOP)
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'nl.db'}"
    for args, leader in ((["--no-leader"], False), ([], True)):
        result = CliRunner().invoke(main, ["worker", "shop_nl", "--url", url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert seen[-1].leader is leader
