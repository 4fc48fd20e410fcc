"""The ``conveyor`` command: run workers, enqueue, inspect and control jobs, prune, demo."""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Column, Table

from . import codec
from .app import App, default_url, load_app
from .errors import ConveyorError
from .job import Job, Priority, Status

console = Console()

url_option = click.option(
    "--url", envvar="CONVEYOR_URL", default=None, show_default="$CONVEYOR_URL, else sqlite:///conveyor.db",
    help="Store URL, e.g. sqlite:///conveyor.db.",
)  # fmt: skip


def _app(url: str | None) -> App:
    return App(url or default_url())


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _priority(value: str) -> int:
    try:
        return int(Priority[value.upper()]) if not value.isdigit() else int(Priority(int(value)))
    except (KeyError, ValueError):
        raise click.BadParameter(f"{value!r}: use one of {', '.join(p.name.lower() for p in Priority)}") from None


def _duration(value: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r}: write a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]


def _json(value: str | None, kind: type, name: str) -> Any:
    if value is None:
        return kind()
    try:
        decoded = codec.loads(value)
    except Exception as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None
    if not isinstance(decoded, kind):
        raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}", param_hint=name)
    return decoded


class _Group(click.Group):
    """Turns conveyor's own errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="conveyor")
def main() -> None:
    """conveyor: a durable task runner. Jobs live in a store (a SQLite file by default)."""


@main.command()
@click.argument("app_path")
@click.option("-q", "--queues", default="default", show_default=True, help="Comma-separated queues to serve.")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Jobs run at once per process.")
@click.option("-p", "--processes", default=0, help="Worker processes under a supervisor (0: run in this process).")
@click.option("--grace", default=5.0, show_default=True, help="Seconds running jobs get to finish on SIGTERM.")
@click.option("--poll", default=1.0, show_default=True, help="Longest idle wait between claims, in seconds.")
@click.option("--stuck-after", default=5.0, show_default=True, help="With -p: seconds a timed-out sync task "
              "may hold its thread before its process is replaced.")  # fmt: skip
@click.option("--log-level", default="INFO", show_default=True)
@url_option
def worker(
    app_path: str, queues: str, concurrency: int, processes: int, grace: float, poll: float, stuck_after: float,
    log_level: str, url: str | None,
) -> None:  # fmt: skip
    """Run workers for APP_PATH (module:app) until SIGTERM or Ctrl-C."""
    from .supervisor import Supervisor
    from .worker import Worker, WorkerOptions

    level = getattr(logging, log_level.upper(), logging.INFO)
    try:
        options = WorkerOptions(
            queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
            concurrency=concurrency, grace=grace, poll=poll, stuck_after=stuck_after,
        ).check()  # fmt: skip
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
    except ValueError as exc:
        _fail(str(exc), 2)
    logging.basicConfig(level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    supervisor = Supervisor(app_path, processes, options, url=url, log_level=level) if processes > 0 else None
    try:
        app = supervisor.load() if supervisor else load_app(app_path)
    except ImportError as exc:
        _fail(str(exc), 1)
    if supervisor is not None:
        sys.exit(supervisor.run())
    if url:
        app.url = url
    code = Worker(app, options).run()  # non-zero: the worker stopped itself (a helper failed)
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)  # do not wait for a thread still stuck in a timed-out sync task


def _fail(message: str, code: int) -> NoReturn:
    """One clear line on stderr and exit ``code`` (2: bad usage, 1: it cannot run)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@main.command()
