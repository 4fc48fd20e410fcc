"""Helpers of the pipeline end-to-end tests (issue 11): the app their worker processes run
(``pipeapp:app``, written next to e2eapp.py) and the same tasks declared on the test's client App.

Every task appends one line per run to a file named by its ``tag`` (O_APPEND, one write per line,
so lines from many processes never interleave): the tests count a stage's runs by its file's
lines. A stage's result says which run of its file it was (``run``) and which process ran it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conveyor import App, Task

#: The app of the pipeline tests' worker processes. Task names start with "p.".
PIPE_APP = textwrap.dedent(
    '''
    import json
    import os
    import time

    from conveyor import App

    app = App(os.environ["CONVEYOR_URL"], lease=float(os.environ.get("E2E_LEASE", "1.0")))
    OUT = os.environ["E2E_DIR"]


    def mark(name, text):
        """Append one line to a file in the test's directory; returns how many lines it held before."""
        path = os.path.join(OUT, name)
        try:
            with open(path) as existing:
                before = sum(1 for _ in existing)
        except FileNotFoundError:
            before = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)
        return before


    @app.task(name="p.add", backoff=0.2, jitter=0.0)
    def add(tag, a, b=0, fail_first=False):
        """``{"sum": a + b, "parts": [a, b], "run": n, "pid": pid}``, n counting the runs logged in
        ``tag``; with ``fail_first`` the first run ever logged there raises instead."""
        run = mark(tag, f"run {json.dumps([a, b])} {os.getpid()}") + 1
        if fail_first and run == 1:
            raise RuntimeError(f"{tag}: the first run fails")
        return {"sum": a + b, "parts": [a, b], "run": run, "pid": os.getpid()}


    @app.task(name="p.echo")
    def echo(tag, value):
        """Log ``value`` as JSON to ``tag`` and return it."""
        mark(tag, json.dumps(value))
        return value


    @app.task(name="p.fail")
    def fail(tag):
        mark(tag, f"fail {os.getpid()}")
        raise RuntimeError(f"{tag}: this stage always fails")


    @app.task(name="p.gate")
    def gate(tag, gate, value=None):
        """Log ``started``, wait (at most 120 s) until the file ``gate`` exists, log ``done``."""
        mark(tag, f"started {os.getpid()}")
        end = time.monotonic() + 120
        while not os.path.exists(os.path.join(OUT, gate)) and time.monotonic() < end:
            time.sleep(0.02)
        mark(tag, f"done {os.getpid()}")
        return value
    '''
)


def install_pipeline_app(directory: Path) -> str:
    """Write the pipeline tests' app module into ``directory``; returns its MODULE:APP path."""
    (directory / "pipeapp.py").write_text(PIPE_APP)
    return "pipeapp:app"


class Tasks:
    """The pipeline app's tasks on the test's client App (stubs: their bodies never run here);
    their names and signatures are the worker's, so ``task.s(...)`` builds the same stages."""

    def __init__(self, app: App) -> None:
        def add(tag: str, a: Any, b: Any = 0, fail_first: bool = False) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def echo(tag: str, value: Any) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def fail(tag: str) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def gate(tag: str, gate: str, value: Any = None) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        self.add: Task[Any, Any] = app.task(name="p.add", backoff=0.2, jitter=0.0)(add)
        self.echo: Task[Any, Any] = app.task(name="p.echo")(echo)
        self.fail: Task[Any, Any] = app.task(name="p.fail")(fail)
        self.gate: Task[Any, Any] = app.task(name="p.gate")(gate)
