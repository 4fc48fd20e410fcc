"""Users, tokens and the audit log through the App (issue 14): a token is shown once and only its digest is
stored; ``authenticate`` accepts a live token and refuses a revoked one, a wrong secret, a malformed one and
a removed user's; the permissions, the roles, and the rules of who may see and change whose rows
(conveyor.accounts.User), each permission on its own and together. On a SQLite file, with an injected clock;
the round trip of a token on every store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from clock import Clock

from conveyor import App
from conveyor.accounts import (
    ANONYMOUS_SYSTEM,
    ROLES,
    Permission,
    User,
    check_user_name,
    digest,
    permissions_of,
    split_token,
    verify,
)
from conveyor.app_accounts import UserNotFound

T0 = 1_800_000_000.0
VIEW, MODIFY, SYSTEM, READ_ONLY = (
    Permission.VIEW_OTHERS, Permission.MODIFY_OTHERS, Permission.SYSTEM, Permission.READ_ONLY,
)  # fmt: skip
TOKEN = re.compile(r"cv_([0-9a-f]{12})_([A-Za-z0-9_-]+)")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def accounts(tmp_path: Path, clock: Clock) -> Iterator[App]:
    """An app on a SQLite file of this test's, on the injected clock."""
    app = App(f"sqlite:///{tmp_path / 'accounts.db'}", clock=clock)
    yield app
    app.close()


def secret_of(token: str) -> str:
    parts = split_token(token)
    assert parts is not None, f"not a token: {token!r}"
    return parts[1]


# users -----------------------------------------------------------------------------------------------------
def test_add_user_stores_it_and_again_sets_its_permissions(accounts: App, clock: Clock) -> None:
    alice = accounts.add_user("alice", [VIEW, VIEW])
    assert alice == User(name="alice", permissions=(VIEW,), created_at=T0)
    clock.now += 10
    assert accounts.add_user("alice", permissions_of([], role="admin")) == User(
        name="alice", permissions=(MODIFY,), created_at=T0
    )
    assert accounts.user("alice").permissions == (MODIFY,)
    accounts.add_user("bob")
    assert [u.name for u in accounts.users()] == ["alice", "bob"]


def test_add_user_refuses_a_bad_name_or_permission_and_stores_nothing(accounts: App) -> None:
    for name in ["", " alice", "-lead", "a b", "x" * 101, "ali/ce", "é"]:
        with pytest.raises(ValueError, match="a user name is 1-100 characters"):
            accounts.add_user(name)
    with pytest.raises(ValueError):
        accounts.add_user("alice", ["root"])  # type: ignore[list-item]
    assert accounts.users() == []


def test_user_names_allowed() -> None:
    for name in ["a", "alice", "alice@example.com", "ops.team-1", "A_9", "x" * 100]:
        assert check_user_name(name) == name


def test_user_of_no_such_name_raises(accounts: App) -> None:
    with pytest.raises(UserNotFound, match="no user named 'ghost'") as caught:
        accounts.user("ghost")
    assert caught.value.name == "ghost" and isinstance(caught.value, LookupError)


def test_remove_user_takes_their_tokens_with_them(accounts: App) -> None:
    accounts.add_user("alice")
    accounts.add_user("bob")
    _, alices = accounts.create_token("alice")
    _, bobs = accounts.create_token("bob")
    assert accounts.remove_user("alice") is True
    assert accounts.tokens("alice") == [] and [t.user for t in accounts.tokens()] == ["bob"]
    assert accounts.authenticate(alices) is None
    accounts.add_user("alice")  # the same name again: a new user, the old tokens stay dead
    assert accounts.authenticate(alices) is None
    assert accounts.authenticate(bobs) == accounts.user("bob")
    assert accounts.remove_user("ghost") is False


# tokens ----------------------------------------------------------------------------------------------------
def test_create_token_shows_the_token_once_and_stores_only_its_digest(accounts: App, clock: Clock) -> None:
    accounts.add_user("alice")
    record, token = accounts.create_token("alice", "laptop")
    match = TOKEN.fullmatch(token)
    assert match is not None and match[1] == record.id
    secret = match[2]
    assert len(secret) >= 40
    assert (record.user, record.label, record.created_at, record.last_used_at, record.revoked_at) == (
        "alice", "laptop", T0, None, None,
    )  # fmt: skip
    assert record.digest == digest(secret) and secret not in record.digest
    [stored] = accounts.tokens("alice")
    assert stored == record
    assert secret not in repr(accounts.tokens()) and token not in repr(accounts.tokens())
    _, again = accounts.create_token("alice", "laptop")
    assert again != token and len(accounts.tokens("alice")) == 2  # a new token each time


def test_create_token_for_no_such_user_raises_and_stores_nothing(accounts: App) -> None:
    with pytest.raises(UserNotFound):
        accounts.create_token("ghost")
    assert accounts.tokens() == []


