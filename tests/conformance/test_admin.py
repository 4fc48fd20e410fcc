"""The Admin protocol: schema set-up and migrations, prune, destroy_all, close and reopen,
against every store."""

from __future__ import annotations

from functools import partial

from conveyor.backends import Backend, open_backend
from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.job import Status

from .conftest import OpenStore
from .jobdata import LEASE, T0, claim_one, new, stored, token
from .threads import at_once


def test_setup_is_idempotent_and_applies_nothing_on_a_current_store(store_url: str, backend: Backend) -> None:
    backend.enqueue([new("kept")], T0)
    assert backend.setup() == []
    assert backend.setup() == []
    again = open_backend(store_url)
    try:
        assert again.setup() == []
        assert stored(again, "kept").status is Status.QUEUED  # set-up touched no data
    finally:
        again.close()


def test_setup_from_many_stores_at_once_is_safe(store_url: str, backend: Backend) -> None:
    stores = [open_backend(store_url) for _ in range(6)]
    applied: list[list[str]] = []

    def set_up(store: Backend) -> None:
        applied.append(store.setup())

    errors = at_once([partial(set_up, store) for store in stores])
    try:
        assert errors == [] and applied == [[]] * len(stores)
        stores[0].enqueue([new("after")], T0)
        assert stored(backend, "after").rescues == 0  # the newest schema (rescues came in migration 2)
    finally:
        for store in stores:
            store.close()


def test_prune_deletes_finished_jobs_past_expiry_or_before_a_time(backend: Backend) -> None:
    backend.enqueue([new("short", result_ttl=10.0), new("kept", result_ttl=None), new("waiting")], T0)
    for job in backend.claim(["q"], "w1", 2, LEASE, T0):
        backend.finish(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED), T0)
    assert backend.prune(T0 + 9) == 0
    assert backend.prune(T0 + 10) == 1 and backend.get("short") is None
    assert backend.prune(T0 + 10**6) == 0
    assert backend.prune(T0, finished_before=T0 + 1) == 1 and backend.get("kept") is None
    assert backend.get("waiting") is not None


def test_prune_never_deletes_unfinished_jobs(backend: Backend) -> None:
    backend.enqueue([new("queued", result_ttl=0.0), new("running", result_ttl=0.0)], T0)
    claim_one(backend)
    assert backend.prune(T0 + 10**6) == 0
    assert backend.prune(T0 + 10**6, finished_before=T0 + 10**6) == 0
    assert {backend.get("queued") is not None, backend.get("running") is not None} == {True}


def test_destroy_all_empties_the_store(backend: Backend) -> None:
    backend.enqueue([new() for _ in range(3)], T0)
    backend.acquire_lock("leader", "a", 30.0, T0)
    backend.acquire_lock("other", "a", 30.0, T0)
    backend.destroy_all()
    assert backend.counts(T0) == {}
    assert backend.acquire_lock("leader", "b", 30.0, T0)
    assert backend.acquire_lock("other", "b", 30.0, T0)
    backend.enqueue([new("fresh")], T0)  # still usable
    assert claim_one(backend).id == "fresh"


def test_a_closed_store_reopens_on_next_use_with_its_data(open_store: OpenStore) -> None:
    store = open_store()
    store.enqueue([new("a")], T0)
    job = claim_one(store)
    store.close()
    store.close()  # closing twice is harmless
    assert stored(store, "a").token == job.token
    assert store.finish("a", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + 1)
    store.close()
    other = open_store()
    assert stored(other, "a").result == 1
