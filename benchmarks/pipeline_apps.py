"""The pipeline benchmark's stage bodies and its conveyor app (``python -m conveyor worker pipeline_apps:app``).

A pipeline is three stages, each one body of ``_record.py`` (``noop``, or ``redis``: one ``INCR``,
a real network round trip) and each handing a small result on to the next::

    first(tag)   -> {"tag": tag, "stage": 1}
    step(prev)   -> {"tag": prev["tag"], "stage": prev["stage"] + 1}    # stage 2, then stage 3

Each stage records one ``_record`` line whose tag is ``10 * tag + stage``; the stage number comes
from the result it was handed, so a line ``10 * tag + 3`` for every tag shows that every
pipeline's results went from stage 1 to 2 to 3. The same functions are Celery's tasks
(``pipeline_celery.py``, ``chain(first.s(tag), step.s(), step.s())``).

For the Message-resume latency: ``first(tag)``, then ``Message("go")``, then
``resumed(prev, payload)``, which records the tag ``10 * tag + 2`` when it starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import _record

from conveyor import App, Message, Ref
from conveyor.stages import Pipeline

BODIES = ("noop", "redis")  #: the stage bodies (sync functions: Celery runs no async tasks)
STAGES = 3
RUN: dict[str, Callable[[int], None]] = {"noop": _record.noop, "redis": _record.redis_incr}
FIRST = {body: f"pipe.{body}.first" for body in BODIES}  #: body -> the first stage's task name
STEP = {body: f"pipe.{body}.step" for body in BODIES}  #: body -> the later stages' task name
RESUMED = "pipe.resumed"
BUDGET = 3600.0  #: the pipelines' time budget: a long backlog must not time a job out


def line_tag(tag: int, stage: int) -> int:
    """The ``_record`` tag of ``stage`` (1-based) of pipeline ``tag``."""
    return 10 * tag + stage


def first(body: str, tag: int) -> dict[str, int]:
    RUN[body](line_tag(tag, 1))
    return {"tag": tag, "stage": 1}


def step(body: str, prev: dict[str, int]) -> dict[str, int]:
    stage = prev["stage"] + 1
    RUN[body](line_tag(prev["tag"], stage))
    return {"tag": prev["tag"], "stage": stage}


def resumed(prev: dict[str, int], payload: Any) -> None:
    _record.noop(line_tag(prev["tag"], 2))


def _bind(fn: Callable[..., Any], body: str, name: str) -> Callable[..., Any]:
    def task(*args: Any) -> Any:
        return fn(body, *args)

    task.__name__ = task.__qualname__ = name.replace(".", "_")
    return task


def make_app(url: str) -> App:
    """A fresh App on ``url`` with every stage task registered."""
    app = App(url)
    for body in BODIES:
        app.task(name=FIRST[body])(_bind(first, body, FIRST[body]))
        app.task(name=STEP[body])(_bind(step, body, STEP[body]))
    app.task(name=RESUMED)(resumed)
    return app


def three_stages(app: App, body: str) -> Pipeline:
    """first(tag) -> step(stage 0's result) -> step(stage 1's result), ``tag`` from the job's kws."""
    first_task, step_task = app.tasks[FIRST[body]], app.tasks[STEP[body]]
    return app.pipeline(
        first_task.s(Ref.kws("tag")),
        step_task.s(Ref.stage(0)),
        step_task.s(Ref.stage(1)),
        timeout=BUDGET,
    )


def waits_for_message(app: App) -> Pipeline:
    """first(tag) -> Message("go") -> resumed(stage 0's result, the message's payload)."""
    return app.pipeline(
        app.tasks[FIRST["noop"]].s(Ref.kws("tag")),
        Message("go"),
        app.tasks[RESUMED].s(Ref.stage(0), Ref.stage(1)),
        timeout=BUDGET,
    )


# The worker is started with --url, which overrides this.
app = make_app(os.environ.get("BENCH_CONVEYOR_URL", "sqlite:///bench-pipelines.db"))
