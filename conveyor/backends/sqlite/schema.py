"""The SQLite store's numbered migrations: which a file still needs, and applying one.

A file's version is ``schema_version`` in ``conveyor_meta`` (schema 1 wrote it as '1'); a file
with neither of conveyor's tables is new (it may belong to another application, whose tables
conveyor shares the file with for transactional enqueue) and gets every migration.
"""

from __future__ import annotations

import sqlite3

from ...errors import StoreError
from .. import sql_files

Migration = tuple[int, str, str]  #: (version, file name, SQL)


def latest() -> int:
    """The newest schema version this conveyor knows."""
    return sql_files.migrations("sqlite")[-1][0]


def version(conn: sqlite3.Connection, path: str) -> int | None:
    """The file's schema version; None for a file without conveyor's tables."""
    queries = sql_files.queries("sqlite")
    tables = {row[0] for row in conn.execute(queries["conveyor_tables"])}
    if "conveyor_meta" not in tables:
        if "conveyor_jobs" in tables:
            raise StoreError(f"{path} has a conveyor_jobs table but no conveyor_meta: not a conveyor store")
        return None
    row = conn.execute(queries["schema_version"]).fetchone()
    if row is None or not str(row[0]).isdigit():
        raise StoreError(f"{path} has no readable conveyor schema version ({row}): not a conveyor store")
    return int(row[0])


def pending(conn: sqlite3.Connection, path: str) -> list[Migration]:
    """The migrations the file still needs, oldest first; StoreError for a newer file."""
    current = version(conn, path)
    if current is not None and current > latest():
        raise StoreError(
            f"{path} has conveyor schema version {current}, newer than this conveyor knows ({latest()}):"
            " upgrade conveyor to open it"
        )
    return [m for m in sql_files.migrations("sqlite") if current is None or m[0] > current]


def apply(conn: sqlite3.Connection, migration: Migration) -> None:
    """Run one migration and record its version, in the caller's open transaction."""
    number, _, sql = migration
    for statement in statements(sql):
        conn.execute(statement)
    conn.execute(sql_files.queries("sqlite")["record_migration"], {"version": str(number)})


def statements(sql: str) -> list[str]:
    """The statements of a script, one by one (sqlite3 runs one per call; ``executescript``
    would commit the transaction first)."""
    found: list[str] = []
    pending_text = ""
    for line in sql.splitlines(keepends=True):
        pending_text += line
        if sqlite3.complete_statement(pending_text):
            found.append(pending_text.strip())
            pending_text = ""
    rest = [line for line in pending_text.splitlines() if line.strip() and not line.lstrip().startswith("--")]
    if rest:
        raise ValueError(f"SQL script ends in an incomplete statement: {' '.join(rest)[:200]!r}")
    return found
