"""The chaos suite: real worker processes, real signals, real stores; invariants read from side-effect logs.

Two modes, picked by ``$CONVEYOR_CHAOS``:

- short (the default, part of every ``pytest -q``): each scenario once per store with small figures
  (400-job SIGKILL storms with 10 kills, one PostgreSQL restart); the whole suite takes under 2
  minutes on a 2-core machine, both stores included.
- long (``CONVEYOR_CHAOS=long pytest -q tests/chaos``): a soak: 2,000-job storms with 100 kills per
  store, five PostgreSQL restarts (crash and clean, in turn) under continuous producers, twice the
  busy jobs; about 6 minutes on the same machine. Run it before a release and after any change to
  the worker, the leader or a store.

Only the chaos tests: ``pytest -q -m chaos``; everything else: ``pytest -q -m "not chaos"``. Each scenario
prints one ``CHAOS ...`` line of figures (jobs, kills, runs, duplicates, all explained) at the end of the
run; docs/guarantees.md quotes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from conveyor import App, Job, Status
from conveyor.backends import open_backend

T = TypeVar("T")

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Mode:
    """How hard the chaos suite pushes: the figures of one run."""

    name: str
    jobs: int  #: jobs enqueued in a kill storm
    kills: int  #: SIGKILLs sent in a kill storm
    workers: int  #: worker processes running at once in a kill storm
    restarts: int  #: PostgreSQL restarts under load
    jobs_per_restart: int  #: jobs acknowledged between two restarts (and after the last)
    busy_jobs: int  #: concurrent GIL-holding jobs under a supervisor
    timeout: float  #: seconds one chaos test may take before pytest-timeout stops it


SHORT = Mode("short", jobs=400, kills=10, workers=3, restarts=1, jobs_per_restart=100, busy_jobs=3, timeout=150)
LONG = Mode("long", jobs=2000, kills=100, workers=3, restarts=5, jobs_per_restart=400, busy_jobs=6, timeout=1800)
MODE = LONG if os.environ.get("CONVEYOR_CHAOS", "short").strip().lower() == "long" else SHORT

#: Figures each scenario reports; printed together at the end of the run.
SUMMARIES: list[str] = []


def report(line: str) -> None:
    """Record (and print, for ``-s``) one scenario's figures."""
    text = f"CHAOS [{MODE.name}] {line}"
    SUMMARIES.append(text)
    print(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("chaos figures")
        for line in SUMMARIES:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every chaos test gets the mode's time limit (a soak runs far longer than the default)."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(MODE.timeout))


class Cluster:
    """The worker processes one chaos test started, their logs, the side-effect log and a client App."""

    APP = "chaos_app:app"  #: the app the workers run (a subclass names another)

    def __init__(self, directory: Path, url: str, lease: float) -> None:
        self.dir = directory
        self.url = url
        self.lease = lease
        self.side_log = directory / "side-effects.log"
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.app = App(url, lease=lease)
        self.env = {
            **os.environ,
            "CONVEYOR_URL": url,
            "CHAOS_LOG": str(self.side_log),
            "CHAOS_LEASE": str(lease),
            "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
        }

    def worker(
        self, *, concurrency: int = 4, processes: int = 0, max_rescues: int | None = None, poll: float = 0.2
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m conveyor worker APP`` (``self.APP``) in its own process group."""
        log = self.dir / f"worker-{len(self.procs)}.log"
        env = dict(self.env)
        if max_rescues is not None:
            env["CHAOS_MAX_RESCUES"] = str(max_rescues)
        cmd = [sys.executable, "-m", "conveyor", "worker", self.APP, "-c", str(concurrency),
               "-p", str(processes), "--grace", "1", "--poll", str(poll)]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        self.procs.append((proc, log))
        return proc

    def log_text(self, proc: subprocess.Popen[bytes]) -> str:
        return next(path for p, path in self.procs if p is proc).read_text(errors="replace")

    def wait_started(self, proc: subprocess.Popen[bytes], workers: int = 1, timeout: float = 60) -> None:
        """Wait until ``workers`` worker loops of ``proc`` logged that they started."""

        def started() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"worker pid {proc.pid} exited with {proc.returncode} before it started")
            return self.log_text(proc).count(" started: queues ") >= workers

        self.wait_for(started, timeout, f"{workers} worker(s) of pid {proc.pid} to start")

    def kill(self, proc: subprocess.Popen[bytes]) -> float:
        """SIGKILL ``proc``'s whole process group; returns when (wall clock) the signal had been sent:
        read after the call, since a run may start in the microseconds between reading the clock and
        the signal, and it too is a run the kill cut short."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        at = time.time()
        proc.wait(30)
        return at

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def logs(self) -> str:
        parts = []
        for proc, path in self.procs:
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"===== {path.name} (pid {proc.pid}, exit {proc.poll()}) =====\n{text[-20000:]}")
        return "\n".join(parts)

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
        """Poll ``check`` until it returns something truthy; fail the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(every)

    def wait_finished(self, job_id: str, timeout: float = 60) -> Job:
        """Wait until the job is in a terminal state; return its record."""

        def check() -> Job | None:
            job = self.app.job(job_id)
            return job if job.status.finished else None

        return self.wait_for(check, timeout, f"job {job_id} to finish")

    def unfinished(self) -> int:
        """Jobs still queued, scheduled, running or waiting."""
        return sum(n for status, n in self.app.stats().get("all", {}).items() if not Status(status).finished)

    def all_jobs(self) -> dict[str, Job]:
        """Every job in the store, by id."""
        return {job.id: job for job in self.app.jobs(limit=10**7)}


def empty_store(url: str) -> None:
    """Create the schema if needed and delete every job (a server store is shared by the session)."""
    backend = open_backend(url)
    try:
        backend.setup()
        backend.destroy_all()
    finally:
        backend.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each chaos scenario runs on every store: a new SQLite file, or the session's throwaway
    PostgreSQL database emptied (skipped loudly if unreachable, failed under CI=true)."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "store.db")
    else:
        url: str = request.getfixturevalue("postgres_url")
        empty_store(url)
        yield url


def make_cluster(tmp_path: Path, url: str, lease: float) -> Iterator[Cluster]:
    """A Cluster whose processes are all SIGKILLed at the end, whatever happened."""
    c = Cluster(tmp_path, url, lease)
    try:
        yield c
    finally:
        c.kill_all()
        c.app.close()


@pytest.fixture
def cluster(tmp_path: Path, store_url: str) -> Iterator[Cluster]:
    """Worker processes on this test's store, with a 2-second lease (long enough that a loaded
    2-core machine does not miss heartbeats, short enough that rescues happen within the test)."""
    yield from make_cluster(tmp_path, store_url, lease=2.0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach every worker's log to a failed chaos test's report."""
    outcome = yield
    result = outcome.get_result()  # type: ignore[attr-defined]
    if result.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Cluster):
                result.sections.append(("worker logs", value.logs()))
