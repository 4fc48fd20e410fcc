"""``conveyor web`` (the HTTP API, the dashboard and /metrics, served by uvicorn), and the accounts
they authenticate: ``conveyor users add|list|remove`` and ``conveyor tokens create|list|revoke``.

A token is printed once, when it is made (alone on stdout, for ``TOKEN=$(conveyor tokens create
ada)``); the store keeps only its SHA-256, and no command ever shows a digest. ``conveyor web
--no-auth`` acts as a system user for every request, so it binds only a loopback address."""

from __future__ import annotations

import ipaddress
import signal
import sys

import click
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from ..accounts import ROLES, Permission, TokenRecord, User, check_user_name, permissions_of, split_token
from ..backends import open_backend
from ..logs import FORMATS, configure_logging
from .common import app_option, console, fail, json_option, open_app, print_json, url_option, when
from .worker import _level

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``: a server bound
    there answers only this machine. Any other name counts as not loopback (it may resolve anywhere)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_url(host: str, port: int) -> str:
    """The URL a browser opens for a server bound to ``host``:``port`` (an IPv6 address bracketed)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


# conveyor web ------------------------------------------------------------------------------------
@click.command()
@click.argument("app_path", metavar="[MODULE:APP]", required=False, envvar="CONVEYOR_APP")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind: 0.0.0.0 (or ::) serves every interface; with tokens only.")  # fmt: skip
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to bind.")
@click.option("--no-auth", is_flag=True, help="No tokens: every request acts as a system user. Loopback "
              "addresses only (127.0.0.1, ::1, localhost), for a laptop.")  # fmt: skip
@click.option("--metrics-public", is_flag=True, help="Serve /metrics without a token (for a Prometheus that "
              "cannot send one); everything else still needs one.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True, callback=_level,
              help="debug, info, warning, error or critical.")  # fmt: skip
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="json: one object per line, for log shippers.")  # fmt: skip
@url_option
def web(app_path: str | None, host: str, port: int, no_auth: bool, metrics_public: bool, log_level: int,
        log_format: str, url: str | None) -> None:  # fmt: skip
    """Serve the HTTP API, the dashboard and /metrics until Ctrl-C or SIGTERM.

    MODULE:APP is your app ($CONVEYOR_APP; MODULE alone means MODULE:app): its store, and its
    tasks, which the API enqueues by name. Every request needs a token (conveyor users add, conveyor
    tokens create) sent as 'Authorization: Bearer TOKEN'; the dashboard asks for one. Prints the
    dashboard's URL on stdout."""
    if no_auth and not is_loopback(host):
        fail(f"--no-auth serves every request as a system user, so it binds only a loopback address "
             f"(127.0.0.1, ::1 or localhost), not {host!r}: drop --no-auth and use tokens "
             f"(conveyor tokens create USER)", 2)  # fmt: skip
    try:
        import uvicorn

        from ..web import create_app
    except ImportError as exc:
        fail(f"conveyor web needs the web extra: pip install 'conveyor[web]' ({exc})", 1)
    app = open_app(url, app_path)
    open_backend(app.url, migrate=False).close()  # a wrong URL, password or database fails here, at once
    configure_logging(log_level, log_format)
    if no_auth:
        click.echo("authentication is off: every request acts as a system user (this machine only)", err=True)
    elif not app.users():
        click.echo("no user in the store yet: `conveyor users add NAME --role system` then "
                   "`conveyor tokens create NAME` makes one and its token", err=True)  # fmt: skip
    asgi = create_app(app, auth=not no_auth, metrics_public=metrics_public)
    click.echo(f"dashboard: {server_url(host, port)}")
    sys.stdout.flush()
    for signum in (signal.SIGINT, signal.SIGTERM):  # uvicorn stops gracefully, then raises the signal again:
        signal.signal(signum, _stopped)  # exit 0 then, as a worker does, not killed by the signal
    uvicorn.run(asgi, host=host.strip("[]"), port=port, log_config=None, log_level=log_level, access_log=True,
                server_header=False)  # fmt: skip


def _stopped(_signum: int, _frame: object) -> None:
    """SIGINT or SIGTERM once uvicorn has shut down gracefully: a clean exit."""
    sys.exit(0)


# conveyor users ----------------------------------------------------------------------------------
def _permission_names(user: User) -> str:
    return ", ".join(p.value for p in user.permissions) or "(own rows only)"


def _user_name(name: str) -> str:
    try:
        return check_user_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None


@click.group()
def users() -> None:
    """Add, list and remove the users of the HTTP API and the dashboard.

    A user sees and changes their own jobs, schedules and services; permissions add more:
    view-others, modify-others (implies view-others), system (users and tokens, prune, the audit
    log, stopping workers; implies all), read-only (changes nothing). Roles name common sets:
    user (none), operator (view-others + read-only), admin (modify-others), system."""


@users.command(name="add")
@click.argument("name")
@click.option("--permission", "-p", "permission_names", multiple=True,
              type=click.Choice([p.value for p in Permission]), help="A permission (repeatable).")  # fmt: skip
