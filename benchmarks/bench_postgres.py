"""conveyor (PostgreSQL store) beside pgqueuer, procrastinate and Celery, on a no-op and a Redis round-trip body.

    python benchmarks/bench_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--body all] [--repeat 3] [--quick] [--systems conveyor,pgqueuer,procrastinate,celery]
        [--jobs 10000] [--single-jobs 2000] [--latency-samples 200] [--claim-depths 1000,1000000]

The same bodies, phases and method as bench_sqlite.py (whose process handling and phases it
reuses): single and bulk enqueue jobs/s, drain jobs/s per body with 2 worker processes,
idle-start latency p50/p99, median and spread over the rounds; then conveyor's claim latency with
1,000 and 1,000,000 jobs queued. conveyor runs at its defaults and tuned, each peer at its own
defaults. Every system gets fresh databases (``bench_<row>_...``, created beside the one
``--url`` names and dropped at the end); Celery's broker is a flushed Redis db index
(``--celery-broker``, db 15), the round-trip bodies' Redis another (``--redis-url``, db 14).
See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _record  # noqa: E402
import _report  # noqa: E402
import bench_sqlite  # noqa: E402 - the shared method: phases, worker groups, options
from _report import Row, pct  # noqa: E402
from bench_sqlite import (  # noqa: E402
    Enqueuer,
    System,
    Workers,
    _kill_all,
    workers,
)

SYSTEMS = ("conveyor", "pgqueuer", "procrastinate", "celery")
PEER_PACKAGES = {
    "pgqueuer": ("pgqueuer", "asyncpg"),
    "procrastinate": ("procrastinate",),
    "celery": ("celery", "redis"),
}
AIMS = {
    "drain_vs_pgqueuer": 1.5,  #: conveyor drain >= 1.5x pgqueuer's, every body, default settings (issue 8)
    "bulk_vs_pgqueuer": 1.0,  #: bulk enqueue >= pgqueuer's
    "claim_growth": 2.0,  #: claim p50 with 1M queued <= 2x that with 1k
}


# stores ----------------------------------------------------------------------------------
class Databases:
    """Throwaway PostgreSQL databases beside the one ``url`` names; all dropped by ``drop_all``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def url_of(self, name: str) -> str:
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{name}"))

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def create(self, name: str) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_of(name)

    def drop_all(self) -> None:
        if not self.created:
            return
        with self._admin() as conn:
            for name in self.created:
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as exc:
                    print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        self.created.clear()


def query_one(url: str, sql: str) -> tuple[Any, ...]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


