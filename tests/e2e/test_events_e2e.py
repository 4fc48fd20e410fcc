"""The event log across real processes (issue 10): concurrent writers, a retried job, a drain by
two workers, each followed by subscribers that must see every event exactly once, in order."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conveyor import JobNotFound, Status

from .conftest import Cluster
from .eventkit import (
    Follower,
    assert_same_events,
    by_job,
    client_tasks,
    install_events_app,
    job_event_problems,
    read_log,
    stop_followers,
)

pytestmark = pytest.mark.slow

WRITERS = 8
JOBS_PER_WRITER = 30

#: One writer process: enqueues ``ev.noop`` jobs into queue "writes" with random pauses, four ways
#: (one call; a batch; a transaction of its own connection, held open a little then committed, or
#: rolled back). Logs `ok ID,ID...` once a batch is committed and `rb ID,ID...` once rolled back.
WRITER = textwrap.dedent(
    """
    import os
    import random
    import sqlite3
    import sys
    import time

    from conveyor import App

    url, count, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    app = App(url)


    @app.task(name="ev.noop", queue="writes")
    def noop(i):
        return i


    def native():
        if url.startswith("sqlite"):
            return sqlite3.connect(url.split("://", 1)[1][1:], timeout=60)
        import psycopg

        return psycopg.connect(url)


    def log(line):
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    conn = native()
    made = 0
    while made < count:
        time.sleep(rng.uniform(0, 0.02))
        way = rng.choice(["one", "batch", "commit", "rollback"])
        size = 1 if way == "one" else rng.randint(1, 4)
        calls = [noop.s(f"{seed}-{made + k}") for k in range(size)]
        made += size
        if way == "one":
            log("ok " + calls[0].delay().id)
        elif way == "batch":
            log("ok " + ",".join(h.id for h in app.enqueue_many(calls)))
        else:
            conn.execute(f"INSERT INTO ev_orders (n) VALUES ({made})")  # the caller's own write
            handles = app.enqueue_many(calls, connection=conn)
            time.sleep(rng.uniform(0, 0.03))  # held open: a lower id may commit after a higher one
            if way == "commit":
                conn.commit()
                log("ok " + ",".join(h.id for h in handles))
            else:
                conn.rollback()
                log("rb " + ",".join(h.id for h in handles))
    conn.close()
    app.close()
    log("end")
    """
)


def _create_orders_table(url: str) -> None:
    """The writers' own table (their transactions write to it beside the jobs)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split("://", 1)[1][1:]) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS ev_orders (n integer)")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ev_orders (n integer)")


@pytest.mark.timeout(180)
def test_eight_writer_processes_a_follower_sees_every_committed_enqueue_once_in_order_and_no_rolled_back_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    app = cluster.app
    follower = Follower(app, after=None)  # before any writer: from now on
    _create_orders_table(cluster.url)
    (tmp_path / "writer.py").write_text(WRITER)
    outs = [tmp_path / f"writer-{n}.txt" for n in range(WRITERS)]
    command = [sys.executable, "writer.py", cluster.url, str(JOBS_PER_WRITER)]
    writers = [
        subprocess.Popen(
            [*command, str(n), str(out)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for n, out in enumerate(outs)
    ]
    try:
        for proc in writers:
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"writer {proc.pid} exited {proc.returncode}:\n{output.decode()[-3000:]}"
    finally:
        for proc in writers:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)

    committed_batches: list[list[list[str]]] = []  # per writer, its committed batches in commit order
    rolled_back: set[str] = set()
    for out in outs:
        lines = out.read_text().splitlines()
        assert lines[-1] == "end", f"{out.name} did not finish"
        committed_batches.append([line[3:].split(",") for line in lines if line.startswith("ok ")])
        rolled_back.update(i for line in lines if line.startswith("rb ") for i in line[3:].split(","))
    committed = [job_id for batches in committed_batches for batch in batches for job_id in batch]
    assert len(committed) == len(set(committed))
    assert rolled_back, "no writer rolled a transaction back: the test proved nothing about rollbacks"

    sentinel_seq = stop_followers(app, follower)
    log = read_log(app, after=follower.start_seq, upto=sentinel_seq)
    assert_same_events(follower.events, log, "the subscriber")

    enqueued = [e for e in log if e.kind == "enqueued" and e.queue == "writes"]
    counts = Counter(e.job_id for e in enqueued)
    assert set(counts) == set(committed), (
        f"{len(set(committed) - set(counts))} committed enqueues have no event; "
        f"{len(set(counts) - set(committed))} events are of jobs nobody committed"
    )
    assert set(counts.values()) == {1}, f"enqueued twice: {[j for j, n in counts.items() if n > 1][:10]}"
    assert all(e.task == "ev.noop" and e.attempt == 0 for e in enqueued)
    assert {e.kind for e in log} == {"enqueued"}, f"unexpected kinds: {Counter(e.kind for e in log)}"
    assert not rolled_back & {e.job_id for e in log}, "a rolled-back enqueue left an event"
    for job_id in rolled_back:
        with pytest.raises(JobNotFound):
            app.job(job_id)

    # One writer commits one batch after another: its batches are numbered in that order.
    seq_of = {e.job_id: e.seq for e in enqueued}
    for n, batches in enumerate(committed_batches):
        ranges = [(min(seq_of[j] for j in batch), max(seq_of[j] for j in batch)) for batch in batches]
        assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), (
            f"writer {n}: its committed batches are not numbered in commit order: {ranges}"
        )
    assert app.stats()["writes"] == {Status.QUEUED: len(committed)}


