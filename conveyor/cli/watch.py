"""``conveyor watch``: the queues live (a tally by queue and status, throughput, the latest events),
or one job followed to its end (--job), exiting with that job's exit code."""

from __future__ import annotations

import sys
import time
from collections import deque

import click
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from ..app import App
from ..events import Event, EventKind
from ..job import ExitCode, Status
from ..operations import Switches
from .admin import NOT_YET
from .common import app_option, console, open_app, url_option
from .events import ENDS, FINISHED, TABLE, between, event_line, events_view, follow, job_id_of, latest, wanted

RECENT = 15  #: events the live view shows (fewer if the terminal is not tall enough)
MIN_SHOWN = 3  #: events shown however short the terminal
WINDOW = 5.0  #: seconds over which throughput is counted
TICK = 0.25  #: seconds between two frames of the live view (4 a second)
TALLY_EVERY = 1.0  #: seconds between two reads of the counts and switches
INTERRUPTED = 130  #: exit code of ``watch --job`` stopped by Ctrl-C before the job ended


# --job: one job to its end -------------------------------------------------------------------
def job_finished(app: App, job_id: str) -> bool:
    """Whether the job has ended for now: finished, or gone (discarded, pruned)."""
    record = app.backend.get(job_id)
    return record is None or record.status.finished


def exit_code_of(app: App, job_id: str, ended: Event | None) -> int:
    """The exit code ``watch --job`` ends with: the job's stored one (0 succeeded, 1 failed, 130
    timed out or cancelled, 137 its worker died), else what its last event says (a discarded job: 0)."""
    record = app.backend.get(job_id)
    if record is not None and record.status.finished and record.exit_code is not None:
        return int(record.exit_code)
    if ended is None:
        return int(ExitCode.SUCCESS)
    if ended.kind == EventKind.FAILED:
        return int(ended.data.get("exit_code", ExitCode.EXECUTION_ERROR))
    if ended.kind in (EventKind.TIMED_OUT, EventKind.CANCELLED):
        return int(ended.data.get("exit_code", ExitCode.ABORTED))
    return int(ExitCode.SUCCESS)


def watch_job(app: App, job_id: str) -> int:
    """Print every event of the job, from its first, until it ends; return its exit code. A job
    that has already ended prints its history and returns at once. An event that ends the job
    counts only if the job is still finished when it is read (a manual retry starts it again). A
    finished job whose events are gone (older than the event TTL) returns at once too."""
    ended: Event | None = None
    last = 0
    for event in between(app, 0, sys.maxsize, {"job_id": job_id}):
        click.echo(event_line(event))
        ended, last = (event if event.kind in ENDS else None), event.seq
    if (ended is not None or last == 0) and job_finished(app, job_id):
        return exit_code_of(app, job_id, ended)
    for event in follow(app, last, job_id=job_id):
        click.echo(event_line(event))
        ended = event if event.kind in ENDS else None
        if ended is not None and job_finished(app, job_id):
            return exit_code_of(app, job_id, ended)
    raise AssertionError("a subscription ends only when closed")  # pragma: no cover


