"""The app of the pipeline chaos tests' worker processes (``pipeline_app:app``): chaos_app's app, plus
stage tasks that log each run of a stage to the side-effect log ``$CHAOS_LOG`` (O_APPEND, one write
per line): ``stage <job> <name> <token> <pid> <time>`` when the stage's body begins and
``staged <job> <name> <pid> <time>`` when it ends. Each returns ``{"name", "value", "pid", "token"}``,
so the job's record names the run whose result it kept."""

from __future__ import annotations

import os
import time
from typing import Any

from chaos_app import LOG, app, mark

from conveyor import current_job

__all__ = ["app"]


def _ran_before(job_id: str, name: str) -> bool:
    """Whether the log already holds a run of stage ``name`` of this job."""
    try:
        with open(LOG) as log:
            return any(line.startswith(f"stage {job_id} {name} ") for line in log)
    except FileNotFoundError:
        return False


def _begin(name: str) -> tuple[str, str]:
    job = current_job().job
    token = job.token or "-"
    mark(f"stage {job.id} {name} {token} {os.getpid()} {time.time():.6f}")
    return job.id, token


def _end(job_id: str, name: str, token: str, value: Any) -> dict[str, Any]:
    mark(f"staged {job_id} {name} {os.getpid()} {time.time():.6f}")
    return {"name": name, "value": value, "pid": os.getpid(), "token": token}


@app.task(name="pipe.step")
def step(name: str, value: Any = None) -> dict[str, Any]:
    """A quick stage."""
    job_id, token = _begin(name)
    return _end(job_id, name, token, value)


@app.task(name="pipe.slow_once")
def slow_once(name: str, seconds: float, value: Any = None) -> dict[str, Any]:
    """A stage whose first run takes ``seconds`` (of monotonic time, which runs on while the process
    is stopped) and whose later runs are quick."""
    job_id = current_job().id
    slow = not _ran_before(job_id, name)
    job_id, token = _begin(name)
    end = time.monotonic() + (seconds if slow else 0.0)
    while time.monotonic() < end:
        time.sleep(0.05)
    return _end(job_id, name, token, value)


@app.task(name="pipe.gate")
def gate(name: str, path: str, value: Any = None) -> dict[str, Any]:
    """A stage that runs until the file ``path`` exists (120 s at most)."""
    job_id, token = _begin(name)
    end = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.02)
    return _end(job_id, name, token, value)
