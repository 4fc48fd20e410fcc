"""Batch rows of the event log, on both SQL stores (docs/events.md, "How SQLite stores events";
docs/postgres.md, "Batch rows"): a bulk enqueue's, a claim's and a batch of successes' events share
one row, yet every reader sees them one by one, numbered, filtered, resumable from any number, in a
job's history (also once the job is discarded), and gone with their job when it is pruned. The rows
are read with the database's own driver, so the tests check what is stored, not only what the store
says. PostgreSQL's numbers never restart (destroy_all keeps its head): each test counts from ``base``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.backends.base import Backend, Outcome, OutcomeKind, Report
from conveyor.backends.event_batches import PER_ROW
from conveyor.events import EventQuery

from .jobdata import LEASE, T0, new, token


class Log:
    """A store under test and plain connections to its database, to read its log as stored."""

    def __init__(self, store: Backend, dialect: str, connect: Callable[[], Any]) -> None:
        self.store = store
        self.dialect = dialect
        self._connect = connect

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``sql`` with ``?`` placeholders, run on a connection of its own."""
        if self.dialect == "postgres":
            sql = sql.replace("?", "%s")
        with closing(self._connect()) as conn:
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def rows(self, base: int) -> list[tuple[int, int | None]]:
        """(seq - base, n) of every numbered row of the log, in order."""
        found = self.query("SELECT seq, n FROM conveyor_events WHERE seq IS NOT NULL ORDER BY seq")
        return [(seq - base, n) for seq, n in found]


@pytest.fixture(params=["sqlite", "postgres"])
def log(request: pytest.FixtureRequest) -> Log:
    if request.param == "sqlite":
        path: Path = request.getfixturevalue("sqlite_path")
        return Log(request.getfixturevalue("sqlite_store"), "sqlite", lambda: sqlite3.connect(path))
    psycopg = pytest.importorskip("psycopg")
    url: str = request.getfixturevalue("postgres_url")
    return Log(request.getfixturevalue("pg_store"), "postgres", lambda: psycopg.connect(url))


@pytest.fixture
def sqlite_log(sqlite_store: Backend, sqlite_path: Path) -> Log:
    return Log(sqlite_store, "sqlite", lambda: sqlite3.connect(sqlite_path))


@pytest.fixture
def postgres_log(pg_store: Backend, postgres_url: str) -> Log:
    psycopg = pytest.importorskip("psycopg")
    return Log(pg_store, "postgres", lambda: psycopg.connect(postgres_url))


def succeed_all(store: Backend, now: float, queues: Sequence[str] = ("q",)) -> None:
    """Claim every due job of ``queues`` and report each succeeded, in one finish_many."""
    jobs = store.claim(list(queues), "w1", 100, LEASE, now)
    reports = [Report(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1)) for job in jobs]
    assert store.finish_many(reports, now + 1) == [True] * len(jobs)


def test_a_bulk_enqueue_a_claim_and_a_batch_of_successes_write_one_row_each(log: Log) -> None:
    base = log.store.last_event_seq()
    log.store.enqueue([new(f"j{i}") for i in range(5)], T0)
    succeed_all(log.store, T0)
    events = log.store.events(EventQuery(after=base))  # on PostgreSQL, runs the sequencer
    assert log.rows(base) == [(5, 5), (10, 5), (15, 5)]
    assert [e.seq - base for e in events] == list(range(1, 16))
    assert [e.kind for e in events] == ["enqueued"] * 5 + ["started"] * 5 + ["succeeded"] * 5
    assert [e.job_id for e in events[:5]] == [f"j{i}" for i in range(5)]
    started = events[5]
    assert (started.worker_id, started.attempt, started.task, started.queue) == ("w1", 1, "tests.task", "q")
    assert events[10].worker_id == "w1" and events[10].data == {}
    assert log.store.last_event_seq() == base + 15


def test_other_steps_keep_a_row_per_event_and_numbers_stay_in_order(log: Log) -> None:
    base = log.store.last_event_seq()
    log.store.enqueue([new("a"), new("b")], T0)
    assert log.store.cancel("a", T0 + 1) is not None  # not a hot-path step: a row of its own
    log.store.enqueue([new("c")], T0 + 2)
    assert [(e.seq - base, e.kind, e.job_id) for e in log.store.events(EventQuery(after=base))] == [
        (1, "enqueued", "a"), (2, "enqueued", "b"), (3, "cancelled", "a"), (4, "enqueued", "c"),
    ]  # fmt: skip
    # an enqueue of one job: SQLite's writes a batch row of one, PostgreSQL's `insert` statement a row
    alone = 1 if log.dialect == "sqlite" else None
    assert log.rows(base) == [(2, 2), (3, None), (4, alone)]


