"""The conveyor side of the benchmark: one task per body (``python -m conveyor worker conveyor_app:app``)."""

from __future__ import annotations

import os

import _record

from conveyor import App

TASKS = {"noop": "bench.noop", "redis": "bench.redis", "redis-async": "bench.redis_async"}  #: body -> task name
TASK = TASKS["noop"]


def make_app(url: str) -> App:
    """A fresh App on ``url`` with the benchmark's bodies registered (sync ``noop`` and ``redis``, async
    ``redis-async``)."""
    app = App(url)
    app.task(name=TASKS["noop"])(_record.noop)
    app.task(name=TASKS["redis"])(_record.redis_incr)
    app.task(name=TASKS["redis-async"])(_record.redis_incr_async)
    return app


# The worker is started with --url, which overrides this.
app = make_app(os.environ.get("BENCH_CONVEYOR_URL", "sqlite:///bench-conveyor.db"))
