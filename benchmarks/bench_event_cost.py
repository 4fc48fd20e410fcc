"""The event log's cost to the SQLite store alone, without workers or task bodies.

Bulk-enqueues N no-op jobs into a fresh file, then claims 32 and reports them succeeded (one
``finish_many``) until drained, in one process, and prints the seconds each phase took. Run it
from two checkouts to compare their store paths (benchmarks/README.md, "What the event log
costs")::

    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_event_cost.py 40000
    python benchmarks/bench_event_cost.py 40000

The worker harness (``bench_compare.py``) measures the same change with everything around it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from conveyor.backends.base import Outcome, OutcomeKind, Report
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.job import NewJob

CLAIM = 32  #: jobs per claim, as a worker at -c 32 takes them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", type=int, nargs="?", default=40_000, help="jobs to enqueue and drain")
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteBackend(Path(tmp) / "store.db")
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
        store.close()
    assert done == args.jobs, f"drained {done} of {args.jobs}"
    print(f"jobs={done} enqueue={enqueued:.3f}s claim={claiming:.3f}s finish={finishing:.3f}s")


if __name__ == "__main__":
    main()
