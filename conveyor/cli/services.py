"""Commands of long-running services: ``services [NAME]`` (one row per replica: status, worker,
age, restarts, last error, parameters) and ``service start|stop|restart|reload|remove`` (requests
written to the store; the workers' keepers act on them). docs/services.md."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn

import click
import msgspec
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import codec
from ..errors import ConveyorError
from ..service_types import ServiceError, ServiceRecord, ServiceStatus
from .common import (
    age,
    app_option,
    console,
    fail,
    import_app,
    json_option,
    open_app,
    parse_json,
    print_json,
    url_option,
)
from .stage_table import short

PARAMS_SHOWN = 40  #: characters of an instance's parameters shown in the table; --json gives them whole
ERROR_SHOWN = 40  #: characters of a replica's last error shown in the table
WIDE = 120  #: terminal columns from which the table has the last error and params columns (else: errors below it)
WIDE_COLUMNS = ("name", "replica", "service", "queue", "status", "worker", "started", "restarts", "last error",
                "params")  # fmt: skip
NARROW_COLUMNS = ("replica", "service", "status", "worker", "started", "restarts")  #: replica: 'name[n]'
STATUS_COLOURS: dict[ServiceStatus, str] = {
    ServiceStatus.PENDING: "cyan",
    ServiceStatus.STARTING: "cyan",
    ServiceStatus.RUNNING: "green",
    ServiceStatus.STOPPING: "yellow",
    ServiceStatus.STOPPED: "dim",
    ServiceStatus.FAILED: "red",
}

param_option = click.option(
    "--param", "pairs", multiple=True, metavar="KEY=VALUE",
    help="A parameter of the service's function (repeatable). VALUE is read as JSON when it parses "
         "(42, true, [1,2], {\"a\":1}), else taken as a string.",
)  # fmt: skip
params_option = click.option(
    "--params", "params_json", default=None, metavar="JSON",
    help="Parameters as one JSON object; --param values win over its keys.",
)  # fmt: skip


def parse_params(pairs: Sequence[str], params_json: str | None) -> dict[str, Any]:
    """``--params`` (a JSON object) with each ``--param KEY=VALUE`` on top; VALUE decoded as JSON when
    it is JSON (``7``, ``true``, ``["a"]``), else kept as the string given. A usage error otherwise."""
    params: dict[str, Any] = parse_json(params_json, dict, "--params")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE, e.g. --param topic=orders", param_hint="--param")
        try:
            params[key] = codec.loads(text)
        except msgspec.DecodeError:
            params[key] = text
    return params


# listing ------------------------------------------------------------------------------------------------------
def status_text(record: ServiceRecord, now: float) -> Text:
    """The replica's status, coloured, with what it waits on: a held replica whose lease ran out (its
    worker is likely gone: another worker takes it over), a PENDING one waiting out its back-off."""
    text = Text(record.status.value, style=STATUS_COLOURS.get(record.status, ""))
    if record.held and record.lease_until is not None and record.lease_until < now:
        text.append(" (lease expired)", style="red")
    elif record.status is ServiceStatus.PENDING and record.not_before > now:
        text.append(f" (in {age(record.not_before - now)})")
    elif record.status is ServiceStatus.RUNNING and not record.wanted:
        text.append(" (stop asked)")
    return text


def error_text(error: ServiceError | None, width: int = ERROR_SHOWN) -> str:
    """A crash's error on one line: 'ConnectionError: refused', cut to ``width`` with '…'."""
    if error is None:
        return ""
    text = " ".join(f"{error.type}: {error.message}".split())
    return text if len(text) <= width else text[: width - 1] + "…"


def started_text(record: ServiceRecord, now: float) -> str:
    """How long the current run has run ('4m'); empty when no run is going on."""
    if record.started_at is None or record.status not in (ServiceStatus.RUNNING, ServiceStatus.STOPPING):
        return ""
    return age(now - record.started_at)


