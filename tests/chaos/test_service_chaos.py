"""Long-running services (issue 13) under fault injection, with real worker processes on every store:

- a replicas=2 instance on three workers: exactly two runs at any moment; the worker running one is
  SIGKILLed (more often in the long mode) and its replica runs again on another worker within the
  lease plus TAKEOVER_SLACK seconds, never three at once, never two copies of one replica;
- the store out of reach for longer than the lease (SQLite: the test holds the write lock on the
  file; PostgreSQL: the test's own server stopped): each worker stops its runs before their lease
  runs out, and when the store is back they run again; never two copies at once;
- one worker cut off from PostgreSQL (a partition: a TCP proxy of the test's between it and the
  server, cut) while another still reaches it: the cut-off worker stops its runs before their lease
  runs out, and only then does the other worker take them over; a run stuck in C code there (deaf
  to its stop and to the kill) must end with its (supervised) process before then;
- a worker SIGKILLed while it stops a replica: the replica ends STOPPED and never runs again;
- a worker SIGSTOPped past its lease: its replica runs elsewhere; on waking it stops its copy at
  once, and the store keeps the new run.

Judged from the services' own side effects (tests/chaos/service_app.py, read by tests/servicekit.py),
and from the store through the client App."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pg_instance import PostgresInstance, postgres_instance
from servicekit import APP_PATH, Run, going, most_at_once, of, overlaps, prepare, read_runs, short_of, side_lines
from tcpproxy import TcpProxy

from conveyor import ServiceRecord, ServiceStatus
from conveyor.errors import StoreUnavailable

from .conftest import MODE, Cluster, empty_store, report
from .pausing import pause_between_writes
from .service_app import GRACE, LEASE, declare

pytestmark = pytest.mark.chaos

#: Seconds past the lease within which a killed worker's replica runs again elsewhere: the claim
#: rounds of the other workers, and starting the run, on a loaded 2-core machine.
TAKEOVER_SLACK = 2.0
KILLS = 12 if MODE.name == "long" else 2  #: workers SIGKILLed in the replicas=2 scenario
OUTAGE = 1.5 * LEASE  #: seconds the store is out of reach
OUTAGES = 3 if MODE.name == "long" else 1  #: outages in a row in the outage scenario
CUTS = ("blackhole", "reset") if MODE.name == "long" else ("blackhole",)  #: how the partition cuts


class ServiceCluster(Cluster):
    """The chaos Cluster, its workers running the service app, logging to ``side_log``."""

    APP = APP_PATH

    def __init__(self, directory: Path, url: str, lease: float) -> None:
        super().__init__(directory, url, lease)
        prepare(self.env, self.side_log)
        declare(self.app)

    def runs(self) -> list[Run]:
        return read_runs(self.side_log)

    def start(self, count: int) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` workers and wait until each has started."""
        procs = [self.worker(concurrency=2) for _ in range(count)]
        for proc in procs:
            self.wait_started(proc)
        return procs

    def rows(self, name: str) -> list[ServiceRecord] | None:
        """``app.services(name)``, or None while the store is out of reach."""
        with contextlib.suppress(StoreUnavailable):
            return self.app.services(name)
        return None

    def where(self, message: str, name: str | None = None) -> str:
        return f"{message}\n--- side-effect log ---\n{side_lines(self.side_log, name)}"


def service_cluster(directory: Path, url: str) -> Iterator[ServiceCluster]:
    """A ServiceCluster whose processes are all SIGKILLed at the end, whatever happened."""
    c = ServiceCluster(directory, url, lease=2.0)
    try:
        c.app.backend  # noqa: B018 - create the schema before the workers race to
        yield c
    finally:
        c.kill_all()
        c.app.close()


@pytest.fixture
def cluster(tmp_path: Path, store_url: str) -> Iterator[ServiceCluster]:
    yield from service_cluster(tmp_path, store_url)


