"""The Celery side of the PostgreSQL benchmark: the sync bodies on a Redis broker, no result backend.

    celery -A celery_app worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat

The broker is ``$BENCH_CELERY_BROKER`` (the driver uses a dedicated Redis db index, 15 by default);
the round-trip body's own Redis is ``$BENCH_REDIS_URL`` (db 14). Celery runs sync task functions
only (no async tasks), so the ``redis-async`` body has no Celery row.
"""

from __future__ import annotations

import os

import _record
from celery import Celery

TASKS = {"noop": "bench.noop", "redis": "bench.redis"}  #: body -> task name

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_ignore_result=True,  # no result backend: the bodies' results are not wanted
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name=TASKS["noop"], ignore_result=True)
def noop(tag: int) -> None:
    _record.noop(tag)


@app.task(name=TASKS["redis"], ignore_result=True)
def redis_incr(tag: int) -> None:
    _record.redis_incr(tag)


tasks = {"noop": noop, "redis": redis_incr}
