"""What only the SQLite store has: numbered migrations over a file made by an older release, its
errors translated, durable producer commits (counted with strace), writers bounded in time when
another process holding a lock is stopped, and its URL settings. Real files, real processes."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends import open_backend, sql_files
from conveyor.backends.base import Outcome, OutcomeKind, Report
from conveyor.backends.sqlite import SQLiteBackend, parse_url, schema
from conveyor.errors import StoreError, StoreUnavailable
from conveyor.events import EventQuery
from conveyor.job import Job, JobError, Status
from conveyor.operations import SwitchScope

from .jobdata import LEASE, T0, claim_one, new, stored, token

FIXTURES = Path(__file__).parent / "fixtures"
STORE_SOURCES = Path(SQLiteBackend.__module__.replace(".", "/")).parent
LATEST = 10  #: the schema version of this conveyor (migrations/0010_events_head_row.sql)
#: Every migration, oldest first, as setup() names them.
MIGRATIONS = [
    "0001_initial.sql", "0002_rescues.sql", "0003_events.sql", "0004_pipelines.sql", "0005_schedules.sql",
    "0006_services.sql", "0007_accounts.sql", "0008_trace.sql", "0009_event_batches.sql", "0010_events_head_row.sql",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(sqlite_path: Path) -> Path:
    return sqlite_path


@pytest.fixture
def store(sqlite_store: SQLiteBackend) -> SQLiteBackend:
    return sqlite_store


def schema_version(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT value FROM conveyor_meta WHERE name = 'schema_version'").fetchone()[0])


# migrations -------------------------------------------------------------------------------------
#: The columns of schema 1, as conveyor 0.1.0 wrote a job (no ``rescues``).
V1_COLUMNS = (
    "id", "task", "queue", "priority", "args", "kwargs", "status", "created_at", "scheduled_at", "started_at",
    "finished_at", "attempts", "retries", "max_retries", "timeout", "result", "error", "exit_code", "progress",
    "progress_message", "worker_id", "token", "lease_expires_at", "key", "result_ttl", "expires_at", "stage",
    "stages", "results",
)  # fmt: skip


def v1_jobs() -> list[Job]:
    """One job in every state, as a schema-1 file may hold them."""
    base: dict[str, Any] = {
        "task": "tests.task", "queue": "q", "priority": 2, "args": [1, "é"], "kwargs": {"k": [None]},
        "created_at": T0 - 100, "scheduled_at": T0 - 50, "max_retries": 2, "result_ttl": 60.0,
    }  # fmt: skip
    return [
        Job(id="queued", status=Status.QUEUED, **base),
        Job(id="scheduled", status=Status.QUEUED, **{**base, "scheduled_at": T0 + 1000}, key="k1"),
        Job(id="running", status=Status.RUNNING, started_at=T0 - 10, attempts=1, worker_id="old-worker",
            token="feedbeef", lease_expires_at=T0 + 20, progress=12.5, progress_message="on its way",
            timeout=30.0, **base),
        Job(id="waiting", status=Status.WAITING, attempts=1, stage=1, results=[{"a": 1}],
            stages=[{"task": "a"}, {"task": "b"}], **base),
        Job(id="succeeded", status=Status.SUCCEEDED, started_at=T0 - 40, finished_at=T0 - 39, attempts=1,
            result={"ok": True}, results=[{"ok": True}], exit_code=0, progress=100.0, worker_id="w",
            expires_at=T0 + 21, **base),
        Job(id="failed", status=Status.FAILED, started_at=T0 - 30, finished_at=T0 - 29, attempts=3, retries=2,
            error=JobError("ValueError", "bad", "Traceback ..."), exit_code=1, worker_id="w", expires_at=T0 + 31,
            **base),
        Job(id="cancelled", status=Status.CANCELLED, finished_at=T0 - 20, exit_code=130, expires_at=T0 + 40,
            **base),
    ]  # fmt: skip


def write_v1_file(path: Path, jobs: list[Job]) -> None:
    """A store file as conveyor 0.1.0 left it: its schema (kept as a fixture), WAL, these rows."""
    import msgspec

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript((FIXTURES / "sqlite_schema_v1.sql").read_text())
    json_columns = {"args", "kwargs", "result", "error", "stages", "results"}
    for job in jobs:
        values = []
        for column in V1_COLUMNS:
            value = getattr(job, column)
            if column in json_columns and not (column == "stages" and value is None):
                value = msgspec.json.encode(value).decode()
            values.append(value.value if isinstance(value, Status) else value)
        conn.execute(f"INSERT INTO conveyor_jobs ({', '.join(V1_COLUMNS)}) VALUES ({', '.join('?' * 29)})", values)
    conn.execute("INSERT INTO conveyor_locks VALUES ('leader', 'old-leader', ?)", (T0 + 5,))
    conn.close()


def test_a_file_made_by_the_previous_release_is_upgraded_in_place(path: Path) -> None:
    jobs = v1_jobs()
    write_v1_file(path, jobs)
    assert schema_version(path) == "1"
    store = SQLiteBackend(path)
    try:
        assert store.setup() == MIGRATIONS[1:]
        assert schema_version(path) == str(LATEST)
        for job in jobs:
            assert stored(store, job.id) == job  # every field read back intact, rescues 0
        assert store.setup() == []
        assert store.counts(T0) == {
            ("q", Status.QUEUED): 1, ("q", Status.SCHEDULED): 1, ("q", Status.RUNNING): 1, ("q", Status.WAITING): 1,
            ("q", Status.SUCCEEDED): 1, ("q", Status.FAILED): 1, ("q", Status.CANCELLED): 1,
        }  # fmt: skip
        assert not store.acquire_lock("leader", "new-leader", 30.0, T0)  # the old lock is kept
        # work goes on: claim and finish, rescue the old release's running job, keys still held
        job = claim_one(store, now=T0)
        assert job.id == "queued" and job.attempts == 1
        assert store.finish("queued", token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=7), T0 + 1)
        assert stored(store, "queued").results == [7]
        assert [e.kind for e in store.events(EventQuery(job_id="queued"))] == ["started", "succeeded"]
        (lapsed,) = store.expired(T0 + 21, abort_margin=LEASE, limit=10)
        rescue = Report("running", "feedbeef", Outcome(kind=OutcomeKind.RESCUED, lease_before=T0 + 21))
        assert lapsed.id == "running" and store.finish_many([rescue], T0 + 21) == [True]
        assert stored(store, "running").rescues == 1
        assert claim_one(store, now=T0 + 22).id == "running"
        (same,) = store.enqueue([new("another", key="k1")], T0)
        assert same.id == "scheduled"
    finally:
        store.close()
    reopened = SQLiteBackend(path)
    assert reopened.setup() == [] and stored(reopened, "running").rescues == 1
    reopened.close()


def test_a_schema_9_log_loses_autoincrement_and_keeps_every_event_and_number(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for migration in sql_files.migrations("sqlite")[:9]:
        schema.apply(conn, migration)
    conn.execute("COMMIT")
    insert = "INSERT INTO conveyor_events (at, kind, queue, data) VALUES (?, ?, 'q', ?)"
    for i, kind in enumerate(["queue_paused", "queue_resumed", "queue_paused"]):
        conn.execute(insert, (T0 + i, kind, f'{{"i": {i}}}'))
    conn.execute("DELETE FROM conveyor_events WHERE seq = 3")  # the newest pruned: AUTOINCREMENT's counter is 3
    conn.close()
    store = SQLiteBackend(path)
    try:
        assert store.setup() == ["0010_events_head_row.sql"]
        assert [(e.seq, e.at, e.kind, e.data) for e in store.events(EventQuery())] == [
            (1, T0, "queue_paused", {"i": 0}), (2, T0 + 1, "queue_resumed", {"i": 1}),
        ]  # fmt: skip
        assert store.set_switch(SwitchScope.QUEUE, "q", True, T0 + 3)
        assert [e.seq for e in store.events(EventQuery(after=2))] == [4]  # 3 is not given again
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        (table,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'conveyor_events'").fetchone()
        assert "AUTOINCREMENT" not in table
        assert conn.execute("SELECT count(*) FROM sqlite_sequence WHERE name = 'conveyor_events'").fetchone() == (0,)
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'conveyor_events_job'").fetchone() == (1,)


def test_a_new_file_gets_every_migration_once(path: Path) -> None:
    store = SQLiteBackend(path)
    assert store.setup() == MIGRATIONS
    assert store.setup() == []
    assert schema_version(path) == str(LATEST)
    store.close()
    assert SQLiteBackend(path).setup() == []


def _first_open(url: str, start: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = open_backend(url)
    time.sleep(max(0.0, start - time.time()))
    try:
        out.put(store.setup())
    except BaseException as exc:
        out.put(repr(exc))
    finally:
        store.close()


def test_processes_opening_a_new_file_at_once_apply_the_migrations_once(path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    start = time.time() + 2.0  # all begin together, after the interpreters have started
    processes = [context.Process(target=_first_open, args=(f"sqlite:///{path}", start, out)) for _ in range(4)]
    for process in processes:
        process.start()
    results = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert sorted(results, key=len) == [[], [], [], MIGRATIONS]
    assert schema_version(path) == str(LATEST)


def test_a_file_of_a_newer_conveyor_is_refused_untouched(path: Path, store: SQLiteBackend) -> None:
    store.enqueue([new("a")], T0)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE conveyor_meta SET value = ? WHERE name = 'schema_version'", (str(LATEST + 1),))
    newer = SQLiteBackend(path)
    with pytest.raises(StoreError, match=rf"schema version {LATEST + 1}, newer than this conveyor knows \({LATEST}\)"):
        newer.setup()
    with pytest.raises(StoreError, match="upgrade conveyor"):
        newer.get("a")  # first use sets up, and refuses too
    assert schema_version(path) == str(LATEST + 1)


def test_a_corrupt_file_is_a_store_error_and_is_not_overwritten(path: Path) -> None:
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    store = SQLiteBackend(path)
    with pytest.raises(StoreError, match=re.escape(str(path))) as raised:
        store.setup()
    assert not isinstance(raised.value, StoreUnavailable)  # permanent: retrying will not help
    with pytest.raises(StoreError):
        store.enqueue([new()], T0)
    assert path.read_bytes() == garbage


@pytest.mark.parametrize(
    "tables",
    [
        ["CREATE TABLE conveyor_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"],
        ["CREATE TABLE conveyor_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
         "INSERT INTO conveyor_meta VALUES ('schema_version', 'one')"],
        ["CREATE TABLE conveyor_jobs (id TEXT)"],
    ],
    ids=["no-version", "garbage-version", "jobs-without-meta"],
)  # fmt: skip
def test_a_sqlite_file_that_is_not_a_conveyor_store_is_refused(path: Path, tables: list[str]) -> None:
    with sqlite3.connect(path) as conn:
        for statement in tables:
            conn.execute(statement)
    with pytest.raises(StoreError, match="not a conveyor store"):
        SQLiteBackend(path).setup()


def test_conveyor_shares_a_file_with_another_applications_tables(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5)")
    store = SQLiteBackend(path)
    assert store.setup() == MIGRATIONS
    store.enqueue([new("a")], T0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM orders").fetchall() == [(1, 9.5)]
    store.close()


# errors -----------------------------------------------------------------------------------------
def test_a_full_disk_is_store_unavailable_and_the_store_recovers(store: SQLiteBackend) -> None:
    conn = store._connection()  # SQLite's own size limit stands in for a full disk: the same error
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = new("big", args=["x" * 200_000])
    with pytest.raises(StoreUnavailable, match="full") as raised:
        store.enqueue([big], T0)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(StoreUnavailable):
        store.enqueue([new("small"), new("big2", args=["y" * 200_000])], T0)
    assert store.get("big") is None and store.get("small") is None  # nothing half-written
    conn.execute("PRAGMA max_page_count = 1073741823")  # space comes back
    store.enqueue([big], T0)
    assert stored(store, "big").args == ["x" * 200_000]


def test_no_sqlite3_error_leaves_the_store(path: Path, store: SQLiteBackend) -> None:
    store.enqueue([new("a")], T0)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE conveyor_locks")  # damaged behind the store's back
    with pytest.raises(StoreError, match="no such table") as raised:
        store.acquire_lock("leader", "a", 30.0, T0)
    assert not isinstance(raised.value, StoreUnavailable)
    assert isinstance(raised.value.__cause__, sqlite3.Error)
    assert stored(store, "a").status is Status.QUEUED  # the rest still works


def test_the_store_code_never_reads_the_wall_clock() -> None:
    package = REPO / STORE_SOURCES
    sources = {p.name: p.read_text() for p in package.glob("*.py")}
    assert "store.py" in sources
    for name, text in sources.items():
        assert not re.search(r"\btime\.time\(|datetime\.now|\btime_ns\(", text), f"{name} reads the wall clock"
    queries = (package / "queries.sql").read_text()
    assert "julianday" not in queries and "'now'" not in queries  # nor SQLite's clock


# URL settings -----------------------------------------------------------------------------------
def test_url_settings(tmp_path: Path) -> None:
    options = parse_url(f"sqlite:///{tmp_path}/a.db?durable=false&busy_timeout=2.5")
    assert (options.path, options.durable, options.busy_timeout) == (f"{tmp_path}/a.db", False, 2.5)
    assert options.flock_wait + options.sqlite_wait == pytest.approx(2.5)
    assert parse_url(options.url) == options
    assert parse_url("sqlite:///rel.db") == parse_url("rel.db")
    assert parse_url("sqlite:///rel.db").durable is True and parse_url("sqlite:///rel.db").busy_timeout == 5.0
    store = open_backend(f"sqlite:///{tmp_path}/a.db?durable=off")
    assert isinstance(store, SQLiteBackend) and store.options.durable is False
    assert store.url == f"sqlite:///{tmp_path}/a.db?durable=false"
    for bad in ("?durable=maybe", "?busy_timeout=-1", "?busy_timeout=soon", "?fsync=no"):
        with pytest.raises(StoreError, match="bad SQLite URL"):
            open_backend(f"sqlite:///{tmp_path}/a.db{bad}")


# durability ---------------------------------------------------------------------------------------
ENQUEUES = 40
ENQUEUE_SCRIPT = textwrap.dedent(
    """
    import sys
    from conveyor.backends import open_backend
    from conveyor.job import NewJob
    store = open_backend(sys.argv[1])
    store.setup()
    for i in range(int(sys.argv[2])):
        job = NewJob(id=f"{sys.argv[3]}{i}", task="t", queue="q", priority=2, args=[i], kwargs={},
                     scheduled_at=1000.0, max_retries=0)
        store.enqueue([job], 1000.0 + i)
    store.close()
    """
)


def syncs_during_enqueues(url: str, prefix: str, tmp_path: Path) -> int:
    """fsync + fdatasync calls of a process making ENQUEUES single enqueues, counted by strace."""
    summary = tmp_path / f"strace-{prefix}.txt"
    argv = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(summary),
            sys.executable, "-c", ENQUEUE_SCRIPT, url, str(ENQUEUES), prefix]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = 0
    for line in summary.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            calls += int(fields[3])
    return calls


@pytest.fixture
def strace() -> None:
    """strace counts the syncs; without it the durability tests skip loudly (fail on CI)."""
    if shutil.which("strace") is None:
        message = "DURABILITY NOT TESTED: strace is missing to count fsync calls (apt-get install -y strace)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.usefixtures("strace")
def test_acknowledged_enqueues_are_synced_to_disk_unless_durable_false(path: Path, store: SQLiteBackend) -> None:
    durable = syncs_during_enqueues(f"sqlite:///{path}", "durable", path.parent)
    fast = syncs_during_enqueues(f"sqlite:///{path}?durable=false", "fast", path.parent)
    assert durable >= ENQUEUES, f"{durable} syncs for {ENQUEUES} acknowledged enqueues"
    assert fast <= 8, f"{fast} syncs with durable=false (a checkpoint at close at most)"
    assert len(store.claim(["q"], "w", 1000, LEASE, T0)) == 2 * ENQUEUES  # all of them acknowledged and stored


@pytest.mark.usefixtures("strace")
def test_a_workers_own_bookkeeping_is_not_synced_per_commit(path: Path, store: SQLiteBackend) -> None:
    store.enqueue([new(f"j{i}") for i in range(ENQUEUES)], T0)
    script = textwrap.dedent(
        f"""
        import sys
        from conveyor.backends import open_backend
        from conveyor.backends.base import Outcome, OutcomeKind
        store = open_backend(sys.argv[1])
        store.setup()
        while jobs := store.claim(["q"], "w", 1, 30.0, {T0}):
            store.heartbeat("w", [jobs[0].token], 30.0, {T0})
            store.finish(jobs[0].id, jobs[0].token, Outcome(kind=OutcomeKind.SUCCEEDED), {T0})
        store.close()
        """
    )
    summary = path.parent / "strace-worker.txt"
    argv = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(summary),
            sys.executable, "-c", script, f"sqlite:///{path}"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = sum(int(line.split()[3]) for line in summary.read_text().splitlines() if line.split()[-1:] == ["fdatasync"])
    assert calls <= 8, f"{calls} syncs for {3 * ENQUEUES} worker commits"
    assert store.counts(T0) == {("q", Status.SUCCEEDED): ENQUEUES}


# a stopped process holding a lock ------------------------------------------------------------------
BOUND = 2.0  #: busy_timeout for these tests, seconds
SLACK = 8.0  #: generous: the machine is shared and these are real processes

HOLD_FLOCK = """
import fcntl, os, signal, sys
lock = open(sys.argv[1] + ".lock", "ab")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""
HOLD_WRITE_LOCK = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
conn.execute("ROLLBACK")
print("released", flush=True)
sys.stdin.read()
"""
TIMED_ENQUEUES = """
import sys, time
from conveyor.backends import open_backend
from conveyor.errors import StoreUnavailable
from conveyor.job import NewJob
store = open_backend(sys.argv[1])
store.setup()
for i in range(int(sys.argv[2])):
    started = time.monotonic()
    try:
        store.enqueue([NewJob(id=f"{sys.argv[3]}{i}", task="t", queue="q", priority=2, args=[], kwargs={},
                              scheduled_at=1.0, max_retries=0)], 1.0)
        print("ok", time.monotonic() - started, flush=True)
    except StoreUnavailable as exc:
        print("unavailable", time.monotonic() - started, exc, flush=True)
