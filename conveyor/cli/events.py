"""``conveyor events``: the event log as a table (or JSON lines), and following it (--follow).
Also what ``watch`` shares with it: the one-line form of an event, the latest events, a job named
by a prefix of its id."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import click
from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from .. import codec
from ..app import App
from ..errors import JobNotFound
from ..events import Event, EventKind
from .common import app_option, console, json_option, open_app, stamp, url_option
from .jobs import find_job

PAGE = 1000  #: events read per query
TABLE = 120  #: terminal columns from which events show as a table (narrower: one line each)
WIDEST = 160  #: columns from which the table adds the run's attempt and its worker
FOLLOW_POLL = 1.0  #: longest wait between two reads of the log while following (a store may wake it earlier)

#: Kinds written when a job ends (a manual retry, ``requeued``, starts it again).
ENDS = frozenset({EventKind.SUCCEEDED, EventKind.FAILED, EventKind.TIMED_OUT, EventKind.CANCELLED,
                  EventKind.DISCARDED})  # fmt: skip
#: Kinds written when a run finishes for good or for a retry (the throughput of ``watch``).
FINISHED = frozenset({EventKind.SUCCEEDED, EventKind.FAILED, EventKind.TIMED_OUT})
_COLOURS: dict[str, str] = {EventKind.SUCCEEDED: "green", EventKind.FAILED: "red", EventKind.TIMED_OUT: "red",
            EventKind.STARTED: "cyan", EventKind.CANCELLED: "yellow", EventKind.RETRY_SCHEDULED: "yellow",
            EventKind.WORKER_DEAD: "red"}  # fmt: skip


def event_line(event: Event) -> str:
    """One event on one line, for logs and pipes: time, #seq, kind, then what it is about."""
    parts = [stamp(event.at), f"#{event.seq}", event.kind]
    if event.job_id:
        parts.append(event.job_id)
    if event.task:
        parts.append(event.task)
    if event.queue:
        parts.append(f"queue={event.queue}")
    if event.attempt:
        parts.append(f"attempt={event.attempt}")
    if event.worker_id:
        parts.append(f"worker={event.worker_id}")
    if event.data:
        parts.append(codec.dumps(event.data))
    return " ".join(parts)


def event_json(event: Event) -> str:
    """One event as one line of JSON (``--json``: JSON lines, for ``jq`` and log shippers)."""
    return codec.dumps(event)


def kind_text(kind: str) -> str:
    """An event's kind, coloured for a terminal."""
    colour = _COLOURS.get(kind)
    return f"[{colour}]{escape(kind)}[/{colour}]" if colour else escape(kind)


