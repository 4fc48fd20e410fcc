"""The services part of the storage contract (conveyor/backends/base.py: ``Services``), against every
store. How a run ends is built by hand here (a ServiceEnd), as conveyor.service_policy would decide it:
a store only writes it, fenced by the run's token. Every ``now`` is passed in (T0 onwards): a store that
read its own clock would fail."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from conveyor.backends import Backend
from conveyor.events import Event, EventQuery
from conveyor.service_types import (
    ServiceAction,
    ServiceEnd,
    ServiceError,
    ServiceRecord,
    ServiceSource,
    ServiceSpec,
    ServiceStatus,
)

from .conftest import OpenStore
from .jobdata import LEASE, T0
from .threads import at_once

PENDING, STARTING, RUNNING = ServiceStatus.PENDING, ServiceStatus.STARTING, ServiceStatus.RUNNING
STOPPING, STOPPED, FAILED = ServiceStatus.STOPPING, ServiceStatus.STOPPED, ServiceStatus.FAILED
START, STOP, RESTART, RELOAD = ServiceAction.START, ServiceAction.STOP, ServiceAction.RESTART, ServiceAction.RELOAD
SERVICE_KINDS = ("service_created", "service_removed", "service_requested", "service_assigned", "service_started",
                 "service_stopped", "service_handed_back", "service_crashed", "service_failed")  # fmt: skip
ERROR = ServiceError(type="RuntimeError", message="boom", traceback="Traceback ...")


def spec(name: str = "orders", service: str = "consume", **fields: Any) -> ServiceSpec:
    """A new instance of ``service`` on queue "q", one replica, with a parameter, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {"queue": "q", "params": {"topic": "orders-é", "n": 3}}
    return ServiceSpec(name=name, service=service, **{**values, **fields})


def rows(backend: Backend, name: str | None = None) -> list[ServiceRecord]:
    return backend.list_services(name)


def row(backend: Backend, name: str, replica: int = 0) -> ServiceRecord:
    """One replica as the store holds it now (the test fails if it is gone)."""
    found = [r for r in backend.list_services(name) if r.replica == replica]
    assert found, f"replica {name}/{replica} is gone"
    return found[0]


def events(backend: Backend, *kinds: str) -> list[Event]:
    """The services' events (or those of these kinds), oldest first."""
    return backend.events(EventQuery(kinds=kinds or SERVICE_KINDS))


def claim(backend: Backend, worker: str = "w1", now: float = T0 + 1, *, services: tuple[str, ...] = ("consume",),
          spread: tuple[str, ...] = (), limit: int = 10, lease: float = LEASE,
          spread_before: float | None = None) -> list[ServiceRecord]:  # fmt: skip
    """Claim as a keeper would; ``spread_before`` defaults to now (only matters with ``spread``)."""
    before = now if spread_before is None else spread_before
    return backend.claim_services(worker, services, spread, limit, lease, before, now)


def claim_one(backend: Backend, worker: str = "w1", now: float = T0 + 1, **kw: Any) -> ServiceRecord:
    taken = claim(backend, worker, now, limit=1, **kw)
    assert len(taken) == 1, f"expected one replica to claim, got {taken}"
    return taken[0]


def end(status: ServiceStatus = PENDING, not_before: float = 0.0, event: str = "service_handed_back",
        **fields: Any) -> ServiceEnd:  # fmt: skip
    return ServiceEnd(status=status, not_before=not_before, event=event, **fields)


def state(record: ServiceRecord) -> tuple[Any, ...]:
    return (record.replica, record.status, record.wanted, record.generation)


def mixed(backend: Backend) -> dict[int, str]:
    """Instance "orders" with a replica in each status a user's request meets: 0 STOPPED (its run ended so),
    1 STARTING, 2 RUNNING, 3 FAILED (crashes and an error), 4 PENDING. Returns the held ones' tokens."""
    assert backend.create_service(spec(replicas=5), T0)
    taken = {r.replica: r for r in claim(backend, limit=4)}
    assert sorted(taken) == [0, 1, 2, 3]
    assert backend.service_running("orders", 2, _token(taken[2]), T0 + 2)
    assert backend.end_service_run("orders", 0, _token(taken[0]), end(STOPPED, event="service_stopped"), T0 + 3)
    failed = end(FAILED, crashes=[T0 + 1.5, T0 + 3], error=ERROR, restarted=True, event="service_failed")
    assert backend.end_service_run("orders", 3, _token(taken[3]), failed, T0 + 3)
    assert [r.status for r in rows(backend)] == [STOPPED, STARTING, RUNNING, FAILED, PENDING]
    return {1: _token(taken[1]), 2: _token(taken[2])}


def _token(record: ServiceRecord) -> str:
    assert record.token is not None, f"{record.name}/{record.replica} holds no token"
    return record.token