def test_reading_from_a_number_inside_a_batch_row_resumes_there_without_gaps_or_duplicates(log: Log) -> None:
    base = log.store.last_event_seq()
    log.store.enqueue([new(f"j{i}") for i in range(10)], T0)
    assert [e.seq - base for e in log.store.events(EventQuery(after=base + 6))] == [7, 8, 9, 10]
    seen: list[int] = []
    after = base
    while page := log.store.events(EventQuery(after=after, limit=3)):  # a subscriber's pages
        seen += [e.seq - base for e in page]
        after = page[-1].seq
    assert seen == list(range(1, 11))


def test_filters_apply_to_each_event_of_a_batch_row(log: Log) -> None:
    base = log.store.last_event_seq()
    log.store.enqueue([new("m1", queue="mail"), new("w1"), new("m2", queue="mail"), new("w2")], T0)
    succeed_all(log.store, T0)
    assert [e.job_id for e in log.store.events(EventQuery(after=base, queue="mail"))] == ["m1", "m2"]
    succeeded = log.store.events(EventQuery(after=base, kinds=("succeeded",), limit=1))
    assert [(e.kind, e.job_id) for e in succeeded] == [("succeeded", "w1")]
    assert [e.kind for e in log.store.events(EventQuery(task="tests.task", job_id="w2"))] == [
        "enqueued", "started", "succeeded",
    ]  # fmt: skip
    assert log.store.events(EventQuery(after=base, task="other")) == []


def test_a_claim_across_tasks_queues_and_attempts_names_each_in_its_entry(log: Log) -> None:
    """A batch row says once what most of its events share; an event that differs (another task or
    queue, a second attempt) carries what differs in its entry."""
    other_task = msgspec.structs.replace(new("again", queue="mail"), task="tests.other")
    log.store.enqueue([other_task, new("x")], T0)
    (again,) = log.store.claim(["mail"], "w1", 1, LEASE, T0)
    retry = Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 1)
    assert log.store.finish_many([Report("again", token(again), retry)], T0) == [True]
    log.store.enqueue([new("y", queue="mail")], T0)
    base = log.store.last_event_seq()
    assert {job.id for job in log.store.claim(["q", "mail"], "w2", 10, LEASE, T0 + 2)} == {"again", "x", "y"}
    started = {e.job_id: e for e in log.store.events(EventQuery(after=base))}
    assert {job_id: (e.kind, e.task, e.queue, e.attempt, e.worker_id) for job_id, e in started.items()} == {
        "again": ("started", "tests.other", "mail", 2, "w2"),
        "x": ("started", "tests.task", "q", 1, "w2"),
        "y": ("started", "tests.task", "mail", 1, "w2"),
    }


def test_a_jobs_history_comes_from_its_batch_rows_and_single_rows_in_order(log: Log) -> None:
    log.store.enqueue([new("x"), new("y")], T0)
    (job,) = log.store.claim(["q"], "w1", 1, LEASE, T0)
    assert log.store.progress(job.id, token(job), 50.0, "half", T0 + 1)  # a row of its own
    retry = Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 2)
    assert log.store.finish_many([Report(job.id, token(job), retry)], T0 + 1) == [True]
    succeed_all(log.store, T0 + 5)
    history = log.store.events(EventQuery(job_id=job.id))
    assert [e.kind for e in history] == [
        "enqueued", "started", "progress", "retry_scheduled", "started", "succeeded",
    ]  # fmt: skip
    assert [e.attempt for e in history] == [0, 1, 1, 1, 2, 2]
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    assert [e.kind for e in log.store.events(EventQuery(job_id=job.id, after=history[2].seq, limit=2))] == [
        "retry_scheduled", "started",
    ]  # fmt: skip


def test_a_pruned_jobs_entries_go_and_its_neighbours_keep_their_numbers(log: Log) -> None:
    base = log.store.last_event_seq()
    jobs = [new("old", result_ttl=10.0), new("kept", result_ttl=1000.0), new("alone", result_ttl=10.0)]
    log.store.enqueue(jobs, T0)
    succeed_all(log.store, T0)
    before = {e.seq: e for e in log.store.events(EventQuery(after=base)) if e.job_id == "kept"}
    assert log.store.prune(T0 + 100) == 2
    assert log.store.events(EventQuery(job_id="old")) == [] and log.store.events(EventQuery(job_id="alone")) == []
    assert {e.seq: e for e in log.store.events(EventQuery(after=base))} == before  # as they were
    assert log.store.prune_events(T0 + 10_000) == 9  # every number the rows held


def test_a_discarded_jobs_events_stay_readable(log: Log) -> None:
    base = log.store.last_event_seq()
    log.store.enqueue([new("gone"), new("other")], T0)
    jobs = log.store.claim(["q"], "w1", 2, LEASE, T0)
    gone = next(job for job in jobs if job.id == "gone")
    assert log.store.finish("gone", token(gone), Outcome(kind=OutcomeKind.DISCARDED), T0 + 1)
    assert log.query("SELECT id FROM conveyor_jobs WHERE id = 'gone'") == []
    assert [e.kind for e in log.store.events(EventQuery(job_id="gone"))] == ["enqueued", "started", "discarded"]
    assert [(e.kind, e.job_id) for e in log.store.events(EventQuery(after=base))] == [
        ("enqueued", "gone"), ("enqueued", "other"), ("started", "gone"), ("started", "other"), ("discarded", "gone"),
    ]  # fmt: skip


