"""The accounts routes: who am I (``/api/me``), users (system), tokens (system, or a user's own;
a new token is answered once, only its SHA-256 is stored), the audit log (system) and prune
(system). Each change is audited; a change to users or tokens also drops this server's cached
token lookups, so it takes effect here at once."""

from __future__ import annotations

from ..accounts import AuditEntry, Permission, TokenRecord, User, permissions_of
from . import access
from .errors import Conflict, NotFound
from .routing import Call, Router, encoded
from .schemas import (
    AuditQuery,
    Me,
    NewToken,
    Page,
    PageQuery,
    PruneBody,
    Pruned,
    Removed,
    SeqPage,
    TokenBody,
    TokenView,
    UserBody,
)

router = Router("accounts")


def token_view(record: TokenRecord) -> TokenView:
    """A token as answered: no digest."""
    return TokenView(id=record.id, user=record.user, label=record.label, created_at=record.created_at,
                     last_used_at=record.last_used_at, revoked_at=record.revoked_at)  # fmt: skip


@router.get("/api/me", answer=Me)
def me(call: Call) -> Me:
    """The caller: their name, permissions, and what they may do."""
    user = call.user
    return Me(name=user.name, permissions=list(user.permissions), can_write=user.can_write,
              view_others=user.has(Permission.VIEW_OTHERS), modify_others=user.can_modify(None),
              system=user.has(Permission.SYSTEM))  # fmt: skip


@router.get("/api/users", query=PageQuery, answer=Page[User], errors=(403,))
def list_users(call: Call) -> Page[User]:
    """Every user, by name (system)."""
    access.system(call.user, "listing users")
    wanted: PageQuery = call.query
    users = call.app.users()
    end = wanted.offset + wanted.limit
    return Page(items=users[wanted.offset : end], next_offset=end if len(users) > end else None)


@router.post("/api/users", body=UserBody, answer=User, status=201, also=(200,), errors=(403, 413, 422))
def add_user(call: Call) -> object:
    """Add a user (201), or set an existing one's permissions (200) (system).

    ``permissions`` and ``role`` (user, operator, admin, system) add up."""
    access.system(call.user, "managing users")
    body: UserBody = call.body
    app = call.app
    permissions = permissions_of([p.value for p in body.permissions], body.role)
    existed = app.backend.get_user(body.name) is not None
    user = app.add_user(body.name, permissions)
    call.settings.auth.forget()
    call.audit("user.update" if existed else "user.add", user.name, {"permissions": [p.value for p in permissions]})
    return encoded(user, 200 if existed else 201)


@router.delete("/api/users/{name}", answer=Removed, errors=(403, 404, 409))
def remove_user(call: Call) -> Removed:
    """Delete a user and all their tokens (system; not oneself)."""
    access.system(call.user, "managing users")
    name = call.params["name"]
    if name == call.user.name:
        raise Conflict("you cannot remove yourself")
    if not call.app.remove_user(name):
        raise NotFound(f"no user named {name!r}")
    call.settings.auth.forget()
    call.audit("user.remove", name)
    return Removed(removed=True)


def _tokens_of(call: Call, name: str, doing: str) -> None:
    """403 unless the caller is ``name`` or a system user; 404 for a user that does not exist."""
    if name != call.user.name:
        access.system(call.user, f"{doing} another user's tokens")
    call.app.user(name)  # UserNotFound: 404


@router.get("/api/users/{name}/tokens", query=PageQuery, answer=Page[TokenView], errors=(403, 404))
def list_tokens(call: Call) -> Page[TokenView]:
    """A user's tokens, newest first, revoked ones too (their own, or any user's for system)."""
    name = call.params["name"]
    _tokens_of(call, name, "listing")
    wanted: PageQuery = call.query
    records = call.app.tokens(name)
    end = wanted.offset + wanted.limit
    return Page(items=[token_view(r) for r in records[wanted.offset : end]],
                next_offset=end if len(records) > end else None)  # fmt: skip


@router.post("/api/users/{name}/tokens", body=TokenBody, answer=NewToken, status=201, errors=(403, 404, 413))
def create_token(call: Call) -> NewToken:
    """Make a token for a user (their own, or any user's for system); it is answered this once."""
    name = call.params["name"]
    access.writer(call.user)
    _tokens_of(call, name, "making")
    body: TokenBody = call.body
    record, token = call.app.create_token(name, body.label)
    call.audit("token.create", record.id, {"user": name, "label": record.label})
    view = token_view(record)
    return NewToken(**{field: getattr(view, field) for field in view.__struct_fields__}, token=token)


@router.delete("/api/tokens/{id}", answer=TokenView, errors=(403, 404, 409))
def revoke_token(call: Call) -> TokenView:
    """Revoke a token by its id (one's own, or any for system). It stops working at once here, and
    within seconds on every other server."""
    token_id = call.params["id"]
    user = call.user
    access.writer(user)
    mine = call.app.tokens(None if user.has(Permission.SYSTEM) else user.name)
    record = next((r for r in mine if r.id == token_id), None)
    if record is None:
        raise NotFound(f"no token with id {token_id!r}")
    if record.revoked_at is not None or not call.app.revoke_token(token_id):
        raise Conflict(f"token {token_id} is revoked already")
    call.settings.auth.forget()
    call.audit("token.revoke", token_id, {"user": record.user})
    revoked = next((r for r in call.app.tokens(record.user) if r.id == token_id), record)
    return token_view(revoked)


@router.get("/api/audit", query=AuditQuery, answer=SeqPage[AuditEntry], errors=(403,))
def audit_log(call: Call) -> SeqPage[AuditEntry]:
    """The audit log of changes made through the API, oldest first (system)."""
    access.system(call.user, "reading the audit log")
    wanted: AuditQuery = call.query
    entries = call.app.audit_log(wanted.after, wanted.limit, wanted.user)
    return SeqPage(items=entries, next_after=entries[-1].seq if entries else wanted.after)


@router.post("/api/prune", body=PruneBody, answer=Pruned, errors=(403, 413))
def prune(call: Call) -> Pruned:
    """Delete finished jobs past their result TTL, or all finished over ``older_than`` s ago (system)."""
    access.system(call.user, "pruning")
    body: PruneBody = call.body
    deleted = call.app.prune(body.older_than)
    call.audit("prune", None, {"older_than": body.older_than, "deleted": deleted})
    return Pruned(deleted=deleted)