def wait_all_running(cluster: ServiceCluster, name: str, replicas: int, after: float = 0.0,
                     moved: Iterable[int] | None = None, timeout: float = 60) -> dict[int, Run]:  # fmt: skip
    """Wait until each replica of ``name`` has a run going (for those in ``moved``, default all: one
    that began after ``after``) and the store says it RUNNING with that run's token; return those
    runs by replica."""
    fresh = set(range(replicas) if moved is None else moved)

    def check() -> dict[int, Run] | None:
        runs = {r.replica: r for r in going(cluster.runs(), name)
                if r.started is not None and (r.replica not in fresh or r.began > after)}  # fmt: skip
        rows = cluster.rows(name)
        if len(runs) < replicas or not rows:
            return None
        held = {row.replica: row.token for row in rows if row.status is ServiceStatus.RUNNING}
        return runs if all(held.get(i) == runs[i].token for i in range(replicas)) else None

    return cluster.wait_for(check, timeout, f"every replica of {name} to run (after {after:.3f})", every=0.1)


def test_two_replicas_on_three_workers_never_three_and_a_killed_ones_replica_moves(cluster: ServiceCluster) -> None:
    began = time.monotonic()
    workers = cluster.start(3)
    cluster.app.start_service("svc.tick", name="pair", replicas=2, label="pair")
    first = wait_all_running(cluster, "pair", 2)
    both_at = max(r.began for r in first.values())
    time.sleep(1.0)  # a steady stretch: exactly two, and they stay put

    kills: dict[int, float] = {}
    windows: list[tuple[float, float]] = []
    takeovers: list[float] = []
    for n in range(KILLS):
        current = wait_all_running(cluster, "pair", 2, timeout=60)
        victim = next(p for p in workers if p.pid == current[n % 2].pid)
        moving = [r for r in current.values() if r.pid == victim.pid]  # one, or both if it ran both
        at = cluster.kill(victim)
        kills[victim.pid] = at
        workers.remove(victim)
        workers += cluster.start(1)  # three workers again
        after = wait_all_running(cluster, "pair", 2, after=at, moved=[r.replica for r in moving])
        for run in moving:
            new = after[run.replica]
            took = new.began - at
            takeovers.append(took)
            assert new.pid != victim.pid
            assert took <= LEASE + TAKEOVER_SLACK, cluster.where(
                f"replica {run.replica} ran again {took:.2f} s after the kill (lease {LEASE:g} s)", "pair"
            )  # fmt: skip
        windows.append((at, max(after[r.replica].began for r in moving)))
        time.sleep(0.5)

    time.sleep(1.0)
    now = time.time()
    runs = cluster.runs()
    problems = overlaps(runs, kills, now)
    assert not problems, cluster.where("\n".join(problems), "pair")
    most = most_at_once(runs, "pair", kills, now)
    assert most <= 2, cluster.where(f"{most} runs of pair at once", "pair")
    gaps = short_of(runs, "pair", 2, kills, now, since=both_at, excused=windows)
    assert not gaps, cluster.where(f"not exactly two runs outside the kills' hand-overs: {gaps}", "pair")
    stopped = [r.brief() for r in of(runs, "pair") if r.ended]
    assert not stopped, cluster.where(f"runs stopped though nobody asked: {stopped}", "pair")
    live = going(runs, "pair", kills)
    rows = cluster.app.services("pair")
    assert sorted(r.token for r in live) == sorted(row.token for row in rows if row.token), "the store agrees"
    assert all(row.status is ServiceStatus.RUNNING for row in rows)
    taken = ", ".join(f"{t:.1f}" for t in takeovers)
    report(f"services on {cluster.url.split(':', 1)[0]}: replicas=2 on 3 workers, {KILLS} SIGKILLs, "
           f"{len(of(runs, 'pair'))} runs, at most {most} at once, replicas back after {taken} s (lease "
           f"{LEASE:g} s), {time.monotonic() - began:.0f} s")  # fmt: skip


