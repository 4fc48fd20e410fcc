"""The procrastinate side of the PostgreSQL benchmark: one no-op task.

    procrastinate --app=procrastinate_app.app worker --concurrency 8

The worker reads its database from ``$BENCH_PG_DSN``; the driver builds its own App with
``make_app(dsn)`` (a sync ``defer`` goes through procrastinate's SyncPsycopgConnector).
"""

from __future__ import annotations

import os

import _record
import procrastinate

TASK = "bench.noop"


def make_app(dsn: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASK)
    async def noop(tag: int) -> None:
        _record.noop(tag)

    return app


app = make_app(os.environ.get("BENCH_PG_DSN", ""))