@click.option("--role", type=click.Choice(list(ROLES)), default=None, help="A named set of permissions.")
@json_option
@app_option
@url_option
def add_user(name: str, permission_names: tuple[str, ...], role: str | None, as_json: bool, app_path: str | None,
             url: str | None) -> None:  # fmt: skip
    """Add the user NAME, or set an existing user's permissions to those given (--permission and
    --role together: both sets). Then make their token: conveyor tokens create NAME."""
    name = _user_name(name)
    try:
        permissions = permissions_of(list(permission_names), role)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    app = open_app(url, app_path)
    existed = any(user.name == name for user in app.users())
    user = app.add_user(name, permissions)
    if as_json:
        print_json({"name": user.name, "permissions": [p.value for p in user.permissions],
                    "created_at": user.created_at, "updated": existed})  # fmt: skip
        return
    done = "updated" if existed else "added"
    console.print(f"user {escape(user.name)} {done}: {_permission_names(user)}", highlight=False, soft_wrap=True)


@users.command(name="list")
@json_option
@app_option
@url_option
def list_users(as_json: bool, app_path: str | None, url: str | None) -> None:
    """List the users: name, permissions, active tokens, when added."""
    app = open_app(url, app_path, read_only=True)
    found = app.users()
    active: dict[str, int] = {}
    for token in app.tokens():
        if token.revoked_at is None:
            active[token.user] = active.get(token.user, 0) + 1
    if as_json:
        print_json([{"name": user.name, "permissions": [p.value for p in user.permissions],
                     "created_at": user.created_at, "tokens": active.get(user.name, 0)} for user in found])  # fmt: skip
        return
    if not found:
        click.echo("no users (conveyor users add NAME)", err=True)
        return
    table = Table(Column("name", overflow="fold"), Column("permissions", overflow="fold"),
                  Column("tokens", justify="right", no_wrap=True), Column("added", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for user in found:
        table.add_row(escape(user.name), _permission_names(user), str(active.get(user.name, 0)), when(user.created_at))
    console.print(table)


@users.command(name="remove")
@click.argument("name")
@app_option
@url_option
def remove_user(name: str, app_path: str | None, url: str | None) -> None:
    """Remove the user NAME and every token of theirs (their requests are refused at once). Their
    jobs, schedules and services stay, owned by that name."""
    app = open_app(url, app_path, read_only=True)
    tokens = sum(1 for token in app.tokens(name) if token.revoked_at is None)
    if not app.remove_user(name):
        fail(f"no user named {name!r}", 1)
    said = f" and {tokens} token{'s' if tokens != 1 else ''}" if tokens else ""
    console.print(f"user {escape(name)} removed{said}", highlight=False, soft_wrap=True)


# conveyor tokens ---------------------------------------------------------------------------------
def token_fields(record: TokenRecord) -> dict[str, object]:
    """A token's record for a person or a script: never its digest."""
    return {"id": record.id, "user": record.user, "label": record.label, "created_at": record.created_at,
            "last_used_at": record.last_used_at, "revoked_at": record.revoked_at}  # fmt: skip


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens.

    A token is shown once, when it is made; the store keeps only its SHA-256. Send it as the header
    'Authorization: Bearer TOKEN', or paste it into the dashboard."""


@tokens.command(name="create")
@click.argument("user")
@click.option("--label", default="", help="What it is for, to tell tokens apart (e.g. laptop, prometheus).")
@json_option
@app_option
@url_option
def create_token(user: str, label: str, as_json: bool, app_path: str | None, url: str | None) -> None:
    """Make a token for USER and print it, alone on stdout: it is shown this once, never again."""
    app = open_app(url, app_path, read_only=True)
    record, token = app.create_token(user, label)
    if as_json:
        print_json({**token_fields(record), "token": token})
    else:
        click.echo(token)
    click.echo(f"token {record.id} for {record.user}{f' ({record.label})' if record.label else ''}: it is not "
               f"shown again, keep it now (conveyor tokens revoke {record.id} to revoke it)", err=True)  # fmt: skip


@tokens.command(name="list")
@click.argument("user", required=False)
@json_option
@app_option
@url_option
def list_tokens(user: str | None, as_json: bool, app_path: str | None, url: str | None) -> None:
    """List tokens (of USER), newest first: id, user, label, created, last used, revoked. Never the
    tokens themselves, nor their digests."""
    app = open_app(url, app_path, read_only=True)
    if user is not None:
        app.user(user)  # an unknown user is an error, not an empty list
    found = app.tokens(user)
    if as_json:
        print_json([token_fields(record) for record in found])
        return
    if not found:
        click.echo("no tokens (conveyor tokens create USER)", err=True)
        return
    table = Table(Column("id", no_wrap=True), Column("user", overflow="fold"), Column("label", overflow="fold"),
                  Column("created", no_wrap=True), Column("last used", no_wrap=True), Column("revoked", no_wrap=True),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for record in found:
        revoked = f"[red]{when(record.revoked_at)}[/red]" if record.revoked_at is not None else ""
        table.add_row(record.id, escape(record.user), escape(record.label), when(record.created_at),
                      when(record.last_used_at), revoked)  # fmt: skip
    console.print(table)


@tokens.command(name="revoke")
@click.argument("token_id", metavar="ID")
@app_option
@url_option
def revoke_token(token_id: str, app_path: str | None, url: str | None) -> None:
    """Revoke the token ID (as conveyor tokens list shows it; the whole token will do too): every
    request with it is refused from now on."""
    parts = split_token(token_id)
    wanted = parts[0] if parts is not None else token_id.strip()
    app = open_app(url, app_path, read_only=True)
    if not app.revoke_token(wanted):
        fail(f"no token {wanted!r} to revoke (unknown, or revoked already; see conveyor tokens list)", 1)
    console.print(f"token {escape(wanted)} revoked", highlight=False)


COMMANDS = [web, users, tokens]
