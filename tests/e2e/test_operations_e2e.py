"""Operations at run time across real processes (issue 10): pausing a queue, stopping one worker
among several, disabling a task or everything, a contended lock, and the probes (`conveyor health`,
`conveyor watch --job`). Side effects are read from files the tasks write; state through the App."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from conveyor import Status

from .conftest import Cluster
from .eventkit import by_job, client_tasks, install_events_app, read_log

pytestmark = pytest.mark.slow


def _stamps(cluster: Cluster, what: str = "start") -> list[tuple[str, str, int, float]]:
    """The ``ev.stamp`` lines of one kind: (queue, job id, pid, time)."""
    found = []
    for line in cluster.lines("stamps.txt"):
        kind, queue, job_id, pid, at = line.split()
        if kind == what:
            found.append((queue, job_id, int(pid), float(at)))
    return found


def _worker_id(cluster: Cluster, proc: subprocess.Popen[bytes]) -> str:
    """The id ``proc`` registered under (read from app.workers(), waiting for its registration)."""

    def registered() -> str | None:
        return next((w.id for w in cluster.app.workers() if w.pid == proc.pid and w.state == "running"), None)

    return cluster.wait_for(registered, 30, f"pid {proc.pid} to register as a running worker")


# pausing a queue ----------------------------------------------------------------------------------
PER_QUEUE = 150


@pytest.mark.timeout(180)
def test_a_paused_queue_starts_nothing_a_second_after_the_pause_the_other_continues_and_resume_drains_it(
    cluster: Cluster,
) -> None:
    app = cluster.app
    stamp = client_tasks(app)["ev.stamp"]
    worker = cluster.worker(app_path=install_events_app(cluster.dir), concurrency=4, extra=("-q", "alpha,beta"))
    cluster.wait_started(worker)
    app.enqueue_many(stamp.options(queue=queue).s(0.05) for _ in range(PER_QUEUE) for queue in ("alpha", "beta"))
    cluster.wait_for(lambda: sum(q == "alpha" for q, *_ in _stamps(cluster)) >= 20 or None, 60,
                     "20 alpha jobs to start")  # fmt: skip

    assert app.pause_queue("alpha") is True
    paused_at = time.time()  # pause_queue returned: acknowledged
    assert app.pause_queue("alpha") is False  # already paused
    late = [app.enqueue("ev.stamp", [0.05], queue="alpha") for _ in range(5)]  # enqueueing still works
    grace_end = paused_at + 1.0
    time.sleep(max(0.0, grace_end - time.time()))
    alpha_started = sum(q == "alpha" for q, *_ in _stamps(cluster))
    assert alpha_started < PER_QUEUE, "alpha drained before the pause: the test proved nothing"

    cluster.wait_for(lambda: app.stats().get("beta", {}).get(Status.SUCCEEDED, 0) >= PER_QUEUE or None, 60,
                     "every beta job to succeed while alpha is paused")  # fmt: skip
    starts = _stamps(cluster)
    assert [s for s in starts if s[0] == "alpha" and s[3] > grace_end] == [], "alpha jobs started after the pause"
    assert sum(q == "alpha" for q, *_ in starts) == alpha_started
    assert any(q == "beta" and at > grace_end for q, _, _, at in starts), "beta made no progress after the pause"
    alpha_total = PER_QUEUE + len(late)
    assert app.stats()["alpha"] == {Status.SUCCEEDED: alpha_started, Status.QUEUED: alpha_total - alpha_started}
    assert app.switches().paused_queues == frozenset({"alpha"})
    shown = {q.name: q for q in app.queues()}
    assert shown["alpha"].paused and shown["alpha"].queued == alpha_total - alpha_started
    assert not shown["beta"].paused
    log = read_log(app)
    assert sum(e.kind == "started" and e.queue == "alpha" for e in log) == alpha_started
    assert [e.queue for e in log if e.kind == "queue_paused"] == ["alpha"]

    assert app.resume_queue("alpha") is True
    assert app.resume_queue("alpha") is False
    cluster.wait_for(lambda: app.stats()["alpha"].get(Status.SUCCEEDED, 0) >= alpha_total or None, 60,
                     "the resumed alpha queue to drain")  # fmt: skip
    assert app.stats()["alpha"] == {Status.SUCCEEDED: alpha_total}
    assert all(app.job(h.id).status is Status.SUCCEEDED for h in late)
    assert app.switches().paused_queues == frozenset()
    log = read_log(app)
    assert [e.queue for e in log if e.kind == "queue_resumed"] == ["alpha"]
    assert worker.poll() is None


# stopping workers ---------------------------------------------------------------------------------
def test_stop_workers_stops_only_the_worker_named_its_jobs_finish_or_go_back_and_the_other_serves_on(
    cluster: Cluster,
) -> None:
    app = cluster.app
    stamp = client_tasks(app)["ev.stamp"]
    app_path = install_events_app(cluster.dir)
    # Two processes, each with its own store connections, as on two hosts; a short grace, so a
    # stopped worker hands back the 3-second jobs it is running (a quick run the second time).
    first, second = (cluster.worker(app_path=app_path, concurrency=2, grace=1) for _ in range(2))
    first_id, second_id = _worker_id(cluster, first), _worker_id(cluster, second)
    assert first_id != second_id
    handles = app.enqueue_many(stamp.s(3.0, quick_on_retry=True) for _ in range(4))

    def both_busy() -> bool:
        return {pid for *_, pid, _ in _stamps(cluster)} >= {first.pid, second.pid}

    cluster.wait_for(both_busy, 30, "both workers to start a job")

    assert app.stop_workers(worker_ids=[first_id]) == [first_id]
    cluster.signalled.add(first.pid)  # asked to stop: its exit is expected
    assert first.wait(30) == 0, cluster.log_text(first)
    assert second.poll() is None
    stopped = {w.id: w for w in app.workers()}
    assert stopped[first_id].state == "stopped", stopped[first_id]
    assert stopped[second_id].state == "running" and not stopped[second_id].stop_requested

    more = app.enqueue_many(stamp.s(0.05) for _ in range(4))
    for handle in [*handles, *more]:
        done = cluster.wait_status(handle.id, Status.SUCCEEDED, Status.FAILED, timeout=60)
        assert done.status is Status.SUCCEEDED, done
    assert second.poll() is None, "the other worker stopped too"
    assert {pid for _, job_id, pid, _ in _stamps(cluster) if job_id in {h.id for h in more}} == {second.pid}

    log = read_log(app)
    assert [e.worker_id for e in log if e.kind == "stop_requested"] == [first_id]
    assert [e.worker_id for e in log if e.kind == "worker_stopped"] == [first_id]
    asked = next(e.seq for e in log if e.kind == "stop_requested")
    assert not [e for e in log if e.kind == "started" and e.worker_id == first_id and e.seq > asked]
    events = by_job(log)
    for handle in handles:  # each run of the stopped worker ended: succeeded there, or handed back
        kinds = [e.kind for e in events[handle.id]]
        assert kinds[0] == "enqueued" and kinds[-1] == "succeeded", kinds
        runs = [i for i, e in enumerate(events[handle.id]) if e.kind == "started" and e.worker_id == first_id]
        for i in runs:
            assert kinds[i + 1] in ("succeeded", "handed_back"), kinds


def test_a_supervisor_whose_children_are_asked_to_stop_exits_0_and_restarts_none(cluster: Cluster) -> None:
    supervisor = cluster.worker(app_path=install_events_app(cluster.dir), processes=2, concurrency=1, grace=1)
    cluster.wait_started(supervisor, workers=2)

    def running() -> list[str] | None:
        ids = [w.id for w in cluster.app.workers() if w.state == "running"]
        return ids if len(ids) == 2 else None

    children = cluster.wait_for(running, 30, "both children to register")
    stop = _conveyor(cluster, "stop-workers", "--queue", "default")
    assert stop.returncode == 0, stop.stderr
    assert sorted(line.split()[-1] for line in stop.stdout.splitlines() if "stop requested" in line) == sorted(children)
    cluster.signalled.add(supervisor.pid)
    assert supervisor.wait(30) == 0, cluster.log_text(supervisor)
    assert cluster.log_text(supervisor).count(" started: queues ") == 2, "a stopped child was replaced"
    assert {w.state for w in cluster.app.workers()} == {"stopped"}


# switches -----------------------------------------------------------------------------------------
def _run_noop(cluster: Cluster) -> None:
    """Enqueue an ``ev.noop`` and wait for it: a live worker claimed after everything before."""
    job = cluster.app.enqueue("ev.noop", [0])
    assert cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=30).status is Status.SUCCEEDED


def test_a_disabled_tasks_jobs_stay_queued_across_a_worker_restart_and_run_after_enable(cluster: Cluster) -> None:
    app = cluster.app
    gated = client_tasks(app)["ev.gated"]
    app_path = install_events_app(cluster.dir)
    assert app.disable_task("ev.gated") is True
    assert app.disable_task("ev.gated") is False
    handles = app.enqueue_many(gated.s(i) for i in range(5))  # due before anything else
    first = cluster.worker(app_path=app_path)
    cluster.wait_started(first)
    _run_noop(cluster)
    assert cluster.signal_and_wait(first, signal.SIGTERM) == 0
    second = cluster.worker(app_path=app_path)
    cluster.wait_started(second)
    _run_noop(cluster)

    for handle in handles:
        job = app.job(handle.id)
        assert job.status is Status.QUEUED and job.attempts == 0 and job.started_at is None, job
    assert cluster.lines("gated.txt") == []
    assert app.switches().disabled_tasks == frozenset({"ev.gated"})

    assert app.enable_task("ev.gated") is True
    for handle in handles:
        assert cluster.wait_status(handle.id, Status.SUCCEEDED, Status.FAILED, timeout=30).status is Status.SUCCEEDED
    assert sorted(int(line.split()[1]) for line in cluster.lines("gated.txt")) == list(range(5))
    assert {int(line.split()[3]) for line in cluster.lines("gated.txt")} == {second.pid}
    log = read_log(app)
    switch_events = [(e.kind, e.task) for e in log if e.kind in ("task_disabled", "task_enabled")]
    assert switch_events == [("task_disabled", "ev.gated"), ("task_enabled", "ev.gated")]
    enabled = next(e.seq for e in log if e.kind == "task_enabled")
    assert all(e.seq > enabled for e in log if e.kind == "started" and e.task == "ev.gated")


def test_disable_all_stops_every_claim_until_enable_all(cluster: Cluster) -> None:
    app = cluster.app
    worker = cluster.worker(app_path=install_events_app(cluster.dir))
    cluster.wait_started(worker)
    _run_noop(cluster)  # serving
    assert app.disable_all() is True
    held = [app.enqueue("ev.gated", [i]) for i in range(3)]
    time.sleep(2.0)  # four poll intervals of the worker: it would have claimed them by now
    assert all(app.job(h.id).status is Status.QUEUED for h in held)
    assert cluster.lines("gated.txt") == []
    assert app.switches().everything
    assert app.enable_all() is True
    for handle in held:
        assert cluster.wait_status(handle.id, Status.SUCCEEDED, Status.FAILED, timeout=30).status is Status.SUCCEEDED
    kinds = [e.kind for e in read_log(app) if e.kind in ("all_disabled", "all_enabled")]
    assert kinds == ["all_disabled", "all_enabled"]


# locks --------------------------------------------------------------------------------------------
TTL = 2.0

#: One contender: tries ``with app.lock("x", ttl=2)`` every 50 ms; while inside, logs that it holds it.
CONTENDER = textwrap.dedent(
    """
    import os
    import sys
    import time

    from conveyor import App
    from conveyor.errors import LockNotAcquired

    url, out, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    app = App(url)
    pid = os.getpid()


    def mark(text):
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (f"{text} {pid} {time.time():.6f}" + "\\n").encode())
        finally:
            os.close(fd)


    mark("ready")
    while True:
        try:
            with app.lock("x", ttl=ttl, owner=f"contender-{pid}"):
                mark("acquired")
                while True:
                    mark("holding")
                    time.sleep(0.1)
        except LockNotAcquired:
            time.sleep(0.05)
    """
)


def _contender(cluster: Cluster, directory: Path, side: Path, n: int) -> subprocess.Popen[bytes]:
    """Start one contender process (its output in contender-N.log)."""
    with open(directory / f"contender-{n}.log", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "contender.py", cluster.url, str(side), str(TTL)],
            cwd=directory,
            env=cluster.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _alive(procs: list[subprocess.Popen[bytes]], directory: Path, killed: int = 0) -> bool:
    """True while every contender but the one ``killed`` on purpose runs; else fails the test with
    the dead one's output."""
    for n, proc in enumerate(procs):
        if proc.pid != killed and proc.poll() is not None:
            output = (directory / f"contender-{n}.log").read_text(errors="replace")
            pytest.fail(f"contender {proc.pid} exited with {proc.returncode}:\n{output[-3000:]}")
    return True


