"""The PostgreSQL event log's numbering, against real concurrent connections: a transaction that
wrote its event first but commits last is never skipped by a reader (the sequencer numbers
committed rows only, each after every number given out before), rolled-back events never appear,
open transactions hold nothing back, and readers are woken by NOTIFY (docs/postgres.md, "The
event log")."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

psycopg = pytest.importorskip("psycopg")

from conveyor.backends.postgres import PostgresBackend  # noqa: E402
from conveyor.backends.postgres import events as postgres_events  # noqa: E402
from conveyor.backends.postgres.events import ACTIVE, NOTIFY_EVERY  # noqa: E402
from conveyor.events import Event, EventKind, EventQuery  # noqa: E402

from .jobdata import T0, new  # noqa: E402

#: A wait's timeout far above what a woken wait takes: the tests assert that it was woken (it
#: returned and the event is there), never how fast.
LONG = 60.0


@pytest.fixture
def store(pg_store: PostgresBackend) -> PostgresBackend:
    return pg_store


def enqueued_ids(events: list[Event]) -> list[str | None]:
    return [e.job_id for e in events if e.kind == EventKind.ENQUEUED]


def read_all(store: PostgresBackend, after: int) -> list[Event]:
    return store.events(EventQuery(after=after, limit=1_000_000))


def insertion_ids(postgres_url: str, job_ids: list[str]) -> list[int]:
    """The internal insertion ids of these jobs' enqueued events, in the order given."""
    with psycopg.connect(postgres_url) as conn:
        rows = dict(conn.execute("SELECT job_id, id FROM conveyor_events WHERE job_id = ANY(%s)", [job_ids]).fetchall())
    return [rows[job_id] for job_id in job_ids]


def test_an_event_that_commits_late_is_numbered_after_the_reader_not_behind_it(
    store: PostgresBackend, postgres_url: str
) -> None:
    """A writes its event first (the lower insertion id) and commits last; B writes and commits in
    between. A reader between the two commits reads B; once A commits, the reader, resuming after
    B, gets A: numbered after B, not behind the reader's position (where a log ordered by insertion
    id would have put it, and the reader would have skipped it). Each exactly once, in commit order."""
    start = store.last_event_seq()
    with psycopg.connect(postgres_url) as a:
        store.enqueue([new("a")], T0, connection=a)  # A's transaction stays open
        store.enqueue([new("b")], T0)  # B commits
        between = store.events(EventQuery(after=start))
        assert enqueued_ids(between) == ["b"]  # committed, so readable; A is not, yet
        last = between[-1].seq
        assert store.last_event_seq() == last
        a.commit()
    later = store.events(EventQuery(after=last))
    assert enqueued_ids(later) == ["a"] and later[0].seq > last
    assert insertion_ids(postgres_url, ["a", "b"])[0] < insertion_ids(postgres_url, ["a", "b"])[1]
    full = store.events(EventQuery(after=start))
    assert full == between + later  # each once, seq in commit order
    assert store.events(EventQuery(after=later[-1].seq)) == []


def test_a_reader_that_waits_between_the_commits_gets_the_late_one_once(
    store: PostgresBackend, postgres_url: str
) -> None:
    """The same, following with wait_for_events: the late batch (a COPY in A's transaction) comes
    after B, in its own order, each event once; nothing is read twice."""
    store.enqueue([new("first")], T0)
    last = store.events(EventQuery(after=0))[-1].seq
    read: list[Event] = []
    with psycopg.connect(postgres_url) as a:
        store.enqueue([new("a1"), new("a2")], T0, connection=a)
        store.enqueue([new("b", key="kb")], T0)
        store.wait_for_events(last, LONG)  # b is there: returns
        read += store.events(EventQuery(after=last))
        assert enqueued_ids(read) == ["b"]
        a.commit()
    store.wait_for_events(read[-1].seq, LONG)
    read += store.events(EventQuery(after=read[-1].seq))
    assert enqueued_ids(read) == ["b", "a1", "a2"]
    assert [e.seq for e in read] == list(range(last + 1, last + 4))


def test_a_rolled_back_transaction_leaves_no_event(store: PostgresBackend, postgres_url: str) -> None:
    start = store.last_event_seq()
    with psycopg.connect(postgres_url) as a:
        store.enqueue([new("gone")], T0, connection=a)
        store.enqueue([new("kept")], T0)
        a.rollback()
    store.enqueue([new("after")], T0)
    assert enqueued_ids(store.events(EventQuery(after=start))) == ["kept", "after"]


def test_an_open_transaction_does_not_hold_the_log_back(store: PostgresBackend, postgres_url: str) -> None:
    """Numbering waits for no one: a transaction left open (with events of its own, or none)
    delays only its own events, which come once it commits."""
    start = store.last_event_seq()
    with psycopg.connect(postgres_url) as idle, psycopg.connect(postgres_url) as writer:
        idle.execute("SELECT pg_current_xact_id()")  # an open transaction with an xid, no event
        store.enqueue([new("pending")], T0, connection=writer)  # an open transaction with an event
        store.enqueue([new("now")], T0)
        assert enqueued_ids(store.events(EventQuery(after=start))) == ["now"]
        writer.commit()
        assert enqueued_ids(store.events(EventQuery(after=start))) == ["now", "pending"]