# create, list ----------------------------------------------------------------------------------------------
def test_create_writes_every_replica_pending_with_its_fields(backend: Backend) -> None:
    assert backend.create_service(spec(replicas=3, source=ServiceSource.CODE), T0) is True
    records = rows(backend)
    assert [r.replica for r in records] == [0, 1, 2]
    for record in records:
        assert (record.name, record.service, record.queue, record.params) == (
            "orders", "consume", "q", {"topic": "orders-é", "n": 3},
        )  # fmt: skip
        assert (record.source, record.local_to, record.wanted, record.generation, record.status) == (
            ServiceSource.CODE, None, True, 0, PENDING,
        )  # fmt: skip
        assert isinstance(record.source, ServiceSource) and isinstance(record.status, ServiceStatus)
        assert (record.worker_id, record.token, record.lease_until, record.run_generation, record.started_at) == (
            None, None, None, None, None,
        )  # fmt: skip
        assert (record.restarts, record.crashes, record.last_error) == (0, [], None)
        assert record.not_before <= T0 and record.free_since == T0  # free to take now; spreading waits from now
        assert (record.created_at, record.updated_at) == (T0, T0)
        assert not record.held


def test_create_writes_one_service_created_event(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    [event] = events(backend)
    assert (event.kind, event.at, event.job_id, event.task, event.queue, event.worker_id) == (
        "service_created", T0, None, "consume", "q", None,
    )  # fmt: skip
    assert event.data == {"service": "orders", "replicas": 2, "source": "api"}


def test_create_of_an_existing_name_writes_nothing(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    before = rows(backend)
    assert backend.create_service(spec(service="other", replicas=3, params={}), T0 + 1) is False
    assert backend.create_service(spec(replicas=1), T0 + 1) is False
    assert rows(backend) == before
    assert len(events(backend)) == 1


def test_create_not_wanted_is_stopped_and_a_local_one_names_its_worker(backend: Backend) -> None:
    backend.create_service(spec("idle", wanted=False, replicas=2), T0)
    backend.create_service(spec("consume@w1", source=ServiceSource.LOCAL, local_to="w1", params={}), T0)
    assert [(r.status, r.wanted) for r in rows(backend, "idle")] == [(STOPPED, False), (STOPPED, False)]
    local = row(backend, "consume@w1")
    assert (local.source, local.local_to, local.status, local.params) == (ServiceSource.LOCAL, "w1", PENDING, {})


def test_create_needs_a_replica(backend: Backend) -> None:
    with pytest.raises(ValueError):
        backend.create_service(spec(replicas=0), T0)
    assert rows(backend) == [] and events(backend) == []


def test_list_is_by_name_and_replica_and_filters_by_name(backend: Backend) -> None:
    assert rows(backend) == []
    for name, replicas in [("b", 2), ("c", 1), ("a", 3)]:
        backend.create_service(spec(name, replicas=replicas), T0)
    assert [(r.name, r.replica) for r in rows(backend)] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("c", 0)]
    assert [(r.name, r.replica) for r in rows(backend, "b")] == [("b", 0), ("b", 1)]
    assert rows(backend, "nope") == []


# resize ----------------------------------------------------------------------------------------------------
def test_resize_up_copies_replica_zero_and_moves_the_queue(backend: Backend) -> None:
    backend.create_service(spec(replicas=2, source=ServiceSource.CODE), T0)
    backend.control_service("orders", RELOAD, {"topic": "new"}, T0 + 1)  # generation 1, new params
    assert backend.resize_service("orders", 4, "q2", T0 + 2) is True
    records = rows(backend)
    assert [r.replica for r in records] == [0, 1, 2, 3]
    assert {r.queue for r in records} == {"q2"}
    for record in records[2:]:
        assert (record.service, record.params, record.source, record.wanted, record.generation, record.status) == (
            "consume", {"topic": "new"}, ServiceSource.CODE, True, 1, PENDING,
        )  # fmt: skip
        assert (record.token, record.worker_id, record.restarts, record.crashes) == (None, None, 0, [])
        assert (record.created_at, record.updated_at) == (T0 + 2, T0 + 2)
        assert record.not_before <= T0 + 2 and record.free_since == T0 + 2


def test_resize_up_a_stopped_instance_adds_stopped_replicas(backend: Backend) -> None:
    backend.create_service(spec(replicas=1), T0)
    backend.control_service("orders", STOP, None, T0 + 1)
    assert backend.resize_service("orders", 3, "q", T0 + 2) is True
    assert [(r.status, r.wanted) for r in rows(backend)] == [(STOPPED, False)] * 3


def test_resize_down_deletes_the_last_replicas_even_held_ones(backend: Backend) -> None:
    backend.create_service(spec(replicas=3), T0)
    taken = claim(backend)
    assert backend.resize_service("orders", 1, "q", T0 + 2) is True
    assert [r.replica for r in rows(backend)] == [0]
    tokens = [_token(r) for r in taken]
    renewed = backend.renew_services("w1", tokens, LEASE, T0 + 3)
    assert [(r.name, r.replica) for r in renewed] == [("orders", 0)]  # the others' tokens are lost
    assert backend.end_service_run("orders", 2, tokens[2], end(), T0 + 4) is False
    assert backend.service_running("orders", 1, tokens[1], T0 + 4) is False


def test_resize_that_changes_nothing_or_of_no_instance_is_false(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    before = rows(backend)
    assert backend.resize_service("orders", 2, "q", T0 + 1) is False
    assert rows(backend) == before
    assert backend.resize_service("nope", 3, "q", T0 + 1) is False
    assert rows(backend, "nope") == []
    assert backend.resize_service("orders", 2, "elsewhere", T0 + 2) is True  # the queue alone
    assert {(r.queue, r.updated_at) for r in rows(backend)} == {("elsewhere", T0 + 2)}


def test_a_resize_that_changes_rows_writes_one_service_resized_event(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    assert backend.resize_service("orders", 2, "q", T0 + 1) is False  # nothing changed: no event
    assert backend.resize_service("orders", 4, "q", T0 + 2) is True
    assert backend.resize_service("orders", 1, "q2", T0 + 3) is True
    assert backend.resize_service("nope", 3, "q", T0 + 4) is False
    resized = events(backend, "service_resized")
    assert [(e.at, e.task, e.queue, e.job_id, e.data) for e in resized] == [
        (T0 + 2, "consume", "q", None, {"service": "orders", "replicas": 4, "queue": "q"}),
        (T0 + 3, "consume", "q2", None, {"service": "orders", "replicas": 1, "queue": "q2"}),
    ]  # fmt: skip


# control ---------------------------------------------------------------------------------------------------
def test_start_makes_stopped_and_failed_replicas_pending_and_forgets_their_crashes(backend: Backend) -> None:
    tokens = mixed(backend)
    after = backend.control_service("orders", START, None, T0 + 10)
    assert after == rows(backend)
    assert [state(r) for r in after] == [
        (0, PENDING, True, 0), (1, STARTING, True, 0), (2, RUNNING, True, 0), (3, PENDING, True, 0),
        (4, PENDING, True, 0),
    ]  # fmt: skip
    for revived in (after[0], after[3]):
        assert (revived.not_before, revived.free_since) == (T0 + 10, T0 + 10)
        assert (revived.crashes, revived.last_error) == ([], None)
        assert revived.token is None
    assert after[3].restarts == 1  # kept: how often it was restarted
    assert [after[1].token, after[2].token] == [tokens[1], tokens[2]]  # held ones run on
    assert all(r.updated_at == T0 + 10 for r in after)


@pytest.mark.parametrize("action", [START, RESTART, RELOAD])
def test_a_request_to_run_a_replica_waiting_out_a_crash_back_off_makes_it_due_now(
    backend: Backend, action: ServiceAction
) -> None:
    backend.create_service(spec(replicas=1), T0)
    crashed = end(PENDING, not_before=T0 + 60, crashes=[T0 + 2], error=ERROR, restarted=True, event="service_crashed")
    assert backend.end_service_run("orders", 0, _token(claim_one(backend)), crashed, T0 + 2)
    assert claim(backend, now=T0 + 3) == []  # waiting out its back-off
    [after] = backend.control_service("orders", action, None, T0 + 4)
    assert (after.status, after.not_before, after.crashes, after.last_error) == (PENDING, T0 + 4, [], None)
    assert after.restarts == 1  # kept: how often it was restarted
    assert claim_one(backend, now=T0 + 4).replica == 0


def test_a_stop_of_a_replica_waiting_out_a_crash_back_off_keeps_its_crashes(backend: Backend) -> None:
    backend.create_service(spec(replicas=1), T0)
    crashed = end(PENDING, not_before=T0 + 60, crashes=[T0 + 2], error=ERROR, restarted=True, event="service_crashed")
    assert backend.end_service_run("orders", 0, _token(claim_one(backend)), crashed, T0 + 2)
    [after] = backend.control_service("orders", STOP, None, T0 + 4)
    assert (after.status, after.crashes, after.last_error) == (STOPPED, [T0 + 2], ERROR)


def test_stop_stops_unheld_replicas_and_asks_holders_to_stop(backend: Backend) -> None:
    tokens = mixed(backend)
    after = backend.control_service("orders", STOP, None, T0 + 10)
    assert [state(r) for r in after] == [
        (0, STOPPED, False, 0), (1, STOPPING, False, 0), (2, STOPPING, False, 0), (3, FAILED, False, 0),
        (4, STOPPED, False, 0),
    ]  # fmt: skip
    assert [after[1].token, after[2].token] == [tokens[1], tokens[2]]  # still held until their worker ends them
    assert after[3].last_error == ERROR and after[3].crashes == [T0 + 1.5, T0 + 3]


@pytest.mark.parametrize("action", [RESTART, RELOAD])
def test_restart_and_reload_bump_the_generation_and_stop_holders(backend: Backend, action: ServiceAction) -> None:
    mixed(backend)
    after = backend.control_service("orders", action, None, T0 + 10)
    assert [state(r) for r in after] == [
        (0, PENDING, True, 1), (1, STOPPING, True, 1), (2, STOPPING, True, 1), (3, PENDING, True, 1),
        (4, PENDING, True, 1),
    ]  # fmt: skip
    assert (after[3].crashes, after[3].last_error, after[3].not_before) == ([], None, T0 + 10)
    assert [r.run_generation for r in after] == [None, 0, 0, None, None]  # the holders run generation 0
    assert [r.params for r in after] == [{"topic": "orders-é", "n": 3}] * 5
    assert [state(r)[3] for r in backend.control_service("orders", action, None, T0 + 11)] == [2] * 5


def test_reload_replaces_the_params_when_given(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    after = backend.control_service("orders", RELOAD, {"topic": "eu", "limits": [1, 2]}, T0 + 1)
    assert [r.params for r in after] == [{"topic": "eu", "limits": [1, 2]}] * 2
    assert [r.params for r in rows(backend)] == [{"topic": "eu", "limits": [1, 2]}] * 2


def test_only_a_reload_takes_params(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    with pytest.raises(ValueError):
        backend.control_service("orders", RESTART, {"topic": "eu"}, T0 + 1)
    assert row(backend, "orders").generation == 0


def test_start_of_a_replica_stopping_after_a_stop_restarts_it(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    backend.control_service("orders", STOP, None, T0 + 2)
    [after] = backend.control_service("orders", START, None, T0 + 3)
    # wanted again, and a new generation: its holder stops the old run, a worker takes the new one
    assert (after.status, after.wanted, after.generation, after.token) == (STOPPING, True, 1, taken.token)
    # its holder had seen the stop and ends the run STOPPED: wanted again, so PENDING it is
    assert backend.end_service_run("orders", 0, _token(taken), end(STOPPED, T0 + 4), T0 + 4)
    assert (row(backend, "orders").status, row(backend, "orders").not_before) == (PENDING, T0 + 4)


def test_start_of_a_replica_stopping_for_a_restart_changes_nothing_more(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    claim_one(backend)
    backend.control_service("orders", RESTART, None, T0 + 2)
    [after] = backend.control_service("orders", START, None, T0 + 3)
    assert (after.status, after.wanted, after.generation) == (STOPPING, True, 1)


def test_control_of_no_instance_writes_nothing(backend: Backend) -> None:
    for action in ServiceAction:
        assert backend.control_service("nope", action, {"a": 1} if action is RELOAD else None, T0) == []
    assert events(backend) == []


def test_control_writes_one_service_requested_event(backend: Backend) -> None:
    backend.create_service(spec(replicas=3), T0)
    for i, action in enumerate(ServiceAction):
        backend.control_service("orders", action, None, T0 + i)
    requested = events(backend, "service_requested")
    assert [(e.at, e.task, e.queue, e.job_id, e.data) for e in requested] == [
        (T0 + i, "consume", "q", None, {"service": "orders", "action": action.value})
        for i, action in enumerate(ServiceAction)
    ]


# remove ----------------------------------------------------------------------------------------------------
def test_remove_deletes_every_replica_with_one_event(backend: Backend) -> None:
    backend.create_service(spec(replicas=3), T0)
    backend.create_service(spec("other"), T0)
    taken = claim(backend, services=("consume",))
    assert backend.remove_service("orders", T0 + 5) is True
    assert [r.name for r in rows(backend)] == ["other"]
    [removed] = events(backend, "service_removed")
    assert (removed.at, removed.task, removed.queue, removed.data) == (T0 + 5, "consume", "q", {"service": "orders"})
    lost = [r for r in taken if r.name == "orders"]
    assert lost and backend.renew_services("w1", [_token(r) for r in lost], LEASE, T0 + 6) == []
    assert backend.remove_service("orders", T0 + 7) is False
    assert len(events(backend, "service_removed")) == 1


# claim -----------------------------------------------------------------------------------------------------
def test_claim_takes_a_pending_replica_and_writes_service_assigned(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    backend.control_service("orders", RESTART, None, T0)  # generation 1
    record = claim_one(backend, "w1", T0 + 1, lease=20.0)
    assert (record.status, record.worker_id, record.lease_until, record.run_generation, record.generation) == (
        STARTING, "w1", T0 + 21, 1, 1,
    )  # fmt: skip
    assert record.token is not None and len(record.token) >= 16
    assert (record.started_at, record.updated_at) == (None, T0 + 1)
    assert record.held and row(backend, "orders") == record
    [assigned] = events(backend, "service_assigned")
    assert (assigned.at, assigned.task, assigned.queue, assigned.worker_id, assigned.data) == (
        T0 + 1, "consume", "q", "w1", {"service": "orders", "replica": 0, "worker_id": "w1"},
    )  # fmt: skip


def test_claim_takes_only_these_services_and_its_own_local_ones(backend: Backend) -> None:
    backend.create_service(spec("a", service="consume"), T0)
    backend.create_service(spec("b", service="other"), T0)
    backend.create_service(spec("consume@w1", source=ServiceSource.LOCAL, local_to="w1"), T0)
    backend.create_service(spec("consume@w2", source=ServiceSource.LOCAL, local_to="w2"), T0)
    assert [r.name for r in claim(backend, "w1", services=("consume",))] == ["a", "consume@w1"]
    assert claim(backend, "w3", services=("consume",)) == []  # consume@w2 is w2's alone
    assert [r.name for r in claim(backend, "w2", services=("consume", "other"))] == ["b", "consume@w2"]


def test_claim_takes_nothing_not_wanted_or_not_due(backend: Backend) -> None:
    backend.create_service(spec("stopped", wanted=False), T0)
    backend.create_service(spec("later"), T0)
    crashed = claim_one(backend)
    crash = end(PENDING, T0 + 60, restarted=True, crashes=[T0 + 2], error=ERROR, event="service_crashed")
    assert backend.end_service_run("later", 0, _token(crashed), crash, T0 + 2)
    assert claim(backend, now=T0 + 59) == []
    [again] = claim(backend, now=T0 + 60)  # due at not_before
    assert (again.name, again.restarts, again.crashes, again.last_error) == ("later", 1, [T0 + 2], ERROR)
    assert row(backend, "stopped").status is STOPPED


def test_claim_takes_the_oldest_free_first_then_by_name_and_replica_up_to_limit(backend: Backend) -> None:
    backend.create_service(spec("z"), T0)
    backend.create_service(spec("b", replicas=2), T0 + 1)
    backend.create_service(spec("a"), T0 + 1)
    backend.create_service(spec("c"), T0 + 2)
    first = claim(backend, now=T0 + 3, limit=3)
    assert [(r.name, r.replica) for r in first] == [("z", 0), ("a", 0), ("b", 0)]
    assert [(r.name, r.replica) for r in claim(backend, now=T0 + 3, limit=10)] == [("b", 1), ("c", 0)]
    assert claim(backend, now=T0 + 3) == []
    assert len({_token(r) for r in rows(backend)}) == 5  # a token per run


def test_claim_of_nothing_or_no_services_takes_nothing(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    assert claim(backend, limit=0) == []
    assert claim(backend, services=()) == []
    assert row(backend, "orders").status is PENDING
    assert events(backend, "service_assigned") == []


def test_claim_takes_over_a_replica_whose_lease_ran_out(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    old = claim_one(backend, "w1", T0 + 1)
    assert backend.service_running("orders", 0, _token(old), T0 + 2)
    assert claim(backend, "w2", T0 + 1 + LEASE) == []  # lease_until itself: not run out yet
    new = claim_one(backend, "w2", T0 + 2 + LEASE)
    assert (new.status, new.worker_id, new.lease_until, new.started_at) == (STARTING, "w2", T0 + 2 + 2 * LEASE, None)
    assert new.token != old.token
    assigned = events(backend, "service_assigned")[-1]
    assert assigned.worker_id == "w2"
    assert assigned.data == {"service": "orders", "replica": 0, "worker_id": "w2", "from": "w1"}
    # the old run is fenced off
    assert backend.renew_services("w1", [_token(old)], LEASE, T0 + 3 + LEASE) == []
    assert backend.service_running("orders", 0, _token(old), T0 + 3 + LEASE) is False
    assert backend.end_service_run("orders", 0, _token(old), end(STOPPED), T0 + 3 + LEASE) is False
    assert row(backend, "orders") == new


def test_claim_takes_over_a_restart_in_flight_at_the_new_generation(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    claim_one(backend, "w1", T0 + 1)
    backend.control_service("orders", RESTART, None, T0 + 2)  # STOPPING, wanted, generation 1; w1 dies
    new = claim_one(backend, "w2", T0 + 2 + LEASE)
    assert (new.status, new.worker_id, new.generation, new.run_generation) == (STARTING, "w2", 1, 1)


def test_claim_stops_replicas_not_wanted_whose_lease_ran_out(backend: Backend) -> None:
    backend.create_service(spec("mine"), T0)
    backend.create_service(spec("theirs", service="other"), T0)
    mine = claim_one(backend, "w1", T0 + 1)
    theirs = claim_one(backend, "w1", T0 + 1, services=("other",))
    backend.control_service("mine", STOP, None, T0 + 2)
    backend.control_service("theirs", STOP, None, T0 + 2)
    assert claim(backend, "w2", T0 + 1 + LEASE) == []
    assert [r.status for r in rows(backend)] == [STOPPING, STOPPING]  # not run out yet
    assert claim(backend, "w2", T0 + 2 + LEASE) == []  # nothing taken, and a stop needs no worker of its queue
    for record in rows(backend):
        assert (record.status, record.token, record.lease_until, record.worker_id) == (STOPPED, None, None, "w1")
        assert record.updated_at == T0 + 2 + LEASE
    stopped = events(backend, "service_stopped")
    assert sorted((e.at, e.task, e.worker_id, e.data["service"], e.data["why"]) for e in stopped) == [
        (T0 + 2 + LEASE, "consume", "w1", "mine", "lease expired"),
        (T0 + 2 + LEASE, "other", "w1", "theirs", "lease expired"),
    ]
    assert all(e.data["replica"] == 0 for e in stopped)
    assert backend.end_service_run("mine", 0, _token(mine), end(STOPPED), T0 + 3 + LEASE) is False
    assert backend.renew_services("w1", [_token(theirs)], LEASE, T0 + 3 + LEASE) == []


def test_claim_spreads_replicas_of_instances_the_worker_already_runs(backend: Backend) -> None:
    backend.create_service(spec("a", replicas=2), T0)
    backend.create_service(spec("b"), T0 + 1)
    first = claim_one(backend, "w1", T0 + 2)
    assert (first.name, first.replica) == ("a", 0)
    # w1 runs a replica of "a": the other waits unless free since spread_before
    taken = claim(backend, "w1", T0 + 3, spread=("a",), spread_before=T0 - 1)
    assert [(r.name, r.replica) for r in taken] == [("b", 0)]
    assert claim(backend, "w1", T0 + 4, spread=("a", "b"), spread_before=T0 - 1) == []
    [late] = claim(backend, "w1", T0 + 5, spread=("a", "b"), spread_before=T0)  # free since T0: at it
    assert (late.name, late.replica) == ("a", 1)


def test_claim_spreads_taken_over_replicas_by_when_their_lease_ran_out(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    claim(backend, "w1", T0 + 1)  # both replicas, leases until T0 + 1 + LEASE
    claim_one(backend, "w2", T0 + 2 + LEASE)  # w2 takes one over
    after = T0 + 3 + LEASE
    assert claim(backend, "w2", after, spread=("orders",), spread_before=T0 + LEASE) == []
    [other] = claim(backend, "w2", after, spread=("orders",), spread_before=T0 + 1 + LEASE)
    assert other.worker_id == "w2"


def test_two_claimers_never_take_the_same_replica(open_store: OpenStore) -> None:
    """Each thread is a worker of its own (its own store object and connections), claiming in a loop."""
    stores = [open_store() for _ in range(2)]
    for i in range(6):
        assert stores[0].create_service(spec(f"s{i}", replicas=4), T0)
    taken: dict[int, list[ServiceRecord]] = {0: [], 1: []}

    def worker(i: int) -> None:
        for _ in range(100):
            got = stores[i].claim_services(f"w{i}", ["consume"], [], 2, LEASE, T0 + 1, T0 + 1)
            if not got:
                break
            taken[i] += got

    assert at_once([partial(worker, i) for i in range(len(stores))]) == []
    keys = [(r.name, r.replica) for i in taken for r in taken[i]]
    assert len(keys) == 24 and len(set(keys)) == 24
    assert {(r.name, r.replica, r.worker_id, r.token) for r in rows(stores[0])} == {
        (r.name, r.replica, f"w{i}", r.token) for i in taken for r in taken[i]
    }
    assert len(events(stores[0], "service_assigned")) == 24


# renew -----------------------------------------------------------------------------------------------------
def test_renew_extends_only_this_workers_runs(backend: Backend) -> None:
    backend.create_service(spec("a", replicas=2), T0)
    backend.create_service(spec("b"), T0)
    mine = claim(backend, "w1", T0 + 1, limit=2)
    theirs = claim_one(backend, "w2", T0 + 1)
    tokens = [_token(r) for r in mine] + [_token(theirs), "not-a-token"]
    renewed = backend.renew_services("w1", tokens, 50.0, T0 + 10)
    assert sorted((r.name, r.replica, r.lease_until, r.token) for r in renewed) == sorted(
        (r.name, r.replica, T0 + 60, r.token) for r in mine
    )
    assert row(backend, theirs.name, theirs.replica).lease_until == T0 + 1 + LEASE  # another worker's row
    assert backend.renew_services("w2", [_token(r) for r in mine], 50.0, T0 + 11) == []  # a token is its holder's
    assert backend.renew_services("w1", [], 50.0, T0 + 12) == []


def test_renew_returns_what_is_wanted_so_the_caller_can_stop(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    backend.control_service("orders", RESTART, None, T0 + 2)
    [renewed] = backend.renew_services("w1", [_token(taken)], LEASE, T0 + 3)
    assert (renewed.status, renewed.wanted, renewed.generation, renewed.run_generation) == (STOPPING, True, 1, 0)
    assert renewed.lease_until == T0 + 3 + LEASE


def test_renew_after_the_lease_ran_out_keeps_the_run_until_taken_over(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    [renewed] = backend.renew_services("w1", [_token(taken)], LEASE, T0 + 5 + LEASE)
    assert renewed.lease_until == T0 + 5 + 2 * LEASE
    assert claim(backend, "w2", T0 + 6 + LEASE) == []


def test_renew_of_an_ended_run_is_lost(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    backend.end_service_run("orders", 0, _token(taken), end(), T0 + 2)
    assert backend.renew_services("w1", [_token(taken)], LEASE, T0 + 3) == []


# service_running -------------------------------------------------------------------------------------------
def test_service_running_marks_the_run_started(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    backend.control_service("orders", RELOAD, {"x": 1}, T0)  # generation 1
    taken = claim_one(backend)
    assert backend.service_running("orders", 0, _token(taken), T0 + 2) is True
    record = row(backend, "orders")
    assert (record.status, record.started_at, record.updated_at, record.token) == (RUNNING, T0 + 2, T0 + 2, taken.token)
    [started] = events(backend, "service_started")
    assert (started.at, started.task, started.queue, started.worker_id, started.data) == (
        T0 + 2, "consume", "q", "w1", {"service": "orders", "replica": 0, "worker_id": "w1", "generation": 1},
    )  # fmt: skip
    assert backend.service_running("orders", 0, _token(taken), T0 + 3) is False  # not STARTING any more
    assert row(backend, "orders").started_at == T0 + 2
    assert len(events(backend, "service_started")) == 1


def test_service_running_is_fenced_by_token_and_status(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    first, second = claim(backend)
    assert backend.service_running("orders", 0, _token(second), T0 + 2) is False  # another replica's token
    assert backend.service_running("orders", 0, "stale", T0 + 2) is False
    assert backend.service_running("nope", 0, _token(first), T0 + 2) is False
    backend.control_service("orders", STOP, None, T0 + 3)
    assert backend.service_running("orders", 0, _token(first), T0 + 4) is False  # asked to stop first
    assert [r.status for r in rows(backend)] == [STOPPING, STOPPING]
    assert events(backend, "service_started") == []


# end_service_run -------------------------------------------------------------------------------------------
def test_end_hands_a_replica_back_and_keeps_who_ran_it(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    backend.service_running("orders", 0, _token(taken), T0 + 2)
    done = end(PENDING, T0 + 5, data={"why": "worker stopping"})
    assert backend.end_service_run("orders", 0, _token(taken), done, T0 + 4) is True
    record = row(backend, "orders")
    assert (record.status, record.worker_id, record.token, record.lease_until, record.run_generation) == (
        PENDING, "w1", None, None, None,
    )  # fmt: skip
    assert (record.free_since, record.not_before, record.started_at) == (T0 + 4, T0 + 5, T0 + 2)
    assert record.updated_at == T0 + 4
    assert (record.restarts, record.crashes, record.last_error) == (0, [], None)
    [handed] = events(backend, "service_handed_back")
    assert (handed.at, handed.task, handed.queue, handed.worker_id, handed.data) == (
        T0 + 4, "consume", "q", "w1", {"service": "orders", "replica": 0, "why": "worker stopping"},
    )  # fmt: skip
    assert backend.end_service_run("orders", 0, _token(taken), done, T0 + 6) is False  # ended already
    assert len(events(backend, "service_handed_back")) == 1


def test_end_with_a_stale_token_writes_nothing(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    before = rows(backend)
    failed = end(FAILED, error=ERROR, event="service_failed")
    assert backend.end_service_run("orders", 0, "stale", failed, T0 + 2) is False
    assert backend.end_service_run("orders", 1, _token(taken), end(), T0 + 2) is False
    assert rows(backend) == before
    assert events(backend, "service_failed", "service_handed_back") == []


def test_end_of_a_replica_no_longer_wanted_is_stopped_not_pending(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    first, second = claim(backend)
    backend.control_service("orders", STOP, None, T0 + 2)
    assert backend.end_service_run("orders", 0, _token(first), end(PENDING, T0 + 3), T0 + 3)
    assert backend.end_service_run("orders", 1, _token(second), end(FAILED, event="service_failed"), T0 + 3)
    assert [(r.status, r.wanted) for r in rows(backend)] == [(STOPPED, False), (FAILED, False)]
    assert claim(backend, now=T0 + 100) == []


def test_end_of_a_restart_is_taken_again_at_the_new_generation(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    backend.control_service("orders", RESTART, None, T0 + 2)
    assert backend.end_service_run("orders", 0, _token(taken), end(PENDING, T0 + 3, data={"why": "restart"}), T0 + 3)
    assert row(backend, "orders").status is PENDING
    again = claim_one(backend, "w1", T0 + 3)
    assert (again.run_generation, again.generation) == (1, 1) and again.token != taken.token


def test_end_counts_restarts_and_keeps_or_replaces_crashes_and_error(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    other = ServiceError(type="KeyError", message="'x'")
    runs = [
        (end(PENDING, T0 + 10, restarted=True, crashes=[T0 + 2], error=ERROR, event="service_crashed"),
         (PENDING, 1, [T0 + 2], ERROR)),
        (end(PENDING, T0 + 20, restarted=True, event="service_crashed"), (PENDING, 2, [T0 + 2], ERROR)),  # left
        (end(PENDING, T0 + 30, crashes=[], error=other, event="service_crashed"), (PENDING, 2, [], other)),
        (end(FAILED, T0 + 40, restarted=True, crashes=[T0 + 31, T0 + 32.5], error=ERROR, event="service_failed"),
         (FAILED, 3, [T0 + 31, T0 + 32.5], ERROR)),
    ]  # fmt: skip
    now = T0
    for done, expected in runs:
        now = max(now + 1, row(backend, "orders").not_before)
        taken = claim_one(backend, "w1", now)
        assert backend.end_service_run("orders", 0, _token(taken), done, now + 0.5)
        record = row(backend, "orders")
        assert (record.status, record.restarts, record.crashes, record.last_error) == expected
        assert record.not_before == done.not_before
    failed = events(backend, "service_failed")[-1]
    assert failed.data == {"service": "orders", "replica": 0}
    assert [e.kind for e in events(backend, "service_crashed", "service_failed")] == ["service_crashed"] * 3 + [
        "service_failed"
    ]
    assert claim(backend, now=now + 100) == []  # FAILED stays until started again
    [started] = backend.control_service("orders", START, None, now + 101)
    assert (started.status, started.crashes, started.last_error, started.restarts) == (PENDING, [], None, 3)


def test_end_event_data_is_written_as_given(backend: Backend) -> None:
    backend.create_service(spec(), T0)
    taken = claim_one(backend)
    data = {"error": {"type": "RuntimeError", "message": "boom"}, "restart_at": T0 + 10, "crashes": 1}
    done = end(PENDING, T0 + 10, restarted=True, crashes=[T0 + 2], error=ERROR, event="service_crashed", data=data)
    backend.end_service_run("orders", 0, _token(taken), done, T0 + 2)
    [crashed] = events(backend, "service_crashed")
    assert crashed.data == {"service": "orders", "replica": 0, **data}
    assert crashed.worker_id == "w1"


# forget_local_services -------------------------------------------------------------------------------------
def test_forget_local_services_deletes_the_local_instances_of_these_workers(backend: Backend) -> None:
    backend.create_service(spec("consume@w1", source=ServiceSource.LOCAL, local_to="w1", replicas=2), T0)
    backend.create_service(spec("audit@w1", service="audit", source=ServiceSource.LOCAL, local_to="w1"), T0)
    backend.create_service(spec("consume@w2", source=ServiceSource.LOCAL, local_to="w2"), T0)
    backend.create_service(spec("shared"), T0)
    held = claim(backend, "w1")
    assert backend.forget_local_services(["w1", "w9"], T0 + 5) == 3
    assert [r.name for r in rows(backend)] == ["consume@w2", "shared"]
    assert backend.renew_services("w1", [_token(r) for r in held if r.name == "consume@w1"], LEASE, T0 + 6) == []
    removed = events(backend, "service_removed")
    assert sorted((e.at, e.task, e.data["service"]) for e in removed) == [
        (T0 + 5, "audit", "audit@w1"), (T0 + 5, "consume", "consume@w1"),
    ]  # fmt: skip
    assert backend.forget_local_services([], T0 + 7) == 0
    assert backend.forget_local_services(["w1"], T0 + 7) == 0
    assert len(events(backend, "service_removed")) == 2


def test_destroy_all_empties_the_services(backend: Backend) -> None:
    backend.create_service(spec(replicas=2), T0)
    backend.destroy_all()
    assert rows(backend) == []
    assert backend.create_service(spec(), T0) is True
