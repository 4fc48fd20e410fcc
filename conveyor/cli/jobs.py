"""Commands on jobs: ``enqueue``, ``jobs`` (a listing), ``job`` (one job), ``cancel``, ``retry``.
A job may be named by a unique prefix of its id, as the listing shows it."""

from __future__ import annotations

import time
from typing import Any

import click
import msgspec
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from .. import codec
from ..app import App
from ..backends.base import JobQuery
from ..errors import ConveyorError, JobNotFound
from ..job import Job, Status
from ..stage_view import stage_views
from .common import (
    age,
    app_option,
    console,
    json_option,
    not_negative,
    open_app,
    parse_json,
    parse_priority,
    print_json,
    priority_name,
    seconds,
    status_text,
    url_option,
    when,
)
from .stage_table import mailbox_table, settings_rows, stages_table

#: Fields a person does not need to read a job: the run's fencing token and lease (``--raw`` shows them).
INTERNAL = ("token", "lease_expires_at")
#: Fields left out of the table for a person: a plain one-stage job's stage fields say nothing, and
#: the progress bar under the table shows the progress.
QUIET_FIELDS = ("stage", "stages", "results", "progress", "progress_message", "trace")
#: A pipeline's fields that only a pipeline job has (a plain job's table leaves them out).
PIPELINE_FIELDS = ("pipeline", "deadline", "wait_until", "waiting_for", "inbox", "stage_log")
#: A pipeline's fields the stages table, the settings rows and the mailbox show better.
STAGED_FIELDS = ("stage", "stages", "results", "stage_log", "pipeline", "wait_until", "waiting_for", "inbox")
#: Times among the fields not named ``*_at``.
TIME_FIELDS = ("deadline", "wait_until")
AMBIGUOUS_SHOWN = 5


def find_job(app: App, given: str) -> Job:
    """The job whose id is ``given``, else the one job whose id starts with it; JobNotFound for
    none, ConveyorError naming some matches when the prefix is not unique."""
    if app.backend.get(given) is not None:
        return app.job(given)
    matches = app.backend.list_jobs(JobQuery(id_prefix=given, limit=AMBIGUOUS_SHOWN + 1))
    if not matches:
        raise JobNotFound(given)
    if len(matches) > 1:
        shown = ", ".join(job.id for job in matches[:AMBIGUOUS_SHOWN])
        more = ", ..." if len(matches) > AMBIGUOUS_SHOWN else ""
        raise ConveyorError(f"id prefix {given!r} is ambiguous: it matches {shown}{more}; give more of the id")
    return app.job(matches[0].id)


def public(job: Job, raw: bool = False) -> dict[str, Any]:
    """A job as a JSON-ready dict: internals (the fencing token, the lease) left out unless ``raw``."""
    data = job.to_dict()
    if not raw:
        for name in INTERNAL:
            data.pop(name, None)
    return data


@click.command()
@click.argument("task")
@click.option("--args", "args_json", help="Positional arguments as a JSON array.")
@click.option("--kwargs", "kwargs_json", help="Keyword arguments as a JSON object.")
@click.option("--queue", default=None, help="Queue (else the task's, with --app; else 'default').")
@click.option("--priority", default=None, help="low, normal, high or critical (else the task's; else normal).")
@click.option("--delay", type=float, default=None, help="Seconds before the job is due.")
@click.option("--key", default=None, help="Uniqueness key while the job is unfinished.")
@click.option("--max-retries", type=click.IntRange(min=0), default=None,
              help="Retries after a failure (else the task's, with --app; else 0).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a run may take (else the task's, with --app; else none).")  # fmt: skip
@app_option
@url_option
def enqueue(
    task: str, args_json: str | None, kwargs_json: str | None, queue: str | None, priority: str | None,
    delay: float | None, key: str | None, max_retries: int | None, timeout: float | None, app_path: str | None,
    url: str | None,
) -> None:  # fmt: skip
    """Enqueue a job of TASK (a task name) and print its id.

    With --app module:app (or $CONVEYOR_APP) the task's own options apply (its queue, priority,
    retries, time-out), as when your code calls it. Without it, those options are NOT known here:
    the job gets queue 'default', priority normal, no retries and no time-out unless you give them
    as flags. Flags always win over the task's options."""
    args = parse_json(args_json, list, "--args")
    kwargs = parse_json(kwargs_json, dict, "--kwargs")
    given = {"queue": queue, "delay": delay, "key": key, "max_retries": max_retries, "timeout": timeout}
    options: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    if priority is not None:
        options["priority"] = parse_priority(priority)
    app = open_app(url, app_path)
    if app_path and task not in app.tasks:
        known = ", ".join(sorted(app.tasks)) or "none"
        click.echo(f"warning: {app_path} has no task {task!r} (it has: {known}); its options are not known", err=True)
    try:
        handle = app.enqueue(task, args, kwargs, **options)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(handle.id)


