"""``conveyor watch`` and ``conveyor events --follow`` (issue 10): following one job to its end
and exiting with its exit code, with a real worker running the job; plain lines when stdout is
not a terminal; the live view in a real pseudo-terminal; the view's tally, throughput and events."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from test_cli_ops import SHOP, clean_env, conveyor, running_worker, wait_for

from conveyor import App
from conveyor.cli.watch import WatchView
from conveyor.events import EventKind


class Follower:
    """A long-running ``python -m conveyor ARGS`` whose stdout is read line by line on a thread."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "conveyor", *args], cwd=cwd, env=clean_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, *words: str, timeout: float = 30.0) -> str:
        """The first line holding every one of ``words``, once printed."""
        found = wait_for(lambda: next((ln for ln in self.lines if all(w in ln for w in words)), None)
                         or self.process.poll() is not None, f"a line with {words}", timeout=timeout)  # fmt: skip
        assert isinstance(found, str), f"exited {self.process.returncode}: {self.lines} {self.stderr()}"
        return found

    def finish(self, timeout: float = 60.0) -> int:
        """Its exit code, once it exits by itself, with its output read to the end."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops following; its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.finish(30)

    def stderr(self) -> str:
        return "" if self.process.poll() is None or self.process.stderr is None else self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def kinds_of(lines: list[str]) -> list[str]:
    """The kind in each line ``watch`` / ``events --follow`` printed: time, #seq, kind, ..."""
    return [line.split()[2] for line in lines]


# watch --job -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("task", "args", "code", "last"), [("shop.ok", "[7]", 0, "succeeded"),
                                                            ("shop.fail", "[]", 1, "failed")])  # fmt: skip
def test_watch_job_follows_a_job_a_worker_runs_and_exits_with_its_exit_code(
    tmp_path: Path, url: str, app: App, task: str, args: str, code: int, last: str
) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    app.pause_queue("default")  # the job waits until the watcher follows it
    job_id = app.enqueue(task, json.loads(args)).id
    watcher = Follower(tmp_path, "watch", "--job", job_id[:8], "--url", url)
    try:
        watcher.wait_for_line("enqueued", job_id)  # printed its history; now following
        with running_worker(tmp_path, url):
            app.resume_queue("default")
            assert watcher.finish() == code, watcher.lines
    finally:
        watcher.kill()
    kinds = kinds_of(watcher.lines)
    assert kinds[0] == "enqueued" and kinds[1] == "started" and kinds[-1] == last, watcher.lines
    assert all(job_id in line for line in watcher.lines)
    if last == "failed":
        assert '"exit_code":1' in watcher.lines[-1] and "ValueError" in watcher.lines[-1]
    else:
        assert "progress" in kinds and '"half way"' in watcher.lines[kinds.index("progress")]


def test_watch_job_of_a_job_already_finished_exits_at_once_with_its_code(cli, url: str, app: App) -> None:
    @app.task(name="shop.ok")
    def ok() -> str:
        return "fine"

    @app.task(name="shop.fail")
    def failing() -> None:
        raise ValueError("broken")

    done, broken, cancelled = ok.delay().id, failing.delay().id, app.enqueue("shop.later", delay=3600).id
    app.run_until_empty()
    app.cancel(cancelled)
    for job_id, code, last in ((done, 0, "succeeded"), (broken, 1, "failed"), (cancelled, 130, "cancelled")):
        result = cli("watch", "--job", job_id[:10], "--url", url)
        assert result.exit_code == code, result.output
        assert kinds_of(result.stdout.splitlines())[-1] == last
    assert app.backend.prune_events(time.time() + 1) > 0  # past the event TTL: a job without its events
    gone = cli("watch", "--job", broken, "--url", url)
    assert (gone.exit_code, gone.stdout) == (1, "")  # finished: its stored exit code, at once


