"""The PostgreSQL store's batch rows (docs/postgres.md, "The event log"): a bulk enqueue, a claim and
a batch of successes each write one row of events, numbered by the sequencer as many events, yet
every reader sees them one by one, numbered, filtered, resumable from any number, in a job's history
(also once the job is discarded), and gone with their job when it is pruned. The rows are read here
with plain psycopg, so the tests check what is in the database, not only what the store says.
Numbers never restart on PostgreSQL (destroy_all keeps the head), so each test counts from ``base``."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

psycopg = pytest.importorskip("psycopg")

from conveyor.backends.base import Outcome, OutcomeKind, Report  # noqa: E402
from conveyor.backends.event_batches import PER_ROW  # noqa: E402
from conveyor.backends.postgres import PostgresBackend  # noqa: E402
from conveyor.events import EventQuery  # noqa: E402

from .jobdata import LEASE, T0, new, token  # noqa: E402


@pytest.fixture
def store(pg_store: PostgresBackend) -> PostgresBackend:
    return pg_store


def rows(postgres_url: str, base: int) -> list[tuple[int, int | None]]:
    """(seq - base, n) of every numbered row of the log, in order."""
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT seq, n FROM conveyor_events WHERE seq IS NOT NULL ORDER BY seq").fetchall()
    return [(seq - base, n) for seq, n in found]


def query(postgres_url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(postgres_url) as conn:
        return conn.execute(sql, params).fetchall()


def succeed_all(store: PostgresBackend, now: float, queues: Sequence[str] = ("q",)) -> None:
    """Claim every due job of ``queues`` and report each succeeded, in one finish_many."""
    jobs = store.claim(list(queues), "w1", 100, LEASE, now)
    reports = [Report(job.id, token(job), Outcome(kind=OutcomeKind.SUCCEEDED, result=1)) for job in jobs]
    assert store.finish_many(reports, now + 1) == [True] * len(jobs)


def test_a_bulk_enqueue_a_claim_and_a_batch_of_successes_write_one_row_each(
    store: PostgresBackend, postgres_url: str
) -> None:
    base = store.last_event_seq()
    store.enqueue([new(f"j{i}") for i in range(5)], T0)
    succeed_all(store, T0)
    events = store.events(EventQuery(after=base))  # runs the sequencer
    assert rows(postgres_url, base) == [(5, 5), (10, 5), (15, 5)]
    assert [e.seq - base for e in events] == list(range(1, 16))
    assert [e.kind for e in events] == ["enqueued"] * 5 + ["started"] * 5 + ["succeeded"] * 5
    assert [e.job_id for e in events[:5]] == [f"j{i}" for i in range(5)]
    started = events[5]
    assert (started.worker_id, started.attempt, started.task, started.queue) == ("w1", 1, "tests.task", "q")
    assert events[10].worker_id == "w1" and events[10].data == {}
    assert store.last_event_seq() == base + 15


def test_other_steps_keep_a_row_per_event(store: PostgresBackend, postgres_url: str) -> None:
    base = store.last_event_seq()
    store.enqueue([new("a"), new("b")], T0)
    assert store.cancel("a", T0 + 1) is not None
    store.enqueue([new("c")], T0 + 2)  # one job: the insert statement, a row of its own
    assert [(e.seq - base, e.kind, e.job_id) for e in store.events(EventQuery(after=base))] == [
        (1, "enqueued", "a"), (2, "enqueued", "b"), (3, "cancelled", "a"), (4, "enqueued", "c"),
    ]  # fmt: skip
    assert rows(postgres_url, base) == [(2, 2), (3, None), (4, None)]


def test_reading_from_a_number_inside_a_batch_row_resumes_there_without_gaps_or_duplicates(
    store: PostgresBackend,
) -> None:
    base = store.last_event_seq()
    store.enqueue([new(f"j{i}") for i in range(10)], T0)
    assert [e.seq - base for e in store.events(EventQuery(after=base + 6))] == [7, 8, 9, 10]
    seen: list[int] = []
    after = base
    while page := store.events(EventQuery(after=after, limit=3)):  # a subscriber's pages
        seen += [e.seq - base for e in page]
        after = page[-1].seq
    assert seen == list(range(1, 11))


def test_filters_apply_to_each_event_of_a_batch_row(store: PostgresBackend) -> None:
    base = store.last_event_seq()
    store.enqueue([new("m1", queue="mail"), new("w1"), new("m2", queue="mail"), new("w2")], T0)
    succeed_all(store, T0)
    assert [e.job_id for e in store.events(EventQuery(after=base, queue="mail"))] == ["m1", "m2"]
    assert [(e.kind, e.job_id) for e in store.events(EventQuery(after=base, kinds=("succeeded",), limit=1))] == [
        ("succeeded", "w1")
    ]
    assert [e.kind for e in store.events(EventQuery(task="tests.task", job_id="w2"))] == [
        "enqueued", "started", "succeeded",
    ]  # fmt: skip
    assert store.events(EventQuery(after=base, task="other")) == []


def test_a_claim_across_tasks_queues_and_attempts_names_each_in_its_entry(store: PostgresBackend) -> None:
    """A batch row's kind, worker and attempt are its first event's and its task/queue pairs are
    listed once; an event that differs carries what differs in its entry (log_batch, in SQL)."""
    store.enqueue([msgspec.structs.replace(new("again", queue="mail"), task="tests.other"), new("x")], T0)
    (again,) = store.claim(["mail"], "w1", 1, LEASE, T0)
    retry = Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 1)
    assert store.finish_many([Report("again", token(again), retry)], T0) == [True]
    store.enqueue([new("y", queue="mail")], T0)
    base = store.last_event_seq()
    assert {job.id for job in store.claim(["q", "mail"], "w2", 10, LEASE, T0 + 2)} == {"again", "x", "y"}
    started = {e.job_id: e for e in store.events(EventQuery(after=base))}
    assert {job_id: (e.kind, e.task, e.queue, e.attempt, e.worker_id) for job_id, e in started.items()} == {
        "again": ("started", "tests.other", "mail", 2, "w2"),
        "x": ("started", "tests.task", "q", 1, "w2"),
        "y": ("started", "tests.task", "mail", 1, "w2"),
    }


def test_a_jobs_history_comes_from_its_batch_rows_and_single_rows_in_order(
    store: PostgresBackend, postgres_url: str
) -> None:
    store.enqueue([new("x"), new("y")], T0)
    (job,) = store.claim(["q"], "w1", 1, LEASE, T0)
    assert store.progress(job.id, token(job), 50.0, "half", T0 + 1)  # a row of its own
    retry = Outcome(kind=OutcomeKind.RETRY, retry_at=T0 + 2)
    assert store.finish_many([Report(job.id, token(job), retry)], T0 + 1) == [True]  # a row of its own
    succeed_all(store, T0 + 5)
    ((noted,),) = query(postgres_url, "SELECT event_rows FROM conveyor_jobs WHERE id = %s", [job.id])
    assert isinstance(noted, list) and len(noted) == 4  # enqueue, claim, claim, success
    history = store.events(EventQuery(job_id=job.id))
    assert [e.kind for e in history] == [
        "enqueued", "started", "progress", "retry_scheduled", "started", "succeeded",
    ]  # fmt: skip
    assert [e.attempt for e in history] == [0, 1, 1, 1, 2, 2]
    assert [e.seq for e in history] == sorted(e.seq for e in history)
    assert [e.kind for e in store.events(EventQuery(job_id=job.id, after=history[2].seq, limit=2))] == [
        "retry_scheduled", "started",
    ]  # fmt: skip


def test_a_pruned_jobs_entries_go_and_its_neighbours_keep_their_numbers(store: PostgresBackend) -> None:
    base = store.last_event_seq()
    store.enqueue([new("old", result_ttl=10.0), new("kept", result_ttl=1000.0), new("alone", result_ttl=10.0)], T0)
    succeed_all(store, T0)
    before = {e.seq: e for e in store.events(EventQuery(after=base)) if e.job_id == "kept"}
    assert store.prune(T0 + 100) == 2
    assert store.events(EventQuery(job_id="old")) == [] and store.events(EventQuery(job_id="alone")) == []
    assert {e.seq: e for e in store.events(EventQuery(after=base))} == before  # as they were, numbers unchanged
    assert store.prune_events(T0 + 10_000) == 9  # every number the rows held


def test_a_discarded_jobs_events_stay_readable(store: PostgresBackend, postgres_url: str) -> None:
    base = store.last_event_seq()
    store.enqueue([new("gone"), new("other")], T0)
    jobs = store.claim(["q"], "w1", 2, LEASE, T0)
    gone = next(job for job in jobs if job.id == "gone")
    assert store.finish("gone", token(gone), Outcome(kind=OutcomeKind.DISCARDED), T0 + 1)
    assert query(postgres_url, "SELECT id FROM conveyor_jobs WHERE id = 'gone'") == []
    assert [e.kind for e in store.events(EventQuery(job_id="gone"))] == ["enqueued", "started", "discarded"]
    assert [(e.kind, e.job_id) for e in store.events(EventQuery(after=base))] == [
        ("enqueued", "gone"), ("enqueued", "other"), ("started", "gone"), ("started", "other"), ("discarded", "gone"),
    ]  # fmt: skip


def test_a_batch_row_is_a_few_bytes_an_event(store: PostgresBackend, postgres_url: str) -> None:
    store.enqueue([new(f"job-with-a-long-id-{i:04}") for i in range(100)], T0)
    ((data,),) = query(postgres_url, "SELECT data::text FROM conveyor_events")
    assert isinstance(data, str) and "job-with-a-long-id" not in data  # jobs named by seq, not by id
    assert len(data) < 100 * 12  # a seq (as many digits as the session's jobs made) and a comma each


def test_a_large_enqueue_writes_rows_of_at_most_per_row_events_each_job_noting_its_own(
    store: PostgresBackend, postgres_url: str
) -> None:
    base = store.last_event_seq()
    ids = [f"j{i:03}" for i in range(250)]
    store.enqueue([new(job_id, result_ttl=10.0 if i % 2 else 1000.0) for i, job_id in enumerate(ids)], T0)
    assert store.last_event_seq() == base + 250
    assert rows(postgres_url, base) == [(100, PER_ROW), (200, PER_ROW), (250, 50)]
    noted = dict(query(postgres_url, "SELECT id, event_rows FROM conveyor_jobs"))
    assert noted["j000"] == noted["j099"] != noted["j100"] == noted["j199"] != noted["j249"]
    assert [e.seq - base for e in store.events(EventQuery(job_id="j249"))] == [250]
    for _ in range(3):
        succeed_all(store, T0)
    assert store.prune(T0 + 100) == 125  # the odd ones
    left = store.events(EventQuery(after=base, limit=10_000))
    assert {e.job_id for e in left} == set(ids[::2]) and len(left) == 3 * 125
    assert [e.kind for e in store.events(EventQuery(job_id="j248"))] == ["enqueued", "started", "succeeded"]
