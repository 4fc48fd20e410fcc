"""Multi-stage jobs from the command line (issue 11): ``send`` (a message to a job's Message
stage: resumed, stored in the mailbox, duplicate, and the errors), ``notifications`` (listing,
--mark-read), ``reset``, and ``job`` showing a pipeline's stages, settings and mailbox. In-process
through click's CliRunner, against a real SQLite file; jobs are moved along with
``app.run_until_empty()`` instead of worker processes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_output import one_line_error

from conveyor import App, Status
from conveyor.cli import common
from conveyor.refs import Ref
from conveyor.stages import Message, Pipeline, Timer


class Shop:
    """An app on the test's store with an order pipeline: fetch, a stage skipped unless the order
    is big, a wait for the payment message, and shipping with the payment as an argument."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.app = App(url)
        app = self.app

        @app.task(name="shop.fetch")
        def fetch(order: str) -> dict[str, Any]:
            return {"order": order, "total": 12}

        @app.task(name="shop.review")
        def review(order: dict[str, Any]) -> str:
            return "reviewed"

        @app.task(name="shop.ship")
        def ship(order: str, payment: Any) -> str:
            return f"shipped {order} paid {payment['amount']}"

        @app.task(name="shop.boom")
        def boom() -> None:
            raise ValueError("out of stock")

        self.order: Pipeline = app.pipeline(
            fetch.s(order=Ref.kws("order")),
            review.s(order=Ref.stage(0)).when(Ref.stage(0)["total"] > 100),
            Message("payment"),
            ship.s(order=Ref.stage(0)["order"], payment=Ref.stage(2)),
            kws={"order": "A-1"},
            owner="alice",
            notify=True,
            max_retries=1,
            timeout=600,
        )
        self.failing: Pipeline = app.pipeline(fetch.s(order="B-2"), boom.s(), owner="alice", notify=True)
        self.timed: Pipeline = app.pipeline(fetch.s(order="C-3"), Timer(3600), owner="bob", notify=True)
        self.plain = fetch

    def waiting(self, job_id: str = "order1") -> str:
        """An order job run up to its payment wait."""
        self.order.delay(id=job_id)
        self.app.run_until_empty()
        assert self.app.job(job_id).status is Status.WAITING
        return job_id


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


