"""What a worker logs: one line per job outcome on ``conveyor.jobs`` (with its fields as ``extra``
for a JSON formatter), one warning per unknown task, and a start line naming the store and tasks."""

from __future__ import annotations

import logging
import os
import time

import pytest

from conveyor import App, JobFailed

EVENT_WAIT = 10.0  # generous upper bound for cross-thread hand-offs; never a speed assertion
FIELDS = ("job_id", "task", "queue", "attempt", "duration", "status", "retry_in")


def _records(caplog: pytest.LogCaptureFixture, job_id: str, timeout: float = EVENT_WAIT) -> list[logging.LogRecord]:
    """The ``conveyor.jobs`` records of one job, waiting for at least one (the line is logged by a
    job thread, maybe just after the store shows the outcome)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in caplog.records if r.name == "conveyor.jobs" and getattr(r, "job_id", None) == job_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_a_success_is_one_info_line_with_its_fields(app: App, start_worker, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(queue="mail")
    def send(to: str) -> str:
        return to

    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    start_worker(queues=("mail",))
    handle = send.delay("ada")
    assert handle.result(timeout=EVENT_WAIT) == "ada"
    [record] = _records(caplog, handle.id)
    assert record.levelno == logging.INFO
    assert all(hasattr(record, field) for field in FIELDS)
    fields = {field: getattr(record, field) for field in FIELDS}
    assert fields["task"] == send.name and fields["queue"] == "mail"
    assert fields["attempt"] == 1 and fields["status"] == "succeeded" and fields["retry_in"] is None
    assert isinstance(fields["duration"], float) and 0 <= fields["duration"] < EVENT_WAIT
    message = record.getMessage()
    assert send.name in message and handle.id in message and "succeeded" in message and "attempt 1" in message


def test_a_retry_is_a_warning_with_its_delay_and_a_failure_an_error_with_the_traceback(
    app: App, start_worker, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(max_retries=1, backoff=0.05, jitter=0.0)
    def flaky() -> None:
        raise ValueError("boom at the gate")

    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    start_worker()
    handle = flaky.delay()
    with pytest.raises(JobFailed):
        handle.result(timeout=EVENT_WAIT)
    deadline = time.monotonic() + EVENT_WAIT
    while len(records := _records(caplog, handle.id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    retry, failure = records
    assert retry.levelno == logging.WARNING and retry.status == "retry"  # type: ignore[attr-defined]
    assert retry.attempt == 1 and 0 < retry.retry_in <= 0.05 + 0.01  # type: ignore[attr-defined]
    assert "next try in" in retry.getMessage() and "boom at the gate" in retry.getMessage()
    assert failure.levelno == logging.ERROR and failure.status == "failed"  # type: ignore[attr-defined]
    assert failure.attempt == 2 and failure.retry_in is None  # type: ignore[attr-defined]
    message = failure.getMessage()
    assert "Traceback (most recent call last)" in message and "ValueError: boom at the gate" in message


def test_no_job_line_below_the_level(app: App, start_worker, caplog: pytest.LogCaptureFixture) -> None:
    @app.task
    def quiet() -> int:
        return 1

    caplog.set_level(logging.WARNING, logger="conveyor.jobs")
    start_worker()
    handle = quiet.delay()
    assert handle.result(timeout=EVENT_WAIT) == 1
    assert _records(caplog, handle.id, timeout=0.2) == []


def test_the_start_line_names_the_store_by_its_absolute_path_and_the_tasks(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import WorkerThread

    from conveyor import Worker

    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    app = App("sqlite:///relative.db", lease=1.0)  # relative to the working directory

    @app.task(name="shop.ship")
    def ship() -> None: ...

    @app.task(name="shop.bill")
    def bill() -> None: ...

    caplog.set_level(logging.INFO, logger="conveyor.worker")
    runner = WorkerThread(Worker(app, poll=0.05, grace=1.0)).start()
    try:
        deadline = time.monotonic() + EVENT_WAIT
        while not (lines := [r for r in caplog.records if "started" in r.getMessage() and hasattr(r, "store")]):
            assert time.monotonic() < deadline, "no start line"
            time.sleep(0.01)
    finally:
        runner.stop()
    [line] = lines
    absolute = os.path.join(str(tmp_path), "relative.db")
    message = line.getMessage()
    assert absolute in message and line.store == f"sqlite:///{absolute}"  # type: ignore[attr-defined]
    assert "shop.bill, shop.ship" in message and line.tasks == ["shop.bill", "shop.ship"]  # type: ignore[attr-defined]
    assert runner.worker.id in message


def test_the_start_line_never_shows_a_password(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real worker on PostgreSQL, its URL carrying a password (trust auth ignores it)."""
    from urllib.parse import urlsplit, urlunsplit

    from conftest import WorkerThread

    from conveyor import Worker

    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    parts = urlsplit(postgres_url)
    user = parts.username or "postgres"
    url = urlunsplit(parts._replace(netloc=f"{user}:s3cret-pw@{parts.hostname}:{parts.port or 5432}"))
    app = App(url, lease=1.0)
    caplog.set_level(logging.INFO, logger="conveyor.worker")
    runner = WorkerThread(Worker(app, poll=0.05, grace=1.0)).start()
    try:
        deadline = time.monotonic() + EVENT_WAIT
        while not (lines := [r for r in caplog.records if hasattr(r, "store")]):
            assert time.monotonic() < deadline, "no start line"
            time.sleep(0.01)
    finally:
        runner.stop()
        app.close()
    [line] = lines
    assert "s3cret-pw" not in line.getMessage() and "s3cret-pw" not in line.store  # type: ignore[attr-defined]
    assert str(parts.hostname) in line.getMessage() and "none" in line.getMessage()  # no tasks registered


def test_an_unknown_task_is_warned_about_once_per_worker(
    app: App, start_worker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.worker import loop as worker_loop

    monkeypatch.setattr(worker_loop, "UNKNOWN_DELAY", 30.0)
    caplog.set_level(logging.WARNING, logger="conveyor.worker")
    handles = [app.enqueue("elsewhere.only", [i]) for i in range(3)]
    start_worker(concurrency=4)
    deadline = time.monotonic() + EVENT_WAIT
    while any(h.refresh().error is None for h in handles):
        assert time.monotonic() < deadline, "the jobs were not handed back"
        time.sleep(0.02)
    warnings = [r for r in caplog.records if "elsewhere.only" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == 1


def test_a_time_out_gets_its_line_too(app: App, start_worker, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    release = threading.Event()

    @app.task(timeout=0.2)
    def slow() -> None:
        release.wait(EVENT_WAIT)

    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    start_worker()
    handle = slow.delay()
    try:
        [record] = _records(caplog, handle.id)
    finally:
        release.set()
    assert record.levelno == logging.ERROR and record.status == "failed"  # type: ignore[attr-defined]
    assert "TimeoutError" in record.getMessage() and record.duration >= 0.2  # type: ignore[attr-defined]


def test_every_kind_of_outcome_has_a_level_and_words() -> None:
    """A kind missing here once made log_outcome raise, and a worker stop itself, at every stage
    of every pipeline (ADVANCED): every kind is named, so a new one cannot slip by."""
    from conveyor.outcome import OutcomeKind
    from conveyor.worker.joblog import _SAID, LEVELS

    assert set(LEVELS) == set(OutcomeKind) == set(_SAID)
