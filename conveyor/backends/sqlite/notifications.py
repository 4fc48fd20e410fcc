"""The SQLite store's notifications for jobs' owners: read, marked read, pruned by age. A part of
``SQLiteBackend`` (mixed into it); they are written by the outcome that finishes a job (outcomes.py),
in its transaction. Every statement is in queries.sql."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ...messages import Notification
from .pipeline_rows import row_to_notification


class SQLiteNotifications:
    """Notifications of the SQLite store (``SQLiteBackend`` supplies the statements and transactions)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    def notifications(self, owner: str | None, unread: bool, limit: int) -> list[Notification]:
        params = {"owner": owner, "unread": bool(unread), "limit": limit}
        with self._read("read notifications") as conn:
            return [row_to_notification(row) for row in conn.execute(self._sql["notifications"], params)]

    def mark_read(self, owner: str, ids: Sequence[int] | None) -> int:
        params = {"owner": owner, "ids": None if ids is None else json.dumps([int(i) for i in ids])}
        with self._write("mark notifications read", producer=True) as conn:
            return conn.execute(self._sql["mark_read"], params).rowcount

    def prune_notifications(self, before: float) -> int:
        with self._write("prune notifications") as conn:
            return conn.execute(self._sql["prune_notifications"], {"before": before}).rowcount
