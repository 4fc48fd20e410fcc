"""The App's accounts side: users, their API tokens (each shown once, stored hashed), authenticating a
presented token, and the audit log of changes made through the API. A part of ``App`` (a mixin); the
rules of who may see and change what are in ``conveyor.accounts``; the web side enforces them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .accounts import (
    AuditEntry,
    Permission,
    TokenRecord,
    User,
    check_user_name,
    digest,
    new_token,
    split_token,
    verify,
)
from .errors import ConveyorError

if TYPE_CHECKING:
    from .backends.base import Backend


class UserNotFound(ConveyorError, LookupError):
    """No user of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no user named {name!r}")
        self.name = name


class AccountsMixin:
    """``App``'s user, token and audit methods."""

    clock: Callable[[], float]

    @property
    def backend(self) -> Backend:
        raise NotImplementedError  # App's

    def add_user(self, name: str, permissions: tuple[Permission, ...] | list[Permission] = ()) -> User:
        """Add a user, or set an existing one's permissions (a tuple of Permission; see
        accounts.permissions_of for names and roles). Returns the user as stored."""
        user = User(name=check_user_name(name), permissions=tuple(sorted({Permission(p) for p in permissions})),
                    created_at=self.clock())  # fmt: skip
        self.backend.put_user(user, self.clock())
        stored = self.backend.get_user(name)
        assert stored is not None
        return stored

    def users(self) -> list[User]:
        """Every user, by name."""
        return self.backend.list_users()

    def user(self, name: str) -> User:
        """The user of that name. Raises UserNotFound."""
        found = self.backend.get_user(name)
        if found is None:
            raise UserNotFound(name)
        return found

    def remove_user(self, name: str) -> bool:
        """Delete a user and all their tokens; False if there was none."""
        return self.backend.remove_user(name, self.clock())

    def create_token(self, user: str, label: str = "") -> tuple[TokenRecord, str]:
        """Make a token for ``user``: returns its record (no secret in it) and the token itself, to be
        shown once: only its SHA-256 is stored. Raises UserNotFound."""
        self.user(user)
        token_id, token, hashed = new_token()
        record = TokenRecord(id=token_id, user=user, label=str(label)[:200], digest=hashed, created_at=self.clock())
        self.backend.add_token(record)
        return record, token

    def tokens(self, user: str | None = None) -> list[TokenRecord]:
        """Every token (or ``user``'s), newest first."""
        return self.backend.list_tokens(user)

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token by its id; False if there is none or it was revoked already."""
        return self.backend.revoke_token(token_id, self.clock())

    def authenticate(self, token: str) -> User | None:
        """The user a presented token belongs to, or None (malformed, unknown, revoked, a wrong secret,
        or its user gone). The secret is compared in constant time."""
        parts = split_token(token)
        if parts is None:
            return None
        token_id, secret = parts
        record = self.backend.get_token(token_id, self.clock(), digest(secret))  # its use recorded if it matches
        if record is None or not verify(secret, record):
            return None
        return self.backend.get_user(record.user)

    def audit(self, user: str, action: str, target: str | None = None, data: dict[str, Any] | None = None) -> int:
        """Record a change made through the API (who, what, on which row); returns its seq."""
        return self.backend.audit(user, action, target, data or {}, self.clock())

    def audit_log(self, after: int = 0, limit: int = 100, user: str | None = None) -> list[AuditEntry]:
        """Audit entries after ``after``, oldest first."""
        return self.backend.audit_log(after, limit, user)