def _lock_lines(path: Path) -> list[tuple[str, int, float]]:
    if not path.exists():
        return []
    return [(kind, int(pid), float(at)) for kind, pid, at in (line.split() for line in path.read_text().splitlines())]


def test_two_processes_contend_for_a_lock_one_holds_it_and_the_other_gets_it_only_after_the_killed_holders_ttl(
    cluster: Cluster, tmp_path: Path
) -> None:
    (tmp_path / "contender.py").write_text(CONTENDER)
    side = tmp_path / "lock.txt"
    procs = [_contender(cluster, tmp_path, side, n) for n in range(2)]
    try:
        lines = partial(_lock_lines, side)
        cluster.wait_for(lambda: _alive(procs, tmp_path) and sum(k == "ready" for k, _, _ in lines()) == 2, 60,
                         "both contenders to start")  # fmt: skip

        def first_acquired() -> list[tuple[int, float]] | None:
            _alive(procs, tmp_path)
            return [(p, at) for k, p, at in lines() if k == "acquired"] or None

        acquired = cluster.wait_for(first_acquired, 30, "a contender to take the lock")
        holder_pid, since = acquired[0]
        (holder,) = [p for p in procs if p.pid == holder_pid]
        (other,) = [p for p in procs if p.pid != holder_pid]
        owner = f"contender-{holder_pid}"
        # Held well past its ttl (renewed in the with block) while the other keeps trying.
        cluster.wait_for(lambda: _alive(procs, tmp_path) and any(k == "holding" and at > since + 2 * TTL
                                                                 for k, _, at in lines()), 30,
                         "the holder to hold the lock for twice its ttl")  # fmt: skip
        assert cluster.app.backend.lock_owner("x", time.time()) == owner
        assert [p for k, p, _ in lines() if k == "acquired"] == [holder_pid], "both held the lock"

        killed_at = time.time()
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
        # The store keeps naming the dead holder until its lock expires: watch it let go.
        last_seen_held = killed_at
        deadline = time.monotonic() + TTL + 30
        while True:
            now = time.time()
            if cluster.app.backend.lock_owner("x", now) != owner:
                break
            last_seen_held = now
            assert time.monotonic() < deadline, "the dead holder's lock never expired"
            time.sleep(0.01)
        assert last_seen_held > killed_at, "the lock was free the moment its holder died: no ttl held it"
        assert last_seen_held <= killed_at + TTL + 0.5, "the lock outlived its ttl after its holder died"

        def other_acquired() -> float | None:
            _alive(procs, tmp_path, killed=holder_pid)
            return next((at for k, p, at in lines() if k == "acquired" and p == other.pid), None)

        taken_at = cluster.wait_for(other_acquired, TTL + 30, "the other contender to take the lock")
        assert taken_at > last_seen_held, "the other took the lock while the store still named the dead holder"
        assert cluster.app.backend.lock_owner("x", time.time()) == f"contender-{other.pid}"
        held_lines = Counter(p for k, p, _ in lines() if k == "acquired")
        assert held_lines == {holder_pid: 1, other.pid: 1}
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# probes -------------------------------------------------------------------------------------------
def _conveyor(cluster: Cluster, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conveyor", *args, "--url", url or cluster.url], cwd=cluster.dir,
                          env=cluster.env, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_conveyor_health_exits_0_with_a_live_worker_and_1_without_one_or_without_the_store(
    cluster: Cluster, tmp_path: Path
) -> None:
    worker = cluster.worker(app_path=install_events_app(cluster.dir))
    _worker_id(cluster, worker)
    healthy = _conveyor(cluster, "health", "--queue", "default")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    orphan = _conveyor(cluster, "health", "--queue", "nobody-serves-this")
    assert orphan.returncode == 1, orphan.stdout + orphan.stderr
    assert "nobody-serves-this" in orphan.stdout + orphan.stderr

    assert cluster.signal_and_wait(worker, signal.SIGTERM) == 0
    gone = _conveyor(cluster, "health", "--queue", "default")
    assert gone.returncode == 1, gone.stdout + gone.stderr

    unreachable = ("sqlite:///" + str(tmp_path / "no" / "such" / "dir" / "store.db") if cluster.url.startswith("sqlite")
                   else "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2")  # fmt: skip
    down = _conveyor(cluster, "health", url=unreachable)
    assert down.returncode == 1, down.stdout + down.stderr
    assert "unhealthy" in down.stdout + down.stderr and "Traceback" not in down.stdout + down.stderr


def test_conveyor_watch_job_follows_a_job_to_its_end_and_exits_with_its_exit_code(cluster: Cluster) -> None:
    app = cluster.app
    good = app.enqueue("ev.flaky", ["good.txt"], max_retries=1)  # fails once, then succeeds
    bad = app.enqueue("ev.flaky", ["bad.txt"], max_retries=0)  # fails for good
    watchers = [
        subprocess.Popen(
            [sys.executable, "-m", "conveyor", "watch", "--job", job.id, "--url", cluster.url],
            cwd=cluster.dir,
            env=cluster.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in (good, bad)
    ]
    try:
        cluster.worker(app_path=install_events_app(cluster.dir))
        outputs = [w.communicate(timeout=60) for w in watchers]
    finally:
        for w in watchers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
    assert watchers[0].returncode == 0, outputs[0]
    assert watchers[1].returncode == 1, outputs[1]
    assert "retry_scheduled" in outputs[0][0] and "succeeded" in outputs[0][0], outputs[0]
    assert "failed" in outputs[1][0], outputs[1]
    assert app.job(bad.id).status is Status.FAILED and app.job(bad.id).exit_code == 1