def services_table(found: Sequence[ServiceRecord], now: float, *, wide: bool = True) -> Table:
    """One row per replica of each instance, by name and replica. ``wide``: every column, with the
    last error and the parameters cut short (``--json`` gives them whole); narrow: the instance and
    its replica in one cell ('feed[1]'), no queue, error or parameters. Cells are Text, so a worker
    id such as ``host:1234:ab`` is never read as markup or an emoji code."""
    titles = WIDE_COLUMNS if wide else NARROW_COLUMNS
    longest_worker = max((len(record.worker_id or "") for record in found), default=6)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for title in titles:
        if title in ("last error", "params"):
            table.add_column(title, overflow="fold")
        elif title == "worker":
            table.add_column(title, overflow="fold", min_width=min(longest_worker, 30))
        else:
            numeric = title in ("started", "restarts") or (title == "replica" and wide)
            table.add_column(title, no_wrap=True, justify="right" if numeric else "left")
    for record in found:
        cells: dict[str, str | Text] = {
            "name": Text(record.name),
            "replica": str(record.replica) if wide else Text(f"{record.name}[{record.replica}]"),
            "service": Text(record.service),
            "queue": Text(record.queue),
            "status": status_text(record, now),
            "worker": Text(record.worker_id or "", style="" if record.held else "dim"),  # dim: who ran it last
            "started": started_text(record, now),
            "restarts": str(record.restarts or ""),
            "last error": Text(error_text(record.last_error)),
            "params": Text(short(record.params, PARAMS_SHOWN) if record.params else ""),
        }
        table.add_row(*(cells[title] for title in titles))
    return table


def error_lines(found: Sequence[ServiceRecord], width: int) -> list[Text]:
    """Under a narrow table: each replica's last error, one line each ('feed[1] last error: KeyError: ...')."""
    lines = []
    for record in found:
        if record.last_error is not None:
            head = f"{record.name}[{record.replica}] last error: "
            lines.append(Text(head + error_text(record.last_error, max(20, width - len(head) - 1))))
    return lines


@click.command()
@click.argument("name", required=False)
@json_option
@app_option
@url_option
def services(name: str | None, as_json: bool, app_path: str | None, url: str | None) -> None:
    """List the service instances, one row per replica: status, the worker running it, how long
    its run has run, restarts after crashes, the last error, the parameters.

    NAME: only that instance (an unknown one is an error). An instance of an autostart service
    appears once a worker of its app has started; one made by `conveyor service start` at once."""
    app = open_app(url, app_path, read_only=True)
    found = app.services(name)
    if name is not None and not found:
        fail(f"no service instance named {name!r}", 1)
    if as_json:
        print_json(msgspec.to_builtins(found))
        return
    if not found:
        click.echo("no services", err=True)
        return
    wide = console.width >= WIDE
    console.print(services_table(found, time.time(), wide=wide))
    if not wide:
        for line in error_lines(found, console.width):
            console.print(line, soft_wrap=True)