@click.command()
@click.option("--queue", default=None)
@click.option("--status", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--task", default=None)
@click.option("--schedule", "scheduled_by", default=None, help="Only the jobs this schedule's ticks enqueued.")
@click.option("--limit", default=50, show_default=True, callback=not_negative)
@click.option("--offset", default=0, show_default=True, callback=not_negative)
@json_option
@app_option
@url_option
def jobs(
    queue: str | None, status: str | None, task: str | None, scheduled_by: str | None, limit: int, offset: int,
    as_json: bool, app_path: str | None, url: str | None,
) -> None:  # fmt: skip
    """List jobs, newest first. Ids are never shortened; any unique prefix of one names the job."""
    app = open_app(url, app_path, read_only=True)
    found = app.jobs(queue=queue, status=status, task=task, scheduled_by=scheduled_by, limit=limit, offset=offset)
    if as_json:
        print_json([public(job) for job in found])
        return
    console.print(jobs_table(found, wide=console.width >= WIDE))


WIDE = 120  #: columns from which the listing adds priority, creation time (with its zone) and duration


def jobs_table(found: list[Job], wide: bool) -> Table:
    """The listing: ids in full (never cut; copy one, or any unique prefix of it), task and queue
    folded if need be, the rest kept whole. At 80 columns: id, task, queue, status, tries, age."""
    now = time.time()
    width = max((len(job.id) for job in found), default=2)
    columns = [Column("id", no_wrap=True, min_width=width), Column("task", overflow="fold"),
               Column("queue", overflow="fold"), Column("status", no_wrap=True), Column("tries", no_wrap=True),
               Column("age", no_wrap=True)]  # fmt: skip
    if wide:
        columns += [Column("pri", no_wrap=True), Column("created", no_wrap=True), Column("took", no_wrap=True)]
    table = Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for job in found:
        row = [job.id, job.task, job.queue, status_text(job), str(job.attempts), age(now - job.created_at)]
        if wide:
            row += [priority_name(job.priority), when(job.created_at), seconds(job.elapsed)]
        table.add_row(*row)
    return table


@click.command()
@click.argument("job_id")
@click.option("--raw", is_flag=True, help="Every field as stored, internals (the run's token, its lease) included.")
@json_option
@app_option
@url_option
def job(job_id: str, raw: bool, as_json: bool, app_path: str | None, url: str | None) -> None:
    """Show one job.

    JOB_ID may be a unique prefix of the id. Internals (the run's token, its lease) only with --raw.
    A pipeline job also shows its stages (the current one marked ▶: what it waits for, each
    stage's result, times and runs), its settings, and its mailbox of messages."""
    app = open_app(url, app_path, read_only=True)
    record = find_job(app, job_id)
    mailbox = app.messages(record.id)
    views = stage_views(record) if record.is_pipeline else []
    if as_json:
        data = public(record, raw)
        if record.is_pipeline:
            data["stage_view"] = [view.to_dict() for view in views]
        if mailbox or record.is_pipeline:
            data["mailbox"] = msgspec.to_builtins(mailbox)
        print_json(data)
        return
    table = Table("field", "value", show_header=False)
    for name, value in public(record, raw).items():
        if not raw and _quiet(record, name):
            continue
        table.add_row(name, _shown(name, value, raw))
    if record.is_pipeline and not raw:
        for name, text in settings_rows(record):
            table.add_row(name, escape(text))
    console.print(table)
    if record.is_pipeline:
        console.print(stages_table(views, console.width))
    if mailbox:
        console.print(mailbox_table(mailbox))
    bar = "█" * int(record.progress // 5) + "░" * (20 - int(record.progress // 5))
    console.print(f"progress {bar} {record.progress:.0f}% {record.progress_message}")


def _quiet(record: Job, name: str) -> bool:
    """Whether a person's table leaves field ``name`` out (``--raw`` shows every field)."""
    if name.startswith("progress"):
        return True  # the bar under the table shows it
    if record.is_pipeline:
        return name in STAGED_FIELDS
    if name in ("owner", "notify"):
        return record.owner is None and not record.notify
    return name in QUIET_FIELDS or name in PIPELINE_FIELDS


def _shown(name: str, value: Any, raw: bool) -> str:
    """One field as a person reads it (``raw``: as stored)."""
    if value is None:
        return ""
    if raw:
        return value if isinstance(value, str) else codec.dumps(value)
    if name.endswith("_at") or name in TIME_FIELDS:
        return when(value)
    if name == "priority":
        return priority_name(value)
    if name in ("elapsed", "timeout", "result_ttl"):
        return seconds(value)
    if name == "error":
        return f"{value['type']}: {value['message']}\n{value['traceback']}".rstrip()
    if isinstance(value, (dict, list)):
        return codec.dumps(value)
    return str(value)


@click.command()
@click.argument("job_id")
@app_option
@url_option
def cancel(job_id: str, app_path: str | None, url: str | None) -> None:
    """Cancel a job that has not finished.

    JOB_ID may be a unique prefix of the id."""
    app = open_app(url, app_path, read_only=True)
    before = find_job(app, job_id)
    if before.status is Status.CANCELLED:
        console.print(f"{before.id} was already cancelled")
        return
    record = app.cancel(before.id)
    if record.status is not Status.CANCELLED:
        raise ConveyorError(f"job {record.id} already finished ({record.status.value}); nothing to cancel")
    console.print(f"{record.id} {status_text(record)}")


@click.command()
@click.argument("job_id")
@click.option("--reset", is_flag=True, help="Also zero its attempt and retry counters.")
@app_option
@url_option
def retry(job_id: str, reset: bool, app_path: str | None, url: str | None) -> None:
    """Queue a failed or cancelled job again.

    JOB_ID may be a unique prefix of the id."""
    app = open_app(url, app_path, read_only=True)
    record = app.retry(find_job(app, job_id).id, reset=reset)
    console.print(f"{record.id} {status_text(record)}")


COMMANDS = [enqueue, jobs, job, cancel, retry]