# send ------------------------------------------------------------------------------------------
def test_send_resumes_a_waiting_job_and_its_payload_is_the_stages_result(cli, shop: Shop) -> None:
    job_id = shop.waiting()
    result = cli("send", job_id, "--payload", '{"amount": 12}', "--name", "payment", "--id", "pay-1",
                 "--url", shop.url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == f"message pay-1 (payment): job {job_id} resumed at stage 2, the payload is its result"
    assert shop.app.job(job_id).status is Status.QUEUED
    shop.app.run_until_empty()
    done = shop.app.job(job_id)
    assert done.status is Status.SUCCEEDED
    assert done.results[2] == {"amount": 12} and done.result == "shipped A-1 paid 12"


def test_a_repeated_message_id_is_a_duplicate_and_changes_nothing(cli, shop: Shop) -> None:
    job_id = shop.waiting()
    args = ("send", job_id, "--payload", '{"amount": 1}', "--name", "payment", "--id", "pay-1", "--url", shop.url)
    assert cli(*args).exit_code == 0
    again = cli(*args, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"job_id": job_id, "message_id": "pay-1", "name": "payment",
                                        "delivery": "duplicate"}  # fmt: skip
    text = cli(*args)
    assert "duplicate, already sent to job order1; nothing changed" in flat(text.stdout)
    assert len(shop.app.messages(job_id)) == 1


def test_a_message_sent_early_waits_in_the_mailbox_until_the_job_gets_there(cli, shop: Shop, wide: None) -> None:
    shop.order.delay(id="early")  # not run yet: stage 0 is queued
    result = cli("send", "ear", "--payload", '{"amount": 7}', "--name", "payment", "--url", shop.url)
    assert result.exit_code == 0, result.output
    said = flat(result.stdout)
    assert re.fullmatch(
        r"message [0-9a-f]{32} \(payment\): stored in job early's mailbox, for stage 2 \(Message\('payment'\)\); "
        r"it is taken when the job gets there",
        said,
    ), said
    assert "warning" not in result.stderr
    shown = cli("job", "early", "--url", shop.url).stdout
    assert "mailbox" in shown and "waiting in the mailbox" in shown and '{"amount":7}' in shown
    shop.app.run_until_empty()
    done = shop.app.job("early")
    assert done.status is Status.SUCCEEDED and done.result == "shipped A-1 paid 7"
    assert "by stage 2 at" in cli("job", "early", "--url", shop.url).stdout


def test_a_message_no_stage_ahead_will_take_is_stored_with_a_warning(cli, shop: Shop) -> None:
    job_id = shop.waiting()
    result = cli("send", job_id, "--payload", "3", "--name", "refund", "--url", shop.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["delivery"] == "stored"
    assert "has no Message('refund') stage at or after its current stage 2" in flat(result.stderr)
    assert shop.app.job(job_id).status is Status.WAITING  # still waiting for "payment"


def test_send_errors_are_one_line(cli, shop: Shop) -> None:
    job_id = shop.waiting()
    one_line_error(cli("send", job_id, "--payload", "{nope", "--url", shop.url), 2, "--payload", "not valid JSON")
    one_line_error(cli("send", job_id, "--name", "x" * 201, "--url", shop.url), 2, "at most 200 characters")
    assert shop.app.messages(job_id) == []
    one_line_error(cli("send", "zzz", "--payload", "1", "--url", shop.url), 1, "no job with id 'zzz'")
    finished = shop.plain.delay().id
    shop.app.run_until_empty()
    one_line_error(cli("send", finished, "--payload", "1", "--url", shop.url), 1,
                   f"job {finished} has finished; a message can no longer reach it")  # fmt: skip
    assert shop.app.messages(finished) == []


def test_send_does_not_create_a_missing_store(cli, tmp_path: Path) -> None:
    one_line_error(cli("send", "abc", "--url", "sqlite:///typo.db"), 1, "no store at")
    assert not (tmp_path / "typo.db").exists()


# notifications -----------------------------------------------------------------------------------
@pytest.fixture
def notified(shop: Shop) -> Shop:
    """alice: an order that succeeded (notification 1), then one that failed (2); bob: nothing yet."""
    shop.waiting("paid")
    shop.app.send_message("paid", {"amount": 3}, name="payment")
    shop.app.run_until_empty()
    with shop.app.eager():
        shop.failing.delay(id="broken")
    shop.timed.delay(id="timed")  # bob's job waits an hour: no notification
    shop.app.run_until_empty()
    return shop


def test_notifications_list_newest_first_per_owner(cli, notified: Shop, wide: None) -> None:
    listed = json.loads(cli("notifications", "--json", "--url", notified.url).stdout)
    assert [(n["owner"], n["job_id"], n["status"], n["read"]) for n in listed] == [
        ("alice", "broken", "failed", False), ("alice", "paid", "succeeded", False)]  # fmt: skip
    assert listed[1]["data"]["results"][3] == "shipped A-1 paid 3" and listed[1]["exit_code"] == 0
    assert listed[0]["data"]["error"] == {"type": "ValueError", "message": "out of stock"}
    assert json.loads(cli("notifications", "--owner", "bob", "--json", "--url", notified.url).stdout) == []
    one = json.loads(cli("notifications", "--owner", "alice", "--limit", "1", "--json", "--url", notified.url).stdout)
    assert [n["job_id"] for n in one] == ["broken"]
    table = cli("notifications", "--url", notified.url)
    assert table.exit_code == 0, table.output
    rows = [flat(line) for line in table.stdout.splitlines() if "alice" in line]
    assert len(rows) == 2
    assert "broken failed 1" in rows[0] and "ValueError: out of stock" in rows[0] and rows[0].endswith("new")
    assert "paid succeeded 0" in rows[1] and 'results [{"order":"A-1"' in rows[1]


def test_mark_read_marks_the_listed_ones_and_needs_an_owner(cli, notified: Shop) -> None:
    one_line_error(cli("notifications", "--mark-read", "--url", notified.url), 2, "--mark-read needs --owner")
    marked = cli("notifications", "--owner", "alice", "--limit", "1", "--mark-read", "--url", notified.url)
    assert marked.exit_code == 0, marked.output
    assert "new" in marked.stdout  # listed as it was, then marked
    assert "marked 1 notification(s) read" in marked.stdout
    unread = json.loads(cli("notifications", "--owner", "alice", "--unread", "--json", "--url", notified.url).stdout)
    assert [n["job_id"] for n in unread] == ["paid"]
    quiet = cli("notifications", "--owner", "alice", "--unread", "--mark-read", "--json", "--url", notified.url)
    assert [n["job_id"] for n in json.loads(quiet.stdout)] == ["paid"]  # stdout stays JSON
    assert "marked 1 notification(s) read" in quiet.stderr
    assert notified.app.notifications("alice", unread=True) == []
    one_line_error(cli("notifications", "--limit", "0", "--url", notified.url), 2, "--limit")


# reset -------------------------------------------------------------------------------------------
def test_reset_puts_a_finished_pipeline_back_to_its_first_stage(cli, shop: Shop) -> None:
    with shop.app.eager():
        shop.failing.delay(id="broken")
    before = shop.app.job("broken")
    assert before.status is Status.FAILED and before.stage == 1 and before.results
    result = cli("reset", "brok", "--url", shop.url)
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == "broken reset from failed to stage 0 (shop.fetch): queued"
    after = shop.app.job("broken")
    assert (after.status, after.stage, after.results, after.stage_log, after.error) == (Status.QUEUED, 0, [], [], None)
    one_line_error(
        cli("reset", "broken", "--url", shop.url), 1, "job broken is queued; only a finished job can be reset"
    )
    one_line_error(cli("reset", "zzz", "--url", shop.url), 1, "no job with id 'zzz'")


def test_reset_of_a_plain_job(cli, shop: Shop) -> None:
    with shop.app.eager():
        done = shop.plain.delay("P-1").id
        failed = shop.app.enqueue("shop.boom").id
    one_line_error(cli("reset", done, "--url", shop.url), 1, "only a pipeline job can be reset after success")
    result = cli("reset", failed, "--url", shop.url)
    assert result.exit_code == 0, result.output
    assert flat(result.stdout) == f"{failed} reset from failed to its task: queued"
    assert shop.app.job(failed).status is Status.QUEUED


# the job view ------------------------------------------------------------------------------------
def _stage_rows(text: str) -> dict[str, str]:
    """The stages table's rows by stage index, each flattened to one line of text."""
    rows: dict[str, str] = {}
    for line in text.split("stages", 1)[1].splitlines():
        match = re.match(r"\s*(▶)?\s*(\d+)\s+(.*)", line)
        if match:
            rows[match[2]] = flat(f"{match[1] or ''} {match[3]}")
    return rows


def test_job_shows_a_pipelines_stages_settings_and_mailbox(cli, shop: Shop, wide: None) -> None:
    job_id = shop.waiting()
    cli("send", job_id, "--name", "refund", "--id", "r-1", "--payload", "5", "--url", shop.url)
    result = cli("job", job_id, "--url", shop.url)
    assert result.exit_code == 0, result.output
    text = result.stdout
    fields = {m[1]: m[2].strip() for m in re.finditer(r"│ (\w+)\s*│ (.*?)│", text)}
    assert (fields["owner"], fields["notify"], fields["status"]) == ("alice", "True", "waiting")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", fields["deadline"]), fields["deadline"]
    assert fields["stage"] == "2 (stages 0-3)" and fields["restart"] == "current, up to 1 retries"
    assert fields["kws"] == '{"order":"A-1"}' and fields["budget"].startswith("10 min")
    assert "stages" not in fields and "stage_log" not in fields and "results" not in fields
    rows = _stage_rows(text)
    assert rows["0"].startswith('shop.fetch(order=Ref.kws(\'order\')) succeeded {"order":"A-1","total":12}')
    assert rows["0"].endswith(" 1")
    assert rows["1"].startswith("shop.review(order=Ref.stage(0)) skipped null")
    assert "when Ref.stage(0)['total'] > 100" in text
    assert rows["2"].startswith("▶ Message('payment') waiting: message 'payment'")
    assert rows["3"] == "shop.ship(order=Ref.stage(0)['order'], payment=Ref.stage(2)) pending"
    assert text.count("▶") == 1
    mailbox = text.split("mailbox", 1)[1]
    assert re.search(r"r-1\s+refund\s+5\s+\S+\s+waiting in the mailbox", mailbox), mailbox


def test_job_shows_a_timer_wait_and_json_carries_the_stage_view(cli, shop: Shop, wide: None) -> None:
    shop.timed.delay(id="timed")
    shop.app.run_until_empty()
    rows = _stage_rows(cli("job", "timed", "--url", shop.url).stdout)
    assert re.match(r"▶ Timer\(3600\) waiting: timer until \d\d:\d\d:\d\d|▶ Timer\(3600\) waiting: timer until \d{4}-",
                    rows["1"]), rows  # fmt: skip
    data = json.loads(cli("job", "timed", "--json", "--url", shop.url).stdout)
    assert [(v["index"], v["status"], v["current"]) for v in data["stage_view"]] == [
        (0, "succeeded", False), (1, "waiting", True)]  # fmt: skip
    assert data["stage_view"][1]["wait_until"] == data["wait_until"] and data["mailbox"] == []
    assert data["owner"] == "bob" and "token" not in data


def test_job_at_80_columns_still_shows_every_stage(cli, shop: Shop) -> None:
    job_id = shop.waiting()
    result = cli("job", job_id, "--url", shop.url)
    assert result.exit_code == 0, result.output
    assert max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 80
    rows = _stage_rows(result.stdout)
    assert sorted(rows) == ["0", "1", "2", "3"] and rows["2"].startswith("▶")


def test_a_plain_job_shows_no_pipeline_fields(cli, shop: Shop, wide: None) -> None:
    job_id = shop.plain.delay("Z-9").id
    text = cli("job", job_id, "--url", shop.url).stdout
    for name in ("owner", "notify", "deadline", "pipeline", "stage_log", "inbox", "waiting_for", "stages"):
        assert not re.search(rf"│ {name}\s", text), name
    assert "mailbox" not in text and "stages" not in text
    data = json.loads(cli("job", job_id, "--json", "--url", shop.url).stdout)
    assert "stage_view" not in data and "mailbox" not in data


def test_help_lists_the_pipeline_commands(cli) -> None:
    text = cli("--help").stdout
    for command in ("send", "notifications", "reset"):
        assert re.search(rf"^\s+{command}\s", text, re.M), command


# every store -------------------------------------------------------------------------------------
def test_send_notifications_and_reset_on_every_store(cli, any_url: str) -> None:
    shop = Shop(any_url)
    try:
        shop.order.delay(id="early")
        stored = cli("send", "early", "--name", "payment", "--payload", '{"amount": 4}', "--json", "--url", any_url)
        assert json.loads(stored.stdout)["delivery"] == "stored", stored.output
        shop.app.run_until_empty()
        assert shop.app.job("early").result == "shipped A-1 paid 4"  # taken when the job got there
        job_id = shop.waiting("late")
        args = ("send", job_id, "--name", "payment", "--payload", '{"amount": 5}', "--id", "m1", "--json")
        assert json.loads(cli(*args, "--url", any_url).stdout)["delivery"] == "resumed"
        assert json.loads(cli(*args, "--url", any_url).stdout)["delivery"] == "duplicate"
        shop.app.run_until_empty()
        one_line_error(cli("send", job_id, "--url", any_url), 1, "has finished")
        marked = cli("notifications", "--owner", "alice", "--mark-read", "--json", "--url", any_url)
        assert [n["job_id"] for n in json.loads(marked.stdout)] == ["late", "early"]
        assert "marked 2 notification(s) read" in marked.stderr
        assert shop.app.notifications("alice", unread=True) == []
        assert cli("reset", job_id, "--url", any_url).exit_code == 0
        assert (shop.app.job(job_id).status, shop.app.job(job_id).results) == (Status.QUEUED, [])
    finally:
        shop.app.close()
