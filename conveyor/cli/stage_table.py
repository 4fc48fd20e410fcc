"""How ``conveyor job`` shows a pipeline job: its stages as a table (from ``conveyor.stage_view``),
its settings, and its mailbox. Kept apart from jobs.py so that module stays about commands."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Column, Table

from .. import codec
from ..job import Job
from ..messages import StoredMessage
from ..pipeline import describe_stage
from ..refs import describe_cond
from ..stage_view import StageView, describe_params
from .common import seconds, stamp

RESULT_SHOWN = 60  #: characters of a result (or payload) shown in a table; --json gives it whole
CURRENT = "▶"  #: marks the stage the job is at
WIDE = 120  #: terminal columns from which a stage's start and finish times get a column each
_COLOURS = {"succeeded": "green", "failed": "red", "running": "cyan", "waiting": "magenta",
            "cancelled": "yellow", "skipped": "dim", "pending": "dim"}  # fmt: skip


def short(value: Any, width: int = RESULT_SHOWN) -> str:
    """A JSON value on one line, cut to ``width`` characters with '…'."""
    text = codec.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def moment(ts: float, now: float) -> str:
    """A stage's time, short: '14:03:07' today (as of ``now``), '2026-11-29 14:03' another day."""
    shown = stamp(ts, now)
    return shown[:-4] if len(shown) == len("14:03:07.412") else shown[:-3]


def wait_text(view: StageView, now: float) -> str:
    """What a waiting stage waits for: 'timer until 14:03:07', "message 'payment'" (with its
    time-out, if it has one). Empty for a stage that is not waiting."""
    if view.status != "waiting":
        return ""
    if view.kind == "timer":
        return "timer" if view.wait_until is None else f"timer until {moment(view.wait_until, now)}"
    name = f"message {view.waiting_for!r}" if view.waiting_for else "an unnamed message"
    return name if view.wait_until is None else f"{name}, times out {moment(view.wait_until, now)}"


def status_markup(view: StageView, now: float) -> str:
    """A stage's status, coloured, with what a waiting stage waits for."""
    colour = _COLOURS.get(view.status)
    text = f"[{colour}]{view.status}[/{colour}]" if colour else view.status
    waits = wait_text(view, now)
    return f"{text}: {escape(waits)}" if waits else text


def stages_table(views: Sequence[StageView], width: int, now: float | None = None) -> Table:
    """One row per stage: the current one marked, the stage as declared (and its condition),
    status (what a waiting stage waits for), result, when it started and finished, its runs.
    Narrower than WIDE columns, the two times share a column, one above the other."""
    now = time.time() if now is None else now
    wide = width >= WIDE
    times = [Column("started", no_wrap=True), Column("finished", no_wrap=True)] if wide else [
        Column("started\nfinished", no_wrap=True)]  # fmt: skip
    table = Table(Column("", no_wrap=True), Column("#", justify="right", no_wrap=True),
                  Column("stage", overflow="fold", ratio=3), Column("status", overflow="fold", min_width=9, ratio=2),
                  Column("result", overflow="fold", min_width=8, ratio=2), *times,
                  Column("runs", justify="right", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="stages",
                  title_justify="left")  # fmt: skip
    for view in views:
        stage = escape(view.declared)
        if view.condition is not None:
            stage += f"\n[dim]when[/dim] {escape(view.condition)}"
        started = "" if view.started_at is None else moment(view.started_at, now)
        finished = "" if view.finished_at is None else moment(view.finished_at, now)
        table.add_row(
            CURRENT if view.current else "",
            str(view.index),
            stage,
            status_markup(view, now),
            escape(short(view.result)) if view.has_result else "",
            *([started, finished] if wide else [f"{started or '-'}\n{finished}".rstrip() if finished else started]),
            str(view.attempts) if view.attempts else "",
        )
    return table


def settings_rows(job: Job) -> list[tuple[str, str]]:
    """A pipeline's settings as (field, value) rows: its name, keywords, restart policy, time
    budget and the job it chains to."""
    settings = job.pipeline or {}
    stages = len(job.stages or [])
    rows = [("stage", f"{job.stage} (stages 0-{stages - 1})")]
    if settings.get("name"):
        rows.append(("pipeline", str(settings["name"])))
    rows.append(("kws", codec.dumps(settings.get("kws") or {})))
    rows.append(("restart", f"{settings.get('restart', 'current')}, up to {job.max_retries} retries"))
    if settings.get("timeout") is not None:
        rows.append(("budget", f"{seconds(float(settings['timeout']))} per run of the pipeline"))
    then = settings.get("then")
    if then:
        rows.append(("then", describe_then(then)))
    return rows


def describe_then(then: dict[str, Any]) -> str:
    """The chained job in a few words: 'report.send(doc=Ref.stage(2))' or 'pipeline [a, Timer(5)]'."""
    if then.get("kind") == "pipeline":
        spec = then.get("pipeline") or {}
        name = (spec.get("settings") or {}).get("name")
        steps = ", ".join(describe_stage(stage) for stage in spec.get("stages") or [])
        return f"pipeline {name + ' ' if name else ''}[{steps}]"
    call = f"{then.get('task')}({describe_params(then.get('args') or [], then.get('kwargs') or {})})"
    return call if then.get("when") is None else f"{call} when {describe_cond(then['when'])}"


def mailbox_table(messages: Sequence[StoredMessage], now: float | None = None) -> Table:
    """The job's mailbox, oldest first: each message, and the stage that took it (if one did)."""
    now = time.time() if now is None else now
    table = Table(Column("message", overflow="fold"), Column("name", overflow="fold"),
                  Column("payload", overflow="fold"), Column("sent", no_wrap=True), Column("taken", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, title="mailbox",
                  title_justify="left")  # fmt: skip
    for message in messages:
        taken = "" if message.consumed_at is None else f"by stage {message.stage} at {stamp(message.consumed_at, now)}"
        table.add_row(escape(message.id), escape(message.name or "(unnamed)"), escape(short(message.payload)),
                      stamp(message.at, now), taken or "[dim]waiting in the mailbox[/dim]")  # fmt: skip
    return table
