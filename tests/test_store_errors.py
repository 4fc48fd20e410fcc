"""Store errors: a corrupt or unreachable store fails clearly at first use, and loses nothing."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from conveyor import App, DuplicateJob, InvalidTransition, JobNotFound, StoreError, UnstorableText


def test_a_corrupt_file_gives_a_store_error_at_first_use(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.db"
    garbage = os.urandom(8192)
    bad.write_bytes(garbage)
    app = App(f"sqlite:///{bad}", lease=1.0)  # constructing does not touch the store

    @app.task
    def work() -> None:
        return None

    with pytest.raises(StoreError, match=re.escape(str(bad))):
        work.delay()
    with pytest.raises(StoreError, match=r"corrupt\.db"):
        app.job("anything")
    with pytest.raises(StoreError):
        app.jobs()
    assert bad.read_bytes() == garbage  # the file was not overwritten


def test_a_missing_directory_gives_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    app = App(f"sqlite:///{missing}/conveyor.db")

    @app.task
    def work() -> None:
        return None

    with pytest.raises(StoreError, match="does not exist"):
        work.delay()
    with pytest.raises(StoreError, match=re.escape(str(missing))):
        app.stats()
    assert not missing.exists()  # nothing was created on the way


def test_a_sqlite_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE conveyor_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO conveyor_meta VALUES ('schema_version', '99')")
    with pytest.raises(StoreError, match="schema version"):
        App(f"sqlite:///{path}").jobs()


def test_bad_store_urls(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="SQLite URL"):
        App("sqlite://relative-without-third-slash.db").jobs()
    with pytest.raises(StoreError, match="memory"):
        App("sqlite:///:memory:").jobs()


def test_a_bare_path_is_a_sqlite_store(tmp_path: Path) -> None:
    path = tmp_path / "bare.db"
    app = App(str(path))

    @app.task
    def work() -> int:
        return 1

    handle = work.delay()
    app.run_until_empty()
    assert handle.result(timeout=1) == 1
    assert path.exists()
    app.close()


def test_the_store_is_shared_with_another_app_on_the_same_file(app: App, url: str) -> None:
    @app.task(name="shared.work")
    def work(x: int) -> int:
        return x + 1

    handle = work.delay(1)
    other = App(url)
    try:
        assert other.job(handle.id).args == [1]
        assert other.run_until_empty() == 1  # not registered there: it fails, naming the task
        assert "shared.work" in other.job(handle.id).error.message  # type: ignore[union-attr]
    finally:
        other.close()


def test_failed_calls_lose_nothing(app: App, count_rows) -> None:
    @app.task(result_ttl=None)
    def work(x: object) -> object:
        return x

    done = work.options(id="done").delay("d")
    app.run_until_empty()
    kept = [work.options(id=f"keep-{i}").delay(i) for i in range(3)]
    snapshot = {j.id: j for j in app.jobs()}
    assert len(snapshot) == 4

    with pytest.raises(TypeError):
        app.enqueue_many([work.s(1), work.s(object())])
    with pytest.raises(DuplicateJob):
        app.enqueue_many([work.options(id="fresh").s(1), work.options(id="keep-1").s(2)])
    with pytest.raises(InvalidTransition):
        app.retry(done.id)
    with pytest.raises(InvalidTransition):
        app.retry(kept[0].id)
    with pytest.raises(JobNotFound):
        app.cancel("ghost")
    with pytest.raises(StoreError):
        App(f"sqlite:///{os.path.dirname(app.backend.url[len('sqlite:///') :])}/missing/x.db").jobs()

    assert count_rows() == 4
    assert {j.id: j for j in app.jobs()} == snapshot
    assert done.result(timeout=1) == "d"


def test_a_nul_character_postgresql_cannot_store_is_bad_input_at_the_call(any_app: App) -> None:
    """PostgreSQL's text holds no NUL: each call that would store or look one up is refused with
    UnstorableText (a ValueError) and writes nothing; SQLite stores it. A NUL inside a JSON argument
    is fine on both (escaped)."""
    handle = any_app.enqueue("t", ["a\x00b"])
    assert any_app.job(handle.id).args == ["a\x00b"]
    calls = [
        lambda: any_app.pause_queue("q\x00"),
        lambda: any_app.disable_task("t\x00"),
        lambda: any_app.lock("l\x00").acquire(),
        lambda: any_app.jobs(queue="q\x00"),
    ]
    postgres = any_app.url.startswith("postgresql")
    for call in calls:
        if postgres:
            with pytest.raises(UnstorableText, match=r"NUL character \(\\x00\)") as refused:
                call()
            assert isinstance(refused.value, ValueError) and isinstance(refused.value, StoreError)
        else:
            call()
    switches = any_app.switches()
    assert (switches.paused_queues, switches.disabled_tasks) == (
        (frozenset(), frozenset()) if postgres else (frozenset({"q\x00"}), frozenset({"t\x00"}))
    )
