"""What only the PostgreSQL store's services must show, against real concurrent connections (threads,
each with a store of its own, as workers on several hosts would have): claimers never take the same
row and never wait for each other (FOR UPDATE SKIP LOCKED), nor for a row another transaction holds;
a user's request on an instance waits for one in flight and then sees every row it wrote
(lock_service); a create that races another of the same name writes nothing; and the steps that lock
several rows do it in one order, so none of them deadlocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from conveyor.backends import Backend  # noqa: E402
from conveyor.events import EventQuery  # noqa: E402
from conveyor.service_types import ServiceAction, ServiceRecord, ServiceSpec, ServiceStatus  # noqa: E402

from .conftest import OpenStore  # noqa: E402
from .jobdata import LEASE, T0  # noqa: E402
from .threads import at_once  # noqa: E402

#: Every test here runs on PostgreSQL only (the conformance fixtures, given one store).
pytestmark = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)

#: Seconds a step that must not wait is given before the test calls it blocked (it takes milliseconds).
PROMPT = 5.0


def spec(name: str, replicas: int = 1, **fields: Any) -> ServiceSpec:
    return ServiceSpec(name=name, service="consume", queue="q", replicas=replicas, **fields)


def in_thread(step: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``step`` in a thread of its own; its result (or exception) lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(step())
        except BaseException as exc:  # pragma: no cover - reported by the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def finished(thread: threading.Thread, out: list[Any], timeout: float = PROMPT) -> Any:
    """The thread's result, which it must have within ``timeout`` seconds."""
    thread.join(timeout)
    assert not thread.is_alive(), "the step waited (it is blocked)"
    assert out and not isinstance(out[0], BaseException), out
    return out[0]


def lock_rows(conn: Any, where: str, *args: Any) -> None:
    """In ``conn``'s open transaction, lock the service rows matching ``where`` (as a step in flight would)."""
    conn.execute(f"SELECT 1 FROM conveyor_services WHERE {where} FOR UPDATE", args).fetchall()


def test_claimers_on_several_connections_never_take_the_same_row(open_store: OpenStore) -> None:
    """Four workers, each with its own store and connections, claim small batches in a loop at once: every
    row is taken exactly once, with one service_assigned event each."""
    stores = [open_store() for _ in range(4)]
    for i in range(10):
        assert stores[0].create_service(spec(f"s{i:02}", replicas=5), T0)
    taken: dict[int, list[ServiceRecord]] = {i: [] for i in range(len(stores))}

    def worker(i: int) -> None:
        while got := stores[i].claim_services(f"w{i}", ["consume"], [], 1 + i % 3, LEASE, T0 + 1, T0 + 1):
            taken[i] += got

    assert at_once([partial(worker, i) for i in range(len(stores))]) == []
    keys = [(r.name, r.replica) for got in taken.values() for r in got]
    assert len(keys) == 50 and len(set(keys)) == 50
    assert {(r.name, r.replica, r.worker_id, r.token) for r in stores[0].list_services()} == {
        (r.name, r.replica, f"w{i}", r.token) for i, got in taken.items() for r in got
    }
    assigned = stores[0].events(EventQuery(kinds=("service_assigned",), limit=1000))
    assert sorted((e.data["service"], e.data["replica"], e.worker_id) for e in assigned) == sorted(
        (r.name, r.replica, f"w{i}") for i, got in taken.items() for r in got
    )


def test_a_claim_passes_over_rows_another_transaction_holds_without_waiting(backend: Backend, store_url: str) -> None:
    backend.create_service(spec("a", replicas=2), T0)
    backend.create_service(spec("b"), T0 + 1)
    with psycopg.connect(store_url) as other:  # a transaction in flight holds a's rows
        lock_rows(other, "name = %s", "a")
        got = finished(*in_thread(lambda: backend.claim_services("w1", ["consume"], [], 10, LEASE, T0 + 2, T0 + 2)))
        assert [(r.name, r.replica) for r in got] == [("b", 0)]
        other.rollback()
    again = backend.claim_services("w1", ["consume"], [], 10, LEASE, T0 + 3, T0 + 3)
    assert [(r.name, r.replica) for r in again] == [("a", 0), ("a", 1)]


def test_a_lapsed_stop_passes_over_a_locked_row_and_is_done_by_the_next_claim(backend: Backend, store_url: str) -> None:
    backend.create_service(spec("a"), T0)
    backend.create_service(spec("b"), T0)
    backend.claim_services("w1", ["consume"], [], 10, LEASE, T0 + 1, T0 + 1)
    backend.control_service("a", ServiceAction.STOP, None, T0 + 2)
    backend.control_service("b", ServiceAction.STOP, None, T0 + 2)
    late = T0 + 2 + LEASE
    with psycopg.connect(store_url) as other:
        lock_rows(other, "name = %s", "a")
        assert finished(*in_thread(lambda: backend.claim_services("w2", ["consume"], [], 10, LEASE, late, late))) == []
        other.rollback()
    assert [(r.name, r.status) for r in backend.list_services()] == [
        ("a", ServiceStatus.STOPPING),
        ("b", ServiceStatus.STOPPED),
    ]
    assert backend.claim_services("w2", ["consume"], [], 10, LEASE, late, late) == []
    assert [r.status for r in backend.list_services()] == [ServiceStatus.STOPPED] * 2
    assert len(backend.events(EventQuery(kinds=("service_stopped",)))) == 2