"""


StartHolder = Callable[[str], "subprocess.Popen[str]"]


@pytest.fixture
def stopped_holder(path: Path, store: SQLiteBackend) -> Iterator[StartHolder]:
    """Starts a child that takes a lock and SIGSTOPs itself (``start(script)``); killed after."""
    children: list[subprocess.Popen[str]] = []

    def start(script: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0] != "T":
            assert time.monotonic() < deadline, "the child did not stop"
            time.sleep(0.01)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


def timed_enqueues(path: Path, count: int, prefix: str) -> list[tuple[str, float, str]]:
    """Run ``count`` enqueues in another process with busy_timeout=BOUND: (outcome, seconds, message)."""
    url = f"sqlite:///{path}?busy_timeout={BOUND:g}"
    done = subprocess.run(
        [sys.executable, "-c", TIMED_ENQUEUES, url, str(count), prefix],
        cwd=REPO, capture_output=True, text=True, timeout=count * (BOUND + SLACK) + 60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = []
    for line in done.stdout.splitlines():
        outcome, seconds, *message = line.split(" ", 2)
        results.append((outcome, float(seconds), message[0] if message else ""))
    return results


def test_a_stopped_process_holding_the_writers_flock_does_not_stop_other_writers(
    path: Path, store: SQLiteBackend, stopped_holder: StartHolder
) -> None:
    stopped_holder(HOLD_FLOCK)
    results = timed_enqueues(path, 3, "past-flock")
    assert [outcome for outcome, _, _ in results] == ["ok", "ok", "ok"]
    assert results[0][1] < BOUND + SLACK
    assert sum(seconds for _, seconds, _ in results) < BOUND + SLACK  # later writes do not queue again
    assert [stored(store, f"past-flock{i}").status for i in range(3)] == [Status.QUEUED] * 3


def test_a_stopped_process_inside_a_write_transaction_makes_writers_give_up_within_the_bound(
    path: Path, store: SQLiteBackend, stopped_holder: StartHolder
) -> None:
    holder = stopped_holder(HOLD_WRITE_LOCK)
    ((outcome, seconds, message),) = timed_enqueues(path, 1, "blocked")
    assert outcome == "unavailable"
    assert BOUND * 0.5 <= seconds < BOUND + SLACK
    assert "locked by another process (maybe stopped or hung)" in message and str(path) in message
    assert store.get("blocked0") is None
    holder.send_signal(signal.SIGCONT)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "released"
    assert [outcome for outcome, _, _ in timed_enqueues(path, 1, "resumed")] == ["ok"]
    assert stored(store, "resumed0").status is Status.QUEUED
