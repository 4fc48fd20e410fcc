"""The conveyor side of the benchmark: one no-op task (``python -m conveyor worker conveyor_app:app``)."""

from __future__ import annotations

import os

import _record

from conveyor import App

TASK = "bench.noop"


def make_app(url: str) -> App:
    """A fresh App on ``url`` with the benchmark's task registered as ``bench.noop``."""
    app = App(url)
    app.task(name=TASK)(_record.noop)
    return app


# The worker is started with --url, which overrides this.
app = make_app(os.environ.get("BENCH_CONVEYOR_URL", "sqlite:///bench-conveyor.db"))
