"""Concurrent claims never hand one job out twice: many threads, then many processes (each with
its own connections, as separate hosts would have), against every store."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

from conveyor.backends import Backend, open_backend
from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.job import Status

from .conftest import OpenStore
from .jobdata import LEASE, T0, new

JOBS = 600


def _drain(backend: Backend, worker: str, batch: int) -> list[str]:
    """Claim and finish until nothing is left; the ids this worker got."""
    got: list[str] = []
    while jobs := backend.claim(["q", "r"], worker, batch, LEASE, T0):
        for job in jobs:
            assert job.token is not None
            assert backend.finish(job.id, job.token, Outcome(kind=OutcomeKind.SUCCEEDED, result=worker), T0)
            got.append(job.id)
    return got


def test_many_threads_claiming_at_once_never_share_a_job(open_store: OpenStore) -> None:
    stores = [open_store() for _ in range(4)]
    stores[0].enqueue([new(f"j{i}", queue="qr"[i % 2], priority=1 + i % 4) for i in range(JOBS)], T0)
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(12)

    def work(name: str, store: Backend) -> None:
        barrier.wait()
        results[name] = _drain(store, name, batch=1 + len(results) % 5)

    threads = [threading.Thread(target=work, args=(f"t{i}", stores[i % 4])) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = Counter(job_id for ids in results.values() for job_id in ids)
    assert sorted(claimed) == sorted(f"j{i}" for i in range(JOBS))
    assert max(claimed.values()) == 1, f"handed out twice: {[k for k, v in claimed.items() if v > 1]}"
    assert stores[0].counts(T0) == {("q", Status.SUCCEEDED): JOBS // 2, ("r", Status.SUCCEEDED): JOBS // 2}


def _process_main(url: str, name: str, start: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    backend = open_backend(url)
    backend.setup()
    time.sleep(max(0.0, start - time.time()))
    try:
        out.put((name, _drain(backend, name, batch=7)))
    finally:
        backend.close()


def test_many_processes_claiming_at_once_never_share_a_job(store_url: str, backend: Backend) -> None:
    backend.enqueue([new(f"p{i}", queue="qr"[i % 3 == 0]) for i in range(JOBS)], T0)
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    start = time.time() + 2.0  # all begin together, after the interpreters have started
    processes = [context.Process(target=_process_main, args=(store_url, f"p{i}", start, out)) for i in range(4)]
    for process in processes:
        process.start()
    results = dict(out.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    claimed = Counter(job_id for ids in results.values() for job_id in ids)
    assert sorted(claimed) == sorted(f"p{i}" for i in range(JOBS))
    assert max(claimed.values()) == 1, f"handed out twice: {[k for k, v in claimed.items() if v > 1]}"
    assert sum(1 for ids in results.values() if ids) >= 2, "one process did all the work: no concurrency shown"
    for job_id in ("p0", "p1", f"p{JOBS - 1}"):
        job = backend.get(job_id)
        assert job is not None and job.status is Status.SUCCEEDED and job.attempts == 1
