"""Commands of schedules: ``schedules`` (the list; ``explain NAME``: the next fire times, with DST
notes; ``ticks NAME``: the audit trail), ``schedule pause|resume|remove NAME`` and ``scheduler``
(the scheduler loop alone, for those who do not fire ticks in their workers)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import msgspec
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from ..app import App
from ..backends import describe_url, open_backend
from ..errors import ConveyorError
from ..logs import FORMATS, configure_logging
from ..schedule_types import ScheduleRecord, TickOutcome, TickRecord
from ..signals import relay_signals
from .common import age, app_option, console, fail, import_app, json_option, open_app, print_json, url_option
from .stage_table import short
from .worker import _level

log = logging.getLogger("conveyor.cli")

OUTCOME_COLOURS = {
    TickOutcome.ENQUEUED: "green",
    TickOutcome.SKIPPED_OVERLAP: "yellow",
    TickOutcome.SKIPPED_PAUSED: "yellow",
    TickOutcome.MISSED: "red",
}


def zoned(ts: float | None, tz: str) -> str:
    """A moment in the schedule's zone: '2026-03-29 03:00:00 CEST' ('' for None)."""
    if ts is None:
        return ""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def relative(ts: float, now: float) -> str:
    """'in 4m', '12s ago' or 'due'."""
    if abs(ts - now) < 1:
        return "due" if ts <= now else "in 0s"
    return f"in {age(ts - now)}" if ts > now else f"{age(now - ts)} ago"


def describe(app: App, record: ScheduleRecord) -> str:
    """The schedule's spec in words; a spec conveyor cannot read says so rather than fail the list."""
    try:
        return app.describe_schedule(record)
    except (ValueError, TypeError) as exc:
        return f"invalid: {exc}"


def last_job_status(app: App, record: ScheduleRecord) -> str | None:
    """The status of the schedule's last job, 'pruned' if it is gone, None if it has none."""
    if record.last_job_id is None:
        return None
    job = app.backend.get(record.last_job_id)
    return "pruned" if job is None else job.view_status(app.clock()).value


