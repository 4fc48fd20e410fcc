"""The first hour with the ``conveyor`` command (issue 9), driven in-process through click's
CliRunner against real SQLite files: --app, which store, read-only commands, short ids, --json,
the job view, and one-line errors."""

from __future__ import annotations

import json
import logging
import re
import textwrap
import uuid
from pathlib import Path

import pytest
from cli_output import one_line_error

from conveyor import App, Priority, Status
from conveyor.logs import JsonFormatter, parse_level


@pytest.fixture
def user_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module the user wrote, in the working directory: an App whose code gives the store
    ``sqlite:///code.db`` and a task with options of its own. Returns the module's name."""
    name = f"myapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(f"""
        from conveyor import App, Priority

        app = App("sqlite:///code.db")

        @app.task(name="{name}.send_email", queue="mail", max_retries=3, timeout=30, priority=Priority.HIGH)
        def send_email(to):
            return f"sent to {{to}}"
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --app: the task's own options ---------------------------------------------------------------
def test_enqueue_with_app_applies_the_tasks_own_options(cli, user_app: str, tmp_path: Path) -> None:
    result = cli("enqueue", f"{user_app}.send_email", "--args", '["a@example.com"]', "--app", f"{user_app}:app")
    assert result.exit_code == 0, result.output
    job = App(f"sqlite:///{tmp_path / 'code.db'}").job(result.stdout.strip())  # the store the code names
    assert (job.queue, job.max_retries, job.timeout, job.priority) == ("mail", 3, 30, Priority.HIGH)


def test_enqueue_flags_beat_the_tasks_options_and_CONVEYOR_APP_works(cli, user_app: str, tmp_path: Path) -> None:
    result = cli("enqueue", f"{user_app}.send_email", "--queue", "bulk", "--max-retries", "0", "--priority", "low",
                 env={"CONVEYOR_APP": f"{user_app}:app"})  # fmt: skip
    assert result.exit_code == 0, result.output
    job = App(f"sqlite:///{tmp_path / 'code.db'}").job(result.stdout.strip())
    assert (job.queue, job.max_retries, job.timeout, job.priority) == ("bulk", 0, 30, Priority.LOW)


def test_enqueue_without_app_says_the_options_are_not_known(cli) -> None:
    text = " ".join(cli("enqueue", "--help").output.split())
    assert "--app" in text and "$CONVEYOR_APP" in text
    assert "options are NOT known here" in text and "Flags always win" in text


def test_enqueue_of_a_task_the_app_does_not_have_warns(cli, user_app: str) -> None:
    result = cli("enqueue", "nosuch.task", "--app", f"{user_app}:app")
    assert result.exit_code == 0, result.output
    assert f"has no task 'nosuch.task' (it has: {user_app}.send_email)" in result.stderr


# which store ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["jobs", "stats", "prune", "migrate", "enqueue", "job", "cancel", "retry"])
def test_every_command_names_its_store_with_an_absolute_path(cli, tmp_path: Path, command: str) -> None:
    assert cli("enqueue", "t.x", "--url", "sqlite:///rel.db").exit_code == 0  # a relative path, made here
    args = {"enqueue": ["t.x"], "job": ["nosuch"], "cancel": ["nosuch"], "retry": ["nosuch"]}.get(command, [])
    result = cli(command, *args, "--url", "sqlite:///rel.db")
    assert f"store: sqlite:///{tmp_path / 'rel.db'} (from --url)" in result.stderr.splitlines()[0]
    assert "store:" not in result.stdout  # stdout stays clean for scripts