def test_a_long_label_is_cut(accounts: App) -> None:
    accounts.add_user("alice")
    record, _ = accounts.create_token("alice", "é" * 500)
    assert record.label == "é" * 200 and accounts.tokens()[0].label == "é" * 200


def test_tokens_newest_first(accounts: App, clock: Clock) -> None:
    accounts.add_user("alice")
    accounts.add_user("bob")
    first, _ = accounts.create_token("alice", "one")
    clock.now += 1
    second, _ = accounts.create_token("bob", "two")
    clock.now += 1
    third, _ = accounts.create_token("alice", "three")
    assert [t.label for t in accounts.tokens()] == ["three", "two", "one"]
    assert accounts.tokens("alice") == [third, first]
    assert accounts.tokens("bob") == [second]


def test_authenticate_accepts_a_live_token(accounts: App) -> None:
    alice = accounts.add_user("alice", [VIEW])
    _, token = accounts.create_token("alice")
    assert accounts.authenticate(token) == alice
    assert accounts.authenticate(f"  {token}\n") == alice  # as a header value may carry it


def test_authenticate_follows_the_users_permissions(accounts: App) -> None:
    accounts.add_user("alice")
    _, token = accounts.create_token("alice")
    accounts.add_user("alice", [SYSTEM])
    user = accounts.authenticate(token)
    assert user is not None and user.has(SYSTEM)


def test_authenticate_refuses_a_revoked_token(accounts: App, clock: Clock) -> None:
    accounts.add_user("alice")
    record, token = accounts.create_token("alice")
    _, other = accounts.create_token("alice")
    clock.now += 5
    assert accounts.revoke_token(record.id) is True
    assert accounts.authenticate(token) is None
    assert accounts.authenticate(other) is not None  # only that one
    assert accounts.revoke_token(record.id) is False
    assert accounts.revoke_token("000000000000") is False
    [revoked] = [t for t in accounts.tokens() if t.id == record.id]
    assert revoked.revoked_at == T0 + 5


def test_authenticate_refuses_a_wrong_secret(accounts: App) -> None:
    accounts.add_user("alice")
    record, token = accounts.create_token("alice")
    secret = secret_of(token)
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert accounts.authenticate(f"cv_{record.id}_{wrong}") is None
    _, bobs = accounts.create_token("alice")
    assert accounts.authenticate(f"cv_{record.id}_{secret_of(bobs)}") is None  # another token's secret
    assert accounts.authenticate(f"cv_000000000000_{secret}") is None  # no such id


@pytest.mark.parametrize(
    "presented",
    ["", "cv_", "Bearer cv_0123456789ab_" + "a" * 43, "cv_0123456789AB_" + "a" * 43, "cv_0123456789a_" + "a" * 43,
     "cv_0123456789ab_short", "cv_0123456789ab_" + "a" * 101, "cv_0123456789ab_" + "a" * 42 + "!",
     "xx_0123456789ab_" + "a" * 43, "0123456789ab", "cv_0123456789ab_" + "a" * 20 + " " + "a" * 20],
)  # fmt: skip
def test_authenticate_refuses_a_malformed_token(accounts: App, presented: str) -> None:
    accounts.add_user("alice")
    accounts.create_token("alice")
    assert accounts.authenticate(presented) is None


def test_authenticate_refuses_what_is_not_a_string(accounts: App) -> None:
    assert accounts.authenticate(None) is None  # type: ignore[arg-type]
    assert accounts.authenticate(b"cv_0123456789ab_" + b"a" * 43) is None  # type: ignore[arg-type]


def test_authenticate_records_the_tokens_use_once_a_minute(accounts: App, clock: Clock) -> None:
    accounts.add_user("alice")
    _, token = accounts.create_token("alice")
    assert accounts.tokens()[0].last_used_at is None
    for step, expected in [(1, T0 + 1), (30, T0 + 1), (31, T0 + 62), (59, T0 + 62), (1, T0 + 62), (1, T0 + 123)]:
        clock.now += step
        assert accounts.authenticate(token) is not None
        assert accounts.tokens()[0].last_used_at == expected


def test_verify_compares_the_digest_and_refuses_a_revoked_record(accounts: App) -> None:
    accounts.add_user("alice")
    record, token = accounts.create_token("alice")
    assert verify(secret_of(token), record)
    assert not verify(secret_of(token) + "x", record)
    assert not verify(secret_of(token), msgspec.structs.replace(record, revoked_at=T0))


