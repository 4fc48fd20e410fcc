"""Long-running services (issue 13) with real `conveyor worker` processes, on every store: stop runs the
stop hook and the instance stays STOPPED across worker restarts, start brings it back, reload and
restart run it again with the parameters read afresh, remove stops it; a service that ignores its
stop is killed once its grace is over (stop-before-kill); a service that crashes every time ends
FAILED with its error while another keeps running; SIGTERM on a worker stops its services gracefully
and they start on another worker; a local service runs once in each worker process, stops with it,
and a killed process's instance never moves and is forgotten; an autostart instance is made once
however many workers race, and follows the code's replica count; a start right after a stop leaves
the instance running and its row saying so.

The services (tests/chaos/service_app.py) log every step of every run to a side-effect log; the tests
judge them from it (tests/servicekit.py), and from the store only through the client App."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from subprocess import Popen

import pytest
from chaos.service_app import BEAT, CRASHES, GRACE, LEASE, declare
from servicekit import APP_PATH, Run, going, of, overlaps, prepare, read_runs, side_lines

from conveyor import ServiceRecord, ServiceStatus

from .conftest import Cluster, worker_children

pytestmark = pytest.mark.slow


class Kit:
    """The service app's workers for one test, its side-effect log, and waiting on either."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.app = cluster.app
        self.log = cluster.dir / "services.log"
        declare(cluster.app)  # the client App checks parameters as the workers' app would
        cluster.app.backend  # noqa: B018 - create the schema before the workers race to

    def worker(self, *, processes: int = 0, local: bool = False, auto: int = 0, queues: str = "default",
               wait: bool = True) -> Popen[bytes]:  # fmt: skip
        """A worker process (a supervisor of ``processes`` if > 0) of the service app serving ``queues``,
        started (``wait``: and ready); ``local``, ``auto``: see servicekit.prepare."""
        prepare(self.cluster.env, self.log, local=local, auto=auto)
        proc = self.cluster.worker(concurrency=2, processes=processes, grace=3.0, app_path=APP_PATH,
                                   extra=("-q", queues))  # fmt: skip
        if wait:
            self.cluster.wait_started(proc, workers=max(1, processes))
        return proc

    def runs(self) -> list[Run]:
        return read_runs(self.log)

    def wait(self, check: Callable[[list[Run]], object], what: str, timeout: float = 30) -> object:
        """Poll the side-effect log until ``check(runs)`` is truthy; return it."""
        return self.cluster.wait_for(lambda: check(self.runs()) or None, timeout, what, every=0.1)

    def wait_run(self, name: str, after: float = 0.0, timeout: float = 30) -> Run:
        """The first run of ``name`` whose function started after ``after``, once it has."""

        def started() -> Run | None:
            return next((r for r in of(self.runs(), name) if r.started is not None and r.began > after), None)

        return self.cluster.wait_for(started, timeout, f"a run of {name} started after {after:.3f}", every=0.1)

    def wait_ended(self, run: Run, timeout: float = 30) -> Run:
        """``run`` as the log tells it once it ended."""

        def ended() -> Run | None:
            return next((r for r in self.runs() if r.token == run.token and r.ended), None)

        return self.cluster.wait_for(ended, timeout, f"run {run.brief()} to end", every=0.1)

    def wait_rows(self, name: str, check: Callable[[list[ServiceRecord]], bool], what: str,
                  timeout: float = 30) -> list[ServiceRecord]:  # fmt: skip
        """Poll ``app.services(name)`` until ``check`` holds; return the rows."""

        def rows() -> list[ServiceRecord] | None:
            found = self.app.services(name)
            return found if found and check(found) else None

        return self.cluster.wait_for(rows, timeout, f"{name}: {what}", every=0.1)

    def running(self, name: str, run: Run) -> list[ServiceRecord]:
        """Wait until the store says ``run`` is the RUNNING run of ``name`` (replica 0)."""
        return self.wait_rows(name, lambda rows: rows[0].status is ServiceStatus.RUNNING and rows[0].token == run.token,
                              f"RUNNING with token {run.token[:8]}")  # fmt: skip

    def where(self, message: str, name: str | None = None) -> str:
        return f"{message}\n--- side-effect log ---\n{side_lines(self.log, name)}"


@pytest.fixture
def kit(cluster: Cluster) -> Kit:
    return Kit(cluster)