def events_view(found: Sequence[Event], width: int, *, compact: bool = False) -> RenderableType:
    """The log for a person, at a terminal ``width``: a table from TABLE columns on (seq, time,
    kind, the job in full, task, queue, data; from WIDEST on also the run's attempt and its
    worker); narrower, one line per event (kind coloured), where a table would fold every cell.
    ``compact``: each event on exactly one line, cut short with '…' (the live view's rows)."""
    if width < TABLE:
        lines = [Text.from_markup(_marked_line(event), overflow="ellipsis" if compact else "fold") for event in found]
        for line in lines:
            line.no_wrap = compact
        return Group(*lines)
    wide = width >= WIDEST
    cut: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis"} if compact else {"overflow": "fold"}
    job_width = max((len(event.job_id or "") for event in found), default=3)
    seq_width = max((len(str(event.seq)) for event in found), default=0)
    kind_width = max((len(event.kind) for event in found), default=0)
    columns = [Column("seq", justify="right", no_wrap=True, min_width=max(seq_width, 3)),
               Column("time", no_wrap=True, min_width=max((len(stamp(event.at)) for event in found), default=4)),
               Column("kind", no_wrap=True, min_width=max(kind_width, 4)),
               Column("job", no_wrap=True, min_width=min(job_width, 32)),
               Column("task", min_width=min(12, _longest(found, "task")), **cut),
               Column("queue", min_width=min(8, _longest(found, "queue")), **cut)]  # fmt: skip
    if wide:
        columns += [Column("try", justify="right", no_wrap=True), Column("worker", **cut)]
    columns.append(Column("data", **cut))
    table = Table(*columns, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    now = time.time()
    for event in found:
        row = [str(event.seq), stamp(event.at, now), kind_text(event.kind), event.job_id or "",
               escape(event.task or ""), escape(event.queue or "")]  # fmt: skip
        if wide:
            row += [str(event.attempt) if event.job_id else "", escape(event.worker_id or "")]
        row.append(escape(codec.dumps(event.data)) if event.data else "")
        table.add_row(*row)
    return table


def _longest(found: Sequence[Event], field: str) -> int:
    return max((len(getattr(event, field) or "") for event in found), default=0)


def _marked_line(event: Event) -> str:
    """``event_line`` with rich markup: the kind coloured, the rest escaped."""
    before, _, after = event_line(event).partition(f" {event.kind}")
    return f"{escape(before)} {kind_text(event.kind)}{escape(after)}"


def job_id_of(app: App, given: str) -> str:
    """The id of the job ``given`` names: an id or a unique prefix of one, as elsewhere. A job that
    is gone (discarded) is still named by its full id while its events remain."""
    try:
        return find_job(app, given).id
    except JobNotFound:
        if app.events(job_id=given, limit=1):
            return given
        raise


def between(app: App, lower: int, upper: int, filters: dict[str, Any]) -> list[Event]:
    """The events matching ``filters`` with ``lower < seq <= upper``, oldest first, read in pages."""
    found: list[Event] = []
    after = lower
    while True:
        page = app.events(after=after, limit=PAGE, **filters)
        found.extend(event for event in page if event.seq <= upper)
        if len(page) < PAGE or page[-1].seq >= upper:
            return found
        after = page[-1].seq


def latest(app: App, limit: int, filters: dict[str, Any]) -> tuple[list[Event], int]:
    """The last ``limit`` events matching ``filters``, oldest first, and the head of the log they
    were read up to (where following goes on). Read back from the head in windows that double,
    so the tail of a long log costs little and a rare match is still found."""
    head = app.backend.last_event_seq()
    found: list[Event] = []
    upper, width = head, max(limit, PAGE)
    while upper > 0 and len(found) < limit:
        lower = max(0, upper - width)
        found = between(app, lower, upper, filters) + found
        upper, width = lower, width * 2
    return found[-limit:], head


def wanted(event: Event, task: str | None, queue: str | None) -> bool:
    """Whether a followed event passes ``--task`` / ``--queue`` (exact names, as the listing's filters)."""
    return (task is None or event.task == task) and (queue is None or event.queue == queue)


def follow(
    app: App, after: int, *, job_id: str | None = None, kinds: Sequence[str] | None = None,
    task: str | None = None, queue: str | None = None,
) -> Iterator[Event]:  # fmt: skip
    """Every event past ``after`` matching the filters, as it is written; blocks. Runs until the
    caller stops iterating (the subscription is closed then)."""
    with app.subscribe(after=after, job_id=job_id, kinds=kinds or None, poll=FOLLOW_POLL) as subscription:
        for event in subscription:
            if wanted(event, task, queue):
                yield event


@click.command()
@click.option("--job", "job_given", default=None, metavar="ID", help="One job's events (a unique id prefix will do).")
@click.option("--task", default=None, help="Events of this task.")
@click.option("--queue", default=None, help="Events of this queue (a job's, or a pause / resume of it).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only these kinds (repeat it: --kind failed --kind timed_out).")  # fmt: skip
@click.option("--after", type=click.IntRange(min=0), default=None, metavar="SEQ",
              help="The events after this seq, oldest first (else the latest --limit).")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Events listed at most.")
@click.option("--follow", "-f", "following", is_flag=True,
              help="Then keep printing events as they are written, one per line, until Ctrl-C.")  # fmt: skip
@json_option
@app_option
@url_option
def events(
    job_given: str | None, task: str | None, queue: str | None, kinds: tuple[str, ...], after: int | None,
    limit: int, following: bool, as_json: bool, app_path: str | None, url: str | None,
) -> None:  # fmt: skip
    """Show the event log (--follow: as it grows).

    What happened to jobs, queues and workers, in order. Without --after, the latest --limit events
    matching the filters (like tail); --job ID lists that job's history. Each event has a seq that
    only grows. --json prints one JSON object per line."""
    app = open_app(url, app_path, read_only=True)
    job_id = job_id_of(app, job_given) if job_given else None
    filters: dict[str, Any] = {"job_id": job_id, "task": task, "queue": queue, "kinds": kinds or None}
    if after is None:
        found, head = latest(app, limit, filters)
    else:
        found = app.events(after=after, limit=limit, **filters)
        head = after
    if as_json:
        for event in found:
            click.echo(event_json(event))
    elif following:
        for event in found:
            click.echo(event_line(event))
    else:
        console.print(events_view(found, console.width))
    if not following:
        return
    start = max([head, *(event.seq for event in found)])
    try:
        for event in follow(app, start, job_id=job_id, kinds=kinds, task=task, queue=queue):
            click.echo(event_json(event) if as_json else event_line(event))
    except KeyboardInterrupt:  # Ctrl-C is how following ends
        return


COMMANDS = [events]