def test_wait_for_events_is_woken_by_a_write_on_another_connection(store: PostgresBackend, postgres_url: str) -> None:
    start = store.last_event_seq()
    returned = threading.Event()

    def wait() -> None:
        store.wait_for_events(start, LONG)
        returned.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.2)
    assert not returned.is_set()  # nothing written yet: it waits
    writer = PostgresBackend(postgres_url)
    try:
        writer.enqueue([new("wake")], T0)
    finally:
        writer.close()
    waiter.join(LONG / 3)
    assert returned.is_set(), "wait_for_events was not woken by the write"
    assert enqueued_ids(store.events(EventQuery(after=start))) == ["wake"]


def test_a_wait_that_found_the_sequencer_busy_looks_again_by_itself(store: PostgresBackend, postgres_url: str) -> None:
    """While another session holds the sequencer's lock, a woken reader cannot number what woke
    it; when the lock is let go (no notification comes of that), it must look again by itself."""
    start = store.last_event_seq()
    returned = threading.Event()
    with psycopg.connect(postgres_url) as other:
        locked = other.execute("SELECT pg_try_advisory_xact_lock(1129270854, hashtext(current_schema()))").fetchone()
        assert locked == (True,)  # the key the sequencer takes (queries.sql: sequencer_lock)
        store.enqueue([new("queued-behind-the-lock")], T0)

        def wait() -> None:
            store.wait_for_events(start, LONG)
            returned.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        time.sleep(0.3)
        assert not returned.is_set()
        other.rollback()  # releases the lock; sends nothing
    waiter.join(LONG / 3)
    assert returned.is_set(), "wait_for_events did not look again once the sequencer was free"
    assert enqueued_ids(store.events(EventQuery(after=start))) == ["queued-behind-the-lock"]


