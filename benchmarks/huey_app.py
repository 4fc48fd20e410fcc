"""The huey side of the benchmark: the same bodies on SqliteHuey (``huey_consumer huey_app.huey``).

huey's tasks are sync functions; it has no async tasks, so the ``redis-async`` body has no huey row.
"""

from __future__ import annotations

import os
from typing import Any

import _record
from huey import SqliteHuey

TASKS = {"noop": "bench.noop", "redis": "bench.redis"}  #: body -> task name


def make_huey(filename: str) -> tuple[SqliteHuey, dict[str, Any]]:
    """A SqliteHuey on ``filename`` (huey's defaults otherwise) and its tasks, by body."""
    huey = SqliteHuey("bench", filename=filename)
    tasks = {
        "noop": huey.task(name=TASKS["noop"])(_record.noop),
        "redis": huey.task(name=TASKS["redis"])(_record.redis_incr),
    }
    return huey, tasks


if "BENCH_HUEY_DB" in os.environ:  # set for the consumer process only
    huey, tasks = make_huey(os.environ["BENCH_HUEY_DB"])
