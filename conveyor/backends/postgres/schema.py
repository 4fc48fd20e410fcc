"""The PostgreSQL store's schema: its named statements and numbered migrations (read by
conveyor.backends.sql_files), and the concern of PostgresBackend that creates, upgrades and checks
the schema (``SchemaMixin``), safely from many processes and hosts at once."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

from psycopg_pool import ConnectionPool

from ...errors import StoreError
from .. import sql_files
from .connections import Connection

log = logging.getLogger("conveyor.postgres")


def queries() -> dict[str, str]:
    """This store's named statements (postgres/queries.sql)."""
    return sql_files.queries("postgres")


def migrations() -> list[tuple[int, str, str]]:
    """This store's schema migrations (postgres/migrations), oldest first."""
    return sql_files.migrations("postgres")


class SchemaMixin:
    """The Admin concern's schema steps of PostgresBackend (base.Admin: setup, schema_versions),
    plus ``migrate``. Uses the store's main pool, its error mapping and where it points."""

    _where: str
    _ready: bool

    def _errors(self, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError  # PostgresBackend's

    def _get_pool(self) -> ConnectionPool[Connection]:
        raise NotImplementedError  # PostgresBackend's

    def setup(self, migrate: bool = True) -> list[str]:
        """Apply pending migrations (``migrate``), or check that none is pending. Safe to run
        from many processes and hosts at once. Returns the migrations applied."""
        applied = []
        if migrate:
            applied = self.migrate()
        else:
            current, latest = self.schema_version(), migrations()[-1][0]
            if current != latest:
                raise StoreError(
                    f"PostgreSQL at {self._where} has conveyor schema version {current}, this conveyor needs"
                    f" {latest}: run `conveyor migrate --url ...`"
                )
        self._ready = True
        return applied

    def schema_versions(self) -> tuple[int | None, int]:
        """The schema version applied (None: none yet) and the one this conveyor needs."""
        return self.schema_version(), migrations()[-1][0]

    def schema_version(self) -> int | None:
        """The latest applied migration's version, or None for an empty database."""
        q = queries()
        with self._errors("reading the schema version"), self._get_pool().connection() as conn:
            exists = conn.execute(q["migrations_table_exists"]).fetchone()
            if not exists or not exists[0]:
                return None
            row = conn.execute(q["schema_version"]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def migrate(self) -> list[str]:
        """Apply the migrations not yet applied, each with its record, in one transaction under
        an advisory lock: a second concurrent run waits, then finds nothing to do. Returns the
        file names applied. Raises StoreError if the database is newer than this conveyor."""
        known = migrations()
        latest = known[-1][0]
        current = self.schema_version()
        if current is not None and current > latest:
            raise StoreError(
                f"PostgreSQL at {self._where} has conveyor schema version {current}; this conveyor knows"
                f" up to {latest}: upgrade conveyor"
            )
        if current == latest:
            return []
        q = queries()
        applied: list[str] = []
        with self._errors("migrating"), self._get_pool().connection() as conn, conn.transaction():
            conn.execute(q["migrate_lock"])
            conn.execute(q["create_migrations_table"])
            done = {row[0] for row in conn.execute(q["migrations_applied"])}
            for version, name, sql in known:
                if version not in done:
                    conn.execute(sql.encode())  # several statements, no parameters
                    conn.execute(q["record_migration"], {"version": version, "name": name})
                    applied.append(name)
        if applied:
            log.info("migrated PostgreSQL at %s: %s", self._where, ", ".join(applied))
        return applied
