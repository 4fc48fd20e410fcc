"""The schedule part of ``conveyor demo``: ``demo_tasks.tick`` is declared with ``@app.periodic(every=1)``
(docs/schedules.md), so each worker process puts its schedule into the store when it starts, and both
fire its ticks, with no leader. The live display counts the ticks as they come; at the end the demo
pauses the schedule, and the summary proves from the jobs (``scheduled_by``, ``tick_at``) and the audit
trail (``schedule_ticks``) that each tick made exactly one job: none twice, none missing.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise

from rich.console import Console
from rich.text import Text

from . import demo_tasks as tasks
from .app import App
from .job import Job, Status
from .schedule_types import TickOutcome, TickRecord

NAME = tasks.TICK  #: the schedule: @app.periodic names it after its task
SETTLE_WITHIN = 5.0  #: seconds the schedule's last jobs get to finish once it is paused
HISTORY = 1000  #: tick records read back (the store keeps this many per schedule)


class Ticker:
    """The demo's schedule: followed live, paused at the end, summed up."""

    def __init__(self, app: App) -> None:
        self.app = app

    def jobs(self) -> list[Job]:
        """Every job the schedule's ticks made, oldest tick first."""
        found = self.app.jobs(scheduled_by=NAME, limit=10 * HISTORY)
        return sorted(found, key=lambda job: (job.tick_at or 0.0, job.id))

    def batch_counts(self, stats: dict[str, dict[Status, int]]) -> dict[Status, int]:
        """The jobs by status, the ticks' own queue left out: what the demo's progress bar counts."""
        ticks = stats.get(tasks.TICK_QUEUE, {})
        return {status: n - ticks.get(status, 0) for status, n in stats.get("all", {}).items()}

    def live(self) -> Text:
        """One line for the live display: the ticks fired so far."""
        jobs = self.jobs()
        head = f"  schedule {_short(NAME)} (every {tasks.TICK_EVERY:g} s):"
        if not jobs:
            return Text(f"{head} synced by the workers as they start")
        ran = sum(job.status is Status.SUCCEEDED for job in jobs)
        return Text(f"{head} {len(jobs)} ticks fired by the workers' schedulers, {ran} of their jobs ran; "
                    f"last tick {_hms(jobs[-1].tick_at)}")  # fmt: skip

    def stop(self) -> None:
        """Pause the schedule (no tick after this), and give its last jobs a moment to finish."""
        if self.app.backend.get_schedule(NAME) is None:
            return
        self.app.pause_schedule(NAME)
        deadline = time.monotonic() + SETTLE_WITHIN
        while time.monotonic() < deadline and not all(job.status.finished for job in self.jobs()):
            time.sleep(0.05)

    def summary(self, console: Console, keep: bool) -> bool:
        """The schedule's lines in the summary; True if every tick made exactly one job."""
        say = console.print
        record = self.app.backend.get_schedule(NAME)
        if record is None:
            say(f"[red]schedule {NAME}: no worker put it into the store[/red]")
            return False
        jobs = self.jobs()
        trail = sorted(self.app.schedule_ticks(NAME, HISTORY), key=lambda tick: tick.tick_at)
        twice = sorted(tick for tick, n in Counter(job.tick_at or 0.0 for job in jobs).items() if n > 1)
        gaps = [(a.tick_at, b.tick_at) for a, b in pairwise(trail) if b.tick_at - a.tick_at != tasks.TICK_EVERY]
        enqueued = {tick.tick_at: tick.job_id for tick in trail if tick.outcome is TickOutcome.ENQUEUED}
        matched = enqueued == {job.tick_at: job.id for job in jobs}
        span = f"{_hms(trail[0].tick_at)} to {_hms(trail[-1].tick_at)} UTC" if trail else "none"
        verdict = "none fired twice, none missing" if not twice and not gaps and matched else "[red]NOT ONE EACH[/red]"
        say(f"[bold]schedule[/bold]: {NAME} (@app.periodic(every={tasks.TICK_EVERY:g}), synced into the store by "
            f"the workers as they started) ticked {len(trail)} times, {span}: {len(jobs)} jobs, one per tick"
            f"{_others(trail)}: {verdict}")  # fmt: skip
        waits = [job.started_at - job.tick_at for job in jobs if job.started_at is not None and job.tick_at is not None]
        late = f"; each job started {min(waits):.2f}-{max(waits):.2f} s after its tick (priority HIGH)" if waits else ""
        say(f"  both worker processes ran a scheduler, with no leader: each tick is taken by a compare-and-set "
            f"on the schedule's next tick plus a unique (schedule, tick) record, in the job's transaction"
            f"{late}")  # fmt: skip
        if twice or gaps or not matched:
            say(f"  [red]ticks with two jobs: {twice}; gaps in the audit trail: {gaps}; trail and jobs agree: "
                f"{matched}[/red]")  # fmt: skip
        where = f" --url {self.app.url}" if keep else "  (run the demo with --keep to keep its store)"
        say(f"  paused at the end: [cyan]conveyor schedules[/cyan] lists it, [cyan]conveyor schedules ticks "
            f"{NAME}[/cyan] is its audit trail, [cyan]conveyor jobs --schedule {NAME}[/cyan] its jobs{where}; "
            "how to write a schedule: docs/schedules.md")  # fmt: skip
        return bool(trail) and not twice and not gaps and matched and record.paused


def _others(trail: list[TickRecord]) -> str:
    """The ticks that made no job, by outcome (overlap, paused, missed): '' when every tick made one."""
    counts = Counter(tick.outcome.value for tick in trail if tick.outcome is not TickOutcome.ENQUEUED)
    said = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    return f" that made one ({said}: no job, as the audit trail records)" if said else ""


def _hms(ts: float | None) -> str:
    return "?" if ts is None else f"{datetime.fromtimestamp(ts, UTC):%H:%M:%S}"


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