def test_stop_holds_across_worker_restarts_start_brings_it_back_reload_changes_params(
    cluster: Cluster, kit: Kit
) -> None:
    first = [kit.worker(), kit.worker()]
    cluster.app.start_service("svc.tick", name="ctl", label="one")
    run = kit.wait_run("ctl")
    assert run.params == {"label": "one", "beat": BEAT} and run.generation == 0
    kit.running("ctl", run)

    rows = cluster.app.stop_service("ctl")
    assert [r.wanted for r in rows] == [False]
    run = kit.wait_ended(run)
    # svc.tick returns only once its stop hook released it: the hook ran, during the run
    assert run.hooked is not None and run.stopped is not None and run.hooked <= run.stopped, kit.where("hook first")
    assert run.hook_why == run.why == "stop requested"
    kit.wait_rows("ctl", lambda rows: rows[0].status is ServiceStatus.STOPPED and rows[0].token is None, "STOPPED")

    for proc in first:
        assert cluster.signal_and_wait(proc, signal.SIGTERM, timeout=30) == 0
    restarted_at = time.time()
    kit.worker(), kit.worker()
    # The new workers claim (probe runs): ctl, STOPPED, is not taken, then or in the claims after.
    cluster.app.start_service("svc.tick", name="probe", label="probe")
    kit.running("probe", kit.wait_run("probe"))
    time.sleep(LEASE / 2)  # a few more claim rounds to watch; nothing here may start ctl
    assert not [r for r in of(kit.runs(), "ctl") if r.began > restarted_at], kit.where("STOPPED ctl ran again", "ctl")
    assert cluster.app.services("ctl")[0].status is ServiceStatus.STOPPED

    asked = time.time()
    rows = cluster.app.start_service("ctl")  # the instance's name: started again, with its stored params
    assert rows[0].wanted and rows[0].status is not ServiceStatus.STOPPED
    back = kit.wait_run("ctl", after=asked)
    assert back.params == {"label": "one", "beat": BEAT}
    kit.running("ctl", back)

    asked = time.time()
    rows = cluster.app.reload_service("ctl", label="two")
    assert rows[0].params == {"label": "two"} and rows[0].generation == back.generation + 1
    back = kit.wait_ended(back)
    assert back.why == back.hook_why == "restart requested", kit.where("reload stopped the run", "ctl")
    reloaded = kit.wait_run("ctl", after=asked)
    assert reloaded.params == {"label": "two", "beat": BEAT}, "the new run sees the new parameters"
    assert reloaded.generation == back.generation + 1
    kit.running("ctl", reloaded)

    asked = time.time()
    cluster.app.restart_service("ctl")
    assert kit.wait_ended(reloaded).why == "restart requested"
    again = kit.wait_run("ctl", after=asked)
    assert again.params == {"label": "two", "beat": BEAT} and again.generation == reloaded.generation + 1
    kit.running("ctl", again)

    assert cluster.app.remove_service("ctl")
    gone = kit.wait_ended(again)
    assert gone.why == gone.hook_why == "lease lost", kit.where("a removed instance's run stops", "ctl")
    assert cluster.app.services("ctl") == []
    time.sleep(LEASE / 2)
    runs = of(kit.runs(), "ctl")
    assert [r.params["label"] for r in runs if r.params] == ["one", "one", "two", "two"], kit.where("runs", "ctl")
    assert not going(runs), kit.where("nothing runs a removed instance", "ctl")
    assert not overlaps(runs, {}, time.time()), kit.where("overlapping runs", "ctl")


def test_a_service_that_ignores_its_stop_is_killed_once_its_grace_is_over(cluster: Cluster, kit: Kit) -> None:
    kit.worker()
    names = {"deaf": "svc.stubborn", "adeaf": "svc.astubborn"}
    for name, service in names.items():
        cluster.app.start_service(service, name=name)
    runs = {name: kit.wait_run(name) for name in names}
    for name, run in runs.items():
        kit.running(name, run)
    asked = time.time()
    for name in names:
        cluster.app.stop_service(name)
    killed = {name: kit.wait_ended(run, timeout=30) for name, run in runs.items()}
    assert killed["deaf"].killed == "ServiceKilled", kit.where("the sync run was killed", "deaf")
    assert killed["adeaf"].killed == "CancelledError", kit.where("the async run was cancelled", "adeaf")
    for name, run in killed.items():
        assert run.why == "stop requested"
        took = run.last - asked
        assert took >= GRACE, kit.where(f"{name}: killed {took:.2f} s after the stop: before its grace", name)
        assert took <= GRACE + 5, kit.where(f"{name}: killed only {took:.2f} s after the stop", name)
        kit.wait_rows(name, lambda rows: rows[0].status is ServiceStatus.STOPPED, "STOPPED after the kill")


