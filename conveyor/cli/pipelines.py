"""Commands of multi-stage jobs: ``send`` (a message to a job, for its Message stage),
``notifications`` (what owners were told about their jobs) and ``reset`` (a finished job back to
its first stage). ``conveyor job ID`` shows a pipeline's stages (stage_table.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import click
import msgspec
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from .. import codec
from ..errors import ConveyorError
from ..job import Job
from ..messages import Delivery, Notification
from ..pipeline import describe_stage
from .common import app_option, console, fail, json_option, open_app, print_json, stamp, status_text, url_option
from .jobs import find_job
from .stage_table import short


def parse_payload(value: str | None) -> Any:
    """``--payload``: any JSON value (none: null); a usage error naming the flag otherwise."""
    if value is None:
        return None
    try:
        return codec.loads(value)
    except Exception as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from None


def message_stage(job: Job, name: str) -> int | None:
    """The first Message stage named ``name`` at or after the job's current stage (None: none is
    ahead, so the message will wait in the mailbox for ever)."""
    for index, frozen in enumerate(job.stages or []):
        if index >= job.stage and frozen.get("kind") == "message" and (frozen.get("name") or "") == name:
            return index
    return None


@click.command()
@click.argument("job_id")
@click.option("--payload", "payload_json", default=None, metavar="JSON",
              help="The message's payload, any JSON value (the Message stage's result); default null.")  # fmt: skip
@click.option("--name", default=None, help="The Message stage it is for (Message('NAME')); default: unnamed.")
@click.option("--id", "message_id", default=None, metavar="MESSAGE_ID",
              help="Unique per job: sending the same id again is a duplicate and changes nothing. "
                   "Give one so that a retried send is safe; default: a new random id.")  # fmt: skip
@json_option
@app_option
@url_option
def send(
    job_id: str, payload_json: str | None, name: str | None, message_id: str | None, as_json: bool,
    app_path: str | None, url: str | None,
) -> None:  # fmt: skip
    """Send a message to a job (for its Message stage).

    A job waiting on a Message stage of that --name resumes at once, the payload becoming the
    stage's result; a job that has not got there yet keeps the message in its mailbox and takes
    it when it does. JOB_ID may be a unique prefix of the id. A finished or unknown job is an
    error (exit 1); a repeated --id is reported as a duplicate (exit 0)."""
    payload = parse_payload(payload_json)
    app = open_app(url, app_path, read_only=True)
    record = find_job(app, job_id)
    the_id = message_id if message_id is not None else os.urandom(16).hex()
    try:
        delivery = app.send_message(record.id, payload, name=name, message_id=the_id)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConveyorError):
            raise  # a finished job (InvalidTransition): exit 1, as every conveyor error
        raise click.UsageError(str(exc)) from None
    ahead = message_stage(record, name or "")
    if as_json:
        print_json({"job_id": record.id, "message_id": the_id, "name": name or "", "delivery": delivery.value})
    else:
        console.print(escape(delivery_text(record, the_id, name or "", delivery, ahead)), highlight=False,
                      soft_wrap=True)  # fmt: skip
    if delivery is Delivery.STORED and ahead is None:
        stage = f"Message({name!r})" if name else "Message() (unnamed)"
        click.echo(f"warning: job {record.id} has no {stage} stage at or after its current stage "
                   f"{record.stage}; the message will stay in its mailbox", err=True)  # fmt: skip


def delivery_text(job: Job, message_id: str, name: str, delivery: Delivery, ahead: int | None) -> str:
    """What became of a message, in one line."""
    what = f"message {message_id}" + (f" ({name})" if name else "")
    if delivery is Delivery.RESUMED:
        return f"{what}: job {job.id} resumed at stage {job.stage}, the payload is its result"
    if delivery is Delivery.DUPLICATE:
        return f"{what}: duplicate, already sent to job {job.id}; nothing changed"
    where = "" if ahead is None or job.stages is None else f", for stage {ahead} ({describe_stage(job.stages[ahead])})"
    return f"{what}: stored in job {job.id}'s mailbox{where}; it is taken when the job gets there"


@click.command()
@click.option("--owner", default=None, help="This owner's notifications (else everyone's).")
@click.option("--unread", is_flag=True, help="Only those not marked read.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Listed at most.")
@click.option("--mark-read", is_flag=True, help="Then mark the listed ones read (needs --owner).")
@json_option
@app_option
@url_option
def notifications(
    owner: str | None, unread: bool, limit: int, mark_read: bool, as_json: bool, app_path: str | None,
    url: str | None,
) -> None:  # fmt: skip
    """List the notifications sent to jobs' owners, newest first.

    A job enqueued with owner=... and notify=True notifies its owner when it succeeds or fails
    (not on a time-out abort). --mark-read marks the listed ones read, after listing them as they
    were; it needs --owner, since an owner marks only their own."""
    if mark_read and owner is None:
        raise click.UsageError("--mark-read needs --owner: an owner marks only their own notifications")
    app = open_app(url, app_path, read_only=True)
    try:
        found = app.notifications(owner, unread=unread, limit=limit)
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(msgspec.to_builtins(found))
    else:
        console.print(notifications_table(found, time.time()))
    if mark_read and owner is not None and found:
        changed = app.mark_read(owner, [note.id for note in found])
        click.echo(f"marked {changed} notification(s) read", err=as_json)


def notifications_table(found: Sequence[Notification], now: float) -> Table:
    """The notifications for a person: id, when, owner, the job in full, how it ended, its
    stage and results (or error), and 'new' for the unread."""
    colours = {"succeeded": "green", "failed": "red"}
    table = Table(Column("id", justify="right", no_wrap=True), Column("at", no_wrap=True),
                  Column("owner", overflow="fold"), Column("job", no_wrap=True), Column("status", no_wrap=True),
                  Column("exit", justify="right", no_wrap=True), Column("about", overflow="fold"),
                  Column("", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for note in found:
        colour = colours.get(note.status)
        status = f"[{colour}]{escape(note.status)}[/{colour}]" if colour else escape(note.status)
        table.add_row(str(note.id), stamp(note.at, now), escape(note.owner), escape(note.job_id), status,
                      "" if note.exit_code is None else str(note.exit_code), escape(about(note)),
                      "" if note.read else "[bold]new[/bold]")  # fmt: skip
    return table


def about(note: Notification) -> str:
    """A notification's data in one line: the task or pipeline, the stage, the error or results."""
    data = note.data
    parts = [str(data.get("task") or "")]
    if data.get("stage") is not None:
        parts.append(f"stage {data['stage']}")
    error = data.get("error")
    if isinstance(error, dict):
        parts.append(f"{error.get('type')}: {error.get('message')}")
    elif data.get("results") is not None:
        parts.append(f"results {short(data['results'])}")
    return ", ".join(part for part in parts if part)


@click.command()
@click.argument("job_id")
@app_option
@url_option
def reset(job_id: str, app_path: str | None, url: str | None) -> None:
    """Reset a finished job to its first stage, with fresh state.

    For a succeeded, failed or cancelled job: its stage results, counters, error and time budget
    are cleared and it is due now (a plain job that succeeded is run again with enqueue instead).
    JOB_ID may be a unique prefix of the id."""
    app = open_app(url, app_path, read_only=True)
    before = find_job(app, job_id)
    try:
        record = app.reset(before.id)
    except ValueError as exc:
        if isinstance(exc, ConveyorError):
            raise  # not finished (InvalidTransition): exit 1
        fail(str(exc), 1)  # its first stage's references fail against the job
    where = f"stage {record.stage} ({describe_stage(record.stages[record.stage])})" if record.stages else "its task"
    console.print(f"{record.id} reset from {escape(before.status.value)} to {escape(where)}: {status_text(record)}",
                  highlight=False, soft_wrap=True)  # fmt: skip


COMMANDS = [send, notifications, reset]
