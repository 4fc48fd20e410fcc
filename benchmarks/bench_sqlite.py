"""conveyor (SQLite store) side by side with huey's SqliteHuey on the same no-op workload.

    python benchmarks/bench_sqlite.py [--jobs 10000] [--single-jobs 2000] [--latency-samples 200]

Prints single enqueue, bulk enqueue and drain rates (jobs/s) and idle-start latency
p50/p99 for both, with ratios. Every system gets fresh SQLite files in a fresh temp
directory and 2 worker processes. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _record  # noqa: E402

AIMS = {  # metric -> (aim, higher is better)
    "drain_ratio": 2.0,
    "bulk": 50_000.0,
    "single": 5_000.0,
    "p50": 0.010,
}


# child processes -----------------------------------------------------------------------
class Workers:
    """Worker processes started in a session of their own, so the whole group can be stopped."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self.proc = subprocess.Popen(
            argv, cwd=HERE, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} workers exited with code {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Ask the group to stop; kill it if it is still there after ``timeout`` seconds."""
        pgid = self.proc.pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # any child left behind by the group leader
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log_file.close()


_running: list[Workers] = []


@contextlib.contextmanager
def workers(name: str, argv: list[str], env: dict[str, str], log: Path, stop_signal: int) -> Iterator[Workers]:
    group = Workers(name, argv, env, log)
    _running.append(group)
    try:
        yield group
    finally:
        group.stop(stop_signal)
        _running.remove(group)


def _kill_all(*_: object) -> None:
    for group in list(_running):
        group.stop(signal.SIGKILL, timeout=2)
    raise SystemExit(130)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, group: Workers, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        group.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group.name}: timed out after {timeout:.0f} s waiting for {what}\n{group.tail()}")
        time.sleep(every)


# the systems ---------------------------------------------------------------------------
@dataclass
class Result:
    single: float = 0.0  #: jobs/s
    bulk: float = 0.0
    drain: float = 0.0  #: jobs/s, first task start to last job finished
    drain_cold: float = 0.0  #: jobs/s, including worker start-up
    latencies: list[float] = field(default_factory=list)  #: seconds


class System:
    name = ""
    records_finish = False  #: the store records when each job finished (huey deletes a job at dequeue)
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        root.mkdir()

    def fresh(self, label: str) -> tuple[Path, Path]:
        """A fresh database path and timestamp directory for one phase."""
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        return self.root / f"{label}.db", ts_dir

    # to be provided by each system
    def enqueuer(self, db: Path) -> tuple[Callable[[int], None], Callable[[range], None], Callable[[], None]]:
        """(enqueue one, enqueue many, close) on ``db``."""
        raise NotImplementedError

    def start(self, db: Path, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        raise NotImplementedError

    def finished_in_store(self, db: Path, n: int) -> float | None:
        """When the store recorded the last of ``n`` jobs finished (None: it keeps no such record)."""
        return None

    # the phases
    def single_enqueue(self, n: int) -> float:
        db, _ = self.fresh("single")
        one, _many, close = self.enqueuer(db)
        one(-1)  # open the connection and create the schema outside the timing
        start = time.perf_counter()
        for i in range(n):
            one(i)
        elapsed = time.perf_counter() - start
        close()
        return n / elapsed

    def bulk_enqueue(self, db: Path, n: int) -> float:
        one, many, close = self.enqueuer(db)
        one(-1)  # warm-up job; the drain counts it too
        start = time.perf_counter()
        many(range(n))
        elapsed = time.perf_counter() - start
        close()
        return n / elapsed

    def drain(self, db: Path, ts_dir: Path, n: int) -> tuple[float, float]:
        launched = time.time()
        with self.start(db, ts_dir, "drain") as group:
            wait_until(f"{n} jobs to run", lambda: _record.count(ts_dir) >= n, self.args.timeout, group, 0.02)
            done_in_store = None
            if self.records_finish:
                wait_until(
                    "the store to show every job finished", lambda: self.finished_in_store(db, n) is not None, 60, group
                )
                done_in_store = self.finished_in_store(db, n)
        rows = _record.read(ts_dir)
        tags = [tag for tag, _, _ in rows]
        if len(tags) != n or len(set(tags)) != n:
            raise RuntimeError(f"{self.name}: expected {n} distinct runs, got {len(tags)} ({len(set(tags))} distinct)")
        first_start = min(start for _, start, _ in rows)
        last_end = max(end for _, _, end in rows)
        if done_in_store is not None:
            last_end = max(last_end, done_in_store)
        return n / (last_end - first_start), n / (last_end - launched)

    def latency(self, samples: int, gap: float, idle: float) -> list[float]:
        db, ts_dir = self.fresh("latency")
        one, _many, close = self.enqueuer(db)
        with self.start(db, ts_dir, "latency") as group:
            one(-1)  # a warm-up job: the workers are up once it has run
            wait_until("the warm-up job", lambda: _record.count(ts_dir) >= 1, self.args.timeout, group)
            time.sleep(idle)
            before: dict[int, float] = {}
            t0 = time.monotonic()
            for i in range(samples):
                pause = t0 + i * gap - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                before[i] = time.time()
                one(i)
            wait_until(f"{samples} latency jobs", lambda: _record.count(ts_dir) >= samples + 1, 60, group)
        close()
        starts = {tag: start for tag, start, _ in _record.read(ts_dir) if tag >= 0}
        return [starts[i] - before[i] for i in range(samples)]

    def run(self) -> Result:
        args = self.args
        result = Result()
        print(f"[{self.name}] single enqueue x{args.single_jobs} ...", flush=True)
        result.single = self.single_enqueue(args.single_jobs)
        print(f"[{self.name}] bulk enqueue x{args.jobs} ...", flush=True)
        db, ts_dir = self.fresh("drain")
        result.bulk = self.bulk_enqueue(db, args.jobs)
        print(f"[{self.name}] drain x{args.jobs + 1} with 2 worker processes ...", flush=True)
        result.drain, result.drain_cold = self.drain(db, ts_dir, args.jobs + 1)
        print(f"[{self.name}] idle-start latency x{args.latency_samples} ...", flush=True)
        result.latencies = self.latency(args.latency_samples, args.gap / 1000, args.idle)
        return result


class Conveyor(System):
    name = "conveyor"
    records_finish = True

    def enqueuer(self, db: Path) -> tuple[Callable[[int], None], Callable[[range], None], Callable[[], None]]:
        from conveyor_app import make_app

        app = make_app(f"sqlite:///{db}")
        task = app.tasks["bench.noop"]

        def many(tags: range) -> None:
            app.enqueue_many([task.s(i) for i in tags])

        return task.delay, many, app.close

    def start(self, db: Path, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        argv = [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            "conveyor_app:app",
            "-p",
            "2",
            "-c",
            str(self.args.concurrency),
            "--log-level",
            "WARNING",
            "--url",
            f"sqlite:///{db}",
        ]
        env = {**os.environ, "BENCH_TS_DIR": str(ts_dir), "PYTHONPATH": _pythonpath()}
        return workers(self.name, argv, env, self.root / f"{label}-workers.log", self.stop_signal)

    def finished_in_store(self, db: Path, n: int) -> float | None:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            done, last = conn.execute(
                "SELECT count(*), max(finished_at) FROM conveyor_jobs WHERE status = 'succeeded'"
            ).fetchone()
        return last if done >= n else None


class Huey(System):
    name = "huey"
    stop_signal = signal.SIGINT  # huey_consumer: SIGINT is its graceful stop, SIGTERM an immediate one

    def enqueuer(self, db: Path) -> tuple[Callable[[int], None], Callable[[range], None], Callable[[], None]]:
        from huey_app import make_huey

        huey, task = make_huey(str(db))

        def many(tags: range) -> None:
            task.map(tags)  # huey has no bulk enqueue; map() is one INSERT + COMMIT per job

        return task, many, huey.storage.close

    def start(self, db: Path, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        consumer = shutil.which("huey_consumer") or shutil.which("huey_consumer.py")
        if consumer is None:
            raise SystemExit("huey_consumer was not found on PATH: pip install -e '.[bench]'")
        argv = [consumer, "huey_app.huey", "-w", "2", "-k", "process"]
        if self.args.huey_delay is not None:
            argv += ["-d", str(self.args.huey_delay)]
        env = {**os.environ, "BENCH_TS_DIR": str(ts_dir), "BENCH_HUEY_DB": str(db), "PYTHONPATH": _pythonpath()}
        return workers(self.name, argv, env, self.root / f"{label}-workers.log", self.stop_signal)


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)


# report --------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def report(conv: Result, huey: Result, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    def rate(x: float) -> str:
        return f"{x:,.0f}"

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]missed[/red]"

    c50, c99 = pct(conv.latencies, 50), pct(conv.latencies, 99)
    h50, h99 = pct(huey.latencies, 50), pct(huey.latencies, 99)
    rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
    table = Table(title=f"conveyor vs huey (SqliteHuey), {args.jobs:,} no-op jobs, 2 worker processes{rounds}")
    table.add_column("metric")
    table.add_column("conveyor", justify="right")
    table.add_column("huey", justify="right")
    table.add_column("conveyor/huey", justify="right")
    table.add_column("aim")
    drain_ratio = conv.drain / huey.drain
    rows = [
        (
            f"single enqueue, jobs/s (x{args.single_jobs:,})",
            rate(conv.single),
            rate(huey.single),
            f"{conv.single / huey.single:.2f}x",
            f"> 5,000/s {mark(conv.single > AIMS['single'])}",
        ),
        (
            f"bulk enqueue, jobs/s (x{args.jobs:,})",
            rate(conv.bulk),
            rate(huey.bulk),
            f"{conv.bulk / huey.bulk:.2f}x",
            f"> 50,000/s {mark(conv.bulk > AIMS['bulk'])}",
        ),
        (
            "drain, jobs/s",
            rate(conv.drain),
            rate(huey.drain),
            f"{drain_ratio:.2f}x",
            f">= 2x huey {mark(drain_ratio >= AIMS['drain_ratio'])}",
        ),
        (
            "  drain incl. worker start-up, jobs/s",
            rate(conv.drain_cold),
            rate(huey.drain_cold),
            f"{conv.drain_cold / huey.drain_cold:.2f}x",
            "",
        ),
        ("idle-start latency p50", ms(c50), ms(h50), f"{h50 / c50:.1f}x faster", f"< 10 ms {mark(c50 < AIMS['p50'])}"),
        ("idle-start latency p99", ms(c99), ms(h99), f"{h99 / c99:.1f}x faster", ""),
        (
            "  latency mean / max",
            f"{ms(statistics.fmean(conv.latencies))} / {ms(max(conv.latencies))}",
            f"{ms(statistics.fmean(huey.latencies))} / {ms(max(huey.latencies))}",
            "",
            "",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    huey_poll = f"-d {args.huey_delay}" if args.huey_delay is not None else "defaults: -d 0.1 -m 10 -b 1.15"
    console.print(
        f"conveyor: `conveyor worker -p 2 -c {args.concurrency}` (SQLite WAL, synchronous=NORMAL); "
        f"huey: `huey_consumer -w 2 -k process` (polling {huey_poll}; SQLite WAL, synchronous default FULL). "
        f"Latency: {args.latency_samples} jobs {args.gap:g} ms apart after {args.idle:g} s idle; "
        "'x faster' = huey/conveyor. huey bulk enqueue = Task.map (huey has no bulk API)."
    )


def print_rounds(runs: dict[str, list[Result]]) -> None:
    """One line per system and round, for a --repeat run."""
    for name, rounds in runs.items():
        for i, r in enumerate(rounds):
            print(
                f"{name} round {i + 1}: single {r.single:,.0f}/s  bulk {r.bulk:,.0f}/s  drain {r.drain:,.0f}/s  "
                f"p50 {pct(r.latencies, 50) * 1000:.2f} ms  p99 {pct(r.latencies, 99) * 1000:.2f} ms"
            )


def combine(rounds: list[Result]) -> Result:
    """The median of each rate over the rounds; latency samples pooled."""
    return Result(
        single=statistics.median(r.single for r in rounds),
        bulk=statistics.median(r.bulk for r in rounds),
        drain=statistics.median(r.drain for r in rounds),
        drain_cold=statistics.median(r.drain_cold for r in rounds),
        latencies=[x for r in rounds for x in r.latencies],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to bulk-enqueue and drain (default 10000)")
    parser.add_argument("--single-jobs", type=int, default=2_000, help="jobs to enqueue one by one (default 2000)")
    parser.add_argument("--latency-samples", type=int, default=200, help="idle-start latency samples (default 200)")
    parser.add_argument("--gap", type=float, default=20.0, help="ms between latency enqueues (default 20)")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds the workers idle first (default 1)")
    parser.add_argument("--concurrency", "-c", type=int, default=8, help="conveyor jobs per process (default 8)")
    parser.add_argument("--huey-delay", type=float, default=None, help="huey_consumer -d (default: huey's 0.1)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, systems alternating; medians (default 1)")
    parser.add_argument("--only", choices=["conveyor", "huey"], default=None, help="run one system only")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory and print its path")
    args = parser.parse_args(argv)

    if args.only != "conveyor":
        try:
            import huey  # noqa: F401
        except ImportError:
            print("error: huey is not installed; run: pip install -e '.[bench]'  (or use --only conveyor)")
            return 2

    signal.signal(signal.SIGTERM, _kill_all)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    runs: dict[str, list[Result]] = {}
    try:
        for round_ in range(args.repeat):  # alternate the systems so that a noisy spell hits both
            for system in (Conveyor, Huey):
                if args.only in (None, system.name):
                    root = tmp / f"{system.name}-{round_}"
                    runs.setdefault(system.name, []).append(system(root, args).run())
    except KeyboardInterrupt:
        return 130
    finally:
        for group in list(_running):
            group.stop(signal.SIGKILL, timeout=2)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    results = {name: combine(rs) for name, rs in runs.items()}
    if args.repeat > 1:
        print_rounds(runs)
    if args.only:
        r = results[args.only]
        lat = r.latencies
        print(
            f"{args.only}: single {r.single:,.0f}/s  bulk {r.bulk:,.0f}/s  drain {r.drain:,.0f}/s "
            f"(cold {r.drain_cold:,.0f}/s)  latency p50 {pct(lat, 50) * 1000:.2f} ms "
            f"p99 {pct(lat, 99) * 1000:.2f} ms"
        )
    else:
        report(results["conveyor"], results["huey"], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
