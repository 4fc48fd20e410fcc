"""The Celery side of the PostgreSQL benchmark: one no-op task on a Redis broker, no result backend.

    celery -A celery_app worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat

The broker is ``$BENCH_CELERY_BROKER`` (the driver uses a dedicated Redis db index, 15 by default).
"""

from __future__ import annotations

import os

import _record
from celery import Celery

TASK = "bench.noop"

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_ignore_result=True,  # no result backend: a no-op's result is not wanted
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name=TASK, ignore_result=True)
def noop(tag: int) -> None:
    _record.noop(tag)
