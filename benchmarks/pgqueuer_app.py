"""The pgqueuer side of the PostgreSQL benchmark: one entrypoint per body, run by ``pgqueuer.run()``.

    BENCH_PG_DSN=postgresql://... BENCH_TS_DIR=... python pgqueuer_app.py [--batch-size 10]

Runs one worker process the way ``pgq run pgqueuer_app:create_pgqueuer`` does (uvloop when
installed), through the ``pgqueuer.run()`` entry point, which works whatever typer version is
installed. The driver is asyncpg (pgqueuer's own default and fastest); ``BENCH_PGQ_DRIVER=psycopg``
switches to psycopg's async connection.

pgqueuer 1.6 accepts async entrypoints only ("Sync entrypoints are no longer supported. Wrap
blocking code with asyncio.to_thread()"), so the sync ``redis`` body runs the way it documents:
``await asyncio.to_thread(body, tag)`` (the loop's default thread pool).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import _record
from pgqueuer import PgQueuer
from pgqueuer.models import Job

ENTRYPOINTS = {"noop": "bench_noop", "redis": "bench_redis", "redis-async": "bench_redis_async"}  #: body -> name
ENTRYPOINT = ENTRYPOINTS["noop"]


async def connect(dsn: str, driver: str | None = None):  # type: ignore[no-untyped-def]
    """(pgqueuer Driver, close coroutine function) on ``dsn``."""
    driver = driver or os.environ.get("BENCH_PGQ_DRIVER", "asyncpg")
    if driver == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        conn = await asyncpg.connect(dsn)
        return AsyncpgDriver(conn), conn.close
    import psycopg
    from pgqueuer.db import PsycopgDriver

    aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    return PsycopgDriver(aconn), aconn.close


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The factory ``pgqueuer.run()`` (and ``pgq run``) expects: an async context manager."""
    driver, close = await connect(os.environ["BENCH_PG_DSN"])
    pgq = PgQueuer(driver)

    @pgq.entrypoint(ENTRYPOINTS["noop"])
    async def noop(job: Job) -> None:
        _record.noop(int(job.payload or b"0"))

    @pgq.entrypoint(ENTRYPOINTS["redis"])
    async def redis_incr(job: Job) -> None:  # pgqueuer's documented way to run blocking code
        await asyncio.to_thread(_record.redis_incr, int(job.payload or b"0"))

    @pgq.entrypoint(ENTRYPOINTS["redis-async"])
    async def redis_incr_async(job: Job) -> None:
        await _record.redis_incr_async(int(job.payload or b"0"))

    try:
        yield pgq
    finally:
        await close()


def main() -> None:
    import pgqueuer

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10, help="pgq run --batch-size (default 10)")
    parser.add_argument("--dequeue-timeout", type=float, default=30.0, help="pgq run --dequeue-timeout (30)")
    args = parser.parse_args()
    coro = pgqueuer.run(
        create_pgqueuer, batch_size=args.batch_size, dequeue_timeout=timedelta(seconds=args.dequeue_timeout)
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
