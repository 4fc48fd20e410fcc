"""conveyor (SQLite store) side by side with huey's SqliteHuey, on a no-op body and a Redis round-trip body.

    python benchmarks/bench_sqlite.py [--body all] [--repeat 3] [--quick]
        [--jobs 10000] [--single-jobs 2000] [--latency-samples 200]

Prints single enqueue, bulk enqueue and drain rates (jobs/s, drain per task body) and idle-start
latency p50/p99, median and spread over the rounds, with conveyor/huey ratios from the medians.
conveyor runs at its defaults (``-c 32``) and tuned (``-c 64``; ``-c 128`` for the async body).
Every system gets fresh SQLite files in a fresh temp directory and 2 worker processes. See
benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _record  # noqa: E402
import _report  # noqa: E402
from _report import Round, Row  # noqa: E402

FULL = {"jobs": 10_000, "single_jobs": 2_000, "latency_samples": 200, "idle": 1.0}
QUICK = {"jobs": 500, "single_jobs": 200, "latency_samples": 30, "idle": 0.5}  #: --quick: a smoke run
Enqueuer = tuple[Callable[[int], Any], Callable[[range], None], Callable[[], Any]]  #: (one, many, close)


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
class System:
    """One row of the table: a system at one setting. ``run_round`` measures every phase once."""

    name = ""
    records_finish = False  #: the store records when each job finished (huey deletes a job at dequeue)
    stop_signal = signal.SIGTERM
    unsupported: dict[str, str] = {}  #: body -> why this system cannot run it

    def __init__(self, args: argparse.Namespace, label: str = "", drain_only: bool = False) -> None:
        self.args = args
        self.drain_only = drain_only  #: a second setting of the same system: its enqueue figures would be the same
        self.slug = self.name
        self.root = Path()
        self.row = Row(label or self.name, self.name, self.settings(), self.name == "conveyor", dict(self.unsupported))
        self.row.short = "conveyor " + label.split()[1].lstrip("(") if self.row.conveyor else self.name

    def settings(self) -> str:
        raise NotImplementedError

    def fresh(self, label: str) -> tuple[Any, Path]:
        """A fresh database and timestamp directory for one phase."""
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        return self.root / f"{label}.db", ts_dir

    # to be provided by each system
    def enqueuer(self, db: Any, body: str) -> Enqueuer:
        """(enqueue one, enqueue many, close) for ``body``'s task on ``db``."""
        raise NotImplementedError

    def start(self, db: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        """Two worker processes on ``db`` that run ``body``'s task."""
        raise NotImplementedError

    def finished_in_store(self, db: Any, n: int) -> float | None:
        """When the store recorded the last of ``n`` jobs finished (None: it keeps no such record)."""
        return None

    def failure(self, db: Any) -> str | None:
        """A job's error if the store shows one (checked once a second during a drain), else None."""
        return None

    def env(self, ts_dir: Path) -> dict[str, str]:
        """The workers' environment: where to write timestamps, which Redis the bodies use, benchmarks/ importable."""
        redis_url = self.args.redis_url
        return {**os.environ, "BENCH_TS_DIR": str(ts_dir), "BENCH_REDIS_URL": redis_url, "PYTHONPATH": _pythonpath()}

    # the phases
    def single_enqueue(self, n: int) -> float:
        db, _ = self.fresh("single")
        one, _many, close = self.enqueuer(db, "noop")
        one(-1)  # open the connection and create the schema outside the timing
        start = time.perf_counter()
        for i in range(n):
            one(i)
        elapsed = time.perf_counter() - start
        close()
        return n / elapsed

    def bulk_enqueue(self, db: Any, n: int, body: str) -> float:
        one, many, close = self.enqueuer(db, body)
        one(-1)  # warm-up job; the drain counts it too
        start = time.perf_counter()
        many(range(n))
        elapsed = time.perf_counter() - start
        close()
        return n / elapsed

    def drain(self, db: Any, ts_dir: Path, n: int, body: str) -> tuple[float, float]:
        launched = time.time()
        look_again = [time.monotonic() + 1.0]

        def ran() -> bool:  # and, once a second, fail fast if the store shows a job's error
            if _record.count(ts_dir) >= n:
                return True
            if time.monotonic() > look_again[0]:
                look_again[0] = time.monotonic() + 1.0
                error = self.failure(db)
                if error:
                    raise RuntimeError(f"{self.row.label}: a `{body}` job failed: {str(error)[-800:]}")
            return False

        with self.start(db, ts_dir, "drain-" + body, body) as group:
            wait_until(f"{n} jobs to run", ran, self.args.timeout, group, 0.02)
            done_in_store = None
            if self.records_finish:
                wait_until(
                    "the store to show every job finished", lambda: self.finished_in_store(db, n) is not None, 60, group
                )
                done_in_store = self.finished_in_store(db, n)
        rows = _record.read(ts_dir)
        tags = [tag for tag, _, _ in rows]
        if len(tags) != n or len(set(tags)) != n:
            raise RuntimeError(
                f"{self.row.label}: expected {n} distinct runs, got {len(tags)} ({len(set(tags))} distinct)"
            )
        if body != "noop" and (incrs := _record.counter(self.args.redis_url)) != n:
            raise RuntimeError(f"{self.row.label}: {n} `{body}` jobs ran but Redis counted {incrs} INCRs")
        first_start = min(start for _, start, _ in rows)
        last_end = max(end for _, _, end in rows)
        if done_in_store is not None:
            last_end = max(last_end, done_in_store)
        return n / (last_end - first_start), n / (last_end - launched)

    def latency(self, samples: int, gap: float, idle: float) -> list[float]:
        db, ts_dir = self.fresh("latency")
        one, _many, close = self.enqueuer(db, "noop")
        with self.start(db, ts_dir, "latency", "noop") as group:
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

    def run_round(self, root: Path, bodies: list[str]) -> Round:
        """Every phase once, in ``root``: single enqueue, then per body a bulk enqueue and its drain, then latency."""
        args, label = self.args, self.row.label
        self.root = root
        root.mkdir(parents=True)
        result = Round()
        if not self.drain_only:
            print(f"[{label}] single enqueue x{args.single_jobs} ...", flush=True)
            result.single = self.single_enqueue(args.single_jobs)
        for body in bodies:
            if body in self.unsupported:
                continue
            db, ts_dir = self.fresh("drain-" + body)
            _record.flush_redis(args.redis_url)
            print(f"[{label}] bulk enqueue x{args.jobs}, drain with 2 worker processes, `{body}` body ...", flush=True)
            result.bulk.append(self.bulk_enqueue(db, args.jobs, body))
            result.drain[body], result.drain_cold[body] = self.drain(db, ts_dir, args.jobs + 1, body)
        if not self.drain_only:
            print(f"[{label}] idle-start latency x{args.latency_samples} ...", flush=True)
            result.latencies = self.latency(args.latency_samples, args.gap / 1000, args.idle)
        return result


class Conveyor(System):
    name = "conveyor"
    records_finish = True

    def __init__(
        self, args: argparse.Namespace, concurrency: int, async_concurrency: int, label: str, drain_only: bool = False
    ) -> None:
        self.concurrency = concurrency  #: -c for the sync bodies
        self.async_concurrency = async_concurrency  #: -c for the async body
        super().__init__(args, label, drain_only)
        self.slug = "conveyor_tuned" if drain_only else "conveyor"

    def settings(self) -> str:
        also = (
            f"; `-c {self.async_concurrency}` for the async body" if self.async_concurrency != self.concurrency else ""
        )
        return (
            f"`python -m conveyor worker conveyor_app:app -p 2 -c {self.concurrency} --log-level WARNING`{also}; "
            "sync bodies on its thread pool, the async body on its event loop; " + self.store_settings()
        )

    def store_settings(self) -> str:
        return (
            "SQLite WAL; enqueues synced (`synchronous=FULL`, the default), the workers' own commits"
            " `synchronous=NORMAL`; idle workers watch `PRAGMA data_version`"
        )

    def url(self, db: Any) -> str:
        return f"sqlite:///{db}"

    def enqueuer(self, db: Any, body: str) -> Enqueuer:
        from conveyor_app import TASKS, make_app

        app = make_app(self.url(db))
        task = app.tasks[TASKS[body]]

        def many(tags: range) -> None:
            app.enqueue_many([task.s(i) for i in tags])

        return task.delay, many, app.close

    def argv(self, db: Any, body: str) -> list[str]:
        concurrency = self.async_concurrency if body == "redis-async" else self.concurrency
        argv = [sys.executable, "-m", "conveyor", "worker", "conveyor_app:app", "-p", "2", "-c", str(concurrency)]
        return [*argv, "--log-level", "WARNING", "--url", self.url(db)]

    def start(self, db: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        log = self.root / f"{label}-workers.log"
        return workers(self.row.label, self.argv(db, body), self.env(ts_dir), log, self.stop_signal)

    def failure(self, db: Any) -> str | None:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            row = conn.execute("SELECT error FROM conveyor_jobs WHERE error IS NOT NULL LIMIT 1").fetchone()
        return None if row is None else str(row[0])[-500:]

    def finished_in_store(self, db: Any, n: int) -> float | None:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            done, last = conn.execute(
                "SELECT count(*), max(finished_at) FROM conveyor_jobs WHERE status = 'succeeded'"
            ).fetchone()
        return last if done >= n else None


class Huey(System):
    name = "huey"
    stop_signal = signal.SIGINT  # huey_consumer: SIGINT is its graceful stop, SIGTERM an immediate one
    unsupported = {"redis-async": "huey runs sync task functions only: it has no async tasks"}

    def settings(self) -> str:
        poll = f"-d {self.args.huey_delay}" if self.args.huey_delay is not None else "defaults `-d 0.1 -m 10 -b 1.15`"
        return (
            f"`huey_consumer huey_app.huey -w 2 -k process` (2 worker processes; otherwise huey's defaults: polling "
            f"{poll}); `SqliteHuey` with SQLite WAL and SQLite's default `synchronous=FULL`"
        )

    def enqueuer(self, db: Any, body: str) -> Enqueuer:
        from huey_app import make_huey

        huey, tasks = make_huey(str(db))
        task = tasks[body]

        def many(tags: range) -> None:
            task.map(tags)  # huey has no bulk enqueue; map() is one INSERT + COMMIT per job

        return task, many, huey.storage.close

    def start(self, db: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        consumer = shutil.which("huey_consumer") or shutil.which("huey_consumer.py")
        if consumer is None:
            raise SystemExit("huey_consumer was not found on PATH: pip install -e '.[bench]'")
        argv = [consumer, "huey_app.huey", "-w", "2", "-k", "process"]
        if self.args.huey_delay is not None:
            argv += ["-d", str(self.args.huey_delay)]
        env = {**self.env(ts_dir), "BENCH_HUEY_DB": str(db)}
        return workers(self.name, argv, env, self.root / f"{label}-workers.log", self.stop_signal)


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)


# shared by the drivers ----------------------------------------------------------------------
def bodies_of(text: str) -> list[str]:
    if text == "all":
        return list(_record.BODIES)
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(names) - set(_record.BODIES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(_record.BODIES)} or all")
    return [b for b in _record.BODIES if b in names]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options both drivers share (sizes, bodies, conveyor's settings, repeats, output)."""
    full = FULL
    parser.add_argument("--body", type=bodies_of, default=list(_record.BODIES), metavar="noop|redis|redis-async|all",
                        help="task bodies to drain, comma-separated (default all, in one run)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=None, help=f"jobs to bulk-enqueue and drain ({full['jobs']})")
    parser.add_argument(
        "--single-jobs", type=int, default=None, help=f"jobs enqueued one by one ({full['single_jobs']})"
    )
    parser.add_argument("--latency-samples", type=int, default=None, help=f"latency jobs ({full['latency_samples']})")
    parser.add_argument("--gap", type=float, default=20.0, help="ms between latency enqueues (default 20)")
    parser.add_argument("--idle", type=float, default=None, help=f"seconds the workers idle first ({full['idle']})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --jobs 500 --single-jobs 200 "
                        "--latency-samples 30 --idle 0.5 (figures not to be quoted)")  # fmt: skip
    parser.add_argument("--concurrency", "-c", type=int, default=32, help="conveyor's default row: -c (CLI default 32)")
    parser.add_argument("--tuned-concurrency", type=int, default=64, help="conveyor's tuned row, sync bodies (64)")
    parser.add_argument("--tuned-async-concurrency", type=int, default=128, help="tuned row, async body (128)")
    parser.add_argument("--no-tuned", action="store_true", help="leave out conveyor's tuned row")
    parser.add_argument("--redis-url", default=_record.REDIS_URL,
                        help=f"Redis for the round-trip bodies; FLUSHDB'd per drain ({_record.REDIS_URL})")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="rounds, systems alternating; median and spread (1)")
    parser.add_argument("--json", default=None, help="also write every round's figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (worker logs) and print it")


def apply_sizes(args: argparse.Namespace) -> None:
    """Fill the size options left unset from --quick's or the full run's values."""
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def conveyor_rows(cls: type[Conveyor], args: argparse.Namespace) -> list[System]:
    """conveyor at its CLI defaults, and (unless --no-tuned) at the tuned settings, drains only."""
    rows: list[System] = [cls(args, args.concurrency, args.concurrency, f"conveyor (default -c {args.concurrency})")]
    if not args.no_tuned:
        tuned = f"-c {args.tuned_concurrency}"
        if "redis-async" in args.body and args.tuned_async_concurrency != args.tuned_concurrency:
            tuned += f", async -c {args.tuned_async_concurrency}"
        rows.append(cls(args, args.tuned_concurrency, args.tuned_async_concurrency, f"conveyor (tuned {tuned})", True))
    return rows


def run_rounds(systems: list[System], args: argparse.Namespace, tmp: Path) -> None:
    """``--repeat`` rounds; in each, every system in turn (so a noisy spell hits all), all bodies."""
    for round_ in range(args.repeat):
        if args.repeat > 1:
            print(f"--- round {round_ + 1} of {args.repeat}", flush=True)
        for system in systems:
            system.row.rounds.append(system.run_round(tmp / f"{system.slug}-{round_}", args.body))


def stop_everything() -> None:
    for group in list(_running):
        group.stop(signal.SIGKILL, timeout=2)


def meta(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    import platform

    return {"python": platform.python_version(), "executable": sys.executable, "conveyor": _conveyor_source(),
            "bodies": args.body, "jobs": args.jobs, "single_jobs": args.single_jobs, "repeat": args.repeat,
            "latency_samples": args.latency_samples, "gap_ms": args.gap, "idle_s": args.idle, "quick": args.quick,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), **more}  # fmt: skip


def _conveyor_source() -> str:
    try:
        import conveyor
    except ImportError:
        return "-"
    return str(Path(conveyor.__file__).resolve().parent.parent)


def report(rows: list[Row], args: argparse.Namespace, load: str) -> None:
    conv = rows[0] if rows and rows[0].conveyor else None
    tuned = rows[1] if len(rows) > 1 and rows[1].conveyor else None
    huey = next((r for r in rows if r.system == "huey"), None)
    measured = _report.metrics(args.body, args.single_jobs, args.jobs)
    rounds = f"median (min\u2013max) of {args.repeat} rounds" if args.repeat > 1 else "1 round"
    quick = " — QUICK SMOKE RUN, not figures to quote" if args.quick else ""
    print()
    if args.repeat > 1:
        print(_report.rounds_lines(rows, measured), end="\n\n")
    title = f"SQLite: {args.jobs:,} jobs per drain, 2 worker processes each, {rounds}{quick}"
    print(_report.figures_table(rows, measured, title))
    pairs = [(r, huey, f"{r.short} / huey") for r in (conv, tuned) if r] if huey else []
    if pairs:
        print(_report.ratio_table(pairs, measured, "conveyor vs huey, from the medians (> 1: conveyor better; "
                                                   "latency: huey/conveyor)"))  # fmt: skip
        print()
        by_key = {m.key: m for m in measured}
        print("Aims (issue 8), at conveyor's default settings:")
        for body in ("noop", "redis"):
            if f"drain:{body}" in by_key:
                print(_report.aim_line(f"drain, `{body}` body, >= 2x huey", conv, huey, by_key[f"drain:{body}"], 2.0))
        print("- idle-start latency p50 no worse than before issue 8: see bench_compare.py")
    print()
    print("Settings:")
    print(_report.settings_lines(rows))
    print(
        f"- bodies: {', '.join(args.body)} (`_record.py`); round-trip bodies INCR on {args.redis_url}. "
        f"Latency: {args.latency_samples} `noop` jobs {args.gap:g} ms apart after {args.idle:g} s idle. "
        "huey bulk enqueue = Task.map (huey has no bulk API). "
        f"Python {sys.version.split()[0]}; load average {load}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_options(parser)
    parser.add_argument("--huey-delay", type=float, default=None, help="huey_consumer -d (default: huey's 0.1)")
    parser.add_argument("--only", choices=["conveyor", "huey"], default=None, help="run one system only")
    args = parser.parse_args(argv)
    apply_sizes(args)

    if args.only != "conveyor":
        try:
            import huey  # noqa: F401
        except ImportError:
            print("error: huey is not installed; run: pip install -e '.[bench]'  (or use --only conveyor)")
            return 2
    try:
        _record.flush_redis(args.redis_url)
    except Exception as exc:
        print(f"error: cannot use Redis at {args.redis_url} for the round-trip bodies: {exc}")
        return 2

    systems: list[System] = []
    if args.only in (None, "conveyor"):
        systems += conveyor_rows(Conveyor, args)
    if args.only in (None, "huey"):
        systems.append(Huey(args))

    signal.signal(signal.SIGTERM, _kill_all)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    try:
        run_rounds(systems, args, tmp)
    except KeyboardInterrupt:
        return 130
    finally:
        stop_everything()
        with contextlib.suppress(Exception):
            _record.flush_redis(args.redis_url)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [s.row for s in systems]
    load = f"{load_before} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    if args.json:
        _report.dump(args.json, rows, meta(args, store="sqlite", load=load))
    report(rows, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
