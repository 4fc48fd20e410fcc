"""Helpers of the schedule end-to-end tests (issue 12): the app their worker processes run
(``schedapp:app``, written next to e2eapp.py) and the same tasks declared on the test's client App.

Every task appends one line per run to a file named by its ``tag`` (O_APPEND, one write per line:
lines from many processes never interleave). ``$SCHED_BEAT`` declares the code schedule ``s.beat``
(every second) and ``$SCHED_REPEAT`` an ``@app.repeat`` function, in every worker that starts with it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from conveyor import App, Task

#: The app of the schedule tests' worker processes. Task names start with "s.".
SCHED_APP = textwrap.dedent(
    '''
    import os
    import time

    from conveyor import App, current_job

    app = App(os.environ["CONVEYOR_URL"], lease=float(os.environ.get("E2E_LEASE", "1.0")))
    OUT = os.environ["E2E_DIR"]


    def mark(name, text):
        """Append one line to a file in the test's directory."""
        fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)


    @app.task(name="s.record")
    def record(tag):
        """One line: the tick that made this job, the job's id, this process."""
        job = current_job()
        mark(tag, f"{job.job.tick_at} {job.id} {os.getpid()}")


    @app.task(name="s.slow")
    def slow(tag, seconds):
        """``start``/``end`` lines with the time around ``seconds`` of work."""
        mark(tag, f"start {time.time():.6f} {current_job().id} {os.getpid()}")
        time.sleep(seconds)
        mark(tag, f"end {time.time():.6f} {current_job().id} {os.getpid()}")


    if os.environ.get("SCHED_BEAT"):

        @app.periodic(every=1, name="s.beat", args=("beat.log",), grace=5, overlap="allow")
        def beat(tag):
            mark(tag, f"{current_job().job.tick_at} {current_job().id} {os.getpid()}")


    if os.environ.get("SCHED_REPEAT"):

        @app.repeat(0.5, at_start=True)
        def heartbeat():
            mark("repeat.log", str(os.getpid()))
    '''
)


def install_schedule_app(directory: Path) -> str:
    """Write the schedule tests' app module into ``directory``; returns its MODULE:APP path."""
    (directory / "schedapp.py").write_text(SCHED_APP)
    return "schedapp:app"


class Tasks:
    """The schedule app's tasks on the test's client App (stubs: their bodies never run here)."""

    def __init__(self, app: App) -> None:
        def record(tag: str) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        def slow(tag: str, seconds: float) -> Any:  # pragma: no cover
            raise AssertionError("a client stub ran")

        self.record: Task[Any, Any] = app.task(name="s.record")(record)
        self.slow: Task[Any, Any] = app.task(name="s.slow")(slow)
