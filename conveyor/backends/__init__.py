"""Stores behind one contract (base.Backend), chosen by URL scheme."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..errors import StoreError
from .base import Backend

__all__ = ["Backend", "StoreMissing", "describe_url", "open_backend"]


class StoreMissing(StoreError):
    """A read-only use of a SQLite store whose file does not exist (it is not created)."""


def _scheme(url: str) -> str:
    return urlsplit(url).scheme if "://" in url else ""


def describe_url(url: str) -> str:
    """The URL as a person should see it: a SQLite path made absolute (a relative one is relative to
    the working directory), a password hidden."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"sqlite:///{os.path.abspath(url)}"
    if scheme == "sqlite":
        path, qmark, query = rest[1:].partition("?") if rest.startswith("/") else (rest, "", "")
        return f"sqlite:///{os.path.abspath(path)}{qmark}{query}"
    netloc, slash, tail = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{netloc}{slash}{tail}"


def _server(url: str) -> str:
    """A server URL as error messages name it: no password, no query."""
    return describe_url(url).partition("?")[0]


def open_backend(url: str, *, migrate: bool = True, must_exist: bool = False, fail_on_outage: bool = False) -> Backend:
    """The store for ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare path,
    or ``postgresql://user@host/db`` (``postgres://`` too; needs ``pip install conveyor[postgres]``).
    A SQLite URL may end in ``?durable=false`` (producer commits skip fsync) and
    ``?busy_timeout=SECONDS`` (a writer's bound on waiting for the lock; see docs/sqlite.md).
    ``migrate`` is the store's own default for ``setup``: False makes a PostgreSQL store only check
    that its schema is current (run ``conveyor migrate`` to create or upgrade it).
    ``must_exist``: for readers; a missing SQLite file raises StoreMissing instead of being created.
    A PostgreSQL URL whose credentials, database or parameters are wrong raises StoreError at once
    with the server's message; an outage is left to the pool's retries, unless ``fail_on_outage``
    (one-shot commands, health probes): then it raises StoreUnavailable at once."""
    scheme = _scheme(url)
    if scheme in ("", "sqlite"):
        from .sqlite import SQLiteBackend, parse_url

        options = parse_url(url)
        path = os.path.abspath(options.path)
        if must_exist and not os.path.exists(path):
            raise StoreMissing(f"no store at {path} (a relative SQLite path is relative to the working directory)")
        return SQLiteBackend(options.path, durable=options.durable, busy_timeout=options.busy_timeout)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
            from .postgres.connections import fail_fast
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install -e '.[postgres]' ({exc})"
            ) from exc
        backend = PostgresBackend(url, migrate=migrate)
        fail_fast(backend.conninfo, _server(url), outage=fail_on_outage)
        return backend
    raise StoreError(
        f"unsupported store URL {url!r}: this conveyor knows sqlite:///path.db and postgresql://user@host/db"
    )
