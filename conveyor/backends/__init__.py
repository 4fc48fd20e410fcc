"""Stores behind one contract (base.Backend), chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import StoreError
from .base import Backend

__all__ = ["Backend", "open_backend"]


def open_backend(url: str, *, migrate: bool = True) -> Backend:
    """The store for ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, a bare path,
    or ``postgresql://user@host/db`` (``postgres://`` too; needs ``pip install conveyor[postgres]``).
    A SQLite URL may end in ``?durable=false`` (producer commits skip fsync) and
    ``?busy_timeout=SECONDS`` (a writer's bound on waiting for the lock; see docs/sqlite.md).
    ``migrate`` is the store's own default for ``setup``: False makes a PostgreSQL store only check
    that its schema is current (run ``conveyor migrate`` to create or upgrade it)."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "sqlite"):
        from .sqlite import SQLiteBackend, parse_url

        options = parse_url(url)
        return SQLiteBackend(options.path, durable=options.durable, busy_timeout=options.busy_timeout)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresBackend
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg 3 and psycopg-pool: pip install 'conveyor[postgres]' ({exc})"
            ) from exc
        return PostgresBackend(url, migrate=migrate)
    raise StoreError(
        f"unsupported store URL {url!r}: this conveyor knows sqlite:///path.db and postgresql://user@host/db"
    )