def test_watch_job_after_a_manual_retry_follows_the_new_run(tmp_path: Path, url: str, app: App) -> None:
    """A job that failed, then was retried by hand, has not ended: its old ``failed`` event does not
    end the watch; the new run's ``succeeded`` does."""
    (tmp_path / "shop.py").write_text(SHOP)
    job_id = app.enqueue("shop.fail").id
    app.run_until_empty()  # this app does not know shop.fail: it fails inline
    assert app.job(job_id).status.value == "failed"
    app.pause_queue("default")
    app.retry(job_id)
    watcher = Follower(tmp_path, "watch", "--job", job_id, "--url", url)
    try:
        watcher.wait_for_line("requeued", job_id)
        with running_worker(tmp_path, url):
            app.resume_queue("default")
            assert watcher.finish() == 1  # shop.fail fails again on the worker
    finally:
        watcher.kill()
    kinds = kinds_of(watcher.lines)
    assert kinds[:4] == ["enqueued", "started", "failed", "requeued"] and kinds[-2:] == ["started", "failed"]


def test_watch_job_refuses_an_unknown_job_and_filters(cli, url: str, app: App) -> None:
    app.enqueue("shop.ok", [1])
    missing = cli("watch", "--job", "ghost", "--url", url)
    assert missing.exit_code == 1 and "error: no job with id 'ghost'" in missing.stderr
    both = cli("watch", "--job", "abc", "--queue", "default", "--url", url)
    assert both.exit_code == 2 and "takes no --queue or --task" in both.output


# watch without --job ------------------------------------------------------------------------------
def test_watch_prints_plain_lines_when_stdout_is_not_a_terminal(tmp_path: Path, url: str, app: App) -> None:
    first = app.enqueue("shop.ok", [1], queue="emails").id
    watcher = Follower(tmp_path, "watch", "--queue", "emails", "--url", url)
    try:
        watcher.wait_for_line("enqueued", first)  # the latest events first
        other = app.enqueue("shop.ok", [2], queue="default").id
        second = app.enqueue("shop.ok", [3], queue="emails").id
        watcher.wait_for_line("enqueued", second)  # then each new one, as written
        assert all(other not in line for line in watcher.lines)  # written before it, filtered out
        assert watcher.interrupt() == 0  # Ctrl-C is how watching ends
    finally:
        watcher.kill()
    assert all("queue=emails" in line for line in watcher.lines)


def test_watch_live_view_in_a_terminal(tmp_path: Path, url: str, app: App) -> None:
    """Run in a real pseudo-terminal: the rich view with its tally, throughput and events."""
    app.enqueue("shop.ok", [1], queue="emails")
    app.pause_queue("emails")
    primary, secondary = pty.openpty()
    env = {**clean_env(), "COLUMNS": "140", "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen([sys.executable, "-m", "conveyor", "watch", "--url", url], cwd=tmp_path, env=env,
                               stdin=secondary, stdout=secondary, stderr=subprocess.PIPE)  # fmt: skip
    os.close(secondary)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"jobs/s" not in shown or b"queue_paused" not in shown:
            assert time.monotonic() < deadline and process.poll() is None, shown.decode(errors="replace")
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                shown += os.read(primary, 65536)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    text = shown.decode(errors="replace")
    assert "emails" in text and "paused queues: emails" in text and "throughput" in text


def test_watch_view_counts_throughput_from_finish_events(url: str, app: App) -> None:
    @app.task(name="shop.ok")
    def ok() -> None:
        return None

    @app.task(name="shop.fail")
    def failing() -> None:
        raise ValueError("no")

    for _ in range(3):
        ok.delay()
    failing.delay()
    app.run_until_empty()
    events = app.events()
    finished = [e for e in events if e.kind in (EventKind.SUCCEEDED, EventKind.FAILED)]
    assert len(finished) == 4
    view = WatchView(None, None, started=events[0].at - 60)  # watching for a minute already
    for event in events:
        view.add(event)
    now = finished[-1].at + 0.5
    assert view.throughput(now) == pytest.approx(len([e for e in finished if e.at >= now - 5]) / 5)
    assert view.throughput(finished[-1].at + 60) == 0.0  # nothing in the last 5 s
    late = WatchView(None, None, started=now - 0.5)
    assert late.throughput(now) is None  # half a second: too short to say
    view.read_store(app)
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(view.render(now, 140))
    text = console.export_text()
    assert "default" in text and "succeeded" in text and "jobs/s" in text
    assert sum(1 for line in text.splitlines() if "shop.ok" in line) >= 3  # the latest events


