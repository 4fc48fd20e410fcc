"""The event log's cost to a store alone, without workers or task bodies.

Bulk-enqueues N no-op jobs into a fresh store (a SQLite file, or with ``--postgres URL`` a database
created beside the URL's and dropped after), then claims 32 and reports them succeeded (one
``finish_many``) until drained, in one process, and prints the seconds each phase took. On
PostgreSQL it then numbers the events (``last_event_seq``: the sequencer a reader would run) and
prints that too, apart: a drain nobody reads leaves it to the leader's prune. Run it from two
checkouts to compare their store paths (benchmarks/README.md, "What the event log costs")::

    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_event_cost.py 40000
    python benchmarks/bench_event_cost.py 40000 [--postgres postgresql://postgres@127.0.0.1/test]

The worker harness (``bench_compare.py``) measures the same change with everything around it.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conveyor.backends.base import Backend, Outcome, OutcomeKind, Report
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.job import NewJob

CLAIM = 32  #: jobs per claim, as a worker at -c 32 takes them


@contextlib.contextmanager
def sqlite_store() -> Iterator[Backend]:
    """A SQLite store in a fresh file, removed after."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteBackend(Path(tmp) / "store.db")
        try:
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def postgres_store(url: str) -> Iterator[Backend]:
    """A PostgreSQL store in a fresh database beside ``url``'s, dropped after."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from conveyor.backends.postgres import PostgresBackend

    name = f"bench_event_cost_{uuid.uuid4().hex[:8]}"
    admin: dict[str, Any] = {"autocommit": True}
    with psycopg.connect(url, **admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = PostgresBackend(make_conninfo(**{**conninfo_to_dict(url), "dbname": name}))
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(url, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=int, nargs="?", default=40_000, help="jobs to enqueue and drain")
    parser.add_argument("--postgres", metavar="URL", help="measure a PostgreSQL store (a database beside URL's)")
    args = parser.parse_args()
    now = time.time()
    with postgres_store(args.postgres) if args.postgres else sqlite_store() as store:
        store.setup()
        jobs = [
            NewJob(
                id=uuid.uuid4().hex,
                task="bench.noop",
                queue="q",
                priority=2,
                args=[],
                kwargs={},
                scheduled_at=now,
                max_retries=0,
            )
            for _ in range(args.jobs)
        ]
        began = time.perf_counter()
        for start in range(0, len(jobs), 1000):
            store.enqueue(jobs[start : start + 1000], now)
        enqueued = time.perf_counter() - began
        claiming = finishing = 0.0
        done = 0
        while True:
            began = time.perf_counter()
            claimed = store.claim(["q"], "bench", CLAIM, 30.0, now)
            claiming += time.perf_counter() - began
            if not claimed:
                break
            reports = [Report(job.id, job.token or "", Outcome(kind=OutcomeKind.SUCCEEDED)) for job in claimed]
            began = time.perf_counter()
            store.finish_many(reports, now)
            finishing += time.perf_counter() - began
            done += len(claimed)
        began = time.perf_counter()
        last = store.last_event_seq()
        numbering = time.perf_counter() - began
    assert done == args.jobs, f"drained {done} of {args.jobs}"
    tail = f" number={numbering:.3f}s events={last}" if args.postgres else ""
    print(f"jobs={done} enqueue={enqueued:.3f}s claim={claiming:.3f}s finish={finishing:.3f}s{tail}")


if __name__ == "__main__":
    main()
