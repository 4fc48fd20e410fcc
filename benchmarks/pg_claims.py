"""How many claims per second one PostgreSQL serves: the numbers behind docs/deployment.md.

Each client process opens its own PostgresBackend (its own pool, as a separate host would),
then loops claim(batch) -> finish(each) until the queue is empty. Reported: jobs/s through the
full claim + finish cycle, and claim statements/s. Run:

    python benchmarks/pg_claims.py --url postgresql://postgres@127.0.0.1:5432/test \
        --jobs 20000 --processes 1,2,4,8 --batch 1,10

It works in a throwaway database it creates beside the one named and drops afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

T0 = 1_000_000.0


def _worker(url: str, batch: int, start: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from conveyor.backends import open_backend
    from conveyor.backends.base import Outcome, OutcomeKind

    backend = open_backend(url)
    backend.setup()
    done = claims = 0
    time.sleep(max(0.0, start - time.time()))
    began = time.perf_counter()
    while jobs := backend.claim(["bench"], f"w{uuid.uuid4().hex[:6]}", batch, 30.0, T0):
        claims += 1
        for job in jobs:
            assert job.token is not None
            backend.finish(job.id, job.token, Outcome(kind=OutcomeKind.SUCCEEDED, result=None), T0)
        done += len(jobs)
    out.put((done, claims, time.perf_counter() - began))
    backend.close()


def run(url: str, jobs: int, processes: int, batch: int) -> tuple[float, float]:
    from conveyor.backends import open_backend
    from conveyor.job import NewJob

    backend = open_backend(url)
    backend.setup()
    backend.destroy_all()
    for offset in range(0, jobs, 1000):
        backend.enqueue(
            [
                NewJob(
                    id=uuid.uuid4().hex,
                    task="bench",
                    queue="bench",
                    priority=2,
                    args=[i],
                    kwargs={},
                    scheduled_at=T0,
                    max_retries=0,
                    result_ttl=3600.0,
                )
                for i in range(offset, min(jobs, offset + 1000))
            ],
            T0,
        )
    backend.close()
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    start = time.time() + 1.5
    procs = [context.Process(target=_worker, args=(url, batch, start, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    total = sum(r[0] for r in results)
    assert total == jobs, f"{total} of {jobs} jobs done"
    wall = max(r[2] for r in results)
    return total / wall, sum(r[1] for r in results) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--processes", default="1,2,4,8")
    parser.add_argument("--batch", default="1,10")
    args = parser.parse_args()

    import psycopg

    name = f"conveyor_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(args.url)._replace(path=f"/{name}"))
    try:
        print(f"{'processes':>9} {'batch':>5} {'jobs/s (claim+finish)':>22} {'claims/s':>9}")
        for batch in (int(b) for b in args.batch.split(",")):
            for processes in (int(p) for p in args.processes.split(",")):
                rate, claim_rate = run(url, args.jobs, processes, batch)
                print(f"{processes:>9} {batch:>5} {rate:>22.0f} {claim_rate:>9.0f}", flush=True)
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
