"""The app the chaos suite's worker processes run (``chaos_app:app``): tasks that log their side effects.

Every run appends to the side-effect log ``$CHAOS_LOG`` with O_APPEND (one write per line, so lines from
many processes never interleave): ``start <job> <token> <pid> <time>`` when a run's body begins and
``done <job> <pid> <time>`` when it ends. The test reads that log, and the store, to check the invariants.
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

from conveyor import App, current_job

LOG = os.environ.get("CHAOS_LOG", os.devnull)


def _app_options() -> dict[str, Any]:
    """The App's settings from the environment; ``max_rescues`` only where this conveyor has it."""
    options: dict[str, Any] = {"lease": float(os.environ.get("CHAOS_LEASE", "2.0"))}
    rescues = os.environ.get("CHAOS_MAX_RESCUES")
    if rescues and "max_rescues" in inspect.signature(App).parameters:
        options["max_rescues"] = int(rescues)
    return options


app = App(os.environ.get("CONVEYOR_URL"), **_app_options())


def mark(text: str) -> None:
    """Append one line to the side-effect log in a single write."""
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


def _started() -> tuple[str, str]:
    job = current_job().job
    token = job.token or "-"
    mark(f"start {job.id} {token} {os.getpid()} {time.time():.6f}")
    return job.id, token


def _done(job_id: str) -> None:
    mark(f"done {job_id} {os.getpid()} {time.time():.6f}")


@app.task(name="chaos.work")
def work(seconds: float, quick_on_rerun: bool = False) -> dict[str, Any]:
    """Sleep ``seconds`` between its start and done lines (no time at all on a rerun if asked);
    returns which run this was, so the store names the run that committed."""
    job_id, token = _started()
    if not (quick_on_rerun and current_job().attempt > 1):
        time.sleep(seconds)
    _done(job_id)
    return {"token": token, "pid": os.getpid()}


@app.task(name="chaos.poison")
def poison() -> None:
    """Kill its own process on every run, as a segfault or the OOM killer would."""
    _started()
    os._exit(1)


@app.task(name="chaos.bad_message")
def bad_message() -> None:
    """Fail with a message holding a lone surrogate, which no UTF-8 encoder accepts."""
    _started()
    raise ValueError("bad input \udcff here")


@app.task(name="chaos.busy")
def busy(seconds: float) -> dict[str, Any]:
    """Hold the GIL for about ``seconds`` in one C call (a sum over a range), as a long call into an
    extension does: no other thread of this process runs meanwhile, the heartbeat thread included."""
    job_id, token = _started()
    probe = 2_000_000
    began = time.perf_counter()
    sum(range(probe))
    per_item = max(time.perf_counter() - began, 1e-6) / probe
    sum(range(int(seconds / per_item)))
    _done(job_id)
    return {"token": token, "pid": os.getpid()}


@app.task(name="chaos.pid")
def pid() -> int:
    """The pid of the process that ran it."""
    job_id, _ = _started()
    _done(job_id)
    return os.getpid()