def test_a_token_round_trips_on_every_store(any_url: str) -> None:
    app = App(any_url, clock=Clock(T0))
    try:
        app.add_user("alice", [MODIFY])
        record, token = app.create_token("alice", "ci")
        assert app.authenticate(token) == User(name="alice", permissions=(MODIFY,), created_at=T0)
        assert app.revoke_token(record.id)
        assert app.authenticate(token) is None
        _, second = app.create_token("alice")
        assert app.remove_user("alice")
        assert app.authenticate(second) is None
    finally:
        app.close()


# the audit log ---------------------------------------------------------------------------------------------
def test_audit_and_audit_log(accounts: App, clock: Clock) -> None:
    first = accounts.audit("alice", "job.cancel", "job-1", {"reset": True})
    clock.now += 1
    second = accounts.audit("bob", "queue.pause", "emails")
    assert second > first
    entries = accounts.audit_log()
    assert [(e.seq, e.at, e.user, e.action, e.target, e.data) for e in entries] == [
        (first, T0, "alice", "job.cancel", "job-1", {"reset": True}),
        (second, T0 + 1, "bob", "queue.pause", "emails", {}),
    ]
    assert [e.seq for e in accounts.audit_log(after=first)] == [second]
    assert [e.user for e in accounts.audit_log(user="alice")] == ["alice"]
    assert len(accounts.audit_log(limit=1)) == 1


# permissions and roles --------------------------------------------------------------------------------------
def test_permissions_of_names_and_roles() -> None:
    assert permissions_of([]) == ()
    assert permissions_of(["view-others", "system", "view-others"]) == (SYSTEM, VIEW)
    assert permissions_of([], role="user") == ()
    assert permissions_of([], role="operator") == (READ_ONLY, VIEW)
    assert permissions_of(["view-others"], role="admin") == (MODIFY, VIEW)
    assert permissions_of([], role="system") == (SYSTEM,)
    assert all(isinstance(p, Permission) for p in permissions_of(["read-only"], role="admin"))
    with pytest.raises(ValueError, match="unknown role 'root'; roles: user, operator, admin, system"):
        permissions_of([], role="root")
    with pytest.raises(ValueError, match="unknown permission 'sudo'; permissions: view-others, modify-others"):
        permissions_of(["sudo"])


def test_every_role_is_made_of_permissions() -> None:
    assert set(ROLES) == {"user", "operator", "admin", "system"}
    for permissions in ROLES.values():
        assert all(isinstance(p, Permission) for p in permissions)


#: permissions -> (sees: own, another's, nobody's; changes: own, another's, nobody's; may write, read-only)
RULES: list[tuple[tuple[Permission, ...], tuple[bool, ...]]] = [
    ((), (True, False, False, True, False, False, True, False)),
    ((VIEW,), (True, True, True, True, False, False, True, False)),
    ((MODIFY,), (True, True, True, True, True, True, True, False)),
    ((SYSTEM,), (True, True, True, True, True, True, True, False)),
    ((READ_ONLY,), (True, False, False, False, False, False, False, True)),
    ((READ_ONLY, VIEW), (True, True, True, False, False, False, False, True)),  # the operator role
    ((MODIFY, READ_ONLY), (True, True, True, False, False, False, False, True)),  # read-only wins over modify
    ((READ_ONLY, SYSTEM), (True, True, True, True, True, True, True, False)),  # system is never read-only
]


@pytest.mark.parametrize(("permissions", "expected"), RULES, ids=["+".join(held) or "none" for held, _ in RULES])
def test_who_may_see_and_change_whose_rows(permissions: tuple[Permission, ...], expected: tuple[bool, ...]) -> None:
    me = User(name="alice", permissions=permissions)
    got = (
        me.can_view("alice"), me.can_view("bob"), me.can_view(None),
        me.can_modify("alice"), me.can_modify("bob"), me.can_modify(None),
        me.can_write, me.read_only,
    )  # fmt: skip
    assert got == expected


def test_an_owner_is_matched_by_exact_name() -> None:
    me = User(name="alice")
    assert not me.can_view("Alice") and not me.can_view("alice ") and not me.can_modify("ALICE")


@pytest.mark.parametrize(
    ("held", "implied"),
    [
        ((), set()),
        ((VIEW,), {VIEW}),
        ((MODIFY,), {MODIFY, VIEW}),
        ((SYSTEM,), {SYSTEM, MODIFY, VIEW}),
        ((READ_ONLY,), {READ_ONLY}),
        ((SYSTEM, READ_ONLY), {SYSTEM, MODIFY, VIEW}),
    ],
)
def test_has_follows_what_each_permission_implies(held: tuple[Permission, ...], implied: set[Any]) -> None:
    me = User(name="u", permissions=held)
    assert {p for p in Permission if me.has(p)} == implied


def test_anonymous_system_may_do_everything() -> None:
    me = ANONYMOUS_SYSTEM
    assert me.has(SYSTEM) and me.can_view(None) and me.can_modify("anyone") and me.can_write and not me.read_only
