"""Commands that operate the system rather than one job: ``workers`` and ``queues`` (what runs,
what waits), ``pause`` / ``resume`` (queues), ``disable`` / ``enable`` (tasks, or everything),
``stop-workers``, and ``health`` (a probe: exit 0 healthy, 1 not)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import click
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from ..app import App
from ..backends import describe_url, open_backend
from ..errors import ConveyorError, StoreError
from ..health import Health
from ..operations import WorkerInfo, WorkerState, check_name
from .common import age, app_option, console, fail, json_option, open_app, print_json, url_option

AMBIGUOUS_SHOWN = 5
_STATE_COLOURS = {WorkerState.RUNNING: "green", WorkerState.STOPPING: "yellow", WorkerState.DEAD: "red",
                  WorkerState.STOPPED: "dim"}  # fmt: skip


# listings -----------------------------------------------------------------------------------
@click.command()
@json_option
@app_option
@url_option
def workers(as_json: bool, app_path: str | None, url: str | None) -> None:
    """List the worker processes registered in the store.

    Newest first. jobs: in flight / concurrency; seen: its last heartbeat. A worker not seen for a
    while is marked dead by the leader; the rows of stopped and dead workers go after an hour."""
    found = open_app(url, app_path, read_only=True).workers()
    if as_json:
        print_json(found)
        return
    console.print(workers_table(found, time.time()))


def workers_table(found: Sequence[WorkerInfo], now: float) -> Table:
    """The registry for a person: ids in full (a unique prefix names one for ``stop-workers``);
    jobs: those in flight / its concurrency."""
    queues_width = max((len(",".join(info.queues)) for info in found), default=6)
    table = Table(Column("id", no_wrap=True), Column("host", overflow="fold"), Column("pid", justify="right"),
                  Column("queues", overflow="fold", min_width=min(queues_width, 20)),
                  Column("jobs", justify="right", no_wrap=True), Column("state", no_wrap=True),
                  Column("seen", justify="right", no_wrap=True), Column("leader", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for info in found:
        colour = _STATE_COLOURS.get(info.state, "")
        state = f"[{colour}]{info.state.value}[/{colour}]" if colour else info.state.value
        if info.stop_requested and info.state in (WorkerState.RUNNING, WorkerState.STOPPING):
            state += " (stop asked)"
        table.add_row(escape(info.id), escape(info.host), str(info.pid), escape(",".join(info.queues)),
                      f"{info.in_flight}/{info.concurrency}", state, f"{age(now - info.last_seen)} ago",
                      "yes" if info.leader else "")  # fmt: skip
    return table


@click.command()
@json_option
@app_option
@url_option
def queues(as_json: bool, app_path: str | None, url: str | None) -> None:
    """List the queues: paused or not, jobs by status.

    Every queue that has jobs, or is paused, with the oldest due job's age. A queued job not due yet
    counts as scheduled; "oldest due" is how long the longest-waiting due job has waited."""
    found = open_app(url, app_path, read_only=True).queues()
    if as_json:
        print_json(found)
        return
    now = time.time()
    table = Table(Column("queue", overflow="fold", min_width=5), Column("paused", no_wrap=True),
                  *(Column(name, justify="right", no_wrap=True) for name in ("queued", "scheduled", "running",
                                                                             "failed")),
                  Column("oldest due", justify="right", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for info in found:
        oldest = "" if info.oldest_due is None else age(now - info.oldest_due)
        table.add_row(escape(info.name), "[yellow]paused[/yellow]" if info.paused else "", str(info.queued),
                      str(info.scheduled), str(info.running), str(info.failed), oldest)  # fmt: skip
    console.print(table)


# switches -------------------------------------------------------------------------------------
def _switch(names: Sequence[str], turn: Callable[[str], bool], done: str, already: str) -> None:
    """Turn each named switch, saying per name whether that changed anything."""
    for name in names:
        try:
            changed = turn(name)
        except ValueError as exc:
            fail(str(exc), 2)
        console.print(escape(done.format(name) if changed else already.format(name)), highlight=False, soft_wrap=True)


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@app_option
@url_option
def pause(names: tuple[str, ...], app_path: str | None, url: str | None) -> None:
    """Pause queues: no worker claims their jobs until resumed.

    Jobs running now finish; enqueueing goes on. Effective on every host as soon as this returns."""
    app = open_app(url, app_path)
    _switch(names, app.pause_queue, "paused queue {}", "queue {} was already paused")


@click.command()
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@app_option
@url_option
def resume(names: tuple[str, ...], app_path: str | None, url: str | None) -> None:
    """Resume paused queues: workers claim their jobs again."""
    app = open_app(url, app_path)
    _switch(names, app.resume_queue, "resumed queue {}", "queue {} was not paused")


def _tasks_or_all(names: tuple[str, ...], everything: bool) -> None:
    if everything and names:
        raise click.UsageError("give TASK names or --all, not both")
    if not everything and not names:
        raise click.UsageError("give one or more TASK names, or --all")


@click.command()
@click.argument("names", nargs=-1, metavar="TASK...")
@click.option("--all", "everything", is_flag=True, help="Every task: no job of any queue is claimed.")
@app_option
@url_option
def disable(names: tuple[str, ...], everything: bool, app_path: str | None, url: str | None) -> None:
    """Disable tasks (or --all): their jobs are not claimed.

    Their queued jobs stay queued, untouched, until enabled; runs going on finish; enqueueing goes
    on."""
    _tasks_or_all(names, everything)
    app = open_app(url, app_path)
    if everything:
        _switch([""], lambda _: app.disable_all(), "disabled every task", "every task was already disabled")
    else:
        _switch(names, app.disable_task, "disabled task {}", "task {} was already disabled")


@click.command()
@click.argument("names", nargs=-1, metavar="TASK...")
@click.option("--all", "everything", is_flag=True, help="Undo disable --all (tasks disabled by name stay disabled).")
@app_option
@url_option
def enable(names: tuple[str, ...], everything: bool, app_path: str | None, url: str | None) -> None:
    """Enable disabled tasks (or undo disable --all).

    --all undoes disable --all only: tasks disabled by name stay disabled."""
    _tasks_or_all(names, everything)
    app = open_app(url, app_path)
    if everything:
        _switch([""], lambda _: app.enable_all(), "enabled every task", "disable --all was not in force")
    else:
        _switch(names, app.enable_task, "enabled task {}", "task {} was not disabled")


# stopping workers ---------------------------------------------------------------------------
def split_queues(given: Sequence[str]) -> list[str]:
    """``--queue`` values, each possibly comma-separated as in ``worker -q a,b``; a usage error
    for an empty name."""
    try:
        return [check_name("queue", name.strip()) for value in given for name in value.split(",")]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def worker_ids(app: App, given: Sequence[str]) -> list[str]:
    """Each given worker id, or the one running (or stopping) worker's id it is a unique prefix
    of; an unknown one is passed on as given (``stop_workers`` names it in its error)."""
    found = app.workers()
    known = {info.id for info in found}
    live = [info.id for info in found if info.state in (WorkerState.RUNNING, WorkerState.STOPPING)]
    chosen = []
    for name in given:
        matches = [name] if name in known else [worker_id for worker_id in live if worker_id.startswith(name)]
        if len(matches) > 1:
            shown = ", ".join(matches[:AMBIGUOUS_SHOWN]) + (", ..." if len(matches) > AMBIGUOUS_SHOWN else "")
            raise ConveyorError(f"worker id prefix {name!r} is ambiguous: it matches {shown}; give more of the id")
        chosen.append(matches[0] if matches else name)
    return chosen


@click.command(name="stop-workers")
@click.argument("given", nargs=-1, metavar="[WORKER_ID...]")
@click.option("--queue", "-q", "queue_names", multiple=True, metavar="QUEUE",
              help="Every running worker serving this queue (repeatable; a,b too).")  # fmt: skip
@app_option
@url_option
def stop_workers(given: tuple[str, ...], queue_names: tuple[str, ...], app_path: str | None, url: str | None) -> None:
    """Ask workers to stop gracefully, on any host.

    By WORKER_ID (a unique prefix will do; see conveyor workers) or by --queue. Each stops at its
    next heartbeat as on SIGTERM: it claims nothing more, lets running jobs finish within its grace
    period and hands the rest back. A supervisor does not replace a child stopped this way."""
    if bool(given) == bool(queue_names):
        raise click.UsageError("give WORKER_ID... or --queue QUEUE, one of the two")
    names = split_queues(queue_names)
    app = open_app(url, app_path, read_only=True)
    try:
        asked = app.stop_workers(queues=names) if names else app.stop_workers(worker_ids=worker_ids(app, given))
    except ValueError as exc:  # an unknown worker id
        fail(str(exc), 1)
    if not asked:
        console.print(escape(f"no running worker serves {', '.join(names)}"), highlight=False, soft_wrap=True)
    for worker_id in asked:
        console.print(escape(f"stop requested: {worker_id}"), highlight=False, soft_wrap=True)


# health ---------------------------------------------------------------------------------------
@click.command()
@click.option("--queue", "-q", "queue_names", multiple=True, metavar="QUEUE",
              help="A queue that must have a live worker even with no job due (repeatable; a,b too).")  # fmt: skip
@json_option
@app_option
@url_option
def health(queue_names: tuple[str, ...], as_json: bool, app_path: str | None, url: str | None) -> None:
    """Check the system for a probe: exit 0 healthy, 1 not.

    Exit 2 for bad usage. Unhealthy when the store cannot be reached, its schema is not current, or
    a queue with due jobs (or named by --queue) has no live worker; each problem is one line. Also
    shows the store's latency, the live workers per queue, the leader and the oldest due job's age."""
    named = split_queues(queue_names)
    app = open_app(url, app_path)
    try:
        open_backend(app.url, migrate=False, must_exist=True).close()  # never create an empty store to check it
        report = app.health(queues=named or None)
    except StoreError as exc:  # a missing SQLite file, a wrong password: unhealthy, said in one line
        report = Health(healthy=False, problems=[" ".join(str(exc).split())], checked_at=time.time(),
                        store=describe_url(app.url), reachable=False)  # fmt: skip
    if as_json:
        print_json(report.to_dict())
    else:
        print_health(report)
    sys.exit(0 if report.healthy else 1)


def print_health(report: Health) -> None:
    """The report for a person: the verdict (one line per problem), then what was found."""
    if report.healthy:
        console.print("[green]healthy[/green]")
    for problem in report.problems:
        console.print(f"[red]unhealthy[/red]: {escape(problem)}", highlight=False, soft_wrap=True)
    if not report.reachable:
        return
    schema = "current" if report.schema_current else f"needs {report.schema_latest}"
    latency = "" if report.latency_ms is None else f", {report.latency_ms:.2f} ms"
    console.print(f"store: {escape(report.store)}{latency}, schema {report.schema_version} ({schema})",
                  highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"leader: {escape(report.leader or 'none')}", highlight=False, soft_wrap=True)
    if report.everything_disabled:
        console.print("[yellow]every task is disabled (conveyor enable --all)[/yellow]", soft_wrap=True)
    names = sorted(set(report.workers_alive) | set(report.oldest_due_age) | set(report.paused_queues))
    if not names:
        return
    table = Table(Column("queue", overflow="fold", min_width=5), Column("live workers", justify="right"),
                  Column("oldest due", justify="right", no_wrap=True), Column("paused", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for name in names:
        waited = report.oldest_due_age.get(name)
        table.add_row(escape(name), str(report.workers_alive.get(name, 0)), "" if waited is None else age(waited),
                      "[yellow]paused[/yellow]" if name in report.paused_queues else "")  # fmt: skip
    console.print(table)


COMMANDS = [workers, queues, pause, resume, disable, enable, stop_workers, health]
