"""Users, their API tokens and permissions, and the audit log: plain values and the rules of who may
see and change what (kaiju_tasks' model: every row has an owner; a user sees and changes their own,
and more only with a permission). The store keeps them (``Accounts``); the web side enforces them.

A token is shown once, when it is made: ``cv_<id>_<secret>``. The store keeps its id and the SHA-256
of its secret, never the secret; a request's token is found by its id and its secret compared in
constant time (``verify``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from typing import Any

import msgspec

_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")
_TOKEN = re.compile(r"cv_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")


class Permission(enum.StrEnum):
    """What a user may do beyond seeing and changing their own rows."""

    VIEW_OTHERS = "view-others"  #: see every user's jobs, notifications, schedules and services
    MODIFY_OTHERS = "modify-others"  #: change them too (implies view-others); pause queues, control services
    SYSTEM = "system"  #: system-only routes: users and tokens, prune, the audit log, stopping workers (implies all)
    READ_ONLY = "read-only"  #: change nothing at all, not even their own (an operator who only watches)


#: Named sets of permissions, for ``conveyor users add NAME --role ROLE``.
ROLES: dict[str, tuple[Permission, ...]] = {
    "user": (),
    "operator": (Permission.VIEW_OTHERS, Permission.READ_ONLY),
    "admin": (Permission.MODIFY_OTHERS,),
    "system": (Permission.SYSTEM,),
}


class User(msgspec.Struct, kw_only=True, frozen=True):
    """A user of the HTTP API and the dashboard."""

    name: str
    permissions: tuple[Permission, ...] = ()
    created_at: float = 0.0

    def has(self, permission: Permission) -> bool:
        """Whether the user holds ``permission``, directly or through one that implies it."""
        held = set(self.permissions)
        if Permission.SYSTEM in held:
            return permission is not Permission.READ_ONLY
        if permission is Permission.VIEW_OTHERS and Permission.MODIFY_OTHERS in held:
            return True
        return permission in held

    @property
    def read_only(self) -> bool:
        return Permission.READ_ONLY in self.permissions and Permission.SYSTEM not in self.permissions

    def can_view(self, owner: str | None) -> bool:
        """Whether the user may see a row owned by ``owner`` (None: a row of nobody's, seen only with
        view-others)."""
        return (owner is not None and owner == self.name) or self.has(Permission.VIEW_OTHERS)

    def can_modify(self, owner: str | None) -> bool:
        """Whether the user may change a row owned by ``owner``."""
        if self.read_only:
            return False
        return (owner is not None and owner == self.name) or self.has(Permission.MODIFY_OTHERS)

    @property
    def can_write(self) -> bool:
        """Whether the user may make new rows of their own (enqueue, start a service): not read-only."""
        return not self.read_only


#: The user every request acts as when a server runs with authentication off (loopback only).
ANONYMOUS_SYSTEM = User(name="local", permissions=(Permission.SYSTEM,))


class TokenRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A token as stored: its id, user, label, the SHA-256 of its secret (hex), and its times."""

    id: str
    user: str
    label: str
    digest: str
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None


class AuditEntry(msgspec.Struct, kw_only=True, frozen=True):
    """One change made through the API: who, what, on which row, when (``seq`` increases)."""

    seq: int
    at: float
    user: str
    action: str  #: e.g. "job.cancel", "queue.pause", "user.add"
    target: str | None = None  #: the row it changed (a job id, a queue, a user name...)
    data: dict[str, Any] = {}


def check_user_name(name: str) -> str:
    """A user name: 1-100 of A-Z a-z 0-9 ``_ . @ -``, starting with a letter or digit."""
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise ValueError(f"a user name is 1-100 characters of A-Z, a-z, 0-9, '_', '.', '@' or '-', starting with a "
                         f"letter or digit; got {name!r}")  # fmt: skip
    return name


def permissions_of(names: list[str] | tuple[str, ...], role: str | None = None) -> tuple[Permission, ...]:
    """Permissions from their names and an optional role, checked; sorted, no repeats. Raises ValueError."""
    found: set[Permission] = set()
    if role is not None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        found.update(ROLES[role])
    for name in names:
        try:
            found.add(Permission(name))
        except ValueError:
            known = ", ".join(p.value for p in Permission)
            raise ValueError(f"unknown permission {name!r}; permissions: {known}") from None
    return tuple(sorted(found))


def digest(secret: str) -> str:
    """The SHA-256 of a token's secret, hex: what the store keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """A new token: (id, the whole token to show once, the digest to store)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, f"cv_{token_id}_{secret}", digest(secret)


def split_token(token: str) -> tuple[str, str] | None:
    """A presented token's (id, secret), or None if it is not one of ours in form."""
    match = _TOKEN.fullmatch(token.strip()) if isinstance(token, str) else None
    return None if match is None else (match.group(1), match.group(2))


def verify(secret: str, record: TokenRecord) -> bool:
    """Whether ``secret`` is the record's, compared in constant time; a revoked token never is."""
    return record.revoked_at is None and hmac.compare_digest(digest(secret), record.digest)