# events --follow -------------------------------------------------------------------------------
def test_events_follow_prints_each_new_event_as_a_json_line(tmp_path: Path, url: str, app: App) -> None:
    app.enqueue("shop.ok", [0])
    follower = Follower(tmp_path, "events", "--follow", "--json", "--kind", "enqueued", "--url", url)
    try:
        wait_for(lambda: len(follower.lines) == 1, "the latest event")
        job_id = app.enqueue("shop.ok", [1]).id
        app.cancel(job_id)  # not an enqueued event: filtered out
        again = app.enqueue("shop.ok", [2]).id
        follower.wait_for_line(again)
        assert follower.interrupt() == 0
    finally:
        follower.kill()
    printed = [json.loads(line) for line in follower.lines]
    assert [e["kind"] for e in printed] == ["enqueued"] * 3
    assert [e["job_id"] for e in printed][1:] == [job_id, again]


def test_events_follow_with_a_table_prints_lines(tmp_path: Path, url: str, app: App) -> None:
    result = conveyor("events", "--url", url, cwd=tmp_path)  # a store that does not exist yet
    assert result.returncode == 1 and "no store at" in result.stderr
    app.enqueue("shop.ok", [0], queue="emails")
    follower = Follower(tmp_path, "events", "-f", "--queue", "emails", "--url", url)
    try:
        follower.wait_for_line("enqueued", "queue=emails")
        app.pause_queue("emails")
        follower.wait_for_line("queue_paused", "queue=emails")
        assert follower.interrupt() == 0
    finally:
        follower.kill()


# PostgreSQL: the same commands, the sequencer's numbering and NOTIFY wake-ups -------------------
@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A throwaway PostgreSQL database for one test (skipped loudly when no server runs)."""
    psycopg = pytest.importorskip("psycopg")
    from conftest import POSTGRES_ADMIN_URL, throwaway_database

    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL NOT TESTED: {exc}")
    with throwaway_database("conveyor_cli_watch") as url:
        yield url


def test_watch_job_and_events_follow_on_postgresql(tmp_path: Path, postgres_store: str) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    app = App(postgres_store)
    try:
        app.pause_queue("default")
        job_id = app.enqueue("shop.ok", [5]).id
        follower = Follower(tmp_path, "events", "--follow", "--json", "--url", postgres_store)
        watcher = Follower(tmp_path, "watch", "--job", job_id[:8], "--url", postgres_store)
        try:
            watcher.wait_for_line("enqueued", job_id)
            with running_worker(tmp_path, postgres_store):
                app.resume_queue("default")
                assert watcher.finish() == 0, watcher.lines
                follower.wait_for_line('"kind":"succeeded"', job_id)
            assert follower.interrupt() == 0
        finally:
            watcher.kill()
            follower.kill()
        assert kinds_of(watcher.lines) == ["enqueued", "started", "progress", "succeeded"]
        followed = [json.loads(line) for line in follower.lines]
        assert [e["seq"] for e in followed] == sorted({e["seq"] for e in followed})  # in order, none twice
        mine = [e["kind"] for e in followed if e["job_id"] == job_id]
        assert mine == ["enqueued", "started", "progress", "succeeded"]
        health = conveyor("health", "--url", postgres_store, "--json", cwd=tmp_path)
        assert health.returncode == 0 and json.loads(health.stdout)["schema_current"] is True
    finally:
        app.close()
