"""The SQLite store's accounts (base.Accounts): the HTTP API's users, their tokens (the SHA-256 of the
secret only, conveyor.accounts) and the audit log of changes made through the API. A part of
``SQLiteBackend`` (mixed into it); every statement is in queries.sql ("accounts").

SQLite's writers are serial, so what must be one step against a concurrent writer (a user's removal and
their tokens' deletion; a token added only if its user exists) is one write transaction. A user's or a
token's change and an audit entry are producer commits (synced: they survive a power cut); recording a
token's use is bookkeeping, done at most once a minute per token, and read first outside the write lock
so that checking a token on every request writes nothing most of the time.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import msgspec

from ... import codec
from ...accounts import AuditEntry, TokenRecord, User
from ...errors import StoreError
from ..rows import TOKEN_TOUCH_EVERY, permissions_text, row_to_audit, row_to_token, row_to_user


class SQLiteAccounts:
    """Accounts of the SQLite store (``SQLiteBackend`` supplies the statements and the transactions)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    # users -------------------------------------------------------------------------------------------
    def put_user(self, user: User, now: float) -> bool:
        params = {"name": user.name, "permissions": permissions_text(user), "now": now}
        with self._write("store a user", producer=True) as conn:
            new = conn.execute(self._sql["get_user"], {"name": user.name}).fetchone() is None
            conn.execute(self._sql["put_user"], params)
        return new

    def get_user(self, name: str) -> User | None:
        with self._read("read a user") as conn:
            row = conn.execute(self._sql["get_user"], {"name": name}).fetchone()
        return None if row is None else row_to_user(row)

    def list_users(self) -> list[User]:
        with self._read("list users") as conn:
            return [row_to_user(row) for row in conn.execute(self._sql["list_users"])]

    def remove_user(self, name: str, now: float) -> bool:
        """The user and their tokens, in one transaction."""
        with self._write("remove a user", producer=True) as conn:
            if conn.execute(self._sql["remove_user"], {"name": name}).rowcount != 1:
                return False
            conn.execute(self._sql["delete_user_tokens"], {"name": name})
        return True

    # tokens ------------------------------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        params = {"id": token.id, "user": token.user, "label": token.label, "digest": token.digest,
                  "created_at": token.created_at}  # fmt: skip
        try:
            with self._write("add a token", producer=True) as conn:
                inserted = conn.execute(self._sql["add_token"], params).rowcount
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise StoreError(f"token id {token.id!r} is taken: the token was not stored") from exc
            raise
        if inserted != 1:
            raise StoreError(f"no user named {token.user!r}: the token was not stored")

    def get_token(self, token_id: str, now: float, digest: str | None = None) -> TokenRecord | None:
        """A read first; a write only when the presented secret's digest is the token's and its use was
        last recorded over a minute ago (and it is not revoked). Returns the record with the use just
        recorded, if it was."""
        with self._read("read a token") as conn:
            row = conn.execute(self._sql["get_token"], {"id": token_id}).fetchone()
        if row is None:
            return None
        record = row_to_token(row)
        if (
            digest is None
            or digest != record.digest
            or record.revoked_at is not None
            or (record.last_used_at is not None and record.last_used_at >= now - TOKEN_TOUCH_EVERY)
        ):
            return record
        params = {"id": token_id, "now": now, "every": TOKEN_TOUCH_EVERY}
        with self._write("record a token's use") as conn:
            touched = conn.execute(self._sql["touch_token"], params).rowcount == 1
        return msgspec.structs.replace(record, last_used_at=now) if touched else record

    def list_tokens(self, user: str | None) -> list[TokenRecord]:
        with self._read("list tokens") as conn:
            return [row_to_token(row) for row in conn.execute(self._sql["list_tokens"], {"user": user})]

    def revoke_token(self, token_id: str, now: float) -> bool:
        with self._write("revoke a token", producer=True) as conn:
            return conn.execute(self._sql["revoke_token"], {"id": token_id, "now": now}).rowcount == 1

    # the audit log -----------------------------------------------------------------------------------
    def audit(self, user: str, action: str, target: str | None, data: dict[str, Any], now: float) -> int:
        params = {"now": now, "user": user, "action": action, "target": target, "data": codec.dumps(dict(data))}
        with self._write("append to the audit log", producer=True) as conn:
            [(seq,)] = conn.execute(self._sql["audit"], params).fetchall()
        return int(seq)

    def audit_log(self, after: int, limit: int, user: str | None = None) -> list[AuditEntry]:
        params = {"after": int(after), "limit": int(limit), "user": user}
        with self._read("read the audit log") as conn:
            return [row_to_audit(row) for row in conn.execute(self._sql["audit_log"], params)]
