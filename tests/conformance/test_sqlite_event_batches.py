"""The SQLite store's batch rows (docs/events.md, "How SQLite stores events"): a hot-path step's
events share one row, yet every reader sees them one by one, numbered, filtered, resumable from any
number, in a job's history, and gone with their job when it is pruned. The rows are read here with
plain sqlite3, so the tests check what is on disk, not only what the store says."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.backends.base import Outcome, OutcomeKind, Report
from conveyor.backends.event_batches import PER_ROW
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.events import EventQuery

from .jobdata import LEASE, T0, new, token


@pytest.fixture
def path(sqlite_path: Path) -> Path:
    return sqlite_path


@pytest.fixture
def store(sqlite_store: SQLiteBackend) -> SQLiteBackend:
    return sqlite_store


def rows(path: Path) -> list[tuple[int, int | None]]:
    """(seq, n) of every row of the log, in order."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT seq, n FROM conveyor_events ORDER BY seq").fetchall()


def succeed_all(store: SQLiteBackend, now: float) -> None:
    """Claim every due job of queue q and report each succeeded, in one finish_many."""
    jobs = store.claim(["q"], "w1", 100, LEASE, now)
    reports = [Report(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1)) for job in jobs]
    assert store.finish_many(reports, now + 1) == [True] * len(jobs)


def test_an_enqueue_a_claim_and_a_batch_of_outcomes_write_one_row_each(store: SQLiteBackend, path: Path) -> None:
    store.enqueue([new(f"j{i}") for i in range(5)], T0)
    succeed_all(store, T0)
    assert rows(path) == [(5, 5), (10, 5), (15, 5)]
    events = store.events(EventQuery())
    assert [e.seq for e in events] == list(range(1, 16))
    assert [e.kind for e in events] == ["enqueued"] * 5 + ["started"] * 5 + ["succeeded"] * 5
    assert [e.job_id for e in events[:5]] == [f"j{i}" for i in range(5)]
    started = events[5]
    assert (started.worker_id, started.attempt, started.task, started.queue) == ("w1", 1, "tests.task", "q")
    assert events[10].worker_id == "w1" and events[10].data == {}
    assert store.last_event_seq() == 15


def test_single_steps_keep_a_row_per_event_and_numbers_stay_in_commit_order(store: SQLiteBackend, path: Path) -> None:
    store.enqueue([new("a"), new("b")], T0)
    assert store.cancel("a", T0 + 1) is not None  # not a hot-path step: a row of its own
    store.enqueue([new("c")], T0 + 2)  # an enqueue of one: a batch row of one
    assert rows(path) == [(2, 2), (3, None), (4, 1)]
    assert [(e.seq, e.kind, e.job_id) for e in store.events(EventQuery())] == [
        (1, "enqueued", "a"), (2, "enqueued", "b"), (3, "cancelled", "a"), (4, "enqueued", "c"),
    ]  # fmt: skip


def test_reading_from_a_number_inside_a_batch_row_resumes_there_without_gaps_or_duplicates(
    store: SQLiteBackend,
) -> None:
    store.enqueue([new(f"j{i}") for i in range(10)], T0)
    assert [e.seq for e in store.events(EventQuery(after=6))] == [7, 8, 9, 10]
    seen: list[int] = []
    after = 0
    while page := store.events(EventQuery(after=after, limit=3)):  # a subscriber's pages
        seen += [e.seq for e in page]
        after = page[-1].seq
    assert seen == list(range(1, 11))


def test_filters_apply_to_each_event_of_a_batch_row(store: SQLiteBackend) -> None:
    store.enqueue([new("m1", queue="mail"), new("w1"), new("m2", queue="mail"), new("w2")], T0)
    succeed_all(store, T0)
    assert [e.job_id for e in store.events(EventQuery(queue="mail"))] == ["m1", "m2"]
    assert [(e.kind, e.job_id) for e in store.events(EventQuery(kinds=("succeeded",), limit=1))] == [
        ("succeeded", "w1")
    ]
    assert [e.kind for e in store.events(EventQuery(task="tests.task", job_id="w2"))] == [
        "enqueued", "started", "succeeded",
    ]  # fmt: skip
    assert store.events(EventQuery(task="other")) == []