def test_a_batch_row_is_a_few_bytes_an_event(log: Log) -> None:
    log.store.enqueue([new(f"job-with-a-long-id-{i:04}") for i in range(100)], T0)
    ((data,),) = log.query("SELECT CAST(data AS TEXT) FROM conveyor_events")
    assert "job-with-a-long-id" not in data  # jobs named by seq, not by id
    assert len(data) < 100 * 12  # a seq (as many digits as the session's jobs made) and a comma each


def test_a_large_enqueue_writes_rows_of_at_most_per_row_events(log: Log) -> None:
    base = log.store.last_event_seq()
    ids = [f"j{i:03}" for i in range(250)]
    log.store.enqueue([new(job_id, result_ttl=10.0 if i % 2 else 1000.0) for i, job_id in enumerate(ids)], T0)
    assert log.store.last_event_seq() == base + 250
    assert log.rows(base) == [(100, PER_ROW), (200, PER_ROW), (250, 50)]
    assert [e.seq - base for e in log.store.events(EventQuery(job_id="j249"))] == [250]
    for _ in range(3):
        succeed_all(log.store, T0)
    assert log.store.prune(T0 + 100) == 125  # the odd ones
    left = log.store.events(EventQuery(after=base, limit=10_000))
    assert {e.job_id for e in left} == set(ids[::2]) and len(left) == 3 * 125
    assert [e.kind for e in log.store.events(EventQuery(job_id="j248"))] == ["enqueued", "started", "succeeded"]


# how each store finds a job's batch rows ---------------------------------------------------------------
def test_sqlite_marks_each_job_at_its_own_rows_start(sqlite_log: Log) -> None:
    """SQLite's event_marks: per step that wrote a batch row naming the job, the lowest number that
    row can have (an enqueue's chunks each their own)."""
    sqlite_log.store.enqueue([new(f"j{i:03}") for i in range(250)], T0)
    marks = dict(sqlite_log.query("SELECT id, event_marks FROM conveyor_jobs"))
    assert (marks["j000"], marks["j099"], marks["j100"], marks["j249"]) == ("1 ", "1 ", "101 ", "201 ")
    succeed_all(sqlite_log.store, T0)  # j000 .. j099: a claim's row, then a batch of successes' row
    ((after,),) = sqlite_log.query("SELECT event_marks FROM conveyor_jobs WHERE id = 'j000'")
    assert after.split()[0] == "1" and len(after.split()) == 3


def test_sqlite_a_seq_given_again_to_a_new_job_does_not_take_the_old_jobs_events(sqlite_log: Log) -> None:
    """SQLite gives the newest job's seq again once that job is deleted: the batch rows that named
    the old job by that seq must not name the new one."""
    store = sqlite_log.store
    store.enqueue([new("first", result_ttl=1.0)], T0)
    succeed_all(store, T0)
    assert store.prune(T0 + 100) == 1
    store.enqueue([new("second")], T0 + 200)
    assert sqlite_log.query("SELECT seq FROM conveyor_jobs") == [(1,)]  # the pruned job's seq
    assert [(e.kind, e.job_id) for e in store.events(EventQuery())] == [("enqueued", "second")]
    assert [e.kind for e in store.events(EventQuery(job_id="second"))] == ["enqueued"]


def test_postgres_notes_each_jobs_batch_rows_by_id(postgres_log: Log) -> None:
    """PostgreSQL's event_rows: the ids of the batch rows naming the job (an enqueue's chunks each
    their own), and on a discarded job's event its seq and rows (job_seq, job_rows)."""
    store = postgres_log.store
    store.enqueue([new(f"j{i:03}") for i in range(250)], T0)
    noted = dict(postgres_log.query("SELECT id, event_rows FROM conveyor_jobs"))
    assert noted["j000"] == noted["j099"] != noted["j100"] == noted["j199"] != noted["j249"]
    assert all(len(rows) == 1 for rows in noted.values())
    jobs = store.claim(["q"], "w1", 1, LEASE, T0)
    assert store.finish(jobs[0].id, token(jobs[0]), Outcome(kind=OutcomeKind.DISCARDED), T0)
    ((job_seq, job_rows),) = postgres_log.query(
        "SELECT job_seq, job_rows FROM conveyor_events WHERE kind = 'discarded' AND job_id = ?", [jobs[0].id]
    )
    assert isinstance(job_seq, int) and len(job_rows) == 2  # its enqueue's row and its claim's
