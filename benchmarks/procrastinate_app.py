"""The procrastinate side of the PostgreSQL benchmark: one task per body.

    procrastinate --app=procrastinate_app.app worker [--concurrency 1]

The worker reads its database from ``$BENCH_PG_DSN``; the driver builds its own App with
``make_app(dsn)`` (a sync ``defer`` goes through procrastinate's SyncPsycopgConnector).
``noop`` and ``redis-async`` are async tasks; ``redis`` is a sync task, which procrastinate's
worker runs in a thread (``sync_to_async``).
"""

from __future__ import annotations

import os

import _record
import procrastinate

TASKS = {"noop": "bench.noop", "redis": "bench.redis", "redis-async": "bench.redis_async"}  #: body -> task name
TASK = TASKS["noop"]


def make_app(dsn: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASKS["noop"])
    async def noop(tag: int) -> None:
        _record.noop(tag)

    @app.task(name=TASKS["redis"])
    def redis_incr(tag: int) -> None:
        _record.redis_incr(tag)

    @app.task(name=TASKS["redis-async"])
    async def redis_incr_async(tag: int) -> None:
        await _record.redis_incr_async(tag)

    return app


app = make_app(os.environ.get("BENCH_PG_DSN", ""))