def test_store_precedence_url_then_env_then_code_then_default(
    cli, user_app: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app_flag = ("--app", f"{user_app}:app")
    code = cli("enqueue", "t.x", *app_flag)
    assert "(from App(url) in code)" in code.stderr and (tmp_path / "code.db").exists()

    env = cli("enqueue", "t.x", *app_flag, env={"CONVEYOR_URL": "sqlite:///env.db"})
    assert f"store: sqlite:///{tmp_path / 'env.db'} (from $CONVEYOR_URL)" in env.stderr
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]  # the override is said aloud
    assert any("from $CONVEYOR_URL, not sqlite:///" in line and "code.db" in line for line in said), said
    flag = cli("enqueue", "t.x", *app_flag, "--url", "sqlite:///flag.db", env={"CONVEYOR_URL": "sqlite:///env.db"})
    assert f"store: sqlite:///{tmp_path / 'flag.db'} (from --url)" in flag.stderr

    default = cli("enqueue", "t.x")
    assert f"store: sqlite:///{tmp_path / 'conveyor.db'} (from the default)" in default.stderr
    for name, job_id in (("code", code), ("env", env), ("flag", flag), ("conveyor", default)):
        assert App(f"sqlite:///{tmp_path / name}.db").job(job_id.stdout.strip()).task == "t.x"


@pytest.mark.parametrize(
    "args", [["jobs"], ["stats"], ["job", "abc"], ["cancel", "abc"], ["retry", "abc"], ["prune"], ["jobs", "--json"]]
)
def test_read_only_commands_do_not_create_a_missing_store(cli, tmp_path: Path, args: list[str]) -> None:
    result = cli(*args, "--url", "sqlite:///typo.db")
    one_line_error(result, 1, f"no store at {tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()
    assert result.stdout == ""


# short ids, --json, cancel, the job view ----------------------------------------------------
@pytest.fixture
def seeded(cli, tmp_path: Path) -> App:
    app = App(f"sqlite:///{tmp_path / 'conveyor.db'}")

    @app.task(name="cli.ok")
    def ok() -> str:
        return "fine"

    ok.options(id="aaa111").delay()
    ok.options(id="aaa222").delay()
    ok.options(id="bbb333", priority=Priority.CRITICAL, timeout=12.3456).delay()
    app.run_until_empty()
    ok.options(id="ccc444", delay=3600).delay()
    return app


def test_job_cancel_and_retry_take_a_unique_id_prefix(cli, seeded: App) -> None:
    shown = cli("job", "bbb")
    assert shown.exit_code == 0, shown.output
    assert "bbb333" in shown.stdout
    cancelled = cli("cancel", "ccc")
    assert cancelled.exit_code == 0, cancelled.output
    assert seeded.job("ccc444").status is Status.CANCELLED
    retried = cli("retry", "cc")
    assert retried.exit_code == 0, retried.output
    assert seeded.job("ccc444").status is Status.QUEUED


@pytest.mark.parametrize("command", ["job", "cancel", "retry"])
def test_an_ambiguous_or_unknown_prefix_is_a_clear_error(cli, seeded: App, command: str) -> None:
    one_line_error(cli(command, "aaa"), 1, "id prefix 'aaa' is ambiguous", "aaa111", "aaa222")
    one_line_error(cli(command, "zzz"), 1, "no job with id 'zzz'")
    assert seeded.job("aaa111").status is Status.SUCCEEDED


def test_every_listing_takes_json(cli, seeded: App) -> None:
    listed = json.loads(cli("jobs", "--json").stdout)
    assert [job["id"] for job in listed] == ["ccc444", "bbb333", "aaa222", "aaa111"]
    assert listed[0]["status"] == "scheduled" and "token" not in listed[0]
    one = json.loads(cli("job", "bbb333", "--json").stdout)
    assert (one["id"], one["status"], one["result"]) == ("bbb333", "succeeded", "fine")
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["default"] == {"scheduled": 1, "succeeded": 3}
    assert stats["all"] == {"scheduled": 1, "succeeded": 3}


def test_stats_counts_scheduled_jobs_as_scheduled_and_has_no_waiting_column(cli, seeded: App) -> None:
    lines = [line.split() for line in cli("stats").stdout.splitlines() if line.strip()]
    assert lines[0] == ["queue", "queued", "scheduled", "running", "succeeded", "failed", "cancelled", "total"]
    assert lines[2] == ["default", "0", "1", "0", "3", "0", "0", "4"]


def test_cancelling_a_finished_job_says_it_was_finished(cli, seeded: App) -> None:
    one_line_error(cli("cancel", "aaa111"), 1, "job aaa111 already finished (succeeded); nothing to cancel")
    assert seeded.job("aaa111").status is Status.SUCCEEDED
    assert cli("cancel", "ccc444").exit_code == 0
    again = cli("cancel", "ccc444")
    assert again.exit_code == 0 and "ccc444 was already cancelled" in again.stdout


def test_job_shows_names_rounded_durations_zoned_times_and_hides_the_token(cli, seeded: App) -> None:
    seeded.enqueue("cli.ok", id="ddd555")
    running = seeded.backend.claim(["default"], "w-1", 1, 30.0, seeded.clock())[0]
    assert running.id == "ddd555" and running.token  # a job running now, with its fencing token
    fields = _fields(cli("job", "bbb333").stdout)
    assert fields["priority"] == "critical"
    assert fields["timeout"] == "12.35 s"
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", fields["elapsed"]), fields["elapsed"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z][A-Za-z+\-0-9]*", fields["created_at"])
    assert "token" not in fields and "stages" not in fields
    shown = _fields(cli("job", running.id).stdout)
    assert "token" not in shown
    raw = _fields(cli("job", running.id, "--raw").stdout)
    assert raw["token"] == running.token and raw["priority"] == "2"


