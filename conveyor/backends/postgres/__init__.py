"""The PostgreSQL store: ``PostgresBackend`` (store.py), its connections (connections.py), its
statements (queries.sql) and its numbered migrations (migrations/)."""

from __future__ import annotations

from .store import PostgresBackend, migrations, queries

__all__ = ["PostgresBackend", "migrations", "queries"]
