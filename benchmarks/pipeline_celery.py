"""The Celery side of the pipeline benchmark: the same stage bodies as Celery tasks, chained.

    celery -A pipeline_celery worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat

A pipeline is ``chain(first.s(tag), step.s(), step.s())``: each task's return value is the next
one's first argument, carried by the chain's messages through the broker (no result backend).
The broker is ``$BENCH_CELERY_BROKER`` (a dedicated Redis db index, 15 by default); the round-trip
body's own Redis is ``$BENCH_REDIS_URL`` (db 14).
"""

from __future__ import annotations

import os
from typing import Any

import pipeline_apps
from celery import Celery, chain

app = Celery("bench_pipelines", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_ignore_result=True,  # no result backend: a chain hands each result on in the next task's message
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name=pipeline_apps.FIRST["noop"], ignore_result=True)
def first_noop(tag: int) -> dict[str, int]:
    return pipeline_apps.first("noop", tag)


@app.task(name=pipeline_apps.STEP["noop"], ignore_result=True)
def step_noop(prev: dict[str, int]) -> dict[str, int]:
    return pipeline_apps.step("noop", prev)


@app.task(name=pipeline_apps.FIRST["redis"], ignore_result=True)
def first_redis(tag: int) -> dict[str, int]:
    return pipeline_apps.first("redis", tag)


@app.task(name=pipeline_apps.STEP["redis"], ignore_result=True)
def step_redis(prev: dict[str, int]) -> dict[str, int]:
    return pipeline_apps.step("redis", prev)


TASKS: dict[str, tuple[Any, Any]] = {"noop": (first_noop, step_noop), "redis": (first_redis, step_redis)}


def three_stages(body: str, tag: int) -> Any:
    """The chain of one pipeline: first(tag) | step() | step()."""
    first_task, step_task = TASKS[body]
    return chain(first_task.s(tag), step_task.s(), step_task.s())