@click.group(invoke_without_command=True)
@json_option
@app_option
@url_option
@click.pass_context
def schedules(ctx: click.Context, as_json: bool, app_path: str | None, url: str | None) -> None:
    """List the schedules: name, spec, zone, paused, last tick, next tick, last job's status.

    Code schedules (@app.periodic) appear once a worker has synced them; stored ones
    (app.schedule) at once. Subcommands: explain NAME (the next fire times), ticks NAME (the
    audit trail)."""
    if ctx.invoked_subcommand is not None:
        return
    app = open_app(url, app_path, read_only=True)
    found = app.schedules()
    now = app.clock()
    rows = [(record, describe(app, record), last_job_status(app, record)) for record in found]
    if as_json:
        print_json([{**msgspec.to_builtins(record), "spec": spec, "last_job_status": status}
                    for record, spec, status in rows])  # fmt: skip
        return
    if not found:
        click.echo("no schedules", err=True)
        return
    table = Table(Column("name", overflow="fold"), Column("spec", overflow="fold"), Column("tz", no_wrap=True),
                  Column("paused", no_wrap=True), Column("last tick", no_wrap=True),
                  Column("next tick", no_wrap=True), Column("last job", no_wrap=True), Column("source", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for record, spec, status in rows:
        last_job = "" if record.last_job_id is None else f"{record.last_job_id[:8]} {status}"
        next_tick = "" if record.paused else f"{zoned(record.next_at, record.tz)} ({relative(record.next_at, now)})"
        table.add_row(escape(record.name), escape(spec), escape(record.tz),
                      "[yellow]paused[/yellow]" if record.paused else "", zoned(record.last_tick_at, record.tz),
                      next_tick, escape(last_job), record.source.value)  # fmt: skip
    console.print(table)


@schedules.command()
@click.argument("name")
@click.option("--count", type=click.IntRange(1, 1000), default=10, show_default=True, help="Fire times shown.")
@json_option
@app_option
@url_option
def explain(name: str, count: int, as_json: bool, app_path: str | None, url: str | None) -> None:
    """The schedule's next fire times, in its zone, with a note where a DST change moves one.

    A schedule declared in the --app's code is explained even before a worker synced it."""
    app = open_app(url, app_path, read_only=True)
    stored = app.backend.get_schedule(name)
    record = stored or app.periodic_schedules.get(name)
    ticks = app.explain_schedule(name, count)  # ScheduleNotFound: one line, exit 1
    assert record is not None
    if as_json:
        print_json({"schedule": name, "spec": describe(app, record), "tz": record.tz, "paused": record.paused,
                    "ticks": [{"at": tick.at, "local": tick.local.isoformat(), "note": tick.note}
                              for tick in ticks]})  # fmt: skip
        return
    state = " (paused)" if record.paused else "" if stored else " (declared in code, not synced yet)"
    console.print(f"schedule {escape(name)}: {escape(describe(app, record))}{state}", highlight=False, soft_wrap=True)
    for tick in ticks:
        local = tick.local.strftime("%Y-%m-%d %H:%M:%S %Z")
        note = f"  {tick.note}" if tick.note else ""
        console.print(f"  {local}{escape(note)}", highlight=False, soft_wrap=True)


@schedules.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Listed at most.")
@json_option
@app_option
@url_option
def ticks(name: str, limit: int, as_json: bool, app_path: str | None, url: str | None) -> None:
    """The schedule's audit trail, newest first: each tick's outcome (enqueued and its job, skipped
    because the previous job was unfinished or while paused, missed) and when it was recorded."""
    app = open_app(url, app_path, read_only=True)
    record = app.get_schedule(name)
    found = app.schedule_ticks(name, limit)
    if as_json:
        print_json(msgspec.to_builtins(found))
        return
    if not found:
        click.echo(f"schedule {name} has fired no tick yet", err=True)
        return
    table = Table(Column("tick", no_wrap=True), Column("outcome", no_wrap=True), Column("job", no_wrap=True),
                  Column("recorded", no_wrap=True), Column("details", overflow="fold"),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for tick in found:
        colour = OUTCOME_COLOURS.get(tick.outcome, "")
        outcome = f"[{colour}]{tick.outcome.value}[/{colour}]" if colour else tick.outcome.value
        table.add_row(zoned(tick.tick_at, record.tz), outcome, escape(tick.job_id or ""),
                      zoned(tick.at, record.tz), escape(details(tick, record.tz)))  # fmt: skip
    console.print(table)


def details(tick: TickRecord, tz: str) -> str:
    """A tick record's data for a person: '12 ticks, until 2026-03-29 03:00:00 CEST'."""
    data = dict(tick.data)
    parts = []
    if "count" in data:
        count = data.pop("count")
        parts.append(f"{'over ' if data.pop('more', False) else ''}{count} tick{'s' if count != 1 else ''}")
    if isinstance(data.get("until"), (int, float)):
        parts.append(f"until {zoned(data.pop('until'), tz)}")
    if data:
        parts.append(short(data))
    return ", ".join(parts)


@click.group()
def schedule() -> None:
    """Pause, resume or remove a schedule by name."""


@schedule.command()
@click.argument("name")
@app_option
@url_option
def pause(name: str, app_path: str | None, url: str | None) -> None:
    """Stop the schedule's ticks until it is resumed (the ticks skipped meanwhile are recorded once)."""
    app = open_app(url, app_path, read_only=True)
    changed = app.pause_schedule(name)
    console.print(f"schedule {escape(name)} {'paused' if changed else 'was already paused'}", highlight=False)


@schedule.command()
@click.argument("name")
@app_option
@url_option
def resume(name: str, app_path: str | None, url: str | None) -> None:
    """Start a paused schedule again from its next tick after now: the ticks it skipped do not fire."""
    app = open_app(url, app_path, read_only=True)
    changed = app.resume_schedule(name)
    if not changed:
        console.print(f"schedule {escape(name)} was not paused", highlight=False)
        return
    record = app.get_schedule(name)
    console.print(f"schedule {escape(name)} resumed; next tick {zoned(record.next_at, record.tz)}", highlight=False)


@schedule.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove a schedule declared in code too (a worker of an app that "
              "still declares it puts it back when it starts).")  # fmt: skip
@app_option
@url_option
def remove(name: str, force: bool, app_path: str | None, url: str | None) -> None:
    """Remove a schedule and its tick history (the jobs it made stay)."""
    app = open_app(url, app_path, read_only=True)
    try:
        app.unschedule(name, force=force)
    except ValueError as exc:
        if isinstance(exc, ConveyorError):
            raise
        fail(str(exc), 1)
    console.print(f"schedule {escape(name)} removed", highlight=False)


@click.command()
@click.argument("app_path", metavar="MODULE[:APP]")
@click.option("--log-level", default="info", show_default=True, callback=_level,
              help="debug, info, warning, error or critical.")  # fmt: skip
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="json: one object per line, for log shippers.")  # fmt: skip
@url_option
def scheduler(app_path: str, log_level: int, log_format: str, url: str | None) -> None:
    """Fire schedules' ticks, and nothing else, until SIGTERM or Ctrl-C.

    Workers fire ticks themselves (unless started with --no-scheduler); run this for a scheduler
    apart from them. Any number may run: each tick still makes one job. At start it syncs the
    app's code schedules (@app.periodic) into the store, as a worker does."""
    from ..scheduler import Scheduler

    configure_logging(log_level, log_format)
    app = import_app(app_path)
    app.use_url(url)
    open_backend(app.url, migrate=False).close()  # a wrong URL, password or database fails here, at once
    stopping = threading.Event()

    def on_signal(signum: int) -> None:
        log.info("scheduler got %s: stopping", signal.Signals(signum).name)
        stopping.set()

    relay_signals([signal.SIGTERM, signal.SIGINT], on_signal)
    log.info("scheduler started: store %s (from %s); %d code schedule(s)", describe_url(app.url), app.url_source,
             len(app.periodic_schedules))  # fmt: skip
    runner = Scheduler(app)
    runner.run(stopping)
    log.info("scheduler stopped: %d tick(s) fired here, %d fired first by another", runner.fired, runner.lost)


COMMANDS = [schedules, schedule, scheduler]
