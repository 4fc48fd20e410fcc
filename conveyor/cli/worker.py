"""``conveyor worker``: run workers for an app, in this process or under a supervisor (-p)."""

from __future__ import annotations

import logging
import os
import sys

import click

from ..backends import describe_url, open_backend
from ..logs import FORMATS, configure_logging, parse_level
from .common import fail, import_app, url_option

log = logging.getLogger("conveyor.cli")


def _level(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_level(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--log-level") from None


@click.command()
@click.argument("app_path", metavar="MODULE[:APP]")
@click.option("-q", "--queues", default="default", show_default=True, help="Comma-separated queues to serve.")
@click.option("-c", "--concurrency", default=32, show_default=True, help="Jobs run at once per process.")
@click.option("-p", "--processes", default=0, help="Worker processes under a supervisor (0: run in this process).")
@click.option("--grace", default=5.0, show_default=True, help="Seconds running jobs get to finish on SIGTERM.")
@click.option("--poll", default=1.0, show_default=True, help="Longest idle wait between claims, in seconds.")
@click.option("--stuck-after", default=5.0, show_default=True, help="With -p: seconds a sync task that timed out "
              "or was cancelled may hold its thread before its process is replaced.")  # fmt: skip
@click.option("--no-leader", is_flag=True, help="Never take the leader lock (rescues, time-outs, pruning): leave "
              "the leader duties to other workers.")  # fmt: skip
@click.option("--no-scheduler", is_flag=True, help="Do not fire schedules' ticks nor sync the app's code schedules "
              "(other workers, or `conveyor scheduler`, do).")  # fmt: skip
@click.option("--no-services", is_flag=True, help="Run no service replicas, local ones included (other workers "
              "serving the services' queues do).")  # fmt: skip
@click.option("--log-level", default="info", show_default=True, callback=_level,
              help="debug, info, warning, error or critical.")  # fmt: skip
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="json: one object per line (time, level, logger, message and fields such as job_id, task, "
                   "duration), for log shippers.")  # fmt: skip
@url_option
def worker(
    app_path: str, queues: str, concurrency: int, processes: int, grace: float, poll: float, stuck_after: float,
    no_leader: bool, no_scheduler: bool, no_services: bool, log_level: int, log_format: str, url: str | None,
) -> None:  # fmt: skip
    """Run workers until SIGTERM or Ctrl-C.

    MODULE:APP is your app (MODULE alone means MODULE:app).
    The store is logged at start with the task names; a --url or $CONVEYOR_URL that overrides a
    different URL given in the app's code is logged as a warning."""
    from ..supervisor import Supervisor
    from ..worker import Worker, WorkerOptions

    try:
        options = WorkerOptions(
            queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
            concurrency=concurrency, grace=grace, poll=poll, stuck_after=stuck_after, leader=not no_leader,
            scheduler=not no_scheduler,
            services=not no_services,
        ).check()  # fmt: skip
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
    except ValueError as exc:
        fail(str(exc), 2)
    configure_logging(log_level, log_format)
    supervisor = None
    if processes > 0:
        supervisor = Supervisor(app_path, processes, options, url=url, log_level=log_level, log_format=log_format)
        try:
            app = supervisor.load()  # imported once here, before any child starts
        except ImportError as exc:
            fail(str(exc), 2)
    else:
        app = import_app(app_path)
        app.use_url(url)
    log.info("store %s (from %s); tasks: %s", describe_url(app.url), app.url_source, ", ".join(sorted(app.tasks))
             or "none registered")  # fmt: skip
    open_backend(app.url, migrate=False).close()  # a wrong URL, password or database fails here, at once
    if supervisor is not None:
        sys.exit(supervisor.run())
    code = Worker(app, options).run()  # non-zero: the worker stopped itself (a helper failed)
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)  # do not wait for a thread still stuck in a timed-out sync task


COMMANDS = [worker]
