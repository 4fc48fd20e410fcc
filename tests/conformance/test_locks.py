"""The Locks protocol: named locks with expiry, across store objects (as across processes and
hosts), against every store. The leader is the holder of the lock named ``leader``."""

from __future__ import annotations

from conveyor.backends import Backend

from .conftest import OpenStore
from .jobdata import T0


def test_a_lock_is_exclusive_while_unexpired(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_lock("leader", "a", 30.0, T0)
    assert not first.acquire_lock("leader", "b", 30.0, T0 + 1)  # same store object, another owner
    assert not second.acquire_lock("leader", "c", 30.0, T0 + 29.9)  # another process
    assert first.acquire_lock("leader", "a", 30.0, T0 + 2)  # still its own


def test_the_owner_keeps_its_lock_by_renewing_it(backend: Backend) -> None:
    assert backend.acquire_lock("leader", "a", 30.0, T0)
    for step in range(1, 5):
        assert backend.acquire_lock("leader", "a", 30.0, T0 + step * 20)  # each renewal moves the expiry on
        assert not backend.acquire_lock("leader", "b", 30.0, T0 + step * 20 + 29)


def test_one_leader_at_a_time_handed_over_when_it_stops(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_lock("leader", "a", 30.0, T0)
    assert first.acquire_lock("leader", "a", 30.0, T0 + 1)  # keeping it
    assert not first.acquire_lock("leader", "b", 30.0, T0 + 2)
    assert not second.acquire_lock("leader", "c", 30.0, T0 + 2)
    assert first.acquire_lock("leader", "b", 30.0, T0 + 40)  # a's ttl ran out: b takes over
    assert not first.acquire_lock("leader", "a", 30.0, T0 + 41)
    first.close()  # the leader's process goes away
    assert second.acquire_lock("leader", "c", 30.0, T0 + 100)
    assert not first.acquire_lock("leader", "a", 30.0, T0 + 101)


def test_a_leader_that_stops_renewing_loses_the_lock_after_its_ttl(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_lock("leader", "a", 0.3, T0)
    assert not second.acquire_lock("leader", "b", 0.3, T0 + 0.1)
    assert not second.acquire_lock("leader", "b", 0.3, T0 + 0.3)  # expiry is strictly after ttl
    assert second.acquire_lock("leader", "b", 0.3, T0 + 0.31)
    assert not first.acquire_lock("leader", "a", 0.3, T0 + 0.32)


def test_only_the_owner_releases_a_lock_and_then_anyone_may_take_it(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_lock("leader", "a", 30.0, T0)
    assert not second.release_lock("leader", "b")  # not b's to release
    assert not second.acquire_lock("leader", "b", 30.0, T0 + 1)  # still a's
    assert first.release_lock("leader", "a")
    assert not first.release_lock("leader", "a")  # released already
    assert second.acquire_lock("leader", "b", 30.0, T0 + 2)  # at once, without waiting out the ttl
    assert not first.release_lock("nothing-held", "a")


def test_a_lost_lock_cannot_be_released_by_its_former_owner(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.acquire_lock("leader", "a", 1.0, T0)
    assert second.acquire_lock("leader", "b", 30.0, T0 + 2)  # a's lock expired and was taken over
    assert not first.release_lock("leader", "a")
    assert not first.acquire_lock("leader", "a", 30.0, T0 + 3)  # b still holds it


def test_locks_of_different_names_are_independent(backend: Backend) -> None:
    assert backend.acquire_lock("leader", "a", 30.0, T0)
    assert backend.acquire_lock("schedules", "b", 30.0, T0)  # another name, another owner: free
    assert backend.acquire_lock("prune", "a", 30.0, T0)  # one owner may hold several
    assert not backend.acquire_lock("schedules", "a", 30.0, T0 + 1)
    assert backend.release_lock("leader", "a")
    assert not backend.acquire_lock("schedules", "c", 30.0, T0 + 2)  # releasing one name frees only it
    assert backend.acquire_lock("leader", "c", 30.0, T0 + 2)
    assert not backend.acquire_lock("prune", "c", 30.0, T0 + 2)
