"""What every command shares: the --url and --app options, opening the store with its header,
one-line errors, and the parsers of durations, priorities and JSON arguments."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from typing import Any, NoReturn

import click
from rich.console import Console

from .. import codec
from ..app import App, choose_url, load_app
from ..backends import describe_url, open_backend
from ..job import Job, Priority

console = Console(emoji=False)  #: tables and results, on stdout (no emoji codes: worker ids hold ":100:")
PRECEDENCE = "--url > $CONVEYOR_URL > the URL in the app's code (with --app) > sqlite:///conveyor.db"

url_option = click.option(
    "--url", default=None,
    help=f"Store URL, e.g. sqlite:///conveyor.db or postgresql://user@host/db. Precedence: {PRECEDENCE}. "
         "A relative SQLite path is relative to the working directory.",
)  # fmt: skip

app_option = click.option(
    "--app", "app_path", envvar="CONVEYOR_APP", default=None, metavar="MODULE:APP",
    help="Your app ($CONVEYOR_APP), imported to learn its store URL and its tasks' options.",
)  # fmt: skip

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (for scripts).")


def fail(message: str, code: int) -> NoReturn:
    """One clear line on stderr and exit ``code`` (2: bad usage, 1: it cannot run)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def import_app(app_path: str | None) -> App:
    """The user's app (``module:app``), or a bare App when none is given; a bad path exits 2."""
    if not app_path:
        return App()
    try:
        return load_app(app_path)
    except ImportError as exc:
        fail(str(exc), 2)


def open_app(url: str | None, app_path: str | None, *, read_only: bool = False, header: bool = True) -> App:
    """The app pointed at its store by the one precedence, after a header naming the store on stderr.
    ``read_only``: a missing SQLite file is an error (StoreMissing), never created empty."""
    app = import_app(app_path)
    app.use_url(*choose_url(url, app.code_url))  # chosen now, whenever the app's module was imported
    if header:
        store_header(app)
    if read_only:
        open_backend(app.url, migrate=False, must_exist=True, fail_on_outage=True).close()
    return app


def store_header(app: App) -> None:
    """Which store this command uses, and why: the first thing a confused user needs."""
    click.echo(f"store: {describe_url(app.url)} (from {app.url_source})", err=True)


def resolve_url(url: str | None, app_path: str | None) -> tuple[str, str]:
    """The store URL and its source, for commands that open the store themselves."""
    app = import_app(app_path) if app_path else None
    return choose_url(url, app.code_url if app else None)


def when(ts: float | None) -> str:
    """A time in the local zone, with the zone: '2026-11-30 06:21:04 UTC'."""
    return "" if ts is None else datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def stamp(ts: float, now: float | None = None) -> str:
    """A moment in local time, short: '14:03:07.412' today (as of ``now``), '2026-11-29 14:03:07'
    on another day. For event times and a stage's times."""
    moment = datetime.fromtimestamp(ts)
    if moment.date() == datetime.fromtimestamp(time.time() if now is None else now).date():
        return moment.strftime("%H:%M:%S.%f")[:-3]
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration rounded for a person: 0.0123 -> '12 ms', 3.456 -> '3.46 s', 4000 -> '1 h 6 min'."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def age(value: float) -> str:
    """How long ago, in one short unit: '4s', '12m', '3h', '9d'."""
    value = max(0.0, value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{int(value // size)}{unit}"
    return f"{int(value)}s"


def priority_name(value: int) -> str:
    """'high' for 3; a number outside the named ones as itself."""
    try:
        return Priority(value).name.lower()
    except ValueError:
        return str(value)


def parse_priority(value: str) -> int:
    """``--priority``: a name (low, normal, high, critical) or its number."""
    try:
        return int(Priority[value.upper()]) if not value.isdigit() else int(Priority(int(value)))
    except (KeyError, ValueError):
        raise click.BadParameter(f"{value!r}: use one of {', '.join(p.name.lower() for p in Priority)}") from None


def parse_duration(value: str) -> float:
    """``--older-than``: seconds from '90', '12h', '7d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not match:
        raise click.BadParameter(f"{value!r}: write a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]


def parse_json(value: str | None, kind: type, name: str) -> Any:
    """``--args``/``--kwargs``: JSON of the given kind (list or dict); a usage error otherwise."""
    if value is None:
        return kind()
    try:
        decoded = codec.loads(value)
    except Exception as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None
    if not isinstance(decoded, kind):
        raise click.BadParameter(f"must be a JSON {'array' if kind is list else 'object'}", param_hint=name)
    return decoded


def not_negative(_ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A click callback: refuse a negative count (``--limit -1``) in one line."""
    if value is not None and value < 0:
        raise click.BadParameter(f"must be >= 0, got {value}", param_hint=f"--{param.name}")
    return value


def status_text(job: Job) -> str:
    """The job's status, coloured for a terminal."""
    colour = {"succeeded": "green", "failed": "red", "running": "cyan", "cancelled": "yellow"}.get(job.status.value)
    return f"[{colour}]{job.status.value}[/{colour}]" if colour else job.status.value


def print_json(data: Any) -> None:
    """JSON on stdout, one document, for scripts (``| jq``)."""
    click.echo(codec.dumps(data) if not isinstance(data, str) else data)