def test_a_job_that_fails_once_then_succeeds_writes_exactly_its_five_events(cluster: Cluster) -> None:
    worker = cluster.worker(app_path=install_events_app(cluster.dir))
    cluster.wait_started(worker)
    job = cluster.app.enqueue("ev.flaky", ["flaky.txt"], max_retries=1)
    done = cluster.wait_status(job.id, Status.SUCCEEDED, Status.FAILED, timeout=30)
    assert done.status is Status.SUCCEEDED and done.attempts == 2 and done.result == 2, done
    assert [line.split()[:2] for line in cluster.lines("flaky.txt")] == [["run", "1"], ["run", "2"]]

    events = cluster.app.events(job_id=job.id)
    assert [e.kind for e in events] == ["enqueued", "started", "retry_scheduled", "started", "succeeded"]
    assert [e.attempt for e in events] == [0, 1, 1, 2, 2]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    assert all(e.job_id == job.id and e.task == "ev.flaky" and e.queue == "default" for e in events)
    retry = events[2]
    assert retry.data["error"]["type"] == "ValueError", retry.data
    assert "the first run fails" in retry.data["error"]["message"]
    assert retry.data["retry_at"] >= retry.at, retry.data
    (registered,) = [w for w in cluster.app.workers() if w.pid == worker.pid]
    assert events[1].worker_id == events[3].worker_id == registered.id
    assert "error" not in events[4].data
    # The same history through the filters.
    assert [e.seq for e in cluster.app.events(job_id=job.id, kinds=["started"])] == [seqs[1], seqs[3]]
    assert [e.seq for e in cluster.app.events(task="ev.flaky", after=seqs[2])] == seqs[3:]


DRAIN = 1000


@pytest.mark.timeout(240)
def test_two_workers_drain_1000_jobs_each_with_complete_ordered_events_and_two_followers_see_each_once(
    cluster: Cluster,
) -> None:
    app = cluster.app
    noop = client_tasks(app)["ev.noop"]
    before = Follower(app, after=None)  # follows the whole drain
    app_path = install_events_app(cluster.dir)
    # A long lease: this test is about the log, not about rescues of a starved heartbeat.
    workers = [cluster.worker(app_path=app_path, concurrency=4, lease=30) for _ in range(2)]
    for proc in workers:
        cluster.wait_started(proc)
    handles = []
    for start in range(0, DRAIN, 250):
        handles += app.enqueue_many(noop.s(i) for i in range(start, start + 250))
    ids = {h.id for h in handles}
    assert len(ids) == DRAIN

    cluster.wait_for(lambda: app.stats()["all"].get(Status.SUCCEEDED, 0) >= DRAIN, 180,
                     f"{DRAIN} jobs to succeed", every=0.25)  # fmt: skip
    so_far = read_log(app, after=before.start_seq)
    middle = so_far[len(so_far) // 2].seq
    resumed = Follower(app, after=middle)  # created after the drain, resuming mid-way
    assert resumed.start_seq == middle
    sentinel_seq = stop_followers(app, before, resumed)

    log = read_log(app, after=before.start_seq, upto=sentinel_seq)
    assert_same_events(before.events, log, "the subscriber started before the drain")
    assert_same_events(resumed.events, [e for e in log if e.seq > middle], "the subscriber resumed mid-way")

    worker_ids = {w.id for w in app.workers() if w.pid in {p.pid for p in workers}}
    assert len(worker_ids) == 2
    started_workers = [e for e in log if e.kind == "worker_started"]
    assert {e.worker_id for e in started_workers} == worker_ids

    jobs = {job.id: job for job in app.jobs(status="succeeded", limit=2 * DRAIN)}
    assert set(jobs) == ids
    events = by_job(log)
    problems: list[str] = []
    for job_id in sorted(ids):
        history = events.get(job_id, [])
        kinds = [e.kind for e in history]
        if kinds != ["enqueued", "started", "succeeded"] or [e.attempt for e in history] != [0, 1, 1]:
            problems.append(f"job {job_id}: {[(e.kind, e.attempt) for e in history]}")
        elif history[1].worker_id not in worker_ids or history[1].task != "ev.noop":
            problems.append(f"job {job_id}: started by {history[1].worker_id!r}")
        problems += job_event_problems(job_id, history, jobs[job_id].status.value, jobs[job_id].attempts)
    assert not problems, "\n".join(problems[:30])
