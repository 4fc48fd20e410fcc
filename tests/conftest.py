"""Shared fixtures: a real SQLite file per test, real worker threads, and (for the suites that
test every store) a throwaway PostgreSQL database per session.

PostgreSQL: ``$CONVEYOR_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test)
names a database the tests may connect to; a throwaway database is created next to it for the
session and dropped at its end. An unreachable server skips the PostgreSQL tests with a loud
reason, except when ``CI=true``, where it fails them: CI must test every store."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import waiting
from click.testing import CliRunner, Result

from conveyor import App, Worker
from conveyor.backends import open_backend
from conveyor.cli import main
from conveyor.worker import WorkerOptions

# $CONVEYOR_URL beats the URL a test gives App() in code (README, "Which store?"): a developer's
# exported store must never receive (or lose) the tests' jobs. Tests that want it set it per process.
os.environ.pop("CONVEYOR_URL", None)
os.environ.pop("CONVEYOR_APP", None)

LEASE = 1.0  # short, so lease-driven behaviour (heartbeats, rescues) happens within a test
POSTGRES_ADMIN_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
    """Skip loudly on a developer machine; fail on CI, where every store must be tested."""
    message = f"PostgreSQL NOT TESTED: {reason} (set CONVEYOR_TEST_POSTGRES_URL to a reachable server)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a throwaway database created for this test session (dropped at its end)."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[postgres]'")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unavailable(f"cannot connect to {POSTGRES_ADMIN_URL}: {str(exc).strip()}")
    admin.close()
    with throwaway_database("conveyor_conf") as url:
        yield url


@contextlib.contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A new, empty database next to POSTGRES_ADMIN_URL's, dropped afterwards; yields its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(POSTGRES_ADMIN_URL, name)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each kind: a SQLite file, and the test PostgreSQL database emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    cleaner = open_backend(url)
    cleaner.setup()
    cleaner.destroy_all()
    cleaner.close()
    yield url


@pytest.fixture
def any_app(any_url: str) -> Iterator[App]:
    """An App on ``any_url``, with a short lease."""
    application = App(any_url, lease=1.0)
    yield application
    application.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where this test's store lives."""
    return tmp_path / "conveyor.db"


@pytest.fixture
def url(db_path: Path) -> str:
    """The store URL of this test (an absolute path: sqlite:////...)."""
    return f"sqlite:///{db_path}"


@pytest.fixture
def app(url: str) -> Iterator[App]:
    """An app on this test's store, with a short lease."""
    application = App(url, lease=LEASE)
    yield application
    application.close()


@pytest.fixture
def count_rows(db_path: Path) -> Callable[[], int]:
    """Count the jobs in the store with a plain sqlite3 connection (0 if the file was never made)."""

    def count() -> int:
        if not db_path.exists():
            return 0
        with sqlite3.connect(db_path) as conn:
            try:
                return int(conn.execute("SELECT count(*) FROM conveyor_jobs").fetchone()[0])
            except sqlite3.OperationalError:  # no schema yet
                return 0

    return count


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, what="...", timeout=10)``: poll until truthy, else fail the test."""
    return waiting.wait_for


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """``conveyor ARGS`` in-process (click's CliRunner: stdout is not a terminal), in ``tmp_path``,
    with no $CONVEYOR_URL/$CONVEYOR_APP unless ``env`` gives them."""
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_APP", raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


class WorkerThread:
    """A Worker running on a background thread of this process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, name=f"test-worker-{worker.id}", daemon=True)

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self, hurry: bool = False, timeout: float = 15.0) -> None:
        self.worker.stop(hurry=hurry)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not stop"


@pytest.fixture
def start_worker(app: App) -> Iterator[Callable[..., WorkerThread]]:
    """``start_worker(queues=("default",), concurrency=2, **options)``: a running in-thread Worker,
    stopped (and checked to have stopped) when the test ends."""
    started: list[WorkerThread] = []

    def start(
        queues: Sequence[str] = ("default",), concurrency: int = 2, *, on: App | None = None, **options: Any
    ) -> WorkerThread:
        options.setdefault("poll", 0.05)
        options.setdefault("grace", 1.0)
        settings = WorkerOptions(queues=tuple(queues), concurrency=concurrency, **options).check()
        runner = WorkerThread(Worker(on or app, settings)).start()
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.worker.stop()
    for runner in started:
        runner.stop()
