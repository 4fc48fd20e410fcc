"""Commands on the store as a whole: ``stats``, ``prune``, ``migrate``."""

from __future__ import annotations

import click
from rich import box
from rich.table import Column, Table

from ..backends import open_backend
from ..job import Status
from .common import app_option, console, json_option, open_app, parse_duration, print_json, url_option

#: States only a pipeline's jobs reach (a Timer or Message stage): no column unless a job is in one.
NOT_YET = (Status.WAITING,)


@click.command()
@json_option
@app_option
@url_option
def stats(as_json: bool, app_path: str | None, url: str | None) -> None:
    """Job counts by queue and status.

    A queued job not due yet counts as scheduled."""
    counts = open_app(url, app_path, read_only=True).stats()
    if as_json:
        print_json({queue: {status.value: n for status, n in row.items()} for queue, row in counts.items()})
        return
    statuses = [s for s in Status if s not in NOT_YET or any(row.get(s) for row in counts.values())]
    table = Table(Column("queue", overflow="fold", min_width=5),
                  *(Column(s.value, justify="right", no_wrap=True) for s in statuses),
                  Column("total", justify="right", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for queue, row in counts.items():
        table.add_row(queue, *(str(row.get(s, 0)) for s in statuses), str(sum(row.values())),
                      style="bold" if queue == "all" else None)  # fmt: skip
    console.print(table)


@click.command()
@click.option("--older-than", default=None, help="Delete finished jobs older than this (e.g. 7d, 12h); "
              "without it, those past their result TTL.")  # fmt: skip
@app_option
@url_option
def prune(older_than: str | None, app_path: str | None, url: str | None) -> None:
    """Delete finished jobs."""
    seconds = None if older_than is None else parse_duration(older_than)
    console.print(f"pruned {open_app(url, app_path, read_only=True).prune(seconds)} job(s)")


@click.command()
@app_option
@url_option
def migrate(app_path: str | None, url: str | None) -> None:
    """Create or upgrade the store's schema. Idempotent, and safe to run from several hosts at once."""
    app = open_app(url, app_path)
    backend = open_backend(app.url)
    try:
        applied = backend.setup(migrate=True)
    finally:
        backend.close()
    console.print(f"applied {', '.join(applied)}" if applied else "schema is up to date", soft_wrap=True)


COMMANDS = [stats, prune, migrate]
