"""``conveyor demo``: the two-minute tour on a temporary SQLite file."""

from __future__ import annotations

import sys

import click

from .common import console


@click.command()
@click.option("--jobs", "count", default=300, show_default=True,
              help="How many jobs to enqueue (the demo has a minimum, and says so if asked for fewer).")  # fmt: skip
@click.option("--keep", is_flag=True, help="Keep the demo's SQLite file and print its path.")
def demo(count: int, keep: bool) -> None:
    """Run a short demo.

    On a temporary SQLite file: two worker processes, live progress, a summary."""
    from ..demo import run_demo

    if count < 1:
        raise click.BadParameter(f"must be >= 1, got {count}", param_hint="--jobs")
    sys.exit(run_demo(count, keep=keep, console=console))


COMMANDS = [demo]