def test_eight_writers_and_open_transactions_never_make_a_follower_skip_or_repeat(
    store: PostgresBackend, postgres_url: str
) -> None:
    """Eight writer threads enqueue with random delays: some autocommit (single, COPY batch, keyed),
    some inside their own transactions held open a random short time, a few rolled back. Two
    followers read with events(after=last) and wait_for_events meanwhile. Each follower sees every
    committed event exactly once, seq strictly increasing, exactly the final log; no rolled-back
    event ever."""
    start = store.last_event_seq()
    committed: set[str] = set()
    rolled_back: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    writing_done = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        own = PostgresBackend(postgres_url)
        try:
            with psycopg.connect(postgres_url) as conn:
                for i in range(25):
                    time.sleep(rng.uniform(0, 0.01))
                    jobs = [new(f"w{n}-{i}-{k}") for k in range(rng.choice((1, 1, 3)))]
                    ids = {job.id for job in jobs}
                    mode = rng.random()
                    if mode < 0.5:  # autocommit: one statement, or a COPY batch in a transaction
                        own.enqueue(jobs, T0)
                        with lock:
                            committed.update(ids)
                        continue
                    if mode < 0.6:
                        keyed = [new(f"w{n}-{i}-key", key=f"k{n}-{i}")]
                        own.enqueue(keyed, T0)
                        with lock:
                            committed.add(keyed[0].id)
                        continue
                    own.enqueue(jobs, T0, connection=conn)  # the caller's transaction, held open
                    time.sleep(rng.uniform(0, 0.05))
                    if rng.random() < 0.15:
                        conn.rollback()
                        with lock:
                            rolled_back.update(ids)
                    else:
                        conn.commit()
                        with lock:
                            committed.update(ids)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own.close()

    def follower(seen: list[Event]) -> None:
        reader = PostgresBackend(postgres_url)
        rng = random.Random(len(seen) + 99)
        last = start
        try:
            while True:
                page = reader.events(EventQuery(after=last, limit=rng.choice((1, 5, 50))))
                if page:
                    seen.extend(page)
                    last = page[-1].seq
                    continue
                if writing_done.is_set() and last >= reader.last_event_seq():
                    return
                reader.wait_for_events(last, 0.5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            reader.close()

    followed: list[list[Event]] = [[], []]
    followers = [threading.Thread(target=follower, args=(seen,)) for seen in followed]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in followers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writing_done.set()
    for thread in followers:
        thread.join(LONG)
        assert not thread.is_alive()
    assert errors == []

    final = read_all(store, start)
    assert enqueued_ids(final) and set(enqueued_ids(final)) == committed
    assert len(enqueued_ids(final)) == len(committed)  # each committed job's event exactly once
    assert not rolled_back & set(enqueued_ids(final)), "an event of a rolled-back transaction appeared"
    assert [e.seq for e in final] == list(range(start + 1, start + 1 + len(final)))  # numbered without gaps
    for seen in followed:
        seqs = [e.seq for e in seen]
        assert all(a < b for a, b in itertools.pairwise(seqs)), "seq not strictly increasing"
        assert seen == final, "a follower skipped or repeated an event"


def test_concurrent_sequencers_number_each_event_once(store: PostgresBackend, postgres_url: str) -> None:
    """Many readers numbering at once (each runs the sequencer) agree on one numbering."""
    start = store.last_event_seq()
    store.enqueue([new(f"j{i}") for i in range(300)], T0)
    readers = [PostgresBackend(postgres_url) for _ in range(6)]
    barrier = threading.Barrier(len(readers))
    results: list[list[Event]] = []

    def read(reader: PostgresBackend) -> None:
        barrier.wait()
        results.append(read_all(reader, start))

    threads = [threading.Thread(target=read, args=(r,)) for r in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for reader in readers:
        reader.close()
    final = read_all(store, start)
    assert enqueued_ids(final) == [f"j{i}" for i in range(300)]  # a COPY batch keeps its order
    # a reader that found the sequencer busy may have read a prefix; never a different numbering
    for seen in results:
        assert seen == final[: len(seen)]


def test_numbers_are_never_reused_after_destroy_all_or_pruning(store: PostgresBackend) -> None:
    store.enqueue([new("x"), new("y")], T0)
    last = store.last_event_seq()
    assert store.prune_events(T0 + 1) == 2
    store.destroy_all()
    store.enqueue([new("z")], T0)
    (event,) = store.events(EventQuery(after=0))
    assert event.seq == last + 1 and event.job_id == "z"


def test_a_log_nobody_reads_is_numbered_when_pruned(store: PostgresBackend, postgres_url: str) -> None:
    store.enqueue([new(f"p{i}") for i in range(5)], T0)
    with psycopg.connect(postgres_url) as conn:
        unnumbered = conn.execute("SELECT count(*), sum(n) FROM conveyor_events WHERE seq IS NULL").fetchone()
        assert unnumbered == (1, 5)  # one batch row of five events
        assert store.prune_events(T0 - 1) == 0
        assert conn.execute("SELECT count(*) FROM conveyor_events WHERE seq IS NULL").fetchone() == (0,)


def test_a_pruned_job_takes_its_events_along(store: PostgresBackend) -> None:
    store.enqueue([new("old", result_ttl=1.0), new("kept")], T0)
    assert store.cancel("old", T0 + 1) is not None
    assert {e.job_id for e in store.events(EventQuery(after=0))} == {"old", "kept"}
    assert store.prune(T0 + 100) == 1
    assert [(e.kind, e.job_id) for e in store.events(EventQuery(after=0))] == [(EventKind.ENQUEUED, "kept")]


def test_worker_writes_notify_readers_at_most_once_per_interval(
    store: PostgresBackend, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's worker-pool writes (claims, outcomes) notify only if none of its own did within
    NOTIFY_EVERY (here an hour, so it cannot run out mid-test); a write that wrote nothing does
    not count; main-pool writes (enqueues, control calls) always notify."""
    monkeypatch.setattr(postgres_events, "NOTIFY_EVERY", 3600.0)
    listener = psycopg.connect(postgres_url, autocommit=True)
    listener.execute("LISTEN conveyor_events")
    writer = PostgresBackend(postgres_url)
    try:
        assert writer.claim(["q"], "w", 1, 30.0, T0) == []  # wrote nothing: no notification, none counted
        writer.enqueue([new("a"), new("b")], T0)  # main pool: 1
        assert len(writer.claim(["q"], "w", 1, 30.0, T0)) == 1  # the first worker write: 2
        assert len(writer.claim(["q"], "w", 1, 30.0, T0)) == 1  # within the interval: none
        writer.cancel("a", T0)  # main pool: 3
        writer.cancel("b", T0)  # 4
    finally:
        writer.close()
    heard = list(listener.notifies(timeout=2, stop_after=10))
    listener.close()
    assert len(heard) == 4 and {n.channel for n in heard} == {"conveyor_events"}


def test_a_write_that_did_not_notify_is_found_by_a_woken_reader(store: PostgresBackend, postgres_url: str) -> None:
    """A reader follows while another process claims twice, 20 ms apart: its second claim does not
    notify. The reader, woken by the first, looks again while active and finds the second long
    before its timeout."""
    store.enqueue([new("a"), new("b")], T0)
    start = store.last_event_seq()
    store.wait_for_events(start, 0)  # subscribed
    time.sleep(3 * ACTIVE)  # and quiet: it relies on what it hears from now on
    seen: list[Event] = []
    done = threading.Event()

    def follow() -> None:
        last = start
        while len(seen) < 2:
            store.wait_for_events(last, LONG)
            page = store.events(EventQuery(after=last))
            seen.extend(page)
            last = page[-1].seq if page else last
        done.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    writer = PostgresBackend(postgres_url)
    try:
        assert len(writer.claim(["q"], "w", 1, 30.0, T0)) == 1
        time.sleep(NOTIFY_EVERY * 0.4)
        assert len(writer.claim(["q"], "w", 1, 30.0, T0)) == 1
    finally:
        writer.close()
    follower.join(LONG / 3)
    assert done.is_set(), "the reader did not find the write that did not notify"
    assert [(e.kind, e.job_id) for e in seen] == [("started", "a"), ("started", "b")]
