"""The PostgreSQL store: ``PostgresBackend`` (store.py), its connections (connections.py), its
schema steps (schema.py), event log (events.py), operations (operations.py), pipeline outcomes
(pipelines.py), waits and notifications (waits.py), its statements (queries.sql) and its numbered
migrations (migrations/)."""

from __future__ import annotations

from .schema import migrations, queries
from .store import PostgresBackend

__all__ = ["PostgresBackend", "migrations", "queries"]