def _fields(table: str) -> dict[str, str]:
    rows = [re.split(r"\s*│\s*", line.strip("│ ")) for line in table.splitlines() if line.startswith("│")]
    return {row[0]: row[1] for row in rows if len(row) == 2 and row[0]}


# clean errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (["jobs", "--app", "no_such_module_xyz:app"], ["cannot import app module 'no_such_module_xyz'"]),
        (["enqueue", "t.x", "--app", "{mod}:ap"], ["module {mod} has no attribute ap"]),
        (["stats", "--app", "{mod}:"], ["bad app path"]),
        (["worker", "{mod}", "-c", "0"], ["concurrency must be an int >= 1"]),
        (["worker", "{mod}", "-p", "-1"], ["processes must be >= 0"]),
        (["worker", "{mod}", "-q", ""], ["queue names"]),
        (["jobs", "--limit", "-1"], ["--limit", "must be >= 0"]),
        (["jobs", "--offset", "-3"], ["--offset", "must be >= 0"]),
        (["enqueue", "t.x", "--max-retries", "-1"], ["--max-retries"]),
        (["jobs", "--bogus"], ["No such option '--bogus'"]),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(cli, user_app: str, args: list[str], phrases: list[str]) -> None:
    result = cli(*(arg.format(mod=user_app) for arg in args))
    one_line_error(result, 2, *(phrase.format(mod=user_app) for phrase in phrases))


def test_help_tells_how_to_enable_shell_completion(cli) -> None:
    assert "_CONVEYOR_COMPLETE=bash_source conveyor" in cli("--help").output


# logs ----------------------------------------------------------------------------------------
def test_json_log_lines_carry_the_records_extras() -> None:
    record = logging.LogRecord("conveyor.jobs", logging.WARNING, __file__, 1, "job %s failed", ("j1",), None)
    record.job_id, record.retry_in = "j1", 2.5
    data = json.loads(JsonFormatter().format(record))
    assert (data["level"], data["logger"], data["message"]) == ("WARNING", "conveyor.jobs", "job j1 failed")
    assert (data["job_id"], data["retry_in"]) == ("j1", 2.5)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", data["time"])
    assert "args" not in data and "msg" not in data


@pytest.mark.parametrize(("given", "level"), [("info", logging.INFO), ("DEBUG", logging.DEBUG), (" error ", 40)])
def test_log_levels_by_name(given: str, level: int) -> None:
    assert parse_level(given) == level
    with pytest.raises(ValueError, match="use one of debug, info"):
        parse_level("verbose")


def test_conveyor_alone_shows_the_help_and_a_missing_argument_is_one_line(cli) -> None:
    alone = cli()
    assert alone.exit_code == 2 and "Commands:" in alone.stderr and "error:" not in alone.stderr
    one_line_error(cli("job"), 2, "Missing argument 'JOB_ID'")
