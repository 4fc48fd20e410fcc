"""The PostgreSQL store's accounts (base.Accounts): the HTTP API's users, their tokens (the SHA-256 of the
secret only, conveyor.accounts) and the audit log of changes made through the API. Every statement is in
queries.sql ("Accounts"); everything runs on the main pool, committed durably.

What must hold against concurrent requests on other hosts: a token is never left behind by its user's
removal (add_token locks the user's row; remove_user deletes the user, then, in a statement of the same
transaction, their tokens), a token's use is written at most once a minute (get_token's one statement
updates only a use recorded over a minute ago), and audit entries commit in the order of their seqs (an
advisory lock held to each entry's commit), so a reader paging with ``after`` never skips one.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from psycopg import errors as pg_errors

from ... import codec
from ...accounts import AuditEntry, TokenRecord, User
from ...errors import StoreError
from ..rows import TOKEN_TOUCH_EVERY, permissions_text, row_to_audit, row_to_token, row_to_user
from .connections import Connection
from .schema import queries


class AccountsMixin:
    """The Accounts concern of PostgresBackend (base.Accounts). Uses the store's main pool (``_conn``)."""

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    # users -------------------------------------------------------------------------------------------
    def put_user(self, user: User, now: float) -> bool:
        params = {"name": user.name, "permissions": permissions_text(user), "now": now}
        with self._conn("store a user") as conn:
            row = conn.execute(queries()["put_user"], params).fetchone()
        return row is not None and bool(row[0])

    def get_user(self, name: str) -> User | None:
        with self._conn("read a user") as conn:
            row = conn.execute(queries()["get_user"], {"name": name}).fetchone()
        return None if row is None else row_to_user(row)

    def list_users(self) -> list[User]:
        with self._conn("list users") as conn:
            rows = conn.execute(queries()["list_users"]).fetchall()
        return [row_to_user(row) for row in rows]

    def remove_user(self, name: str, now: float) -> bool:
        """The user, then their tokens, in one transaction sent in one pipeline: the tokens' delete is a
        statement of its own, so it sees a token an add_token committed while the user's delete waited."""
        q = queries()
        with self._conn("remove a user") as conn:
            with conn.pipeline(), conn.transaction():
                removed = conn.execute(q["remove_user"], {"name": name})
                conn.execute(q["delete_user_tokens"], {"name": name})
            return removed.fetchone() is not None

    # tokens ------------------------------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        params = {"id": token.id, "user": token.user, "label": token.label, "digest": token.digest,
                  "created_at": token.created_at}  # fmt: skip
        with self._conn("add a token") as conn:
            try:
                row = conn.execute(queries()["add_token"], params).fetchone()
            except pg_errors.UniqueViolation as exc:
                raise StoreError(f"token id {token.id!r} is taken: the token was not stored") from exc
        if row is None:
            raise StoreError(f"no user named {token.user!r}: the token was not stored")

    def get_token(self, token_id: str, now: float, digest: str | None = None) -> TokenRecord | None:
        params = {"id": token_id, "now": now, "every": TOKEN_TOUCH_EVERY, "digest": digest}
        with self._conn("read a token") as conn:
            row = conn.execute(queries()["get_token"], params).fetchone()
        return None if row is None else row_to_token(row)

    def list_tokens(self, user: str | None) -> list[TokenRecord]:
        with self._conn("list tokens") as conn:
            rows = conn.execute(queries()["list_tokens"], {"user": user}).fetchall()
        return [row_to_token(row) for row in rows]

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._conn("revoke a token") as conn:
            return conn.execute(queries()["revoke_token"], {"id": token_id, "now": now}).rowcount == 1

    # the audit log -----------------------------------------------------------------------------------
    def audit(self, user: str, action: str, target: str | None, data: dict[str, Any], now: float) -> int:
        """The entry after audit_lock, in one transaction sent in one pipeline (one round trip)."""
        q = queries()
        params = {"now": now, "user": user, "action": action, "target": target, "data": codec.dumps(dict(data))}
        with self._conn("append to the audit log") as conn:
            with conn.pipeline(), conn.transaction():
                conn.execute(q["audit_lock"])
                cursor = conn.execute(q["audit"], params)
            row = cursor.fetchone()
        assert row is not None  # an INSERT ... VALUES returns its row
        return int(row[0])

    def audit_log(self, after: int, limit: int, user: str | None = None) -> list[AuditEntry]:
        params = {"after": int(after), "limit": int(limit), "user": user}
        with self._conn("read the audit log") as conn:
            rows = conn.execute(queries()["audit_log"], params).fetchall()
        return [row_to_audit(row) for row in rows]