def test_a_request_waits_for_a_resize_in_flight_then_sees_its_new_rows(backend: Backend, store_url: str) -> None:
    """A resize in flight (replica 0 locked, a replica inserted, not committed): a stop waits for it, then
    stops every replica, the new one too (its statement's snapshot is taken after the lock is granted)."""
    backend.create_service(spec("a"), T0)
    with psycopg.connect(store_url) as other:
        lock_rows(other, "name = %s", "a")
        other.execute(
            "INSERT INTO conveyor_services (name, replica, service, queue, source, wanted, status, created_at,"
            " updated_at) VALUES ('a', 1, 'consume', 'q', 'api', true, 'pending', %s, %s)",
            [T0 + 1, T0 + 1],
        )
        thread, out = in_thread(lambda: backend.control_service("a", ServiceAction.STOP, None, T0 + 2))
        time.sleep(0.3)
        assert thread.is_alive()  # it waits for the resize
        other.commit()
    stopped = finished(thread, out)
    assert [(r.replica, r.status, r.wanted) for r in stopped] == [
        (0, ServiceStatus.STOPPED, False),
        (1, ServiceStatus.STOPPED, False),
    ]


def test_a_remove_waits_for_a_resize_in_flight_and_leaves_no_row(backend: Backend, store_url: str) -> None:
    backend.create_service(spec("a"), T0)
    with psycopg.connect(store_url) as other:
        lock_rows(other, "name = %s", "a")
        other.execute(
            "INSERT INTO conveyor_services (name, replica, service, queue, source, wanted, status, created_at,"
            " updated_at) VALUES ('a', 1, 'consume', 'q', 'api', true, 'pending', %s, %s)",
            [T0 + 1, T0 + 1],
        )
        thread, out = in_thread(lambda: backend.remove_service("a", T0 + 2))
        time.sleep(0.3)
        other.commit()
    assert finished(thread, out) is True
    assert backend.list_services() == []


def test_a_create_racing_another_of_the_same_name_writes_nothing(backend: Backend, store_url: str) -> None:
    """Another create of "a" (one replica) is in flight: ours (three replicas) waits on the primary key, then
    answers False once the other commits, and writes none of its rows nor its event."""
    with psycopg.connect(store_url) as other:
        other.execute(
            "INSERT INTO conveyor_services (name, replica, service, queue, source, wanted, status, created_at,"
            " updated_at) VALUES ('a', 0, 'other', 'q', 'api', true, 'pending', %s, %s)",
            [T0, T0],
        )
        thread, out = in_thread(lambda: backend.create_service(spec("a", replicas=3), T0))
        time.sleep(0.3)
        other.commit()
    assert finished(thread, out) is False
    assert [(r.name, r.replica, r.service) for r in backend.list_services()] == [("a", 0, "other")]
    assert backend.events(EventQuery(kinds=("service_created",))) == []


def test_renewals_requests_and_claims_at_once_never_deadlock(open_store: OpenStore) -> None:
    """Workers renew every run they hold (several instances each) while users stop and start those
    instances and other workers claim: each step locks its rows in (name, replica) order, or skips
    locked ones, so none ever fails with a deadlock."""
    stores = [open_store() for _ in range(4)]
    names = [f"s{i}" for i in range(4)]
    for name in names:
        stores[0].create_service(spec(name, replicas=3), T0)
    held = {
        i: stores[i].claim_services(f"w{i}", ["consume"], [], 6, LEASE, T0 + 1, T0 + 1) for i in range(2)
    }  # fmt: skip
    assert sum(len(got) for got in held.values()) == 12
    stop = time.monotonic() + 1.5

    def renewer(i: int) -> None:
        tokens = [r.token for r in held[i] if r.token is not None]
        while time.monotonic() < stop:
            stores[i].renew_services(f"w{i}", tokens, LEASE, T0 + 2)

    def user() -> None:
        n = 0
        while time.monotonic() < stop:
            for name in reversed(names):
                action = ServiceAction.STOP if n % 2 else ServiceAction.START
                stores[2].control_service(name, action, None, T0 + 2)
            n += 1

    def claimer() -> None:
        while time.monotonic() < stop:
            stores[3].claim_services("w3", ["consume"], [], 10, LEASE, T0 + 2, T0 + 2)

    assert at_once([partial(renewer, 0), partial(renewer, 1), user, claimer]) == []
    # nothing was taken over: every lease was renewed and is still to run
    assert {r.worker_id for r in stores[0].list_services()} == {"w0", "w1"}