class Outage:
    """Takes a store out of reach and brings it back: ``down()`` returns a time after which no write
    can commit any more, ``up()`` ends the outage."""

    url: str

    def down(self) -> float:
        raise NotImplementedError

    def up(self) -> None:
        raise NotImplementedError


class LockedFile(Outage):
    """SQLite: the test holds the file's write lock (``BEGIN EXCLUSIVE``): every writer waits for it,
    then gives up (StoreUnavailable); reads go on (WAL)."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def down(self) -> float:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")
        return time.time()

    def up(self) -> None:
        assert self.conn is not None
        self.conn.execute("ROLLBACK")
        self.conn.close()


class StoppedServer(Outage):
    """PostgreSQL: the test's own server stopped (every connection cut, new ones refused)."""

    def __init__(self, server: PostgresInstance) -> None:
        self.url = server.url
        self.server = server

    def down(self) -> float:
        self.server.stop("fast")
        return time.time()

    def up(self) -> None:
        self.server.start()


@pytest.fixture(params=["sqlite", "postgres"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "sqlite":
        yield LockedFile(tmp_path / "store.db")
    else:
        with postgres_instance() as server:
            yield StoppedServer(server)


@pytest.fixture
def outage_cluster(tmp_path: Path, outage: Outage) -> Iterator[ServiceCluster]:
    yield from service_cluster(tmp_path, outage.url)


def test_a_store_out_of_reach_past_the_lease_stops_the_runs_in_time_and_they_come_back(
    outage_cluster: ServiceCluster, outage: Outage
) -> None:
    cluster = outage_cluster
    began = time.monotonic()
    workers = cluster.start(2)
    cluster.app.start_service("svc.tick", name="solo", label="solo")
    cluster.app.start_service("svc.atick", name="duo", replicas=2, label="duo")
    cluster.app.start_service("svc.stubborn", name="deaf")  # stopped by a kill once its grace is over
    wanted = {"solo": 1, "duo": 2, "deaf": 1}
    back = 0.0
    lates: list[float] = []
    returns: list[float] = []
    for _ in range(OUTAGES):
        before = {name: wait_all_running(cluster, name, n, after=back) for name, n in wanted.items()}
        held = [run for replicas in before.values() for run in replicas.values()]
        cut, back, ran_out = _outage(cluster, outage, before)
        latest = {r.token: r for r in cluster.runs()}
        for run in (latest[run.token] for run in held):
            deadline = ran_out[run.name, run.replica]
            assert run.ended, cluster.where(f"{run.brief()} did not stop while the store was out of reach", run.name)
            assert run.why == "store unreachable", cluster.where(f"{run.brief()} stopped for another reason", run.name)
            assert run.last < deadline, cluster.where(
                f"{run.brief()} ended {run.last - deadline:+.2f} s after its lease ran out ({deadline:.3f}); the "
                f"store went away at {cut:.3f}", run.name)  # fmt: skip
            lates.append(run.last - cut)
        assert latest[before["deaf"][0].token].killed == "ServiceKilled", "the stubborn run was killed"
        after = {name: wait_all_running(cluster, name, n, after=cut) for name, n in wanted.items()}
        for name, replicas in after.items():
            for run in replicas.values():
                assert run.began >= back, cluster.where(f"{run.brief()} began before the store came back", name)
        returns.append(max(r.began for replicas in after.values() for r in replicas.values()) - back)
    time.sleep(1.0)
    now = time.time()
    runs = cluster.runs()
    problems = overlaps(runs, {}, now)
    assert not problems, cluster.where("\n".join(problems))
    for name, n in wanted.items():
        most = most_at_once(runs, name, {}, now)
        assert most <= n, cluster.where(f"{most} runs of {name} at once", name)
    for proc in workers:
        assert proc.poll() is None, f"worker {proc.pid} lived through the outage"
    report(f"services on {cluster.url.split(':', 1)[0]}: {OUTAGES} store outage(s) of {OUTAGE:g} s (lease {LEASE:g} s, "
           f"grace {GRACE:g} s): {len(lates)} runs stopped, the last {max(lates):.2f} s after the cut; all running "
           f"again {max(returns):.2f} s after the store came back at worst, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip


def _outage(
    cluster: ServiceCluster, outage: Outage, before: dict[str, dict[int, Run]]
) -> tuple[float, float, dict[tuple[str, int], float]]:
    """Take the store away for OUTAGE seconds: returns when it went (no write commits after), when it
    came back (none committed before), and when each replica's lease ran out: cut + lease at the
    latest (the last renewal committed before the cut); SQLite's reads go on under the lock, so there
    the store says exactly when."""
    cut = outage.down()
    try:
        ran_out = {(run.name, run.replica): cut + LEASE for runs in before.values() for run in runs.values()}
        if isinstance(outage, LockedFile):
            for name, runs in before.items():
                for row in cluster.app.services(name):
                    assert row.lease_until is not None and row.token == runs[row.replica].token
                    ran_out[name, row.replica] = min(row.lease_until, cut + LEASE)
        while time.time() < cut + OUTAGE:  # the runs stop meanwhile
            time.sleep(0.1)
    finally:
        back = time.time()  # from now on a write may commit again
        outage.up()
    return cut, back, ran_out


def test_a_worker_killed_while_stopping_a_replica_leaves_it_stopped(cluster: ServiceCluster) -> None:
    began = time.monotonic()
    workers = cluster.start(2)
    cluster.app.start_service("svc.tick", name="halt", label="halt", linger=GRACE / 2)
    run = wait_all_running(cluster, "halt", 1)[0]
    victim = next(p for p in workers if p.pid == run.pid)

    cluster.app.stop_service("halt")
    cluster.wait_for(lambda: next((r for r in cluster.runs() if r.token == run.token and r.hooked), None), 30,
                     "the stop hook to run")  # fmt: skip
    at = cluster.kill(victim)  # while the run lingers in its stop: its end is never written
    kills = {victim.pid: at}
    row = cluster.app.services("halt")[0]
    assert not row.wanted
    if row.status is ServiceStatus.STOPPING:  # as it should be, unless the kill came late
        assert row.token == run.token
    rows = cluster.wait_for(lambda: [r for r in cluster.rows("halt") or [] if r.status is ServiceStatus.STOPPED],
                            LEASE + 30, "the dead worker's STOPPING replica to be STOPPED")  # fmt: skip
    stopped_at = time.time()
    assert rows[0].token is None and rows[0].lease_until is None
    survivor = next(p for p in workers if p is not victim)
    assert survivor.poll() is None
    time.sleep(LEASE / 2)  # claim rounds of the other worker: none may start it
    runs = of(cluster.runs(), "halt")
    assert [r.token for r in runs] == [run.token], cluster.where("a stopped replica ran again", "halt")
    assert not overlaps(runs, kills, time.time())
    events = [e for e in cluster.app.events(kinds=["service_stopped"]) if e.data.get("service") == "halt"]
    assert [e.data.get("why") for e in events] == ["lease expired"], events
    assert cluster.app.services("halt")[0].status is ServiceStatus.STOPPED
    report(f"services on {cluster.url.split(':', 1)[0]}: a worker SIGKILLed while stopping a replica: STOPPED "
           f"{stopped_at - at:.1f} s after the kill (lease {LEASE:g} s), never ran again, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip


def test_a_worker_paused_past_its_lease_loses_its_replica_and_stops_its_copy_on_waking(
    cluster: ServiceCluster,
) -> None:
    began = time.monotonic()
    workers = cluster.start(2)
    cluster.app.start_service("svc.tick", name="frozen", label="frozen")
    stale = wait_all_running(cluster, "frozen", 1)[0]
    paused = next(p for p in workers if p.pid == stale.pid)
    other = next(p for p in workers if p is not paused)

    pause_between_writes(paused.pid)  # SIGSTOP, but not inside a SQLite write (pausing.py says why)
    paused_at = time.time()
    try:
        fresh = wait_all_running(cluster, "frozen", 1, after=paused_at, timeout=LEASE + 30)[0]
        took = fresh.began - paused_at
        assert fresh.pid == other.pid
        assert took <= LEASE + TAKEOVER_SLACK, cluster.where(f"taken over {took:.2f} s after the pause", "frozen")
        time.sleep(1.0)
    finally:
        woke_at = time.time()
        os.killpg(paused.pid, signal.SIGCONT)

    def stale_ended() -> Run | None:
        return next((r for r in cluster.runs() if r.token == stale.token and r.ended), None)

    ended = cluster.wait_for(stale_ended, 30, "the woken worker to stop its stale copy")
    late = ended.last - woke_at
    assert ended.why in ("store unreachable", "lease lost"), cluster.where(f"{ended.brief()}", "frozen")
    assert late <= GRACE + 2.0, cluster.where(f"the stale copy ran on {late:.2f} s after waking", "frozen")
    time.sleep(LEASE / 2)  # the woken worker's passes: its late end must not touch the new run
    runs = of(cluster.runs(), "frozen")
    assert [r.token for r in runs] == [stale.token, fresh.token], cluster.where("two runs in all", "frozen")
    assert [r.token for r in going(runs)] == [fresh.token], cluster.where("the new run goes on", "frozen")
    row = cluster.app.services("frozen")[0]
    assert row.status is ServiceStatus.RUNNING and row.token == fresh.token, "the store keeps the new run"
    assert paused.poll() is None, "the paused worker lives on"
    after_wake = [t for t, event in _lines(cluster, stale.token) if t >= woke_at and event == "alive"]
    report(f"services on {cluster.url.split(':', 1)[0]}: a worker SIGSTOPped past its lease: replica taken over "
           f"{took:.1f} s after the pause; on waking its copy beat {len(after_wake)} more time(s) and stopped "
           f"{late:.2f} s later ({ended.why}); the store kept the new run, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip


def _lines(cluster: ServiceCluster, token: str) -> list[tuple[float, str]]:
    """When each side-effect line of the run ``token`` was written, and what it says."""
    lines = [json.loads(text) for text in cluster.side_log.read_text().splitlines()]
    return [(line["t"], line["ev"]) for line in lines if line["token"] == token]


@pytest.fixture
def partition(tmp_path: Path, postgres_url: str) -> Iterator[tuple[ServiceCluster, TcpProxy, str]]:
    """A ServiceCluster on the session's PostgreSQL database, a TCP proxy to its server, and the URL
    that goes through the proxy."""
    empty_store(postgres_url)
    parts = urlsplit(postgres_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        user = parts.netloc.rpartition("@")[0]
        proxied = urlunsplit(
            parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}")
        )
        with contextlib.contextmanager(service_cluster)(tmp_path, postgres_url) as cluster:
            yield cluster, proxy, proxied


@pytest.mark.parametrize("how", CUTS)
def test_a_worker_cut_off_from_the_store_stops_its_runs_before_another_worker_takes_them(
    partition: tuple[ServiceCluster, TcpProxy, str], how: str
) -> None:
    cluster, proxy, proxied = partition
    began = time.monotonic()
    direct = cluster.env["CONVEYOR_URL"]
    cluster.env["CONVEYOR_URL"] = proxied
    (cut_off,) = cluster.start(1)
    cluster.env["CONVEYOR_URL"] = direct
    wanted = {"p-sync": "svc.tick", "p-async": "svc.atick", "p-deaf": "svc.stubborn"}
    for name, service in wanted.items():
        cluster.app.start_service(service, name=name)
    before = {name: wait_all_running(cluster, name, 1)[0] for name in wanted}
    assert {run.pid for run in before.values()} == {cut_off.pid}
    (other,) = cluster.start(1)

    proxy.cut(how)
    cut = time.time()  # every renewal the store committed was sent before: leases run out by cut + lease
    try:
        after = {name: wait_all_running(cluster, name, 1, after=cut, timeout=LEASE + 30)[0] for name in wanted}
    finally:
        proxy.heal()
    for name, new in after.items():
        old = next(r for r in cluster.runs() if r.token == before[name].token)
        assert new.pid == other.pid
        assert old.ended and old.why == "store unreachable", cluster.where(f"{old.brief()} did not stop", name)
        assert old.last < cut + LEASE, cluster.where(f"{old.brief()} ended after its lease ran out", name)
        assert old.last <= new.began, cluster.where(f"two copies: {old.brief()} / {new.brief()}", name)
    time.sleep(LEASE / 2)  # the cut-off worker is back: its late ends must not touch the new runs
    now = time.time()
    runs = cluster.runs()
    problems = overlaps(runs, {}, now)
    assert not problems, cluster.where("\n".join(problems))
    for name in wanted:
        assert most_at_once(runs, name, {}, now) == 1
        row = cluster.app.services(name)[0]
        assert row.status is ServiceStatus.RUNNING and row.token == after[name].token, (
            f"{name}: the store keeps the new run"
        )
    assert cut_off.poll() is None and other.poll() is None, "both workers live on"
    gap = min(after[name].began - next(r for r in runs if r.token == before[name].token).last for name in wanted)
    report(f"services on postgresql: one worker cut off ({how}): its {len(wanted)} runs stopped by "
           f"{max(r.last for r in runs if r.pid == cut_off.pid) - cut:.2f} s after the cut, taken over "
           f"{max(r.began for r in after.values()) - cut:.2f} s after it (lease {LEASE:g} s), at least {gap:.2f} s "
           f"between a copy's end and the next one's start, {time.monotonic() - began:.0f} s")  # fmt: skip


def test_a_cut_off_workers_run_stuck_in_c_code_ends_with_its_process_before_another_copy_starts(
    partition: tuple[ServiceCluster, TcpProxy, str],
) -> None:
    cluster, proxy, proxied = partition
    began = time.monotonic()
    direct = cluster.env["CONVEYOR_URL"]
    cluster.env["CONVEYOR_URL"] = proxied
    supervisor = cluster.worker(concurrency=2, processes=1)  # a supervised child exits when a kill cannot work
    cluster.wait_started(supervisor)
    cluster.env["CONVEYOR_URL"] = direct
    resource = cluster.dir / "resource"
    cluster.app.start_service("svc.blocked", name="stuck", hold=str(resource))
    first = wait_all_running(cluster, "stuck", 1)[0]
    (other,) = cluster.start(1)

    proxy.cut("reset")
    cut = time.time()
    try:

        def second() -> Run | None:
            return next((r for r in of(cluster.runs(), "stuck") if r.pid == other.pid), None)

        new = cluster.wait_for(second, LEASE + 30, "a run of stuck on the other worker")
        # The cut-off child cannot kill its run's thread: only its exit ends the run (bounded, to report).
        exited = cluster.wait_for(lambda: None if _alive(first.pid) else time.time(), 90, "the stuck child to exit")
    finally:
        proxy.heal()
    new = next(r for r in cluster.runs() if r.token == new.token)
    assert "conflict" not in new.events, cluster.where(
        f"two copies at once: the new run (pid {new.pid}) began {new.began - cut:.2f} s after the cut and found "
        f"the resource still held by the stuck run (pid {first.pid}), whose process ended only "
        f"{exited - cut:.2f} s after the cut (lease {LEASE:g} s, grace {GRACE:g} s)", "stuck")  # fmt: skip
    report(f"services on postgresql: a run stuck in C code on a cut-off supervised worker: its process ended "
           f"{exited - cut:.2f} s after the cut, the next copy began {new.began - cut:.2f} s after it, "
           f"{time.monotonic() - began:.0f} s")  # fmt: skip


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
