"""Schedules from the command line (issue 12): ``schedules`` (the table and --json), ``schedules
explain`` (the next fire times in the zone, with DST notes), ``schedules ticks`` (the audit trail),
``schedule pause|resume|remove``, one-line errors for unknown names, ``worker --no-scheduler`` and
``conveyor scheduler`` as a real process. In-process through click's CliRunner against a real
SQLite file; ticks are fired with ``Scheduler.tick`` on an injected clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_output import one_line_error
from click.testing import CliRunner, Result

from conveyor import App, Status
from conveyor.cli import common, main
from conveyor.scheduler import Scheduler

T0 = 1_800_000_000.0  #: 2027-01-15T08:00:00Z
SPRING = 1_806_062_400.0  #: 2027-03-26T12:00:00Z: Paris moves its clocks forward on Sunday the 28th

Cli = Callable[..., Result]


class Shop:
    """An app on the test's store, on a clock the test moves, with schedules: ``poll`` (every
    30 s, one tick fired), ``nightly`` (02:30 in Paris, paused)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.now = T0
        self.app = App(url, clock=lambda: self.now)

        @self.app.task(name="shop.poll")
        def poll(source: str = "feed") -> str:
            return source

        self.poll = poll

    def fill(self) -> None:
        self.app.schedule("poll", self.poll.s("feed"), every=30)
        self.app.schedule("nightly", self.poll.s("night"), cron="30 2 * * *", tz="Europe/Paris")
        self.app.pause_schedule("nightly")
        self.now = T0 + 30
        Scheduler(self.app).tick()


@pytest.fixture
def shop(url: str) -> Iterator[Shop]:
    shop = Shop(url)
    yield shop
    shop.app.close()


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200-column terminal: tables are not folded, so the tests read whole cells."""
    monkeypatch.setattr(common.console, "width", 200)


def flat(text: str) -> str:
    return " ".join(text.split())


def app_module(tmp_path: Path, url: str, body: str = "", clock: float | None = None) -> str:
    """Write a user's app module (a unique name: never a cached import) and return MODULE:APP."""
    name = f"sched_cli_{uuid.uuid4().hex[:8]}"
    source = textwrap.dedent(f"""
        from conveyor import App

        app = App({url!r}{f", clock=lambda: {clock!r}" if clock is not None else ""})

        @app.task(name="shop.poll")
        def poll(source="feed"):
            return source
    """) + textwrap.dedent(body)
    (tmp_path / f"{name}.py").write_text(source)
    return f"{name}:app"


# listing ----------------------------------------------------------------------------------------------------
def test_schedules_lists_name_spec_zone_paused_last_and_next_tick_and_the_last_jobs_status(
    cli: Cli, shop: Shop, wide: None, tmp_path: Path
) -> None:
    shop.fill()
    result = cli("schedules", "--app", app_module(tmp_path, shop.url, clock=T0 + 31))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip() and not line.strip().startswith("─")]
    rows = {line.split()[0]: flat(line) for line in lines}
    assert set(rows) == {"name", "nightly", "poll"}, result.stdout
    assert "cron '30 2 * * *' in Europe/Paris" in rows["nightly"] or "30 2 * * *" in rows["nightly"]
    assert "paused" in rows["nightly"] and "stored" in rows["nightly"]
    assert "every 30 s" in rows["poll"] and "UTC" in rows["poll"]
    job_id = shop.app.get_schedule("poll").last_job_id
    assert job_id is not None and f"{job_id[:8]} queued" in rows["poll"]
    assert "2027-01-15 08:00:30 UTC" in rows["poll"], "the last tick, in the schedule's zone"
    assert "2027-01-15 08:01:00 UTC (in 29s)" in rows["poll"], "the next tick, and how soon"


def test_schedules_json_gives_every_field_the_spec_and_the_last_jobs_status(
    cli: Cli, shop: Shop, tmp_path: Path
) -> None:
    shop.fill()
    result = cli("schedules", "--app", app_module(tmp_path, shop.url, clock=T0 + 31), "--json")
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["poll"]["every"] == 30.0 and listed["poll"]["last_job_status"] == "queued"
    assert listed["poll"]["spec"] == "every 30 s" and listed["poll"]["next_at"] == T0 + 60
    assert listed["nightly"]["paused"] is True and listed["nightly"]["last_job_status"] is None
    assert listed["nightly"]["tz"] == "Europe/Paris" and listed["nightly"]["source"] == "stored"


def test_schedules_on_an_empty_store_says_so_and_a_missing_store_is_an_error(cli: Cli, shop: Shop) -> None:
    shop.app.schedules()  # creates the store
    result = cli("schedules", "--url", shop.url)
    assert result.exit_code == 0 and result.stdout == "" and "no schedules" in result.stderr
    one_line_error(cli("schedules", "--url", "sqlite:///missing.db"), 1, "no store at")


# explain ------------------------------------------------------------------------------------------------------
def test_explain_prints_the_next_fire_times_in_the_zone_with_the_dst_note(cli: Cli, shop: Shop, tmp_path: Path) -> None:
    shop.fill()
    path = app_module(tmp_path, shop.url, clock=SPRING)
    result = cli("schedules", "explain", "nightly", "--count", "3", "--app", path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "nightly" in lines[0] and "Europe/Paris" in lines[0] and "(paused)" in lines[0]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["2027-03-27", "02:30:00", "CET"],
        ["2027-03-28", "03:00:00", "CEST"],
        ["2027-03-29", "02:30:00", "CEST"],
    ]
    assert "clocks go forward" in lines[2] and "02:30" in lines[2], lines[2]
    as_json = json.loads(cli("schedules", "explain", "nightly", "--count", "2", "--app", path, "--json").stdout)
    assert [tick["local"] for tick in as_json["ticks"]] == ["2027-03-27T02:30:00+01:00", "2027-03-28T03:00:00+02:00"]