@click.argument("task")
@click.option("--args", "args_json", help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue", default=None, help="Queue (default: 'default').")
@click.option("--priority", default=None, help="low, normal, high or critical.")
@click.option("--delay", type=float, default=None, help="Seconds before the job is due.")
@click.option("--key", default=None, help="Uniqueness key while the job is unfinished.")
@click.option("--max-retries", type=int, default=None)
@url_option
def enqueue(
    task: str, args_json: str | None, kwargs_json: str | None, queue: str | None, priority: str | None,
    delay: float | None, key: str | None, max_retries: int | None, url: str | None,
) -> None:  # fmt: skip
    """Enqueue a job of TASK (a registered task name) and print its id."""
    args = _json(args_json, list, "--args")
    kwargs = _json(kwargs_json, dict, "--kwargs")
    options: dict[str, Any] = {"queue": queue, "delay": delay, "key": key, "max_retries": max_retries}
    if priority is not None:
        options["priority"] = _priority(priority)
    try:
        handle = _app(url).enqueue(task, args, kwargs, **options)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(handle.id)


@main.command()
@click.option("--queue", default=None)
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--task", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@url_option
def jobs(queue: str | None, status: str | None, task: str | None, limit: int, offset: int, url: str | None) -> None:
    """List jobs, newest first."""
    table = Table("id", "task", "queue", "pri", "status", "tries", "progress", "created", "elapsed")
    for job in _app(url).jobs(queue=queue, status=status, task=task, limit=limit, offset=offset):
        elapsed = "" if job.elapsed is None else f"{job.elapsed:.2f}s"
        table.add_row(job.id, job.task, job.queue, Priority(job.priority).name.lower(), _status(job),
                      str(job.attempts), f"{job.progress:.0f}%", _when(job.created_at), elapsed)  # fmt: skip
    console.print(table)


def _status(job: Job) -> str:
    colour = {"succeeded": "green", "failed": "red", "running": "cyan", "cancelled": "yellow"}.get(job.status.value)
    return f"[{colour}]{job.status.value}[/{colour}]" if colour else job.status.value


@main.command()
@click.argument("job_id")
@url_option
def job(job_id: str, url: str | None) -> None:
    """Show every field of one job."""
    record = _app(url).job(job_id)
    table = Table("field", "value", show_header=False)
    for name, value in record.to_dict().items():
        if name.endswith("_at"):
            value = _when(value)
        elif name == "error" and value:
            value = f"{value['type']}: {value['message']}\n{value['traceback']}".rstrip()
        elif isinstance(value, (dict, list)):
            value = codec.dumps(value)
        table.add_row(name, "" if value is None else str(value))
    console.print(table)
    bar = "█" * int(record.progress // 5) + "░" * (20 - int(record.progress // 5))
    console.print(f"progress {bar} {record.progress:.0f}% {record.progress_message}")


@main.command()
@click.argument("job_id")
@url_option
def cancel(job_id: str, url: str | None) -> None:
    """Cancel a job that has not finished."""
    record = _app(url).cancel(job_id)
    console.print(f"{record.id} {_status(record)}")


@main.command()
@click.argument("job_id")
@click.option("--reset", is_flag=True, help="Also zero its attempt and retry counters.")
@url_option
def retry(job_id: str, reset: bool, url: str | None) -> None:
    """Queue a failed or cancelled job again."""
    record = _app(url).retry(job_id, reset=reset)
    console.print(f"{record.id} {_status(record)}")


@main.command()
@click.option("--older-than", default=None, help="Delete finished jobs older than this (e.g. 7d, 12h); "
              "without it, those past their result TTL.")  # fmt: skip
@url_option
def prune(older_than: str | None, url: str | None) -> None:
    """Delete finished jobs."""
    seconds = None if older_than is None else _duration(older_than)
    console.print(f"pruned {_app(url).prune(seconds)} job(s)")


@main.command()
@url_option
def migrate(url: str | None) -> None:
    """Create or upgrade the store's schema. Idempotent, and safe to run from several hosts at once."""
    from .backends import open_backend

    backend = open_backend(url or default_url())
    try:
        applied = backend.setup(migrate=True)
    finally:
        backend.close()
    console.print(f"applied {', '.join(applied)}" if applied else "schema is up to date")


@main.command()
@url_option
def stats(url: str | None) -> None:
    """Job counts by queue and status."""
    counts = _app(url).stats()
    statuses = list(Status)
    table = Table(*(s.value for s in statuses), "total")
    table.columns.insert(0, Column("queue", no_wrap=True, min_width=max(map(len, counts), default=5)))
    for queue, row in counts.items():
        table.add_row(queue, *(str(row.get(s, 0)) for s in statuses), str(sum(row.values())),
                      style="bold" if queue == "all" else None)  # fmt: skip
    console.print(table)


@main.command()
@click.option("--jobs", "count", default=300, show_default=True, help="How many jobs to enqueue.")
@click.option("--keep", is_flag=True, help="Keep the demo's SQLite file and print its path.")
def demo(count: int, keep: bool) -> None:
    """Run a short demo on a temporary SQLite file: two worker processes, live progress, a summary."""
    from .demo import run_demo

    sys.exit(run_demo(count, keep=keep, console=console))


if __name__ == "__main__":
    main()
