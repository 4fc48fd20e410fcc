"""The ``conveyor`` command: run workers, enqueue, inspect and control jobs, follow the event log,
operate queues and workers, start and stop services, prune, serve the web API and dashboard (with
its users and tokens), demo.

One module per group of commands (worker, jobs, pipelines, schedules, services, events, watch, ops, admin,
web, demo); common.py holds what they share."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from ..errors import ConveyorError

COMPLETION = """\b
Shell completion (bash; zsh and fish alike with zsh_source / fish_source):
  eval "$(_CONVEYOR_COMPLETE=bash_source conveyor)"   # add to ~/.bashrc
"""

#: click >= 8.2 raises this for a group called with no arguments (8.1 prints the help itself)
_NO_ARGS: type[click.UsageError] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    """Every error is one line on stderr: a usage error (bad flag, bad value) exits 2, conveyor's
    own errors (no such job, no store there, store unreachable) exit 1. No traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConveyorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as exc:  # `conveyor` alone: the help, as click shows it
            click.echo(exc.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_Group, epilog=COMPLETION)
@click.version_option(package_name="conveyor")
def main() -> None:
    """conveyor: a durable task runner. Jobs live in a store (a SQLite file by default).

    Every command names its store on stderr first. Precedence: --url > $CONVEYOR_URL > the URL in
    your app's code (give --app module:app or $CONVEYOR_APP) > sqlite:///conveyor.db, a path
    relative to the working directory."""


def _register() -> None:
    from . import admin, demo, events, jobs, ops, pipelines, schedules, services, watch, web, worker

    for module in (worker, jobs, pipelines, schedules, services, events, watch, ops, admin, web, demo):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

__all__ = ["main"]