def test_explain_shows_a_code_schedule_not_synced_yet(cli: Cli, shop: Shop, tmp_path: Path) -> None:
    shop.app.schedules()
    path = app_module(tmp_path, shop.url, clock=T0, body="""
        @app.periodic(every=3600, name="hourly")
        def hourly():
            pass
    """)  # fmt: skip
    result = cli("schedules", "explain", "hourly", "--count", "2", "--app", path)
    assert result.exit_code == 0, result.output
    assert "not synced yet" in result.stdout
    assert "2027-01-15 09:00:00 UTC" in result.stdout and "2027-01-15 10:00:00 UTC" in result.stdout


# ticks ------------------------------------------------------------------------------------------------------------
def test_ticks_lists_the_audit_trail(cli: Cli, shop: Shop, wide: None) -> None:
    shop.fill()
    shop.now = T0 + 125  # the first job never ran: the next ticks are skipped (overlap)
    Scheduler(shop.app).tick()
    result = cli("schedules", "ticks", "poll", "--url", shop.url)
    assert result.exit_code == 0, result.output
    text = result.stdout
    job_id = shop.app.get_schedule("poll").last_job_id
    assert "enqueued" in text and job_id is not None and job_id in text
    assert "skipped_overlap" in text
    listed = json.loads(cli("schedules", "ticks", "poll", "--url", shop.url, "--json").stdout)
    assert [entry["outcome"] for entry in listed][-1] == "enqueued" and listed[-1]["tick_at"] == T0 + 30
    empty = cli("schedules", "ticks", "nightly", "--url", shop.url)
    assert empty.exit_code == 0 and "has fired no tick yet" in empty.stderr


# control ------------------------------------------------------------------------------------------------------------
def test_schedule_pause_resume_and_remove(cli: Cli, shop: Shop) -> None:
    shop.fill()
    assert flat(cli("schedule", "pause", "poll", "--url", shop.url).stdout) == "schedule poll paused"
    assert flat(cli("schedule", "pause", "poll", "--url", shop.url).stdout) == "schedule poll was already paused"
    assert shop.app.get_schedule("poll").paused
    resumed = cli("schedule", "resume", "poll", "--url", shop.url)
    assert resumed.exit_code == 0 and flat(resumed.stdout).startswith("schedule poll resumed; next tick ")
    assert flat(cli("schedule", "resume", "poll", "--url", shop.url).stdout) == "schedule poll was not paused"
    assert flat(cli("schedule", "remove", "poll", "--url", shop.url).stdout) == "schedule poll removed"
    assert [record.name for record in shop.app.schedules()] == ["nightly"]


@pytest.mark.parametrize(
    "args",
    [
        ["schedule", "pause", "nope"],
        ["schedule", "resume", "nope"],
        ["schedule", "remove", "nope"],
        ["schedules", "explain", "nope"],
        ["schedules", "ticks", "nope"],
    ],
)
def test_an_unknown_schedule_is_one_line_and_exit_1(cli: Cli, shop: Shop, args: list[str]) -> None:
    shop.fill()
    one_line_error(cli(*args, "--url", shop.url), 1, "no schedule named 'nope'")


def test_removing_a_code_schedule_needs_force(cli: Cli, shop: Shop) -> None:
    shop.app.declare_schedule("code", shop.poll.s(), every=60)
    shop.app.sync_schedules()
    one_line_error(cli("schedule", "remove", "code", "--url", shop.url), 1, "declared in code", "--force")
    assert cli("schedule", "remove", "code", "--force", "--url", shop.url).exit_code == 0
    assert shop.app.schedules() == []


# processes ----------------------------------------------------------------------------------------------------------
def test_worker_no_scheduler_reaches_the_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--no-scheduler`` reaches the worker as WorkerOptions(scheduler=False); without it, True."""
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
    monkeypatch.setattr(worker_command, "configure_logging", lambda *_: None)
    monkeypatch.setattr(worker_command.logging, "shutdown", lambda: None)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'ns.db'}"
    path = app_module(tmp_path, url)
    monkeypatch.syspath_prepend(str(tmp_path))
    for args, scheduler in ((["--no-scheduler"], False), ([], True)):
        result = CliRunner().invoke(main, ["worker", path, "--url", url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert seen[-1].scheduler is scheduler


def test_conveyor_scheduler_syncs_fires_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alone.db'}"
    path = app_module(tmp_path, url, body="""
        @app.periodic(every=0.5, name="code-beat", grace=5, overlap="allow")
        def beat():
            pass
    """)  # fmt: skip
    client = App(url)
    client.task(name="shop.poll")(lambda source="feed": source)
    client.schedule("stored-beat", client.tasks["shop.poll"].s(), every=0.5, grace=5, overlap="allow")
    clean = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "scheduler", path], cwd=tmp_path, env=clean,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            made = {job.scheduled_by for job in client.jobs(limit=1000)}
            if {"code-beat", "stored-beat"} <= made:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the scheduler fired nothing"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "scheduler started" in err and "1 code schedule(s)" in err and "scheduler stopped" in err, err
    assert all(job.status is Status.QUEUED for job in client.jobs(limit=1000)), "it runs no job"
    client.close()
