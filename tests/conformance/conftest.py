"""One conformance suite for every store: the ``backend`` fixture is parametrised over them.

Each test pins a piece of the storage contract (conveyor/backends/base.py) by calling the
Backend methods directly on a real store: a SQLite file, a PostgreSQL database (Redis later).
A new backend joins the suite by adding one entry to ``STORES``, nothing more.

PostgreSQL: ``$CONVEYOR_TEST_POSTGRES_URL`` (default postgresql://postgres@127.0.0.1:5432/test)
names a database this suite may connect to; the suite creates a throwaway database next to it
for the session and drops it at the end. An unreachable server skips the PostgreSQL tests with a
loud reason, except when ``CI=true``, where it fails them: CI must test every store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends import Backend, open_backend

STORES = ["sqlite", "postgres"]

#: Opens one more Backend on the test's store (another process would open the same URL).
OpenStore = Callable[[], Backend]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conformance.db'}"
    elif request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        cleaner = open_backend(url)
        cleaner.setup()
        cleaner.destroy_all()  # the session's database is shared by the tests: start empty
        cleaner.close()
        yield url
    else:  # pragma: no cover - a new store must say how to make an empty one
        raise AssertionError(f"no fixture for store {request.param!r}")


@pytest.fixture
def open_store(store_url: str) -> Iterator[OpenStore]:
    """Open more Backends on the test's store (as other processes or hosts would); all closed after."""
    opened: list[Backend] = []

    def open_one() -> Backend:
        backend = open_backend(store_url)
        backend.setup()
        opened.append(backend)
        return backend

    yield open_one
    for backend in opened:
        with suppress(Exception):
            backend.close()


@pytest.fixture
def backend(open_store: OpenStore) -> Backend:
    """The store under test, set up and empty."""
    return open_store()


@pytest.fixture
def native_connection(store_url: str) -> Iterator[Callable[[], Any]]:
    """Opens the store's own kind of database connection, for transactional enqueue."""
    opened: list[Any] = []

    def connect() -> Any:
        if store_url.startswith("sqlite"):
            conn: Any = sqlite3.connect(store_url.split("://", 1)[1][1:])
        else:
            import psycopg

            conn = psycopg.connect(store_url)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        with suppress(Exception):
            conn.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """The file of a SQLite store, for the SQLite-only tests."""
    return tmp_path / "store.db"


@pytest.fixture
def sqlite_store(sqlite_path: Path) -> Iterator[Any]:
    """A SQLiteBackend on ``sqlite_path``, set up: for the SQLite-only tests."""
    from conveyor.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(sqlite_path)
    backend.setup()
    yield backend
    backend.close()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Any]:
    """A PostgresBackend on the session's database, set up and emptied: for the PostgreSQL-only tests."""
    from conveyor.backends.postgres import PostgresBackend

    backend = PostgresBackend(postgres_url)
    backend.setup()
    backend.destroy_all()
    yield backend
    backend.close()
