"""The ``conveyor`` command, driven in-process with click's CliRunner against a real store."""

from __future__ import annotations

import re
import sqlite3

import pytest
from click.testing import CliRunner, Result

from conveyor import App, Priority, Status
from conveyor.cli import main


@pytest.fixture
def cli(url: str):
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, [*args], env=env, catch_exceptions=False)

    return invoke


def _with_url(url: str, *args: str) -> list[str]:
    return [*args, "--url", url]


@pytest.mark.parametrize("command", [None, *sorted(main.commands)])
def test_help_for_every_command(cli, command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    if command:
        assert f"main {command} [OPTIONS]" in result.output
        assert (main.commands[command].help or "").split("\n")[0][:30] in " ".join(result.output.split())


def test_main_help_lists_the_commands(cli) -> None:
    output = cli("--help").output
    for command in ("worker", "enqueue", "jobs", "job", "cancel", "retry", "prune", "stats"):
        assert re.search(rf"^\s+{command}\b", output, re.MULTILINE), command


def test_enqueue_with_json_arguments_and_options(cli, url: str, app: App) -> None:
    result = cli(
        *_with_url(url, "enqueue", "mail.send", "--args", '[1, "two", {"three": 3}]', "--kwargs", '{"x": [1, 2]}'),
        "--queue", "bulk", "--priority", "high", "--key", "k-1", "--max-retries", "4", "--delay", "60",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    job = app.job(job_id)
    assert job.task == "mail.send"
    assert job.args == [1, "two", {"three": 3}]
    assert job.kwargs == {"x": [1, 2]}
    assert (job.queue, job.priority, job.key, job.max_retries) == ("bulk", Priority.HIGH, "k-1", 4)
    assert job.status is Status.SCHEDULED

    again = cli(*_with_url(url, "enqueue", "mail.send", "--key", "k-1"))
    assert again.stdout.strip() == job_id  # same key, unfinished: the same job


def test_enqueue_takes_the_url_from_the_environment(cli, url: str, app: App) -> None:
    result = cli("enqueue", "env.task", "--args", "[7]", env={"CONVEYOR_URL": url})
    assert result.exit_code == 0, result.output
    assert app.job(result.stdout.strip()).args == [7]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--args", "[1,"], "not valid JSON"),
        (["--kwargs", "{x: 1}"], "not valid JSON"),
        (["--args", '{"a": 1}'], "JSON array"),
        (["--kwargs", "[1]"], "JSON object"),
        (["--priority", "urgent"], "urgent"),
        (["--delay", "-5"], "delay"),
        (["--delay", "soon"], "soon"),
    ],
)
def test_enqueue_refuses_bad_input_and_stores_nothing(cli, url: str, count_rows, args, message) -> None:
    assert cli(*_with_url(url, "enqueue", "before")).exit_code == 0
    result = cli(*_with_url(url, "enqueue", "some.task", *args))
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert count_rows() == 1


def _seed(app: App) -> dict[str, str]:
    @app.task(name="cli.ok")
    def ok() -> str:
        return "fine"

    @app.task(name="cli.bad")
    def bad() -> None:
        raise ValueError("cli failure")

    ok.options(id="ok-1").delay()
    bad.options(id="bad-1").delay()
    app.run_until_empty()
    ok.options(id="q-1", queue="mail").delay()
    return {"ok": "ok-1", "bad": "bad-1", "queued": "q-1"}


def test_jobs_lists_and_filters(cli, url: str, app: App) -> None:
    _seed(app)
    result = cli(*_with_url(url, "jobs"))
    assert result.exit_code == 0, result.output
    for job_id in ("ok-1", "bad-1", "q-1"):
        assert job_id in result.output
    failed = cli(*_with_url(url, "jobs", "--status", "failed")).output
    assert "bad-1" in failed and "ok-1" not in failed and "q-1" not in failed
    mail = cli(*_with_url(url, "jobs", "--queue", "mail")).output
    assert "q-1" in mail and "ok-1" not in mail
    assert cli(*_with_url(url, "jobs", "--status", "nonsense")).exit_code != 0


def test_job_shows_one_job(cli, url: str, app: App) -> None:
    _seed(app)
    result = cli(*_with_url(url, "job", "bad-1"))
    assert result.exit_code == 0, result.output
    assert "bad-1" in result.output
    assert "cli.bad" in result.output
    assert "failed" in result.output
    assert "ValueError: cli failure" in result.output

    missing = cli(*_with_url(url, "job", "ghost"))
    assert missing.exit_code == 1
    assert "no job with id 'ghost'" in missing.output


def test_cancel(cli, url: str, app: App) -> None:
    _seed(app)
    result = cli(*_with_url(url, "cancel", "q-1"))
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.output
    assert app.job("q-1").status is Status.CANCELLED
    assert cli(*_with_url(url, "cancel", "ghost")).exit_code == 1


def test_retry(cli, url: str, app: App) -> None:
    _seed(app)
    result = cli(*_with_url(url, "retry", "bad-1"))
    assert result.exit_code == 0, result.output
    assert "queued" in result.output
    job = app.job("bad-1")
    assert (job.status, job.attempts) == (Status.QUEUED, 1)

    app.run_until_empty()
    reset = cli(*_with_url(url, "retry", "bad-1", "--reset"))
    assert reset.exit_code == 0, reset.output
    assert app.job("bad-1").attempts == 0

    refused = cli(*_with_url(url, "retry", "ok-1"))
    assert refused.exit_code == 1
    assert "only failed or cancelled" in refused.output
    assert app.job("ok-1").status is Status.SUCCEEDED


def test_prune(cli, url: str, app: App) -> None:
    _seed(app)
    kept = cli(*_with_url(url, "prune", "--older-than", "1h"))
    assert kept.exit_code == 0, kept.output
    assert "pruned 0 job(s)" in kept.output
    assert cli(*_with_url(url, "prune")).stdout.strip() == "pruned 0 job(s)"  # a week's TTL
    result = cli(*_with_url(url, "prune", "--older-than", "0s"))
    assert "pruned 2 job(s)" in result.output
    assert [j.id for j in app.jobs()] == ["q-1"]
    bad = cli(*_with_url(url, "prune", "--older-than", "a while"))
    assert bad.exit_code != 0
    assert "a while" in bad.output


def test_migrate_creates_a_sqlite_store(cli, url: str, db_path) -> None:
    assert not db_path.exists()
    result = cli(*_with_url(url, "migrate"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("applied 0001_initial")
    again = cli(*_with_url(url, "migrate"))
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == "schema is up to date"
    with sqlite3.connect(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conveyor_jobs", "conveyor_locks", "conveyor_meta"} <= tables


def test_stats(cli, url: str, app: App) -> None:
    _seed(app)
    app.enqueue("cli.ok", queue="mail", delay=3600)
    result = cli(*_with_url(url, "stats"))
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    # scheduled jobs are their own column; no column for waiting, a state no job can reach yet
    assert lines[0] == ["queue", "queued", "scheduled", "running", "succeeded", "failed", "cancelled", "total"]
    rows = {line[0]: [int(n) for n in line[1:]] for line in lines[2:]}
    assert rows["default"] == [0, 0, 0, 1, 1, 0, 2]
    assert rows["mail"] == [1, 1, 0, 0, 0, 0, 2]
    assert rows["all"] == [1, 1, 0, 1, 1, 0, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "0"], "concurrency must be an int >= 1"),
        (["-q", " , "], "queue names"),
        (["--poll", "0"], "poll must be > 0"),
        (["--grace", "-1"], "grace must be a number of seconds >= 0"),
        (["-p", "-1"], "processes must be >= 0"),
        (["-q", ""], "queue names"),
        (["--log-level", "loud"], "unknown log level 'loud'"),
        (["--log-format", "xml"], "'xml' is not one of 'text', 'json'"),
    ],
)
def test_worker_rejects_bad_options_in_one_line(cli, url: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["worker", "nowhere:app", *args, "--url", url])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("processes", ["0", "2"])
def test_worker_with_an_app_that_cannot_be_imported_exits_at_once(cli, url: str, processes: str) -> None:
    result = CliRunner().invoke(main, ["worker", "no_such_module_here:app", "-p", processes, "--url", url])
    assert result.exit_code == 2, result.output
    assert "cannot import app module 'no_such_module_here'" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_corrupt_store_gives_one_clear_line(cli, tmp_path) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"\x00garbage" * 512)
    result = cli("jobs", "--url", f"sqlite:///{bad}")
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Traceback" not in result.output
