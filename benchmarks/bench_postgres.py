"""conveyor (PostgreSQL store) side by side with pgqueuer, procrastinate and Celery (Redis broker).

    python benchmarks/bench_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--jobs 10000] [--single-jobs 2000] [--latency-samples 200] [--repeat 3]
        [--systems conveyor,pgqueuer,procrastinate,celery] [--claim-depths 1000,1000000]

The same workload and method as bench_sqlite.py (whose phases, timestamps and process handling
it reuses): single and bulk enqueue jobs/s, drain jobs/s with 2 worker processes, idle-start
latency p50/p99; then conveyor's claim latency with 1,000 and 1,000,000 jobs queued. Every
system gets fresh databases (``bench_<system>_...``, created beside the one ``--url`` names and
dropped at the end); Celery gets a flushed Redis db index (``--redis-url``, db 15 by default).
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sqlite import (  # noqa: E402 - the shared method: phases, worker groups, percentiles
    Result,
    System,
    Workers,
    _kill_all,
    _pythonpath,
    _running,
    combine,
    pct,
    print_rounds,
    workers,
)

SYSTEMS = ("conveyor", "pgqueuer", "procrastinate", "celery")
PEER_PACKAGES = {
    "pgqueuer": ("pgqueuer", "asyncpg"),
    "procrastinate": ("procrastinate",),
    "celery": ("celery", "redis"),
}
AIMS = {
    "drain_vs_pgqueuer": 1.5,  #: conveyor drain >= 1.5x pgqueuer's
    "p50": 0.003,  #: idle-start latency p50 < 3 ms
    "bulk_vs_pgqueuer": 1.0,  #: bulk enqueue >= pgqueuer's
    "single_vs_procrastinate": 2.0,  #: single enqueue >= 2x procrastinate's
    "claim_growth": 2.0,  #: claim p50 with 1M queued <= 2x that with 1k
}
Enqueuer = tuple[Callable[[int], None], Callable[[range], None], Callable[[], None]]


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
        return self.databases.create(f"bench_{self.name}_{self.run_id}_{round_}_{label}"), ts_dir

    def env(self, url: str, ts_dir: Path) -> dict[str, str]:
        return {**os.environ, "BENCH_TS_DIR": str(ts_dir), "BENCH_PG_DSN": url, "PYTHONPATH": _pythonpath()}

    def group(self, argv: list[str], url: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:
        return workers(self.name, argv, self.env(url, ts_dir), self.root / f"{label}-workers.log", self.stop_signal)


def two_processes(argv: list[str]) -> list[str]:
    """One shell running ``argv`` twice: 2 worker processes in one process group."""
    command = shlex.join(argv)
    return ["/bin/sh", "-c", f"{command} & {command} & wait"]


class Conveyor(PgSystem):
    name = "conveyor"
    records_finish = True

    def enqueuer(self, url: str) -> Enqueuer:  # type: ignore[override]
        from conveyor_app import make_app

        app = make_app(url)
        task = app.tasks["bench.noop"]

        def many(tags: range) -> None:
            app.enqueue_many([task.s(i) for i in tags])

        return task.delay, many, app.close

    def start(self, url: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:  # type: ignore[override]
        argv = [sys.executable, "-m", "conveyor", "worker", "conveyor_app:app", "-p", "2"]
        argv += ["-c", str(self.args.concurrency), "--log-level", "WARNING", "--url", url]
        return self.group(argv, url, ts_dir, label)

    def env(self, url: str, ts_dir: Path) -> dict[str, str]:
        env = super().env(url, ts_dir)
        if self.args.conveyor_pgoptions:  # an experiment: server settings for the workers' sessions only
            env["PGOPTIONS"] = self.args.conveyor_pgoptions
        return env

    def finished_in_store(self, url: str, n: int) -> float | None:  # type: ignore[override]
        done, last = query_one(url, "SELECT count(*), max(finished_at) FROM conveyor_jobs WHERE status = 'succeeded'")
        return float(last) if done >= n else None


class Pgqueuer(PgSystem):
    name = "pgqueuer"
    records_finish = True

    def enqueuer(self, url: str) -> Enqueuer:  # type: ignore[override]
        from pgqueuer import Queries
        from pgqueuer_app import ENTRYPOINT, connect

        loop = asyncio.new_event_loop()
        driver, close = loop.run_until_complete(connect(url, self.args.pgqueuer_driver))
        queries = Queries(driver)
        if not loop.run_until_complete(queries.schema_is_installed()):
            loop.run_until_complete(queries.install())

        def one(tag: int) -> None:
            loop.run_until_complete(queries.enqueue(ENTRYPOINT, str(tag).encode()))

        def many(tags: range) -> None:  # one INSERT ... SELECT FROM unnest() of the lists
            loop.run_until_complete(
                queries.enqueue([ENTRYPOINT] * len(tags), [str(i).encode() for i in tags], [0] * len(tags))
            )

        def done() -> None:
            loop.run_until_complete(close())
            loop.close()

        return one, many, done

    def start(self, url: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:  # type: ignore[override]
        argv = [sys.executable, str(HERE / "pgqueuer_app.py"), "--batch-size", str(self.args.pgqueuer_batch)]
        return self.group(two_processes(argv), url, ts_dir, label)

    def env(self, url: str, ts_dir: Path) -> dict[str, str]:
        return {**super().env(url, ts_dir), "BENCH_PGQ_DRIVER": self.args.pgqueuer_driver}

    def finished_in_store(self, url: str, n: int) -> float | None:  # type: ignore[override]
        # A finished job leaves pgqueuer_jobs and gets a 'successful' row in pgqueuer_log (written in
        # batches by the worker's log buffer), stamped with the server's now() of that write.
        done, last = query_one(
            url, "SELECT count(*), extract(epoch FROM max(created)) FROM pgqueuer_log WHERE status = 'successful'"
        )
        return float(last) if done >= n else None


class Procrastinate(PgSystem):
    name = "procrastinate"
    records_finish = True

    def enqueuer(self, url: str) -> Enqueuer:  # type: ignore[override]
        from procrastinate_app import TASK, make_app

        app = make_app(url)
        app.open()  # sync use: procrastinate's SyncPsycopgConnector (a psycopg pool)
        with contextlib.suppress(Exception):  # a fresh database: create the schema once
            if not query_one(url, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")[0]:
                app.schema_manager.apply_schema()
        task = app.tasks[TASK]

        def one(tag: int) -> None:
            task.defer(tag=tag)

        def many(tags: range) -> None:  # one statement for the whole batch
            task.batch_defer(*({"tag": i} for i in tags))

        return one, many, app.close

    def start(self, url: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:  # type: ignore[override]
        exe = shutil.which("procrastinate") or "procrastinate"
        argv = [exe, "--app=procrastinate_app.app", "--log-level", "warning", "worker"]
        argv += ["--concurrency", str(self.args.concurrency)]
        return self.group(two_processes(argv), url, ts_dir, label)

    def finished_in_store(self, url: str, n: int) -> float | None:  # type: ignore[override]
        done, last = query_one(
            url,
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'),"
            " (SELECT extract(epoch FROM max(at)) FROM procrastinate_events WHERE type = 'succeeded')",
        )
        return float(last) if done >= n and last is not None else None


class Celery(System):
    """Celery with a Redis broker, no result backend; the phases get a flushed Redis db index."""

    name = "celery"

    def fresh(self, label: str) -> tuple[Any, Path]:
        ts_dir = self.root / f"{label}-ts"
        ts_dir.mkdir()
        flush_redis(self.args.redis_url)
        return self.args.redis_url, ts_dir

    def enqueuer(self, broker: str) -> Enqueuer:  # type: ignore[override]
        os.environ["BENCH_CELERY_BROKER"] = broker
        import celery_app

        celery_app.app.conf.broker_url = broker
        task = celery_app.noop

        def one(tag: int) -> None:
            task.delay(tag)

        def many(tags: range) -> None:  # Celery has no bulk publish: apply_async on one producer
            with celery_app.app.producer_or_acquire() as producer:
                for i in tags:
                    task.apply_async((i,), producer=producer)

        return one, many, lambda: None

    def start(self, broker: str, ts_dir: Path, label: str) -> contextlib.AbstractContextManager[Workers]:  # type: ignore[override]
        exe = shutil.which("celery") or "celery"
        argv = [exe, "-A", "celery_app", "worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = {**os.environ, "BENCH_TS_DIR": str(ts_dir), "BENCH_CELERY_BROKER": broker, "PYTHONPATH": _pythonpath()}
        return workers(self.name, argv, env, self.root / f"{label}-workers.log", self.stop_signal)


def flush_redis(url: str) -> None:
    import redis

    if (urlsplit(url).path.strip("/") or "0") == "0":
        raise SystemExit("refusing to FLUSHDB Redis db 0: give --redis-url a dedicated db index, e.g. /15")
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


CLASSES: dict[str, type[System]] = {
    "conveyor": Conveyor,
    "pgqueuer": Pgqueuer,
    "procrastinate": Procrastinate,
    "celery": Celery,
}


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
def report(results: dict[str, Result], claims: dict[int, list[float]], args: argparse.Namespace, load: str) -> None:
    from rich.console import Console
    from rich.table import Table

    conv = results.get("conveyor")
    peers = [name for name in SYSTEMS[1:] if name in results]

    def rate(x: float) -> str:
        return f"{x:,.0f}"

    def ms(x: float) -> str:
        return f"{x * 1000:.2f} ms"

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else "[green]met[/green]" if ok else "[red]missed[/red]"

    def cell(peer: Result, value: Callable[[Result], float], text: Callable[[float], str], lower: bool) -> str:
        mine, theirs = (value(conv), value(peer)) if conv else (0.0, value(peer))
        if not conv or not mine or not theirs:
            return text(theirs)
        ratio = theirs / mine if lower else mine / theirs
        return f"{text(theirs)} ({ratio:.2f}x)"

    def ratio_to(peer: str, value: Callable[[Result], float]) -> float | None:
        if not conv or peer not in results:
            return None
        return value(conv) / value(results[peer])

    def at_least(ratio: float | None, aim: float) -> bool | None:
        return None if ratio is None else ratio >= aim

    p50 = lambda r: pct(r.latencies, 50)  # noqa: E731
    p99 = lambda r: pct(r.latencies, 99)  # noqa: E731
    drain_vs = ratio_to("pgqueuer", lambda r: r.drain)
    bulk_vs = ratio_to("pgqueuer", lambda r: r.bulk)
    single_vs = ratio_to("procrastinate", lambda r: r.single)
    metrics: list[tuple[str, Callable[[Result], float], Callable[[float], str], bool, str]] = [
        (f"single enqueue, jobs/s (x{args.single_jobs:,})", lambda r: r.single, rate, False,
         f">= 2x procrastinate {mark(at_least(single_vs, AIMS['single_vs_procrastinate']))}"),
        (f"bulk enqueue, jobs/s (x{args.jobs:,})", lambda r: r.bulk, rate, False,
         f">= pgqueuer {mark(at_least(bulk_vs, AIMS['bulk_vs_pgqueuer']))}"),
        ("drain, jobs/s, 2 processes", lambda r: r.drain, rate, False,
         f">= 1.5x pgqueuer {mark(at_least(drain_vs, AIMS['drain_vs_pgqueuer']))}"),
        ("  drain incl. worker start-up", lambda r: r.drain_cold, rate, False, ""),
        ("idle-start latency p50", p50, ms, True, f"< 3 ms {mark(p50(conv) < AIMS['p50'] if conv else None)}"),
        ("idle-start latency p99", p99, ms, True, ""),
        ("  latency mean", lambda r: statistics.fmean(r.latencies), ms, True, ""),
    ]  # fmt: skip
    rounds = f", median of {args.repeat} rounds" if args.repeat > 1 else ""
    table = Table(title=f"PostgreSQL queues, {args.jobs:,} no-op jobs, 2 worker processes each{rounds}")
    table.add_column("metric")
    for name in ["conveyor", *peers] if conv else peers:
        table.add_column(name, justify="right")
    table.add_column("aim (conveyor)")
    for label, value, text, lower, aim in metrics:
        row = [label]
        if conv:
            row.append(text(value(conv)))
        row += [cell(results[p], value, text, lower) for p in peers]
        table.add_row(*row, aim)
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(table)
    console.print(
        "(Nx) = conveyor's ratio to that peer: conveyor/peer for rates, peer/conveyor for latencies; "
        "> 1 means conveyor is better."
    )
    if claims:
        ct = Table(title="conveyor claim latency: backend.claim(['default'], 'bench', 1, 30.0, now)")
        for col in ("jobs queued", "p50", "p99", "mean", "p50 vs smallest"):
            ct.add_column(col, justify="right")
        depths = sorted(claims)
        base = pct(claims[depths[0]], 50)
        for depth in depths:
            values = claims[depth]
            ct.add_row(f"{depth:,}", ms(pct(values, 50)), ms(pct(values, 99)), ms(statistics.fmean(values)),
                       f"{pct(values, 50) / base:.2f}x")  # fmt: skip
        console.print(ct)
        if len(depths) > 1:
            growth = pct(claims[depths[-1]], 50) / base
            console.print(
                f"claim p50 at {depths[-1]:,} queued = {growth:.2f}x that at {depths[0]:,}: "
                f"aim <= 2x {mark(growth <= AIMS['claim_growth'])}"
            )
    versions = ", ".join(f"{pkg} {_version(pkg)}" for pkg in ("psycopg", "pgqueuer", "asyncpg", "procrastinate",
                                                              "celery", "redis"))  # fmt: skip
    console.print(
        f"conveyor: `conveyor worker -p 2 -c {args.concurrency}` (sync task on threads, LISTEN/NOTIFY). "
        f"pgqueuer: 2 x `pgqueuer.run()` (= `pgq run`), {args.pgqueuer_driver}, batch {args.pgqueuer_batch}, "
        "async entrypoint, unlimited concurrency; enqueue Queries.enqueue (bulk: lists). "
        f"procrastinate: 2 x `procrastinate --log-level warning worker --concurrency {args.concurrency}`, async task; "
        "enqueue task.defer / task.batch_defer (sync PsycopgConnector). "
        "celery: `celery worker -P prefork -c 2 --without-gossip --without-mingle --without-heartbeat`, "
        "Redis broker, ignore_result; enqueue delay / apply_async on one producer. "
        f"Latency: {args.latency_samples} jobs {args.gap:g} ms apart after {args.idle:g} s idle. {versions}. "
        f"Load average {load}."
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL database to connect to; the benchmark creates its own beside it",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="Celery's broker; FLUSHDB'd")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to bulk-enqueue and drain (default 10000)")
    parser.add_argument("--single-jobs", type=int, default=2_000, help="jobs to enqueue one by one (default 2000)")
    parser.add_argument("--latency-samples", type=int, default=200, help="idle-start latency samples (default 200)")
    parser.add_argument("--gap", type=float, default=20.0, help="ms between latency enqueues (default 20)")
    parser.add_argument("--idle", type=float, default=1.0, help="seconds the workers idle first (default 1)")
    parser.add_argument(
        "--concurrency", "-c", type=int, default=8, help="jobs per process for conveyor and procrastinate (default 8)"
    )
    parser.add_argument("--pgqueuer-batch", type=int, default=10, help="pgqueuer --batch-size (default 10)")
    parser.add_argument("--pgqueuer-driver", choices=["asyncpg", "psycopg"], default="asyncpg")
    parser.add_argument(
        "--conveyor-pgoptions",
        default="",
        help="PGOPTIONS for conveyor's worker processes only, e.g. '-c synchronous_commit=off' (an experiment)",
    )
    parser.add_argument("--systems", type=_names, default=list(SYSTEMS), help="comma-separated (default: all)")
    parser.add_argument(
        "--claim-depths",
        type=_ints,
        default=[1_000, 1_000_000],
        help="queue depths for conveyor's claim latency, '' to skip (default 1000,1000000)",
    )
    parser.add_argument("--claim-samples", type=int, default=500, help="timed claims per depth (default 500)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, systems alternating; medians (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take (default 300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (worker logs) and print it")
    args = parser.parse_args(None if argv is None else list(argv))

    systems = []
    for name in args.systems:
        missing = _missing(name)
        if missing:
            print(f"skipping {name}: {missing} is not installed (pip install -e '.[bench]')")
        else:
            systems.append(CLASSES[name])
    PgSystem.databases = databases = Databases(args.url)
    try:
        query_one(args.url, "SELECT 1")
    except Exception as exc:
        print(f"error: cannot reach PostgreSQL at {args.url}: {exc}")
        return 2

    signal.signal(signal.SIGTERM, _kill_all)
    load_before = _load()
    print(f"load average before: {load_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-pg-"))
    runs: dict[str, list[Result]] = {}
    claims: dict[int, list[float]] = {}
    try:
        for round_ in range(args.repeat):  # alternate the systems so that a noisy spell hits all
            for system in systems:
                root = tmp / f"{system.name}-{round_}"
                runs.setdefault(system.name, []).append(system(root, args).run())
            databases.drop_all()
        if args.claim_depths and Conveyor in systems:
            claims = claim_latency(databases, args.claim_depths, args.claim_samples)
    except KeyboardInterrupt:
        return 130
    finally:
        for group in list(_running):
            group.stop(signal.SIGKILL, timeout=2)
        databases.drop_all()
        if any(s is Celery for s in systems):
            with contextlib.suppress(Exception):
                flush_redis(args.redis_url)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.repeat > 1:
        print_rounds(runs)
    report({name: combine(rs) for name, rs in runs.items()}, claims, args, f"{load_before} -> {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
