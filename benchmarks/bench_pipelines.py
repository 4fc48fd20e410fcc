"""Three-stage pipelines: conveyor (SQLite and PostgreSQL stores) beside Celery chains; then conveyor's Message resume.

    python benchmarks/bench_pipelines.py [--repeat 3] [--quick] [--body noop,redis]
        [--systems conveyor-sqlite,conveyor-postgres,celery] [--pipelines 1000] [--resume-samples 300]

Each pipeline is three stages, each stage one body of ``_record.py`` (``noop``, or ``redis``: one
``INCR``, a real round trip) handing a small result on to the next (``pipeline_apps.py``):
conveyor's ``app.pipeline(first.s(Ref.kws("tag")), step.s(Ref.stage(0)), step.s(Ref.stage(1)))``
against Celery's ``chain(first.s(tag), step.s(), step.s())``. With the workers up and idle,
``--pipelines`` pipelines are enqueued; the figure is pipelines/s (and stages/s) from just
before the first enqueue until the last pipeline's last stage has run (for conveyor, until the
store also shows it succeeded). Then, conveyor only: the latency of a Message stage's resume
(``send_message`` to the next stage's start), p50 and p95. Median (min-max) over ``--repeat``
rounds, with conveyor/Celery ratios from the medians. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _record  # noqa: E402
import _report  # noqa: E402
import pipeline_apps  # noqa: E402
from _report import Metric, Round, Row  # noqa: E402
from bench_postgres import Databases, query_one  # noqa: E402
from bench_sqlite import Workers, _kill_all, _pythonpath, stop_everything, wait_until, workers  # noqa: E402

SYSTEMS = ("conveyor-sqlite", "conveyor-postgres", "celery")
FULL = {"pipelines": 1_000, "resume_samples": 300, "idle": 1.0}
QUICK = {"pipelines": 100, "resume_samples": 20, "idle": 0.2}  #: --quick: a smoke run
STAGES = pipeline_apps.STAGES
RESUME = "message-resume"  #: the latency metrics' "body", so that Celery's cell says n/a and why
NO_RESUME = "Celery has no stage that waits for a message: a chain cannot pause for an outside signal"


# the systems ---------------------------------------------------------------------------------
class System:
    """One column: a system with its store and worker settings. ``run_round`` measures every phase once."""

    name = ""
    label = ""
    conveyor = False
    unsupported: dict[str, str] = {}

    def __init__(self, args: argparse.Namespace, label: str = "") -> None:
        self.args = args
        self.label = label or self.label
        self.root = Path()
        self.row = Row(self.label, self.name, self.settings(), self.conveyor, dict(self.unsupported))
        self.row.short = self.label.split(" (")[0]

    def settings(self) -> str:
        raise NotImplementedError

    def fresh(self, label: str) -> tuple[Any, Path]:
        """A fresh store (a path, a URL or a broker) and timestamp directory for one phase."""
        raise NotImplementedError

    def enqueuer(self, db: Any, body: str) -> tuple[Callable[[list[int]], None], Callable[[], None]]:
        """(enqueue these tags' pipelines, close) on ``db``."""
        raise NotImplementedError

    def start(self, db: Any, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        raise NotImplementedError

    def failure(self, db: Any) -> str | None:
        """A job's error if the store shows one (looked at once a second while waiting)."""
        return None

    def finished_in_store(self, db: Any, n: int) -> float | None:
        """When the store recorded the last of ``n`` jobs succeeded (None: not all yet, or no such record)."""
        return None

    def env(self, ts_dir: Path) -> dict[str, str]:
        return {**os.environ, "BENCH_TS_DIR": str(ts_dir), "BENCH_REDIS_URL": self.args.redis_url,
                "PYTHONPATH": _pythonpath()}  # fmt: skip

    def waiter(self, db: Any, ts_dir: Path, lines: int, what: str, group: Workers) -> Callable[[], bool]:
        """A predicate: ``lines`` stage lines written. Once a second it fails fast on a job's error in the
        store or a worker process that stopped (its log says so; it would leave its jobs to a rescue)."""
        look_again = [time.monotonic() + 1.0]

        def done() -> bool:
            if _record.count(ts_dir) >= lines:
                return True
            if time.monotonic() > look_again[0]:
                look_again[0] = time.monotonic() + 1.0
                error = self.failure(db) or crashed(group)
                if error:
                    raise RuntimeError(f"{self.label}: during {what}: {error[-1500:]}")
            return False

        return done

    # the phases
    def pipelines(self, body: str, n: int) -> tuple[float, float]:
        """``n`` pipelines enqueued to idle workers: (pipelines/s first enqueue -> last stage, enqueue pipelines/s)."""
        db, ts_dir = self.fresh(f"pipelines-{body}")
        _record.flush_redis(self.args.redis_url)
        enqueue, close = self.enqueuer(db, body)
        warm = n  # the warm-up pipeline's tag; the timed ones are 0 .. n-1
        enqueue([warm])  # creates the schema, and is there for the workers' first claim
        try:
            with self.start(db, ts_dir, f"pipelines-{body}") as group:
                wait_until("the warm-up pipeline", self.waiter(db, ts_dir, STAGES, "the warm-up", group), 60, group)
                began = time.time()
                enqueue(list(range(n)))
                enqueued = time.time()
                wanted = STAGES * (n + 1)
                waiter = self.waiter(db, ts_dir, wanted, "the run", group)
                wait_until(f"{n} pipelines", waiter, self.args.timeout, group, 0.02)
                done_in_store = None
                if error := crashed(group):
                    raise RuntimeError(f"{self.label}: {error}")
                if self.conveyor:
                    wait_until("the store to show every pipeline succeeded",
                               lambda: self.finished_in_store(db, n + 1) is not None, 60, group)  # fmt: skip
                    done_in_store = self.finished_in_store(db, n + 1)
        finally:
            close()
        rows = _record.read(ts_dir)
        check_runs(self.label, rows, range(n + 1), STAGES)
        if body == "redis" and (incrs := _record.counter(self.args.redis_url)) != STAGES * (n + 1):
            raise RuntimeError(f"{self.label}: {STAGES * (n + 1)} `redis` stages ran but Redis counted {incrs} INCRs")
        last = max(end for tag, _, end in rows if tag % 10 == STAGES and tag // 10 < n)
        if done_in_store is not None:
            last = max(last, done_in_store)
        return n / (last - began), n / (enqueued - began)

    def resume_latency(self, samples: int) -> list[float]:
        return []

    def run_round(self, root: Path, bodies: list[str]) -> Round:
        self.root = root
        root.mkdir(parents=True)
        result = Round()
        for body in bodies:
            print(f"[{self.label}] {self.args.pipelines} three-stage pipelines, `{body}` stages ...", flush=True)
            result.drain[body], enqueue_rate = self.pipelines(body, self.args.pipelines)
            result.bulk.append(enqueue_rate)
        if self.conveyor and self.args.resume_samples:
            print(f"[{self.label}] Message resume latency x{self.args.resume_samples} ...", flush=True)
            result.latencies = self.resume_latency(self.args.resume_samples)
        return result


#: what a worker group's log says when one of its processes died or stopped itself: a run with a
#: restart is not a figure (its jobs wait for a rescue, and a stage may run twice)
CRASH_MARKS = ("CRITICAL", "exited with code", "WorkerLostError", "Traceback")


def crashed(group: Workers) -> str | None:
    """The tail of the group's log if it shows a worker process crashing, else None."""
    text = group.log.read_text(errors="replace")
    if not any(mark in text for mark in CRASH_MARKS):
        return None
    return "a worker process crashed or stopped itself; its log ends:\n" + group.tail()


def check_runs(label: str, rows: list[tuple[int, float, float]], tags: range, stages: int) -> None:
    """Every stage of every pipeline ran exactly once, each after the one before it had ended."""
    seen: dict[int, tuple[float, float]] = {}
    for tag, start, end in rows:
        if tag in seen:
            raise RuntimeError(f"{label}: stage {tag % 10} of pipeline {tag // 10} ran twice")
        seen[tag] = (start, end)
    wanted = {pipeline_apps.line_tag(t, s) for t in tags for s in range(1, stages + 1)}
    if set(seen) != wanted:
        missing, extra = sorted(wanted - set(seen))[:5], sorted(set(seen) - wanted)[:5]
        raise RuntimeError(f"{label}: stage runs missing {missing}..., unexpected {extra}...")
    for t in tags:
        for s in range(2, stages + 1):
            if seen[pipeline_apps.line_tag(t, s)][0] < seen[pipeline_apps.line_tag(t, s - 1)][1]:
                raise RuntimeError(f"{label}: pipeline {t}'s stage {s} started before stage {s - 1} ended")


class Conveyor(System):
    name = "conveyor"
    conveyor = True

    def settings(self) -> str:
        return (f"`python -m conveyor worker pipeline_apps:app -p 2 -c {self.args.concurrency} --log-level WARNING`; "
                "sync stage bodies on its thread pool; enqueue: `app.enqueue_jobs([pipeline.to_new_job(now, "
                "kws={'tag': i}) ...], now)`, one transaction; " + self.store_settings())  # fmt: skip

    def store_settings(self) -> str:
        return ("SQLite WAL; enqueues synced (`synchronous=FULL`), the workers' commits `synchronous=NORMAL`; "
                "idle workers watch `PRAGMA data_version`")  # fmt: skip

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        return f"sqlite:///{self.root / f'{label}.db'}", ts_dir

    def enqueuer(self, db: Any, body: str) -> tuple[Callable[[list[int]], None], Callable[[], None]]:
        app = pipeline_apps.make_app(db)
        pipeline = pipeline_apps.three_stages(app, body)

        def enqueue(tags: list[int]) -> None:
            now = app.clock()
            app.enqueue_jobs([pipeline.to_new_job(now, kws={"tag": t}) for t in tags], now)

        return enqueue, app.close

    def start(self, db: Any, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        argv = [sys.executable, "-m", "conveyor", "worker", "pipeline_apps:app", "-p", "2"]
        argv += ["-c", str(self.args.concurrency), "--log-level", "WARNING", "--url", db]
        return workers(self.label, argv, self.env(ts_dir), self.root / f"{label}-workers.log", signal.SIGTERM)

    def sql(self, db: Any, query: str) -> tuple[Any, ...]:
        with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30)) as conn:
            return tuple(conn.execute(query).fetchone())

    def failure(self, db: Any) -> str | None:
        error = self.sql(db, "SELECT (SELECT error FROM conveyor_jobs WHERE error IS NOT NULL LIMIT 1)")[0]
        return None if error is None else str(error)

    def finished_in_store(self, db: Any, n: int) -> float | None:
        done, last = self.sql(db, "SELECT count(*), max(finished_at) FROM conveyor_jobs WHERE status = 'succeeded'")
        return float(last) if done >= n else None

    def resume_latency(self, samples: int) -> list[float]:
        """``samples`` jobs parked at a Message stage, then one ``send_message`` every ``--gap`` ms to idle
        workers: seconds from just before the send to the next stage's start."""
        from conveyor import Status
        from conveyor.messages import Delivery

        db, ts_dir = self.fresh("resume")
        app = pipeline_apps.make_app(db)
        pipeline = pipeline_apps.waits_for_message(app)
        now = app.clock()
        parked_jobs = [pipeline.to_new_job(now, kws={"tag": i}) for i in range(samples)]
        ids = [h.id for h in app.enqueue_jobs(parked_jobs, now)]
        before: list[float] = []

        def parked() -> bool:
            return app.stats()["all"].get(Status.WAITING, 0) >= samples

        try:
            with self.start(db, ts_dir, "resume") as group:
                wait_until(f"{samples} jobs to wait at the Message stage", parked, self.args.timeout, group, 0.05)
                time.sleep(self.args.idle)
                t0 = time.monotonic()
                for i, job_id in enumerate(ids):
                    pause = t0 + i * self.args.gap / 1000 - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    before.append(time.time())
                    delivery = app.send_message(job_id, {"i": i}, name="go")
                    if delivery is not Delivery.RESUMED:
                        raise RuntimeError(f"{self.label}: send_message to a waiting job gave {delivery}")
                waiter = self.waiter(db, ts_dir, 2 * samples, "the resumes", group)
                wait_until(f"{samples} resumed stages", waiter, 60, group)
                if error := crashed(group):
                    raise RuntimeError(f"{self.label}: {error}")
        finally:
            app.close()
        starts = {tag: start for tag, start, _ in _record.read(ts_dir)}
        return [starts[pipeline_apps.line_tag(i, 2)] - before[i] for i in range(samples)]


class ConveyorPostgres(Conveyor):
    name = "conveyor-postgres"
    databases: Databases
    run_id = uuid.uuid4().hex[:6]

    def store_settings(self) -> str:
        return "LISTEN/NOTIFY; PostgreSQL defaults (`synchronous_commit=on`); a fresh database per phase"

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        round_ = self.root.name.rsplit("-", 1)[-1]
        return self.databases.create(f"bench_pipe_{self.run_id}_{round_}_{label}".replace("-", "_")), ts_dir

    def sql(self, db: Any, query: str) -> tuple[Any, ...]:
        return query_one(db, query)


class Celery(System):
    name = "celery"
    label = "Celery chain (prefork -c 2)"
    unsupported = {RESUME: NO_RESUME}

    def settings(self) -> str:
        return ("`celery -A pipeline_celery worker -P prefork -c 2 --without-gossip --without-mingle "
                "--without-heartbeat` (2 pool processes = its default -c, the CPU count here; prefetch x4, its "
                f"default); Redis broker ({self.args.celery_broker}), `ignore_result`, no result backend: each "
                "result travels in the chain's next message; enqueue: `chain(first.s(i), step.s(), step.s())"
                ".apply_async()` per pipeline (Celery has no bulk publish)")  # fmt: skip

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        _record.flush_redis(self.args.celery_broker)
        return self.args.celery_broker, ts_dir

    def enqueuer(self, db: Any, body: str) -> tuple[Callable[[list[int]], None], Callable[[], None]]:
        os.environ["BENCH_CELERY_BROKER"] = db
        import pipeline_celery

        pipeline_celery.app.conf.broker_url = db

        def enqueue(tags: list[int]) -> None:
            for t in tags:
                pipeline_celery.three_stages(body, t).apply_async()

        return enqueue, lambda: None

    def start(self, db: Any, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        argv = [sys.executable, "-m", "celery", "-A", "pipeline_celery", "worker", "-P", "prefork", "-c", "2"]
        argv += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = {**self.env(ts_dir), "BENCH_CELERY_BROKER": db}
        return workers(self.label, argv, env, self.root / f"{label}-workers.log", signal.SIGTERM)


# report ----------------------------------------------------------------------------------------
def _enqueue_rate(r: Round) -> float | None:
    return statistics.median(r.bulk) if r.bulk else None


def metrics(bodies: list[str], n: int) -> list[Metric]:
    found = []
    for body in bodies:
        found.append(Metric(f"pipelines:{body}", f"pipelines/s, `{body}` stages", lambda r, b=body: r.drain.get(b)))
        found.append(Metric(f"stages:{body}", f"stages/s, `{body}` stages",
                            lambda r, b=body: STAGES * r.drain[b] if b in r.drain else None))  # fmt: skip
    found.append(Metric("enqueue", f"enqueue, pipelines/s (x{n:,})", _enqueue_rate))
    for q in (50, 95):
        found.append(Metric(f"resume-p{q}", f"Message resume latency p{q}",
                            lambda r, q=q: _report.pct(r.latencies, q) if r.latencies else None,
                            latency=True, body=RESUME))  # fmt: skip
    return found


def report(rows: list[Row], args: argparse.Namespace, load: str) -> None:
    measured = metrics(args.body, args.pipelines)
    rounds = f"median (min\u2013max) of {args.repeat} rounds" if args.repeat > 1 else "1 round"
    quick = " — QUICK SMOKE RUN, not figures to quote" if args.quick else ""
    print()
    if args.repeat > 1:
        print(_report.rounds_lines(rows, measured), end="\n\n")
    title = f"Three-stage pipelines: {args.pipelines:,} per run, 2 worker processes each, {rounds}{quick}"
    print(_report.figures_table(rows, measured, title))
    celery = next((r for r in rows if r.system == "celery"), None)
    pairs = [(r, celery, f"{r.short} / Celery") for r in rows if r.conveyor] if celery else []
    if pairs:
        compared = [m for m in measured if m.body != RESUME]  # Celery has no Message stage
        print(_report.ratio_table(pairs, compared, "conveyor / Celery chain, from the medians (> 1: conveyor better)"))
    print("Settings:")
    print(_report.settings_lines(rows))
    print(
        f"- stages: `pipeline_apps.py` (`first(tag)`, `step(prev)` x2; bodies {', '.join(args.body)} of `_record.py`, "
        f"round trips INCR on {args.redis_url}); rate = pipelines / (just before the first enqueue -> the last "
        "pipeline's last stage ended; conveyor: or its `finished_at`, whichever is later), workers up and idle "
        f"first. Message resume: {args.resume_samples} jobs waiting, one `send_message` every {args.gap:g} ms after "
        f"{args.idle:g} s idle; latency = the next stage's start - just before the send. Python "
        f"{sys.version.split()[0]}; load average {load}."
    )


# main ------------------------------------------------------------------------------------------
def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names or set(names) - set(SYSTEMS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SYSTEMS)}")
    return [s for s in SYSTEMS if s in names]


def _bodies(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names or set(names) - set(pipeline_apps.BODIES):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(pipeline_apps.BODIES)}")
    return [b for b in pipeline_apps.BODIES if b in names]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
                        help="a PostgreSQL database to connect to; the benchmark makes its own beside it")  # fmt: skip
    parser.add_argument("--systems", type=_names, default=list(SYSTEMS), help=f"comma-separated ({','.join(SYSTEMS)})")
    parser.add_argument("--body", type=_bodies, default=list(pipeline_apps.BODIES), help="noop,redis (default both)")
    parser.add_argument("--pipelines", type=int, default=None, help=f"pipelines per run ({FULL['pipelines']})")
    parser.add_argument("--resume-samples", type=int, default=None,
                        help=f"Message resumes timed, 0 to skip ({FULL['resume_samples']})")  # fmt: skip
    parser.add_argument("--gap", type=float, default=20.0, help="ms between send_message calls (default 20)")
    parser.add_argument("--idle", type=float, default=None, help=f"seconds idle before the sends ({FULL['idle']})")
    parser.add_argument("--concurrency", "-c", type=int, default=16, help="conveyor workers' -c (default 16)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --pipelines 100 --resume-samples 20 "
                        "--idle 0.2 (figures not to be quoted)")  # fmt: skip
    parser.add_argument("--redis-url", default=_record.REDIS_URL, help=f"the stages' Redis ({_record.REDIS_URL})")
    parser.add_argument("--celery-broker", default="redis://127.0.0.1:6379/15", help="Celery's broker; FLUSHDB'd")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, systems alternating; median and spread (1)")
    parser.add_argument("--json", default=None, help="also write every round's figures to this JSON file")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (worker logs) and print it")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.celery_broker.rstrip("/") == args.redis_url.rstrip("/"):
        parser.error("--celery-broker and --redis-url must be different Redis db indexes")

    concurrency = f"-p 2 -c {args.concurrency}"
    classes: dict[str, tuple[type[System], str]] = {
        "conveyor-sqlite": (Conveyor, f"conveyor SQLite ({concurrency})"),
        "conveyor-postgres": (ConveyorPostgres, f"conveyor PostgreSQL ({concurrency})"),
        "celery": (Celery, Celery.label),
    }
    systems: list[System] = []
    for name in args.systems:
        cls, label = classes[name]
        if name == "celery":
            try:
                import celery  # noqa: F401
            except ImportError:
                print("skipping celery: it is not installed (pip install -e '.[bench]')")
                continue
        systems.append(cls(args, label))
    ConveyorPostgres.databases = databases = Databases(args.url)
    try:
        _record.flush_redis(args.redis_url)
        if "conveyor-postgres" in args.systems:
            query_one(args.url, "SELECT 1")
    except Exception as exc:
        print(f"error: cannot reach Redis at {args.redis_url} or PostgreSQL at {args.url}: {exc}")
        return 2

    signal.signal(signal.SIGTERM, _kill_all)
    load_before = _load()
    print(f"load average before: {load_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-pipelines-"))
    try:
        for round_ in range(args.repeat):
            if args.repeat > 1:
                print(f"--- round {round_ + 1} of {args.repeat}", flush=True)
            order = systems if round_ % 2 == 0 else systems[::-1]  # alternate, so a noisy spell hits all
            for system in order:
                system.row.rounds.append(system.run_round(tmp / f"{system.name}-{round_}", args.body))
            databases.drop_all()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_everything()
        databases.drop_all()
        with contextlib.suppress(Exception):
            _record.flush_redis(args.redis_url)
        if any(s.name == "celery" for s in systems):
            with contextlib.suppress(Exception):
                _record.flush_redis(args.celery_broker)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [s.row for s in systems]
    load = f"{load_before} -> {_load()}"
    if args.json:
        meta = {"python": platform.python_version(), "executable": sys.executable, "bodies": args.body,
                "pipelines": args.pipelines, "stages": STAGES, "resume_samples": args.resume_samples,
                "gap_ms": args.gap, "idle_s": args.idle, "concurrency": args.concurrency, "repeat": args.repeat,
                "quick": args.quick, "load": load,
                "figures": "drain[body] = pipelines/s; bulk = enqueue pipelines/s per body; "
                           "latencies = Message resume seconds"}  # fmt: skip
        _report.dump(args.json, rows, meta)
    report(rows, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