# control ------------------------------------------------------------------------------------------------------
def summary(rows: Sequence[ServiceRecord]) -> str:
    """An instance's replicas in a few words: '2 replicas: 1 running, 1 stopping'."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status.value] = counts.get(row.status.value, 0) + 1
    states = ", ".join(f"{count} {status}" for status, count in counts.items())
    return f"{len(rows)} replica{'s' if len(rows) != 1 else ''}: {states}"


def report(rows: list[ServiceRecord], as_json: bool, message: str) -> None:
    """What a control command did: the rows as JSON, or one line for a person."""
    if as_json:
        print_json(msgspec.to_builtins(rows))
        return
    console.print(f"{escape(message)} ({summary(rows)})", highlight=False, soft_wrap=True)


def refused(exc: Exception) -> NoReturn:
    """A request the App refused: conveyor's own errors (no such instance, no such service) exit 1
    through the command group; a bad value (parameters, name, replicas) is a usage error, exit 2."""
    if isinstance(exc, ConveyorError):
        raise exc
    raise click.UsageError(str(exc)) from None


@click.group()
def service() -> None:
    """Start, stop, restart, reload or remove a service instance.

    Each writes a request to the store and returns: the worker holding a replica sees it at its next
    pass (about a second) and acts on it. `conveyor services` shows where each replica is."""


@service.command()
@click.argument("target", metavar="SERVICE_OR_INSTANCE")
@click.option("--name", default=None, help="The new instance's name (default: the service's name).")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="How many replicas of the new instance run (default: the service's replicas).")  # fmt: skip
@param_option
@params_option
@json_option
@app_option
@url_option
def start(target: str, name: str | None, replicas: int | None, pairs: tuple[str, ...], params_json: str | None,
          as_json: bool, app_path: str | None, url: str | None) -> None:  # fmt: skip
    """Start a service instance: a new one of the service SERVICE_OR_INSTANCE (--name, --replicas,
    parameters), or an existing instance of that name again (a stopped or failed one; no parameters:
    change them with `conveyor service reload`).

    A new instance needs your app (--app module:app or $CONVEYOR_APP): its parameters are checked
    against the service's function here. Starting an existing instance by name does not."""
    params = parse_params(pairs, params_json)
    declared = target in import_app(app_path).service_defs  # else nothing new is made: the store must exist
    app = open_app(url, app_path, read_only=not declared)
    instance = name or target
    existed = bool(app.services(instance))
    if target not in app.service_defs and (name is not None or not existed):
        where = f"{app_path} declares" if app_path else "no app declares (give --app MODULE:APP)"
        known = f" (its services: {', '.join(sorted(app.service_defs)) or 'none'})" if app_path else ""
        unknown = "" if name is not None else f"no service instance named {instance!r}, and "
        fail(f"{unknown}{where} no service {target!r}{known}", 1)
    if existed and (params or replicas is not None):
        raise click.UsageError(f"service instance {instance!r} exists: start it without parameters or "
                               f"--replicas; change its parameters with `conveyor service reload {instance} "
                               f"--param ...`")  # fmt: skip
    try:
        rows = app.start_service(target, name=name, replicas=replicas, **params)
    except (TypeError, ValueError) as exc:
        refused(exc)
    record = rows[0]
    if existed:
        message = f"service {instance}: start requested"
    else:
        params_shown = f" with {codec.dumps(record.params)}" if record.params else ""
        message = f"service {instance} created, of {record.service} on queue {record.queue}{params_shown}"
    report(rows, as_json, message)


@service.command()
@click.argument("name")
@json_option
@app_option
@url_option
def stop(name: str, as_json: bool, app_path: str | None, url: str | None) -> None:
    """Stop every replica of the instance NAME: each run's stop hook runs, then it is STOPPED and
    stays so, across worker restarts, until `conveyor service start NAME`."""
    app = open_app(url, app_path, read_only=True)
    report(app.stop_service(name), as_json, f"service {name}: stop requested")


@service.command()
@click.argument("name")
@json_option
@app_option
@url_option
def restart(name: str, as_json: bool, app_path: str | None, url: str | None) -> None:
    """Stop the runs of the instance NAME and start them again with its stored parameters (a
    stopped or failed instance starts, its crashes forgotten)."""
    app = open_app(url, app_path, read_only=True)
    report(app.restart_service(name), as_json, f"service {name}: restart requested")


@service.command()
@click.argument("name")
@param_option
@params_option
@click.option("--unset", "unset", multiple=True, metavar="KEY",
              help="Drop a stored parameter, so the function's default applies again (repeatable).")  # fmt: skip
@json_option
@app_option
@url_option
def reload(name: str, pairs: tuple[str, ...], params_json: str | None, unset: tuple[str, ...], as_json: bool,
           app_path: str | None, url: str | None) -> None:  # fmt: skip
    """Restart the instance NAME with these parameters merged into its stored ones, less those
    --unset: each new run reads them from the store. With --app, they are checked against the
    service's function first; without, only that they are JSON values."""
    params = parse_params(pairs, params_json)
    app = open_app(url, app_path, read_only=True)
    try:
        rows = app.reload_service(name, unset=unset, **params)
    except (TypeError, ValueError) as exc:
        refused(exc)
    report(rows, as_json, f"service {name}: reload requested with {codec.dumps(rows[0].params)}")


@service.command()
@click.argument("name")
@app_option
@url_option
def remove(name: str, app_path: str | None, url: str | None) -> None:
    """Delete the instance NAME: its runs stop (their workers find it gone at their next renewal).

    An autostart service's own instance comes back when a worker of its app starts; stop it instead
    to keep it from running."""
    app = open_app(url, app_path, read_only=True)
    if not app.remove_service(name):
        fail(f"no service instance named {name!r}", 1)
    console.print(f"service {escape(name)} removed", highlight=False)


COMMANDS = [services, service]
