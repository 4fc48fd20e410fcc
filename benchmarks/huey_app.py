"""The huey side of the benchmark: the same no-op task on SqliteHuey (``huey_consumer huey_app.huey``)."""

from __future__ import annotations

import os
from typing import Any

import _record
from huey import SqliteHuey

TASK = "bench.noop"


def make_huey(filename: str) -> tuple[SqliteHuey, Any]:
    """A SqliteHuey on ``filename`` (huey's defaults otherwise) and its ``bench.noop`` task."""
    huey = SqliteHuey("bench", filename=filename)
    task = huey.task(name=TASK)(_record.noop)
    return huey, task


if "BENCH_HUEY_DB" in os.environ:  # set for the consumer process only
    huey, noop = make_huey(os.environ["BENCH_HUEY_DB"])
