"""The embedded default store: one SQLite file (store.py), its statements (queries.sql) and its
numbered migrations (migrations/); see docs/sqlite.md."""

from __future__ import annotations

from .options import SQLiteOptions, parse_url
from .store import SQLiteBackend

__all__ = ["SQLiteBackend", "SQLiteOptions", "parse_url"]