# the systems -------------------------------------------------------------------------------
class PgSystem(System):
    """A system whose every phase gets a database of its own (``fresh`` returns its URL)."""

    databases: Databases
    run_id = uuid.uuid4().hex[:6]

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        round_ = self.root.name.rsplit("-", 1)[-1]
        name = f"bench_{self.slug}_{self.run_id}_{round_}_{label}".replace("-", "_")
        return self.databases.create(name), ts_dir

    def group(self, argv: list[str], url: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        env = {**self.env(ts_dir), "BENCH_PG_DSN": url}
        return workers(self.row.label, argv, env, self.root / f"{label}-workers.log", self.stop_signal)


def two_processes(argv: list[str]) -> list[str]:
    """One shell running ``argv`` twice: 2 worker processes in one process group."""
    command = shlex.join(argv)
    return ["/bin/sh", "-c", f"{command} & {command} & wait"]


class Conveyor(PgSystem, bench_sqlite.Conveyor):
    name = "conveyor"
    records_finish = True

    def store_settings(self) -> str:
        extra = (
            f"; worker sessions with PGOPTIONS={self.args.conveyor_pgoptions!r}" if self.args.conveyor_pgoptions else ""
        )
        return f"LISTEN/NOTIFY; PostgreSQL defaults (`synchronous_commit=on`){extra}"

    def url(self, db: Any) -> str:
        return str(db)

    def env(self, ts_dir: Path) -> dict[str, str]:
        env = super().env(ts_dir)
        if self.args.conveyor_pgoptions:  # an experiment: server settings for the workers' sessions only
            env["PGOPTIONS"] = self.args.conveyor_pgoptions
        return env

    def failure(self, url: Any) -> str | None:
        error = query_one(url, "SELECT (SELECT error FROM conveyor_jobs WHERE error IS NOT NULL LIMIT 1)")[0]
        return None if error is None else str(error)

    def finished_in_store(self, url: Any, n: int) -> float | None:
        done, last = query_one(url, "SELECT count(*), max(finished_at) FROM conveyor_jobs WHERE status = 'succeeded'")
        return float(last) if done >= n else None


class Pgqueuer(PgSystem):
    name = "pgqueuer"
    records_finish = True

    def settings(self) -> str:
        a = self.args
        return (
            f"2 x `python pgqueuer_app.py` = `pgqueuer.run(factory, batch_size={a.pgqueuer_batch})` on uvloop, "
            f"what `pgq run` does, with its defaults (batch 10, dequeue timeout 30 s, no concurrency limit); "
            f"{a.pgqueuer_driver} driver; tables `durable` (its default). Entrypoints are async (pgqueuer 1.6 has no "
            "sync entrypoints): the sync `redis` body runs as its docs say to run blocking code, "
            "`await asyncio.to_thread(body, tag)` (the loop's default thread pool)"
        )

    def enqueuer(self, url: Any, body: str) -> Enqueuer:
        from pgqueuer import Queries
        from pgqueuer_app import ENTRYPOINTS, connect

        entrypoint = ENTRYPOINTS[body]
        loop = asyncio.new_event_loop()
        driver, close = loop.run_until_complete(connect(url, self.args.pgqueuer_driver))
        queries = Queries(driver)
        if not loop.run_until_complete(queries.schema_is_installed()):
            loop.run_until_complete(queries.install())

        def one(tag: int) -> None:
            loop.run_until_complete(queries.enqueue(entrypoint, str(tag).encode()))

        def many(tags: range) -> None:  # one INSERT ... SELECT FROM unnest() of the lists
            loop.run_until_complete(
                queries.enqueue([entrypoint] * len(tags), [str(i).encode() for i in tags], [0] * len(tags))
            )

        def done() -> None:
            loop.run_until_complete(close())
            loop.close()

        return one, many, done

    def start(self, url: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        argv = [sys.executable, str(HERE / "pgqueuer_app.py"), "--batch-size", str(self.args.pgqueuer_batch)]
        return self.group(two_processes(argv), url, ts_dir, label)

    def env(self, ts_dir: Path) -> dict[str, str]:
        return {**super().env(ts_dir), "BENCH_PGQ_DRIVER": self.args.pgqueuer_driver}

    def failure(self, url: Any) -> str | None:
        error = query_one(
            url, "SELECT (SELECT traceback->>'traceback' FROM pgqueuer_log WHERE status = 'exception' LIMIT 1)"
        )[0]
        return None if error is None else str(error)

    def finished_in_store(self, url: Any, n: int) -> float | None:
        # A finished job leaves pgqueuer_jobs and gets a 'successful' row in pgqueuer_log (written in
        # batches by the worker's log buffer), stamped with the server's now() of that write.
        done, last = query_one(
            url, "SELECT count(*), extract(epoch FROM max(created)) FROM pgqueuer_log WHERE status = 'successful'"
        )
        return float(last) if done >= n else None


class Procrastinate(PgSystem):
    name = "procrastinate"
    records_finish = True

    def settings(self) -> str:
        c = self.args.procrastinate_concurrency
        default = " (its default)" if c == 1 else ""
        return (
            f"2 x `procrastinate --app=procrastinate_app.app --log-level warning worker --concurrency {c}`{default}; "
            "LISTEN/NOTIFY; `noop` and `redis-async` are async tasks, `redis` a sync task "
            "(procrastinate runs it in a thread); enqueue `defer` / `batch_defer` on the sync PsycopgConnector"
        )

    def enqueuer(self, url: Any, body: str) -> Enqueuer:
        from procrastinate_app import TASKS, make_app

        app = make_app(url)
        app.open()  # sync use: procrastinate's SyncPsycopgConnector (a psycopg pool)
        with contextlib.suppress(Exception):  # a fresh database: create the schema once
            if not query_one(url, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")[0]:
                app.schema_manager.apply_schema()
        task = app.tasks[TASKS[body]]

        def one(tag: int) -> None:
            task.defer(tag=tag)

        def many(tags: range) -> None:  # one statement for the whole batch
            task.batch_defer(*({"tag": i} for i in tags))  # type: ignore[arg-type]

        return one, many, app.close

    def start(self, url: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        exe = shutil.which("procrastinate") or "procrastinate"
        argv = [exe, "--app=procrastinate_app.app", "--log-level", "warning", "worker"]
        argv += ["--concurrency", str(self.args.procrastinate_concurrency)]
        return self.group(two_processes(argv), url, ts_dir, label)

    def failure(self, url: Any) -> str | None:
        failed = query_one(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'")[0]
        return f"{failed} jobs failed (see the worker log with --keep)" if failed else None

    def finished_in_store(self, url: Any, n: int) -> float | None:
        done, last = query_one(
            url,
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),"
            " (SELECT extract(epoch FROM max(at)) FROM procrastinate_events WHERE type = 'succeeded')",
        )
        return float(last) if done >= n and last is not None else None


class Celery(System):
    """Celery with a Redis broker, no result backend; the phases get a flushed Redis db index."""

    name = "celery"
    unsupported = {"redis-async": "Celery runs sync task functions only: it has no async tasks"}

    def settings(self) -> str:
        return (
            "`celery -A celery_app worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat` "
            "(2 pool processes = its default -c, the CPU count here; prefetch x4, its default); Redis broker "
            f"({self.args.celery_broker}), `ignore_result`, no result backend; enqueue `delay` / `apply_async` on "
            "one producer (Celery has no bulk publish)"
        )

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        _record.flush_redis(self.args.celery_broker)
        return self.args.celery_broker, ts_dir

    def enqueuer(self, broker: Any, body: str) -> Enqueuer:
        os.environ["BENCH_CELERY_BROKER"] = broker
        import celery_app

        celery_app.app.conf.broker_url = broker
        task = celery_app.tasks[body]

        def one(tag: int) -> None:
            task.delay(tag)

        def many(tags: range) -> None:  # Celery has no bulk publish: apply_async on one producer
            with celery_app.app.producer_or_acquire() as producer:
                for i in tags:
                    task.apply_async((i,), producer=producer)

        return one, many, lambda: None

    def start(self, broker: Any, ts_dir: Path, label: str, body: str) -> contextlib.AbstractContextManager[Workers]:
        exe = shutil.which("celery") or "celery"
        argv = [exe, "-A", "celery_app", "worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = {**self.env(ts_dir), "BENCH_CELERY_BROKER": broker}
        return workers(self.name, argv, env, self.root / f"{label}-workers.log", self.stop_signal)


CLASSES: dict[str, type[System]] = {"pgqueuer": Pgqueuer, "procrastinate": Procrastinate, "celery": Celery}


# conveyor's claim latency at depth ------------------------------------------------------
FILL = """
INSERT INTO conveyor_jobs (id, task, queue, priority, args, kwargs, status, created_at, scheduled_at,
                           max_retries, timeout, key, result_ttl)
SELECT 'fill-' || %(batch)s || '-' || g, 'bench.noop', 'default', 0, '[0]', '{}', 'queued', %(now)s, %(now)s,
       0, NULL, NULL, 604800
FROM generate_series(1, %(n)s) AS g
"""


def claim_latency(databases: Databases, depths: list[int], samples: int, warmup: int = 50) -> dict[int, list[float]]:
    """Seconds per ``backend.claim(["default"], "bench", 1, 30.0, now)`` with ``depth`` jobs queued.

    The table is filled straight in SQL (INSERT ... SELECT generate_series, notify trigger off for
    the session), then VACUUM ANALYZE. Each depth is filled to depth + warm-up + samples, so the
    timed claims take the queue from depth + samples down to depth; each claimed job is finished
    (succeeded) outside the timing, as a worker would."""
    import psycopg
    from conveyor_app import make_app

    try:
        from conveyor.outcome import Outcome, OutcomeKind
    except ImportError:  # a checkout from before issue 7 (bench_compare.py runs this file with an older conveyor)
        from conveyor.backends.base import Outcome, OutcomeKind

    url = databases.create(f"bench_claims_{PgSystem.run_id}")
    app = make_app(url)
    backend = app.backend  # creates the schema
    done = Outcome(kind=OutcomeKind.SUCCEEDED, result=None)
    queued = 0
    found: dict[int, list[float]] = {}
    try:
        for depth in sorted(depths):
            add = depth - queued + warmup + samples
            began = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET session_replication_role = replica")  # no NOTIFY per filled row
                conn.execute(FILL, {"batch": depth, "n": add, "now": time.time() - 1})
                conn.execute("VACUUM ANALYZE conveyor_jobs")
            print(f"[claims] filled {add:,} jobs to {depth + warmup + samples:,} queued in "
                  f"{time.perf_counter() - began:.1f} s; {warmup} + {samples} claims ...", flush=True)  # fmt: skip
            times = []
            for i in range(warmup + samples):
                start = time.perf_counter()
                jobs = backend.claim(["default"], "bench", 1, 30.0, time.time())
                elapsed = time.perf_counter() - start
                if len(jobs) != 1:
                    raise RuntimeError(f"claim with {depth:,} queued returned {len(jobs)} jobs")
                backend.finish(jobs[0].id, jobs[0].token or "", done, time.time())
                if i >= warmup:
                    times.append(elapsed)
            queued = depth
            found[depth] = times
    finally:
        app.close()
    return found


# report -------------------------------------------------------------------------------------
def report(rows: list[Row], claims: dict[int, list[float]], args: argparse.Namespace, load: str) -> None:
    convs = [r for r in rows if r.conveyor]
    conv = convs[0] if convs else None
    peers = [r for r in rows if not r.conveyor]
    measured = _report.metrics(args.body, args.single_jobs, args.jobs)
    rounds = f"median (min\u2013max) of {args.repeat} rounds" if args.repeat > 1 else "1 round"
    quick = " — QUICK SMOKE RUN, not figures to quote" if args.quick else ""
    print()
    if args.repeat > 1:
        print(_report.rounds_lines(rows, measured), end="\n\n")
    print(_report.figures_table(rows, measured, f"PostgreSQL: {args.jobs:,} jobs per drain, 2 worker processes "
                                                 f"each, {rounds}{quick}"))  # fmt: skip
    pairs = [(c, p, f"{c.short} / {p.system}") for p in peers for c in convs]
    if pairs:
        print(_report.ratio_table(pairs, measured, "conveyor vs each peer, from the medians (> 1: conveyor better; "
                                                   "latency: peer/conveyor)"))  # fmt: skip
    pgq = next((r for r in peers if r.system == "pgqueuer"), None)
    by_key = {m.key: m for m in measured}
    print("Aims (issue 8), at conveyor's default settings:")
    for body in args.body:
        aim = AIMS["drain_vs_pgqueuer"]
        print(_report.aim_line(f"drain, `{body}` body, >= {aim}x pgqueuer", conv, pgq, by_key[f"drain:{body}"], aim))
    print(_report.aim_line("bulk enqueue >= pgqueuer", conv, pgq, by_key["bulk"], AIMS["bulk_vs_pgqueuer"]))
    print("- idle-start latency p50 no worse than before issue 8: see bench_compare.py")
    if claims:
        print()
        print("**conveyor claim latency: backend.claim(['default'], 'bench', 1, 30.0, now)**")
        print()
        print("| jobs queued | p50 | p99 | mean | p50 vs smallest |")
        print("|---:|---:|---:|---:|---:|")
        depths = sorted(claims)
        base = pct(claims[depths[0]], 50)
        for depth in depths:
            v = claims[depth]
            print(f"| {depth:,} | {pct(v, 50) * 1000:.2f} ms | {pct(v, 99) * 1000:.2f} ms | "
                  f"{statistics.fmean(v) * 1000:.2f} ms | {pct(v, 50) / base:.2f}x |")  # fmt: skip
        if len(depths) > 1:
            growth = pct(claims[depths[-1]], 50) / base
            met = "met" if growth <= AIMS["claim_growth"] else "MISSED"
            print(f"\nclaim p50 at {depths[-1]:,} queued = {growth:.2f}x that at {depths[0]:,}: aim <= 2x, {met}")
    versions = ", ".join(f"{pkg} {_version(pkg)}" for pkg in ("psycopg", "pgqueuer", "asyncpg", "procrastinate",
                                                              "celery", "redis"))  # fmt: skip
    print()
    print("Settings:")
    print(_report.settings_lines(rows))
    print(
        f"- bodies: {', '.join(args.body)} (`_record.py`); round-trip bodies INCR on {args.redis_url}. "
        f"Latency: {args.latency_samples} `noop` jobs {args.gap:g} ms apart after {args.idle:g} s idle. "
        f"PostgreSQL with its defaults. Python {sys.version.split()[0]}, {versions}. Load average {load}."
    )


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _missing(name: str) -> str | None:
    for module in PEER_PACKAGES.get(name, ()):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown system(s) {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return names


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL database to connect to; the benchmark creates its own beside it",
    )
    bench_sqlite.add_common_options(parser)
    parser.add_argument("--celery-broker", default="redis://127.0.0.1:6379/15", help="Celery's broker; FLUSHDB'd")
    parser.add_argument("--procrastinate-concurrency", type=int, default=1,
                        help="procrastinate worker --concurrency (default 1, procrastinate's default)")  # fmt: skip
    parser.add_argument("--pgqueuer-batch", type=int, default=10, help="pgqueuer --batch-size (default 10)")
    parser.add_argument("--pgqueuer-driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    parser.add_argument(
        "--conveyor-pgoptions",
        default="",
        help="PGOPTIONS for conveyor's worker processes only, e.g. '-c synchronous_commit=off' (an experiment)",
    )
    parser.add_argument("--systems", type=_names, default=list(SYSTEMS), help="comma-separated (default: all)")
    parser.add_argument("--claim-depths", type=_ints, default=None,
                        help="queue depths for conveyor's claim latency, '' to skip (default 1000,1000000; "
                             "--quick: skipped)")  # fmt: skip
    parser.add_argument("--claim-samples", type=int, default=500, help="timed claims per depth (default 500)")
    args = parser.parse_args(None if argv is None else list(argv))
    bench_sqlite.apply_sizes(args)
    if args.claim_depths is None:
        args.claim_depths = [] if args.quick else [1_000, 1_000_000]
    if args.celery_broker.rstrip("/") == args.redis_url.rstrip("/"):
        print("error: --celery-broker and --redis-url must be different Redis db indexes")
        return 2

    systems: list[System] = []
    for name in args.systems:
        missing = _missing(name)
        if missing:
            print(f"skipping {name}: {missing} is not installed (pip install -e '.[bench]')")
        elif name == "conveyor":
            systems += bench_sqlite.conveyor_rows(Conveyor, args)
        else:
            systems.append(CLASSES[name](args))
    PgSystem.databases = databases = Databases(args.url)
    try:
        query_one(args.url, "SELECT 1")
        _record.flush_redis(args.redis_url)
    except Exception as exc:
        print(f"error: cannot reach PostgreSQL at {args.url} or Redis at {args.redis_url}: {exc}")
        return 2

    signal.signal(signal.SIGTERM, _kill_all)
    load_before = _load()
    print(f"load average before: {load_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-pg-"))
    claims: dict[int, list[float]] = {}
    try:
        for round_ in range(args.repeat):  # alternate the systems so that a noisy spell hits all
            if args.repeat > 1:
                print(f"--- round {round_ + 1} of {args.repeat}", flush=True)
            for system in systems:
                system.row.rounds.append(system.run_round(tmp / f"{system.slug}-{round_}", args.body))
            databases.drop_all()
        if args.claim_depths and any(isinstance(s, Conveyor) for s in systems):
            claims = claim_latency(databases, args.claim_depths, args.claim_samples)
    except KeyboardInterrupt:
        return 130
    finally:
        bench_sqlite.stop_everything()
        databases.drop_all()
        with contextlib.suppress(Exception):
            _record.flush_redis(args.redis_url)
        if any(isinstance(s, Celery) for s in systems):
            with contextlib.suppress(Exception):
                _record.flush_redis(args.celery_broker)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [s.row for s in systems]
    load = f"{load_before} -> {_load()}"
    if args.json:
        _report.dump(args.json, rows, bench_sqlite.meta(args, store="postgres", load=load))
    report(rows, claims, args, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