def test_a_service_that_always_crashes_ends_failed_and_another_runs_on(cluster: Cluster, kit: Kit) -> None:
    kit.worker(), kit.worker()
    cluster.app.start_service("svc.tick", name="steady", label="steady")
    steady = kit.wait_run("steady")
    kit.running("steady", steady)

    cluster.app.start_service("svc.crash", name="crashy", message="kaboom")
    rows = kit.wait_rows("crashy", lambda rows: rows[0].status is ServiceStatus.FAILED, "FAILED", timeout=60)
    failed_at = time.time()
    row = rows[0]
    assert row.last_error is not None, "the error is stored"
    assert row.last_error.type == "RuntimeError" and "kaboom" in row.last_error.message
    assert row.last_error.traceback and "RuntimeError" in row.last_error.traceback
    assert len(row.crashes) == CRASHES and row.restarts == CRASHES - 1
    assert row.token is None and row.wanted

    # steady keeps going on: a few more beats, then the whole story is in the log.
    kit.wait(lambda runs: any(r.token == steady.token and r.last > failed_at + 4 * BEAT for r in runs),
             "steady to beat on after crashy failed")  # fmt: skip
    crashy = of(kit.runs(), "crashy")
    assert len(crashy) == CRASHES, kit.where(f"{CRASHES} runs of crashy, then no more", "crashy")
    assert all(r.events[-1] == "crash" for r in crashy)
    steady_runs = of(kit.runs(), "steady")
    assert [r.token for r in steady_runs] == [steady.token], kit.where("steady ran once, never stopped", "steady")
    assert not steady_runs[0].ended and "hook" not in steady_runs[0].events
    assert cluster.app.services("steady")[0].status is ServiceStatus.RUNNING

    kinds = [e.kind for e in cluster.app.events(kinds=["service_crashed", "service_failed"])
             if e.data.get("service") == "crashy"]  # fmt: skip
    assert kinds == ["service_crashed"] * (CRASHES - 1) + ["service_failed"]

    asked = time.time()
    rows = cluster.app.start_service("crashy")  # a FAILED instance started again: crashes forgotten
    assert rows[0].wanted and rows[0].crashes == [] and rows[0].last_error is None
    kit.wait_run("crashy", after=asked)


def test_sigterm_stops_a_workers_services_gracefully_and_they_start_on_another(cluster: Cluster, kit: Kit) -> None:
    workers = [kit.worker(), kit.worker()]
    cluster.app.start_service("svc.tick", name="m-sync")
    cluster.app.start_service("svc.atick", name="m-async")
    first = {name: kit.wait_run(name) for name in ("m-sync", "m-async")}
    for name, run in first.items():
        kit.running(name, run)
    victim = next(p for p in workers if p.pid == first["m-sync"].pid)
    other = next(p for p in workers if p is not victim)
    moved = [name for name, run in first.items() if run.pid == victim.pid]

    signalled = time.time()
    assert cluster.signal_and_wait(victim, signal.SIGTERM, timeout=30) == 0
    for name in moved:
        old = kit.wait_ended(first[name])
        assert old.hooked is not None and old.why == old.hook_why == "worker stopping", kit.where("graceful stop", name)
        if name == "m-async":
            assert old.events[-1] == "teardown", kit.where("the context's teardown ran last", name)
        new = kit.wait_run(name, after=signalled)
        assert new.pid == other.pid, kit.where("it moved to the other worker", name)
        assert new.began >= old.last, kit.where("the new run began after the old one ended", name)
        rows = kit.running(name, new)
        assert rows[0].worker_id == new.worker
    stayed = [name for name in first if name not in moved]
    for name in stayed:
        assert [r.token for r in of(kit.runs(), name)] == [first[name].token], "the other worker's run went on"
    assert not overlaps(kit.runs(), {}, time.time()), kit.where("overlapping runs")


