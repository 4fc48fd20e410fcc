"""Stores behind one contract (base.Backend), chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import StoreError
from .base import Backend

__all__ = ["Backend", "open_backend"]


def open_backend(url: str) -> Backend:
    """The store for ``url``: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, or a bare path."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("", "sqlite"):
        from .sqlite import SQLiteBackend

        path = url.split("://", 1)[1] if scheme else url
        if scheme and not path.startswith("/"):
            raise StoreError(f"bad SQLite URL {url!r}: write sqlite:///relative/path.db or sqlite:////abs/path.db")
        return SQLiteBackend(path[1:] if scheme else path)
    raise StoreError(f"unsupported store URL {url!r}: this conveyor knows sqlite:///path.db")