# the live view ---------------------------------------------------------------------------------
class WatchView:
    """What the live view shows: the counts by queue and status, the switches, the jobs finished
    per second over the last WINDOW seconds (from the events), and the latest events."""

    def __init__(self, queue: str | None, task: str | None, started: float) -> None:
        self.queue = queue
        self.task = task
        self.started = started  #: throughput counts only the events seen since
        self.recent: deque[Event] = deque(maxlen=RECENT)
        self.finished: deque[float] = deque()  #: when each run seen since ``started`` finished
        self.tally: dict[str, dict[Status, int]] = {}
        self.switches = Switches()

    def add(self, event: Event) -> None:
        """An event arrived: show it, and count it if it finished a run."""
        self.recent.append(event)
        if event.kind in FINISHED and event.at >= self.started:
            self.finished.append(event.at)

    def read_store(self, app: App) -> None:
        """Refresh the counts and the switches from the store."""
        counts = app.stats()
        if self.queue is not None:
            counts = {self.queue: counts.get(self.queue, {})}
        self.tally = counts
        self.switches = app.switches()

    def throughput(self, now: float) -> float | None:
        """Runs finished per second over the last WINDOW seconds (or since the view started, if
        that is shorter); None during the first second, too short to say."""
        since = max(self.started, now - WINDOW)
        while self.finished and self.finished[0] < since:
            self.finished.popleft()
        if now - since < 1.0:
            return None
        return sum(1 for at in self.finished if at <= now) / (now - since)

    def render(self, now: float, width: int, height: int | None = None) -> RenderableType:
        """One frame for a terminal ``width`` columns wide (and ``height`` lines, if known: the
        newest events that fit, one line each): the tally, the throughput and switches, the
        latest events."""
        shown = " ".join(f"{name}={value}" for name, value in (("queue", self.queue), ("task", self.task)) if value)
        parts: list[RenderableType] = [Text.from_markup(
            f"[bold]conveyor watch[/bold] {escape(shown)}  {time.strftime('%H:%M:%S', time.localtime(now))}"
            "  (Ctrl-C to stop)"
        )]  # fmt: skip
        parts.append(self._tally())
        rate = self.throughput(now)
        said = "measuring..." if rate is None else f"{rate:.1f} jobs/s"
        parts.append(Text.from_markup(f"throughput [bold]{said}[/bold] (runs finished, last {WINDOW:.0f} s)"))
        off = self._switches_text()
        if off:
            parts.append(Text.from_markup(off))
        recent = list(self.recent)
        if height is not None:  # what is left under the rest: its lines, and the table's header
            left = height - len(self.tally) - len(parts) - 6 - (3 if width >= TABLE else 0)
            recent = recent[len(recent) - max(MIN_SHOWN, left) :]
        parts.append(events_view(recent, width, compact=True))
        return Group(*parts)

    def _tally(self) -> Table:
        statuses = [s for s in Status if s not in NOT_YET or any(row.get(s) for row in self.tally.values())]
        table = Table(Column("queue", overflow="fold", min_width=min(max(map(len, self.tally), default=5), 16)),
                      *(Column(s.value, justify="right", no_wrap=True) for s in statuses),
                      Column("total", justify="right", no_wrap=True),
                      box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
        for name, row in self.tally.items():
            style = "bold" if name == "all" else "yellow" if name in self.switches.paused_queues else None
            table.add_row(escape(name), *(str(row.get(s, 0)) for s in statuses), str(sum(row.values())), style=style)
        return table

    def _switches_text(self) -> str:
        said = []
        if self.switches.everything:
            said.append("[red]every task is disabled (conveyor enable --all)[/red]")
        if self.switches.paused_queues:
            said.append(f"[yellow]paused queues: {escape(', '.join(sorted(self.switches.paused_queues)))}[/yellow]")
        if self.switches.disabled_tasks:
            said.append(f"[yellow]disabled tasks: {escape(', '.join(sorted(self.switches.disabled_tasks)))}[/yellow]")
        return "  ".join(said)


def live_view(app: App, queue: str | None, task: str | None) -> None:
    """Redraw the view about four times a second until Ctrl-C; between frames, take the events
    as they come (the subscription waits for them, woken by the store)."""
    recent, head = latest(app, RECENT, {"task": task, "queue": queue})
    view = WatchView(queue, task, time.time())
    for old in recent:
        view.add(old)
    view.read_store(app)
    read_at = next_frame = time.monotonic()
    start = max([head, *(old.seq for old in recent)])
    with (
        app.subscribe(after=start, poll=TICK) as subscription,
        Live(view.render(time.time(), console.width, console.height), console=console, auto_refresh=False) as live,
    ):
        while True:
            event = subscription.next_event(timeout=max(0.0, next_frame - time.monotonic()))
            if event is not None:
                if wanted(event, task, queue):
                    view.add(event)
                if time.monotonic() < next_frame:
                    continue
            if time.monotonic() - read_at >= TALLY_EVERY:
                view.read_store(app)
                read_at = time.monotonic()
            live.update(view.render(time.time(), console.width, console.height), refresh=True)
            next_frame = time.monotonic() + TICK


def plain_lines(app: App, queue: str | None, task: str | None) -> None:
    """Not a terminal: the latest events, then each new one, one line each, until stopped."""
    recent, head = latest(app, RECENT, {"task": task, "queue": queue})
    for event in recent:
        click.echo(event_line(event))
    for event in follow(app, max([head, *(event.seq for event in recent)]), task=task, queue=queue):
        click.echo(event_line(event))


@click.command()
@click.option("--queue", default=None, help="Only this queue: its counts and its events.")
@click.option("--task", default=None, help="Only this task's events (and throughput).")
@click.option("--job", "job_given", default=None, metavar="ID",
              help="Follow one job (a unique id prefix will do) to its end and exit with its exit code.")  # fmt: skip
@app_option
@url_option
def watch(queue: str | None, task: str | None, job_given: str | None, app_path: str | None, url: str | None) -> None:
    """Watch the queues live, or follow one job (--job).

    The live view: counts by queue and status, throughput, the latest events. Throughput is runs
    finished (succeeded, failed, timed out) per second over the last 5 s. When stdout is not a
    terminal, prints one line per event instead. --job ID prints each event of that job, from its
    first, and exits when the job ends, with its exit code: 0 succeeded, 1 failed, 130 timed out or
    cancelled, 137 its worker kept dying (a job already ended exits at once)."""
    if job_given is not None and (queue is not None or task is not None):
        raise click.UsageError("--job follows one job; it takes no --queue or --task")
    app = open_app(url, app_path, read_only=True)
    try:
        if job_given is not None:
            sys.exit(watch_job(app, job_id_of(app, job_given)))
        if console.is_terminal:
            live_view(app, queue, task)
        else:
            plain_lines(app, queue, task)
    except KeyboardInterrupt:  # Ctrl-C: how watching ends; a job not yet ended exits 130
        sys.exit(INTERRUPTED if job_given is not None else 0)


COMMANDS = [watch]
