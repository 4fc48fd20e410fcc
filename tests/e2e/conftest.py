"""End-to-end harness: real `conveyor worker` processes against one store.

The store comes from one fixture, ``store_url``; a new backend adds a parameter there
and every end-to-end test runs against it too. Test bodies never open the store
directly: side effects are counted in files the tasks append to, and job state is
read through conveyor's own App API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conveyor import App, Job, Status
from conveyor.backends import open_backend

T = TypeVar("T")

LEASE = 1.0  #: seconds; short, so that a killed worker's jobs come back quickly

#: The app every end-to-end test runs. Tasks take a ``tag`` naming the file they log to.
APP_SOURCE = textwrap.dedent(
    '''
    import asyncio
    import os
    import time

    from conveyor import App, current_job

    app = App(os.environ["CONVEYOR_URL"], lease=float(os.environ.get("E2E_LEASE", "1.0")))
    OUT = os.environ["E2E_DIR"]


    def mark(name, text):
        """Append one line to a file in the test's directory (O_APPEND: safe across processes)."""
        fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)


    @app.task(name="record")
    def record(value):
        mark("record.txt", f"{value} {os.getpid()}")
        return value


    @app.task(name="slow")
    def slow(tag, seconds, quick_on_retry=False):
        attempt = current_job().attempt
        mark(tag, f"started {attempt} {os.getpid()}")
        if not (quick_on_retry and attempt > 1):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(0.05)
        mark(tag, f"done {attempt} {os.getpid()}")
        return tag


    @app.task(name="async_slow")
    async def async_slow(tag, seconds):
        mark(tag, f"started {os.getpid()}")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            mark(tag, "cancelled")
            raise
        finally:
            mark(tag, "finally")
        mark(tag, "done")
        return tag


    @app.task(name="steps")
    def steps(n, pause):
        job = current_job()
        for i in range(1, n + 1):
            time.sleep(pause)
            job.progress(100 * i / (n + 1), f"step {i} of {n}")
        time.sleep(pause)
        return n


    @app.task(name="whoami")
    def whoami():
        return os.getpid()


    @app.task(name="poison")
    def poison(tag):
        """Kill its own process every time (as a segfault or the OOM killer would)."""
        mark(tag, f"run {os.getpid()}")
        os._exit(1)


    @app.task(name="busy")
    def busy(tag, seconds):
        """Hold the GIL for about ``seconds`` in one C call (a catastrophic-backtracking match,
        calibrated here: each extra character doubles its time), starving every other thread."""
        import math
        import re

        mark(tag, f"started {os.getpid()}")
        pattern = re.compile(r"(a+)+$")
        n, took = 12, 0.0
        while took < 0.02:
            n += 1
            begun = time.perf_counter()
            pattern.match("a" * n + "b")
            took = time.perf_counter() - begun
        n += max(0, math.ceil(math.log2(seconds / took)))
        begun = time.perf_counter()
        pattern.match("a" * n + "b")
        mark(tag, f"done {time.perf_counter() - begun:.2f} {os.getpid()}")
        return tag
    '''
)


def _client_app(url: str) -> App:
    """The test process's App: same task names and signatures, bodies never run here."""
    app = App(url, lease=LEASE)

    @app.task(name="record")
    def record(value: Any) -> Any: ...

    @app.task(name="slow")
    def slow(tag: str, seconds: float, quick_on_retry: bool = False) -> Any: ...

    @app.task(name="async_slow")
    async def async_slow(tag: str, seconds: float) -> Any: ...

    @app.task(name="steps")
    def steps(n: int, pause: float) -> Any: ...

    @app.task(name="whoami")
    def whoami() -> Any: ...

    @app.task(name="poison")
    def poison(tag: str) -> Any: ...

    @app.task(name="busy")
    def busy(tag: str, seconds: float) -> Any: ...

    return app


def open_store(url: str, barrier: Any, results: Any) -> None:
    """In a fresh process: wait for the others, then open (maybe create) the store and read it."""
    from conveyor.backends import open_backend

    try:
        backend = open_backend(url)  # imported and built before the barrier: only the opening races
        barrier.wait(30)
        backend.setup()
        backend.counts(time.time())
        results.put("ok")
    except BaseException as exc:
        results.put(repr(exc))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def worker_children(pid: int) -> set[int]:
    """Live worker processes spawned by the supervisor ``pid`` (not multiprocessing's resource tracker)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


class Cluster:
    """Worker processes started by one test, the files they write, and a client App."""

    def __init__(self, directory: Path, url: str) -> None:
        self.dir = directory
        self.url = url
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.signalled: set[int] = set()  #: pids sent a signal on purpose: their exit is expected
        (directory / "e2eapp.py").write_text(APP_SOURCE)
        self.app = _client_app(url)
        self.env = {
            **os.environ,
            "CONVEYOR_URL": url,
            "E2E_LEASE": str(LEASE),
            "E2E_DIR": str(directory),
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",  # SIGABRT (see dump_stacks) prints every thread's stack to the log
        }

    # processes --------------------------------------------------------------------
    def worker(
        self,
        *,
        concurrency: int = 2,
        processes: int = 0,
        grace: float = 5.0,
        lease: float = LEASE,
        extra: tuple[str, ...] = (),
        app_path: str = "e2eapp:app",
    ) -> subprocess.Popen[bytes]:
        """Start `python -m conveyor worker` in its own process group, logging to a file here.

        ``lease`` is the app's lease in that process (E2E_LEASE)."""
        log = self.dir / f"worker-{len(self.procs)}.log"
        cmd = [sys.executable, "-m", "conveyor", "worker", app_path, "-c", str(concurrency), "-p", str(processes),
               "--grace", str(grace), "--poll", "0.5", *extra]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                env={**self.env, "E2E_LEASE": str(lease)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def log_text(self, proc: subprocess.Popen[bytes]) -> str:
        """What ``proc`` (and, for a supervisor, its children) logged so far."""
        return next(path for p, path in self.procs if p is proc).read_text(errors="replace")

    def wait_started(self, proc: subprocess.Popen[bytes], workers: int = 1, timeout: float = 30) -> None:
        """Wait until ``workers`` worker loops of ``proc`` have logged that they started."""
        self.wait_for(
            lambda: self.log_text(proc).count(" started: queues ") >= workers or None,
            timeout,
            f"{workers} worker(s) of pid {proc.pid} to start",
            proc=proc,
        )

    def send(self, proc: subprocess.Popen[bytes], signum: int, *, group: bool = False) -> None:
        """Send ``signum`` to ``proc`` (or to its whole process group); from now on it may exit."""
        self.signalled.add(proc.pid)
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    def signal_and_wait(self, proc: subprocess.Popen[bytes], signum: int, timeout: float = 20) -> int:
        """Send ``signum`` to ``proc`` alone (not its group) and return its exit code."""
        self.send(proc, signum)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pid {proc.pid} did not exit within {timeout} s of {signal.Signals(signum).name}")

    def kill_all(self) -> None:
        """SIGKILL every process group this test started (workers and their children)."""
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def dump_stacks(self) -> None:
        """SIGABRT every live process this test started (and its children): with faulthandler on,
        each prints every thread's stack to its log before it dies, so a hang says where it hung."""
        pids = []
        for proc, _ in self.procs:
            if proc.poll() is None:
                pids += [*worker_children(proc.pid), proc.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGABRT)
        for proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def logs(self) -> str:
        parts = []
        for proc, path in self.procs:
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"===== {path.name} (pid {proc.pid}, exit {proc.poll()}) =====\n{text}")
        return "\n".join(parts)

    # waiting and reading ------------------------------------------------------------
    def wait_for(
        self,
        check: Callable[[], T | None],
        timeout: float,
        what: str,
        *,
        proc: subprocess.Popen[bytes] | None = None,
        every: float = 0.05,
    ) -> T:
        """Poll ``check`` until it returns something other than None/False; fail after ``timeout`` s,
        or at once when a worker exits that no test step signalled (or ``proc`` exits at all)."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value is not None and value is not False:
                return value
            for started, _ in self.procs:  # a worker that died unasked fails the test at once
                if (started is proc or started.pid not in self.signalled) and started.poll() is not None:
                    pytest.fail(f"pid {started.pid} exited with {started.returncode} while waiting for {what}")
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(every)

    def wait_status(self, job_id: str, *statuses: Status, timeout: float = 30) -> Job:
        """Wait until the job reads as one of ``statuses``; return its record."""
        wanted = set(statuses)

        def check() -> Job | None:
            job = self.app.job(job_id)
            return job if job.status in wanted else None

        return self.wait_for(check, timeout, f"job {job_id} to be {'/'.join(s.value for s in statuses)}")

    def lines(self, name: str) -> list[str]:
        """The lines tasks appended to ``name`` so far."""
        path = self.dir / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_line(self, name: str, prefix: str, timeout: float = 30) -> str:
        """Wait until a task has appended a line starting with ``prefix`` to ``name``."""

        def check() -> str | None:
            return next((line for line in self.lines(name) if line.startswith(prefix)), None)

        return self.wait_for(check, timeout, f"a line {prefix!r} in {name}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The one place the end-to-end suite picks its store. Add a backend as a parameter; a
    server-backed one must hand each test an empty store (the tests count jobs with App.stats())."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "store.db")
    elif request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")  # a throwaway database (tests/conftest.py)
        cleaner = open_backend(url)
        cleaner.setup()
        cleaner.destroy_all()
        cleaner.close()
        yield url
    else:  # pragma: no cover
        raise AssertionError(f"unknown store {request.param}")


@pytest.fixture
def cluster(tmp_path: Path, store_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, store_url)
    try:
        yield c
    finally:
        c.kill_all()
        c.app.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach every worker's log to a failed end-to-end test's report."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        cluster = getattr(item, "funcargs", {}).get("cluster")
        if isinstance(cluster, Cluster):
            cluster.dump_stacks()
            report.sections.append(("worker logs", cluster.logs()))
