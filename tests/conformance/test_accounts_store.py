"""The accounts part of the storage contract (conveyor/backends/base.py: ``Accounts``), against every store:
users, their tokens (a token's use recorded at most once a minute), the audit log; and what issue 14 adds
beside them: ``list_jobs`` by owner and by search text, and the owner of schedules and services.
Every ``now`` is passed in (T0 onwards): a store that read its own clock would fail."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.accounts import Permission, TokenRecord, User, digest
from conveyor.backends import Backend, sql_files
from conveyor.backends.base import JobQuery
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.backends.sqlite import schema as sqlite_schema
from conveyor.errors import StoreError
from conveyor.job import NewJob, Status
from conveyor.schedule_types import ScheduleRecord
from conveyor.service_types import ServiceAction, ServiceSpec

from .conftest import OpenStore
from .jobdata import LEASE, T0, new

MINUTE = 60.0
SECRET_DIGEST = digest("secret-0123456789ab")  #: the digest of token()'s made-up secret
VIEW, MODIFY, SYSTEM, READ_ONLY = (
    Permission.VIEW_OTHERS, Permission.MODIFY_OTHERS, Permission.SYSTEM, Permission.READ_ONLY,
)  # fmt: skip


def user(name: str = "alice", *permissions: Permission) -> User:
    return User(name=name, permissions=permissions)


def token(token_id: str = "0123456789ab", owner: str = "alice", created_at: float = T0, label: str = "") -> TokenRecord:
    """A token record as App.create_token makes one (the digest of a made-up secret)."""
    return TokenRecord(id=token_id, user=owner, label=label, digest=digest(f"secret-{token_id}"), created_at=created_at)


def with_users(backend: Backend, *names: str) -> None:
    for name in names:
        backend.put_user(user(name), T0)


def owned(job_id: str, owner: str | None, **fields: object) -> NewJob:
    """A job of ``owner`` (None: nobody's)."""
    return msgspec.structs.replace(new(job_id, **fields), owner=owner)  # type: ignore[arg-type]


def ids(backend: Backend, **filters: object) -> list[str]:
    """The ids list_jobs answers for these filters, newest first."""
    return [job.id for job in backend.list_jobs(JobQuery(**filters))]  # type: ignore[arg-type]


# users -----------------------------------------------------------------------------------------------------
def test_put_user_inserts_then_sets_permissions_keeping_created_at(backend: Backend) -> None:
    assert backend.put_user(user("alice", VIEW), T0) is True
    assert backend.get_user("alice") == User(name="alice", permissions=(VIEW,), created_at=T0)
    assert backend.put_user(user("alice", SYSTEM, MODIFY), T0 + 5) is False
    stored = backend.get_user("alice")
    assert stored == User(name="alice", permissions=(MODIFY, SYSTEM), created_at=T0)  # sorted; created_at kept
    assert stored is not None and all(isinstance(p, Permission) for p in stored.permissions)
    assert backend.put_user(user("alice"), T0 + 6) is False
    assert backend.get_user("alice") == User(name="alice", permissions=(), created_at=T0)


def test_permissions_are_stored_without_repeats(backend: Backend) -> None:
    backend.put_user(user("op", READ_ONLY, VIEW, READ_ONLY), T0)
    stored = backend.get_user("op")
    assert stored is not None and stored.permissions == (READ_ONLY, VIEW)
    assert stored.read_only and stored.can_view("someone") and not stored.can_modify("op")


def test_get_user_of_no_such_name_is_none(backend: Backend) -> None:
    assert backend.get_user("nobody") is None
    backend.put_user(user("alice"), T0)
    assert backend.get_user("Alice") is None  # names are case-sensitive


def test_list_users_by_name(backend: Backend) -> None:
    assert backend.list_users() == []
    for i, name in enumerate(["carol", "alice@example.com", "bob"]):
        backend.put_user(user(name, SYSTEM) if name == "bob" else user(name), T0 + i)
    assert [(u.name, u.permissions, u.created_at) for u in backend.list_users()] == [
        ("alice@example.com", (), T0 + 1), ("bob", (SYSTEM,), T0 + 2), ("carol", (), T0),
    ]  # fmt: skip


def test_remove_user_deletes_the_user_and_every_token_of_theirs(backend: Backend) -> None:
    with_users(backend, "alice", "bob")
    backend.add_token(token("aaaaaaaaaaa1", "alice"))
    backend.add_token(token("aaaaaaaaaaa2", "alice", T0 + 1))
    backend.add_token(token("bbbbbbbbbbb1", "bob"))
    assert backend.revoke_token("aaaaaaaaaaa2", T0 + 2)  # revoked ones go too
    assert backend.remove_user("alice", T0 + 3) is True
    assert backend.get_user("alice") is None
    assert backend.list_tokens("alice") == []
    assert backend.get_token("aaaaaaaaaaa1", T0 + 4) is None and backend.get_token("aaaaaaaaaaa2", T0 + 4) is None
    assert [t.id for t in backend.list_tokens(None)] == ["bbbbbbbbbbb1"]  # others' stay
    assert [u.name for u in backend.list_users()] == ["bob"]
    assert backend.remove_user("alice", T0 + 5) is False
    assert backend.remove_user("nobody", T0 + 5) is False


def test_a_user_added_again_has_no_tokens_of_the_old_one(backend: Backend) -> None:
    with_users(backend, "alice")
    backend.add_token(token("aaaaaaaaaaa1", "alice"))
    backend.remove_user("alice", T0 + 1)
    assert backend.put_user(user("alice"), T0 + 2) is True
    assert backend.list_tokens("alice") == []
    assert backend.get_user("alice") == User(name="alice", created_at=T0 + 2)


def test_users_are_seen_by_another_store_instance(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.put_user(user("alice", VIEW), T0)
    first.add_token(token())
    assert second.get_user("alice") == User(name="alice", permissions=(VIEW,), created_at=T0)
    assert [t.id for t in second.list_tokens("alice")] == ["0123456789ab"]


# tokens ----------------------------------------------------------------------------------------------------
def test_add_token_then_get_it_back_with_its_first_use(backend: Backend) -> None:
    with_users(backend, "alice")
    record = token(label="laptop é")
    backend.add_token(record)
    assert backend.list_tokens("alice") == [record]  # digest kept, no use yet
    assert backend.get_token(record.id, T0 + 10, record.digest) == msgspec.structs.replace(record, last_used_at=T0 + 10)
    assert backend.list_tokens("alice") == [msgspec.structs.replace(record, last_used_at=T0 + 10)]


def test_get_token_of_no_such_id_is_none(backend: Backend) -> None:
    assert backend.get_token("0123456789ab", T0) is None


def test_add_token_for_no_such_user_raises_and_stores_nothing(backend: Backend) -> None:
    with pytest.raises(StoreError, match="no user named 'ghost'"):
        backend.add_token(token(owner="ghost"))
    assert backend.list_tokens(None) == []
    assert backend.get_token("0123456789ab", T0) is None


def test_add_token_with_a_taken_id_raises_and_keeps_the_first(backend: Backend) -> None:
    with_users(backend, "alice", "bob")
    first = token(owner="alice")
    backend.add_token(first)
    with pytest.raises(StoreError, match="token id '0123456789ab' is taken"):
        backend.add_token(token(owner="bob", created_at=T0 + 1, label="other"))
    assert backend.list_tokens(None) == [first]
    backend.add_token(token("0123456789ac", "bob"))  # the store still works after the refusal
    assert len(backend.list_tokens(None)) == 2


def test_list_tokens_newest_first_every_user_or_one(backend: Backend) -> None:
    with_users(backend, "alice", "bob")
    backend.add_token(token("aaaaaaaaaaa1", "alice", T0))
    backend.add_token(token("bbbbbbbbbbb1", "bob", T0 + 1))
    backend.add_token(token("aaaaaaaaaaa2", "alice", T0 + 2))
    backend.add_token(token("aaaaaaaaaaa0", "alice", T0 + 2))  # same time: by id
    assert [t.id for t in backend.list_tokens(None)] == ["aaaaaaaaaaa0", "aaaaaaaaaaa2", "bbbbbbbbbbb1", "aaaaaaaaaaa1"]
    assert [t.id for t in backend.list_tokens("alice")] == ["aaaaaaaaaaa0", "aaaaaaaaaaa2", "aaaaaaaaaaa1"]
    assert [t.id for t in backend.list_tokens("bob")] == ["bbbbbbbbbbb1"]
    assert backend.list_tokens("nobody") == []
    assert all(t.digest == digest(f"secret-{t.id}") for t in backend.list_tokens(None))


def test_a_tokens_use_is_recorded_at_most_once_a_minute(backend: Backend) -> None:
    with_users(backend, "alice")
    backend.add_token(token())

    def used_at(now: float) -> float | None:
        got = backend.get_token("0123456789ab", now, SECRET_DIGEST)
        assert got is not None
        stored = backend.list_tokens("alice")[0].last_used_at
        assert got.last_used_at == stored  # what get_token answers is what the store holds
        return stored

    assert used_at(T0) == T0  # never used: recorded
    assert used_at(T0 + 30) == T0
    assert used_at(T0 + MINUTE) == T0  # a minute, not more
    assert used_at(T0 + MINUTE + 0.5) == T0 + MINUTE + 0.5
    assert used_at(T0 + MINUTE + 10) == T0 + MINUTE + 0.5
    assert used_at(T0 + 10 * MINUTE) == T0 + 10 * MINUTE
    assert used_at(T0 + 5 * MINUTE) == T0 + 10 * MINUTE  # a clock behind never moves it back


def test_a_use_recorded_by_another_store_instance_is_not_written_again(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    first.put_user(user("alice"), T0)
    first.add_token(token())
    got = first.get_token("0123456789ab", T0 + 1, SECRET_DIGEST)
    assert got is not None and got.last_used_at == T0 + 1
    got = second.get_token("0123456789ab", T0 + 2, SECRET_DIGEST)
    assert got is not None and got.last_used_at == T0 + 1


def test_a_wrong_secret_or_none_records_no_use(backend: Backend) -> None:
    with_users(backend, "alice")
    backend.add_token(token())
    got = backend.get_token("0123456789ab", T0 + 1, digest("not-the-secret"))
    assert got is not None and got.last_used_at is None  # found (the caller refuses it), not used
    got = backend.get_token("0123456789ab", T0 + 2)
    assert got is not None and got.last_used_at is None
    assert backend.list_tokens("alice")[0].last_used_at is None


def test_revoke_token(backend: Backend) -> None:
    with_users(backend, "alice")
    backend.add_token(token())
    assert backend.revoke_token("0123456789ab", T0 + 5) is True
    got = backend.get_token("0123456789ab", T0 + 6, SECRET_DIGEST)
    assert got is not None and got.revoked_at == T0 + 5  # still found: the caller refuses it
    assert got.last_used_at is None  # a revoked token is never used
    assert backend.revoke_token("0123456789ab", T0 + 7) is False  # already
    got = backend.get_token("0123456789ab", T0 + 8)
    assert got is not None and got.revoked_at == T0 + 5
    assert backend.revoke_token("nosuchtoken0", T0 + 7) is False


# the audit log ---------------------------------------------------------------------------------------------
def test_audit_entries_are_numbered_in_order_and_read_back_oldest_first(backend: Backend) -> None:
    first = backend.audit("alice", "job.cancel", "job-1", {"reset": False, "note": "é"}, T0)
    second = backend.audit("bob", "queue.pause", "emails", {}, T0 + 1)
    third = backend.audit("alice", "user.add", None, {"permissions": ["system"], "n": {"deep": [1, 2.5]}}, T0 + 2)
    assert first < second < third
    entries = backend.audit_log(0, 100)
    assert [(e.seq, e.at, e.user, e.action, e.target, e.data) for e in entries] == [
        (first, T0, "alice", "job.cancel", "job-1", {"reset": False, "note": "é"}),
        (second, T0 + 1, "bob", "queue.pause", "emails", {}),
        (third, T0 + 2, "alice", "user.add", None, {"permissions": ["system"], "n": {"deep": [1, 2.5]}}),
    ]  # fmt: skip


def test_audit_log_after_limit_and_user(backend: Backend) -> None:
    seqs = [backend.audit("alice" if i % 2 == 0 else "bob", f"a{i}", str(i), {"i": i}, T0 + i) for i in range(7)]
    assert [e.seq for e in backend.audit_log(seqs[2], 100)] == seqs[3:]
    assert [e.seq for e in backend.audit_log(seqs[2], 2)] == seqs[3:5]
    assert [e.action for e in backend.audit_log(0, 100, "bob")] == ["a1", "a3", "a5"]
    assert [e.action for e in backend.audit_log(seqs[1], 2, "alice")] == ["a2", "a4"]
    assert backend.audit_log(seqs[-1], 100) == []
    assert backend.audit_log(0, 100, "nobody") == []
    assert backend.audit_log(0, 0) == []


def test_audit_log_pages_through_everything(backend: Backend) -> None:
    for i in range(25):
        backend.audit("alice", "job.enqueue", f"job-{i}", {}, T0 + i)
    seen: list[str | None] = []
    after = 0
    while page := backend.audit_log(after, 10):
        seen += [e.target for e in page]
        after = page[-1].seq
    assert seen == [f"job-{i}" for i in range(25)]


def test_destroy_all_empties_the_accounts_and_never_reuses_an_audit_seq(backend: Backend) -> None:
    with_users(backend, "alice")
    backend.add_token(token())
    last = backend.audit("alice", "token.create", "0123456789ab", {}, T0)
    backend.destroy_all()
    assert (backend.list_users(), backend.list_tokens(None), backend.audit_log(0, 100)) == ([], [], [])
    assert backend.audit("alice", "prune", None, {}, T0 + 1) > last


# jobs by owner and by search text -------------------------------------------------------------------------
def test_list_jobs_by_owner_newest_first_with_the_other_filters(backend: Backend) -> None:
    backend.enqueue([owned("a1", "alice"), owned("b1", "bob"), owned("n1", None), owned("a2", "alice", queue="other"),
                     owned("a3", "alice")], T0)  # fmt: skip
    assert ids(backend, owner="alice") == ["a3", "a2", "a1"]
    assert ids(backend, owner="bob") == ["b1"]
    assert ids(backend, owner="nobody") == []
    assert ids(backend) == ["a3", "a2", "n1", "b1", "a1"]  # no owner filter: everyone's, nobody's too
    assert ids(backend, owner="alice", queue="q") == ["a3", "a1"]
    assert ids(backend, owner="alice", limit=1, offset=1) == ["a2"]
    assert ids(backend, owner="alice", status=Status.QUEUED, task="tests.task", id_prefix="a") == ["a3", "a2", "a1"]
    assert ids(backend, owner="alice", status=Status.RUNNING) == []
    [job] = backend.list_jobs(JobQuery(owner="bob"))
    assert job.owner == "bob"


def test_list_jobs_by_search_text_in_args_kwargs_or_the_id(backend: Backend) -> None:
    backend.enqueue([
        owned("invoice-1", "alice", args=["ACME corp", 42], kwargs={"city": "Zürich"}),
        owned("invoice-2", "bob", args=[], kwargs={"customer": "acme", "rate": "50%", "code": "a_b"}),
        owned("report-1", "alice", args=["weekly"], kwargs={}),
    ], T0)  # fmt: skip
    assert ids(backend, search="ACME") == ["invoice-1"]  # case-sensitive
    assert ids(backend, search="acme") == ["invoice-2"]
    assert ids(backend, search="Zürich") == ["invoice-1"]
    assert ids(backend, search="42") == ["invoice-1"]
    assert ids(backend, search='"customer"') == ["invoice-2"]  # the JSON text as written
    assert ids(backend, search="0%") == ["invoice-2"]  # no pattern: % and _ are plain characters
    assert ids(backend, search="%") == ["invoice-2"]
    assert ids(backend, search="a_b") == ["invoice-2"]
    assert ids(backend, search="_") == ["invoice-2"]
    assert ids(backend, search="invoice-") == ["invoice-2", "invoice-1"]  # the id's start
    assert ids(backend, search="voice") == []  # not the middle of an id
    assert ids(backend, search="weekly", owner="alice") == ["report-1"]
    assert ids(backend, search="weekly", owner="bob") == []
    assert ids(backend, search="nothing like it") == []
    assert ids(backend, search="") == ["report-1", "invoice-2", "invoice-1"]  # '' filters nothing
    assert ids(backend, search="i", limit=1) == ["invoice-2"]


# owners of schedules and services ------------------------------------------------------------------------
TARGET = {"kind": "call", "task": "tests.task", "args": [1], "kwargs": {}, "queue": "q"}


def schedule(name: str = "nightly", owner: str | None = None) -> ScheduleRecord:
    return ScheduleRecord(name=name, cron="0 3 * * *", target=TARGET, next_at=T0 + MINUTE, owner=owner)


def test_a_schedules_owner_round_trips_and_a_put_replaces_it(backend: Backend) -> None:
    assert backend.put_schedule(schedule(owner="alice"), T0)
    backend.put_schedule(schedule("shared"), T0)
    stored = backend.get_schedule("nightly")
    assert stored is not None and stored.owner == "alice"
    assert [(s.name, s.owner) for s in backend.list_schedules()] == [("nightly", "alice"), ("shared", None)]
    assert [s.owner for s in backend.due_schedules(T0 + MINUTE, 10)] == ["alice", None]
    assert backend.pause_schedule("nightly", True, None, T0 + 1)
    paused = backend.get_schedule("nightly")
    assert paused is not None and paused.owner == "alice"  # a pause keeps it
    assert backend.put_schedule(schedule(owner="bob"), T0 + 2) is False
    replaced = backend.get_schedule("nightly")
    assert replaced is not None and (replaced.owner, replaced.paused) == ("bob", True)
    backend.put_schedule(schedule(), T0 + 3)
    cleared = backend.get_schedule("nightly")
    assert cleared is not None and cleared.owner is None


def test_a_services_owner_is_on_every_replica_and_copied_to_new_ones(backend: Backend) -> None:
    spec = ServiceSpec(name="orders", service="consume", queue="q", replicas=2, owner="alice")
    assert backend.create_service(spec, T0)
    assert backend.create_service(ServiceSpec(name="plain", service="consume", queue="q"), T0)
    assert [(r.name, r.replica, r.owner) for r in backend.list_services()] == [
        ("orders", 0, "alice"), ("orders", 1, "alice"), ("plain", 0, None),
    ]  # fmt: skip
    assert backend.resize_service("orders", 3, "q", T0 + 1)
    assert [r.owner for r in backend.list_services("orders")] == ["alice"] * 3
    taken = backend.claim_services("w1", ["consume"], [], 10, LEASE, T0 + 2, T0 + 2)
    assert {(r.name, r.owner) for r in taken} == {("orders", "alice"), ("plain", None)}
    renewed = backend.renew_services("w1", [r.token for r in taken if r.token], LEASE, T0 + 3)
    assert {(r.name, r.owner) for r in renewed} == {("orders", "alice"), ("plain", None)}
    after = backend.control_service("orders", ServiceAction.RESTART, None, T0 + 4)
    assert [r.owner for r in after] == ["alice"] * 3


# an older store upgraded ------------------------------------------------------------------------------------
def test_a_sqlite_store_of_schema_6_gets_the_accounts_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for migration in sql_files.migrations("sqlite")[:6]:
        sqlite_schema.apply(conn, migration)
    conn.execute(
        "INSERT INTO conveyor_services (name, replica, service, queue, source, wanted, status, created_at,"
        " updated_at) VALUES ('old', 0, 'consume', 'q', 'api', 1, 'pending', ?, ?)",
        (T0, T0),
    )
    conn.execute("COMMIT")
    conn.close()
    backend = SQLiteBackend(path)
    try:
        assert backend.setup() == [name for _, name, _ in sql_files.migrations("sqlite")[6:]]
        [old] = backend.list_services()
        assert (old.name, old.owner) == ("old", None)
        assert backend.list_users() == [] and backend.audit_log(0, 10) == []
        backend.put_user(user("alice"), T0)
        backend.add_token(token())
        assert backend.get_token("0123456789ab", T0) is not None
    finally:
        backend.close()


# PostgreSQL: a token and its user's removal at once ---------------------------------------------------------
def _raw(store_url: str) -> Any:
    """A connection of the test's own to the PostgreSQL store, as another host's request in flight would hold."""
    psycopg = pytest.importorskip("psycopg")
    return psycopg.connect(store_url)


def _waits(thread: threading.Thread) -> None:
    thread.join(0.5)
    assert thread.is_alive(), "the step did not wait for the transaction in flight"


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_postgres_a_token_added_while_its_user_is_removed_goes_with_the_user(backend: Backend, store_url: str) -> None:
    """An add_token in flight holds the user's row: remove_user waits for it, then deletes its token too."""
    from conveyor.backends.postgres import queries

    with_users(backend, "alice")
    record = token()
    params = {"id": record.id, "user": "alice", "label": "", "digest": record.digest, "created_at": T0}
    out: list[Any] = []
    with _raw(store_url) as conn:
        assert conn.execute(queries()["add_token"], params).fetchone() == (record.id,)  # not committed yet
        remover = threading.Thread(target=lambda: out.append(backend.remove_user("alice", T0 + 1)), daemon=True)
        remover.start()
        _waits(remover)
        conn.commit()
    remover.join(5)
    assert out == [True]
    assert backend.list_tokens(None) == [] and backend.get_token(record.id, T0 + 2) is None


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_postgres_a_token_added_after_its_user_is_removed_is_refused(backend: Backend, store_url: str) -> None:
    """A remove_user in flight: add_token waits for it, then finds no user and stores nothing."""
    from conveyor.backends.postgres import queries

    with_users(backend, "alice")
    out: list[Any] = []

    def add() -> None:
        try:
            backend.add_token(token())
            out.append("stored")
        except StoreError as exc:
            out.append(exc)

    with _raw(store_url) as conn:
        assert conn.execute(queries()["remove_user"], {"name": "alice"}).fetchone() == ("alice",)
        adder = threading.Thread(target=add, daemon=True)
        adder.start()
        _waits(adder)
        conn.commit()
    adder.join(5)
    assert len(out) == 1 and isinstance(out[0], StoreError) and "no user named 'alice'" in str(out[0])
    assert backend.list_tokens(None) == []


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_postgres_audit_entries_commit_in_seq_order(backend: Backend, store_url: str) -> None:
    """An entry in flight holds the audit lock: the next one waits for its commit, so no reader that read past
    a seq ever finds a smaller one committed later."""
    from conveyor.backends.postgres import queries

    q = queries()
    out: list[int] = []
    with _raw(store_url) as conn:
        conn.execute(q["audit_lock"])
        [(first,)] = conn.execute(q["audit"], {"now": T0, "user": "a", "action": "x", "target": None,
                                               "data": "{}"}).fetchall()  # fmt: skip
        writer = threading.Thread(target=lambda: out.append(backend.audit("b", "y", None, {}, T0 + 1)), daemon=True)
        writer.start()
        _waits(writer)
        assert backend.audit_log(0, 10) == []  # nothing committed yet: nothing to skip later
        conn.commit()
    writer.join(5)
    assert out and out[0] > first
    assert [e.seq for e in backend.audit_log(0, 10)] == [first, out[0]]