def test_a_jobs_history_comes_from_its_batch_rows_and_single_rows_in_order(store: SQLiteBackend, path: Path) -> None:
    store.enqueue([new("x"), new("y")], T0)
    (job,) = store.claim(["q"], "w1", 1, LEASE, T0)
    assert store.progress(job.id, token(job), 50.0, "half", T0 + 1)  # a row of its own
    retry = Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 2)
    assert store.finish_many([Report(job.id, token(job), retry)], T0 + 1) == [True]
    succeed_all(store, T0 + 5)
    with sqlite3.connect(path) as conn:
        marks = conn.execute("SELECT event_marks FROM conveyor_jobs WHERE id = ?", (job.id,)).fetchone()[0]
    assert len(marks.split()) == 5  # enqueue, claim, retry, claim, succeed
    history = store.events(EventQuery(job_id=job.id))
    assert [e.kind for e in history] == [
        "enqueued", "started", "progress", "retry_scheduled", "started", "succeeded",
    ]  # fmt: skip
    assert [e.attempt for e in history] == [0, 1, 1, 1, 2, 2]
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    assert [e.kind for e in store.events(EventQuery(job_id=job.id, after=history[2].seq, limit=2))] == [
        "retry_scheduled", "started",
    ]  # fmt: skip


def test_a_pruned_jobs_entries_go_and_its_neighbours_keep_their_numbers(store: SQLiteBackend, path: Path) -> None:
    store.enqueue([new("old", result_ttl=10.0), new("kept", result_ttl=1000.0), new("alone", result_ttl=10.0)], T0)
    succeed_all(store, T0)
    before = {e.seq: e for e in store.events(EventQuery()) if e.job_id == "kept"}
    assert store.prune(T0 + 100) == 2
    assert store.events(EventQuery(job_id="old")) == [] and store.events(EventQuery(job_id="alone")) == []
    after = store.events(EventQuery())
    assert {e.seq: e for e in after} == before  # the kept job's events, as they were, numbers unchanged
    assert store.prune_events(T0 + 10_000) == 9  # every number the rows held


def test_a_seq_given_again_to_a_new_job_does_not_take_the_old_jobs_events(store: SQLiteBackend, path: Path) -> None:
    """SQLite gives the newest job's seq again once that job is deleted: the batch rows that named
    the old job by that seq must not name the new one."""
    store.enqueue([new("first", result_ttl=1.0)], T0)
    succeed_all(store, T0)
    assert store.prune(T0 + 100) == 1
    store.enqueue([new("second")], T0 + 200)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT seq FROM conveyor_jobs").fetchall() == [(1,)]  # the pruned job's seq
    assert [(e.kind, e.job_id) for e in store.events(EventQuery())] == [("enqueued", "second")]
    assert [e.kind for e in store.events(EventQuery(job_id="second"))] == ["enqueued"]


def test_a_batch_row_is_a_few_bytes_an_event(store: SQLiteBackend, path: Path) -> None:
    store.enqueue([new(f"job-with-a-long-id-{i:04}") for i in range(100)], T0)
    with sqlite3.connect(path) as conn:
        ((size,),) = conn.execute("SELECT length(data) FROM conveyor_events").fetchall()
    assert size < 100 * 8


def test_a_discarded_jobs_events_stay_readable_by_its_id(store: SQLiteBackend) -> None:
    store.enqueue([new("gone"), new("other")], T0)
    jobs = store.claim(["q"], "w1", 2, LEASE, T0)
    gone = next(job for job in jobs if job.id == "gone")
    assert store.finish("gone", token(gone), Outcome(kind=OutcomeKind.DISCARDED), T0 + 1)
    assert [e.kind for e in store.events(EventQuery(job_id="gone"))] == ["enqueued", "started", "discarded"]


def test_a_large_step_writes_rows_of_at_most_per_row_events_each_job_marked_at_its_own(
    store: SQLiteBackend, path: Path
) -> None:
    ids = [f"j{i:03}" for i in range(250)]
    store.enqueue([new(job_id, result_ttl=10.0 if i % 2 else 1000.0) for i, job_id in enumerate(ids)], T0)
    assert rows(path) == [(100, PER_ROW), (200, PER_ROW), (250, 50)]
    with sqlite3.connect(path) as conn:
        marks = dict(conn.execute("SELECT id, event_marks FROM conveyor_jobs").fetchall())
    assert (marks["j000"], marks["j099"], marks["j100"], marks["j249"]) == ("1 ", "1 ", "101 ", "201 ")
    assert [e.seq for e in store.events(EventQuery(job_id="j249"))] == [250]
    for _ in range(3):
        succeed_all(store, T0)
    assert store.prune(T0 + 100) == 125  # the odd ones
    left = store.events(EventQuery(limit=10_000))
    assert {e.job_id for e in left} == set(ids[::2]) and len(left) == 3 * 125
    assert [e.kind for e in store.events(EventQuery(job_id="j248"))] == ["enqueued", "started", "succeeded"]