def test_a_local_service_runs_once_in_each_worker_process_and_stops_with_it(cluster: Cluster, kit: Kit) -> None:
    supervisor = kit.worker(processes=2, local=True)
    solo = kit.worker(local=True)
    pids = worker_children(supervisor.pid) | {solo.pid}
    assert len(pids) == 3

    def one_each(runs: list[Run]) -> list[Run] | None:
        found = [r for r in runs if r.service == "svc.local" and r.started is not None]
        return found if {r.pid for r in found} == pids else None

    runs = kit.wait(one_each, "a run of svc.local in each of the 3 worker processes")
    time.sleep(LEASE / 2)  # claims go on: still one run in each process, no more
    runs = [r for r in kit.runs() if r.service == "svc.local"]
    assert sorted(r.pid for r in runs) == sorted(pids), kit.where("one run per worker process")
    assert all(r.name == f"svc.local@{r.worker}" for r in runs)
    rows = {row.name: row for row in cluster.app.services() if row.service == "svc.local"}
    assert set(rows) == {r.name for r in runs}
    for run in runs:
        row = rows[run.name]
        assert row.source.value == "local" and row.local_to == run.worker and row.worker_id == run.worker
        assert row.status is ServiceStatus.RUNNING and row.token == run.token

    mine = next(r for r in runs if r.pid == solo.pid)
    assert cluster.signal_and_wait(solo, signal.SIGTERM, timeout=30) == 0
    mine = kit.wait_ended(mine)
    assert mine.why == mine.hook_why == "worker stopping"
    assert not cluster.app.services(mine.name), "a clean stop removes the worker's local instance"
    time.sleep(LEASE / 2)
    after = [r for r in kit.runs() if r.service == "svc.local"]
    assert len(after) == 3 and not going(after, mine.name), kit.where("the stopped worker's instance never moves")
    assert all(not r.ended for r in after if r.pid != solo.pid), "the other processes' runs go on"

    # A supervised child SIGKILLed: its replacement runs its own instance; the dead one's never moves,
    # and the leader forgets it once the child counts as dead (no heartbeat for 10 s at least).
    victim = next(r for r in after if r.pid != solo.pid)
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    new_pid = cluster.wait_for(lambda: next(iter(worker_children(supervisor.pid) - pids), None), 30,
                               "the supervisor to replace its killed child")  # fmt: skip
    fresh = kit.wait(lambda runs: next((r for r in runs if r.service == "svc.local" and r.pid == new_pid), None),
                     "the new child's local run")  # fmt: skip
    assert isinstance(fresh, Run) and fresh.name != victim.name
    cluster.wait_for(lambda: not cluster.app.services(victim.name), 60, "the dead child's local instance to go")
    runs = [r for r in kit.runs() if r.service == "svc.local"]
    assert [r.token for r in runs if r.name == victim.name] == [victim.token], kit.where("it never moved")
    assert not overlaps(runs, {victim.pid: killed_at}, time.time())


def test_an_autostart_instance_is_made_once_and_follows_the_codes_replica_count(cluster: Cluster, kit: Kit) -> None:
    starting = [kit.worker(auto=2, wait=False) for _ in range(3)]  # racing to make the instance
    elsewhere = kit.worker(auto=2, queues="other", wait=False)  # serves another queue: runs no service
    for proc in [*starting, elsewhere]:
        cluster.wait_started(proc)

    def all_running(count: int) -> Callable[[list[ServiceRecord]], bool]:
        return lambda rows: len(rows) == count and all(row.status is ServiceStatus.RUNNING for row in rows)

    rows = kit.wait_rows("svc.auto", all_running(2), "2 replicas RUNNING")
    assert {row.source.value for row in rows} == {"code"}
    created = [e for e in cluster.app.events(kinds=["service_created"]) if e.data.get("service") == "svc.auto"]
    assert len(created) == 1, f"one instance made, however many workers raced: {created}"

    kit.worker(auto=3)  # a newer version of the code: three replicas
    kit.wait_rows("svc.auto", all_running(3), "3 replicas RUNNING")
    three = {r.replica: r for r in going(kit.runs(), "svc.auto")}
    assert sorted(three) == [0, 1, 2], kit.where("a run of each replica", "svc.auto")

    kit.worker(auto=1)  # and back to one: replicas 1 and 2 are deleted, their runs stop
    kit.wait_rows("svc.auto", all_running(1), "1 replica RUNNING")
    for replica in (1, 2):
        ended = kit.wait_ended(three[replica])
        assert ended.why == "lease lost", kit.where(f"replica {replica} stopped", "svc.auto")
    runs = of(kit.runs(), "svc.auto")
    assert [r.replica for r in going(runs)] == [0], kit.where("one run goes on", "svc.auto")
    assert all(r.pid != elsewhere.pid for r in runs), "a worker not serving the queue ran the service"
    assert not overlaps(runs, {}, time.time()), kit.where("overlapping runs", "svc.auto")


def test_a_start_right_after_a_stop_leaves_the_instance_running_and_saying_so(cluster: Cluster, kit: Kit) -> None:
    kit.worker()
    cluster.app.start_service("svc.tick", name="flip")
    run = kit.wait_run("flip")
    kit.running("flip", run)
    cluster.app.stop_service("flip")
    cluster.app.start_service("flip")  # before the worker's next pass, most likely: the stop is still in flight
    time.sleep(LEASE)  # several passes of the worker
    rows = cluster.app.services("flip")
    live = going(kit.runs(), "flip")
    held = [rows[0].token] if rows[0].token else []
    assert [r.token for r in live] == held, kit.where(f"the store's row {rows[0]} vs the runs", "flip")
    if live:  # the run went on (its worker never saw the stop), or a new one started: the row must say so
        assert rows[0].status is ServiceStatus.RUNNING, kit.where(f"a run goes on but the row says {rows[0]}", "flip")
    # else its worker saw the stop first and ended the run STOPPED: the race control_service documents
    # (a start racing a stop in flight may need a second start)
