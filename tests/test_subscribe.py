"""``app.subscribe``: following the log as it is written, on both stores. Every event exactly once
and in order while writers run on several threads; resuming from a saved ``last_seq`` with
nothing missed or repeated; ``after=None`` starting at now; ``async for``; patterns, job and
kind filters; closing from another thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from conveyor import App, Event, Subscription

WAIT = 20.0  # generous bound for cross-thread hand-offs; never a speed assertion


def collect(subscription: Subscription, until: Callable[[list[Event]], bool]) -> list[Event]:
    """Read events on a thread until ``until(seen)`` (or WAIT passes: then close it); return them."""
    seen: list[Event] = []

    def follow() -> None:
        for event in subscription:
            seen.append(event)
            if until(seen):
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(WAIT)
    if reader.is_alive():
        subscription.close()
        reader.join(WAIT)
        raise AssertionError(f"the subscription did not see what was expected; saw {[e.kind for e in seen]}")
    return seen


def test_every_event_exactly_once_in_order_while_threads_write(any_app: App, start_worker: Callable[..., Any]) -> None:
    app = any_app

    @app.task(name="work")
    def work(i: int) -> int:
        return i

    subscription = app.subscribe(after=None, poll=0.2)
    start_worker(on=app, concurrency=4)
    writers = [threading.Thread(target=lambda k=k: [work.delay(k * 100 + i) for i in range(25)]) for k in range(4)]
    for writer in writers:
        writer.start()
    seen = collect(subscription, lambda seen: sum(e.kind == "succeeded" for e in seen) == 100)
    for writer in writers:
        writer.join()
    job_events = [e for e in seen if e.job_id is not None]
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs)), "out of order or repeated"
    assert len({e.job_id for e in job_events}) == 100
    by_job: dict[str, list[str]] = {}
    for event in job_events:
        by_job.setdefault(event.job_id or "", []).append(event.kind)
    assert all(history == ["enqueued", "started", "succeeded"] for history in by_job.values()), by_job
    # what it followed live is exactly what the log holds, none skipped
    assert seqs == [e.seq for e in app.events(after=seqs[0] - 1, limit=10_000)][: len(seqs)]
    assert subscription.last_seq == seqs[-1]
    subscription.close()


def test_resuming_from_a_saved_seq_misses_and_repeats_nothing(any_app: App) -> None:
    app = any_app
    handles = [app.enqueue("some.task", [i]) for i in range(10)]
    first = app.subscribe(after=0, poll=0.1)
    head = [next(first) for _ in range(4)]
    saved = first.last_seq
    first.close()
    with pytest.raises(StopIteration):
        next(first)
    more = [app.enqueue("some.task", [i]) for i in range(10, 13)]
    with app.subscribe(after=saved, poll=0.1) as resumed:
        rest = [next(resumed) for _ in range(9)]
    assert [e.job_id for e in head + rest] == [h.id for h in handles + more]
    assert [e.seq for e in head + rest] == [e.seq for e in app.events(after=0)]


def test_after_none_starts_at_now(any_app: App, any_url: str) -> None:
    app = any_app
    old = [app.enqueue("old.one"), app.enqueue("before.subscribing")]
    with app.subscribe(poll=0.1) as subscription:
        early = subscription.next_event(timeout=0.3)
        later = app.enqueue("after.subscribing")
        seen = [] if early is None else [early]
        while not seen or seen[-1].job_id != later.id:
            event = subscription.next_event(timeout=WAIT)
            assert event is not None, "the event written after subscribing never came"
            seen.append(event)
    if any_url.startswith("sqlite"):
        assert [e.job_id for e in seen] == [later.id]  # what was written before is not replayed
    else:
        # PostgreSQL: last_event_seq() is the head the sequencer could number at that moment; a
        # transaction still open elsewhere on the server (any database) can hold the newest
        # commits just behind it, and those then come once numbered (in order, once each)
        replayed = [e.job_id for e in seen[:-1]]
        assert replayed == [h.id for h in old][len(old) - len(replayed) :]
        assert seen[-1].job_id == later.id


def test_async_iteration(any_app: App) -> None:
    app = any_app

    async def follow() -> list[Event]:
        seen: list[Event] = []
        subscription = app.subscribe(after=None, poll=0.1)
        writer = threading.Timer(0.2, lambda: [app.enqueue("async.task", [i]) for i in range(3)])
        writer.start()
        ticks = 0

        async def tick() -> None:  # the loop is not blocked while the subscription waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async for event in subscription:
            seen.append(event)
            if len(seen) == 3:
                break
        ticker.cancel()
        subscription.close()
        writer.join()
        assert ticks > 1
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), WAIT))
    assert [e.kind for e in seen] == ["enqueued"] * 3
    assert [e.seq for e in seen] == sorted(e.seq for e in seen)


def test_patterns_match_a_task_or_a_queue(any_app: App) -> None:
    app = any_app
    send = app.enqueue("emails.send")
    digest = app.enqueue("reports.digest", queue="emails.low")
    other = app.enqueue("reports.monthly")
    start = 0

    def jobs_of(pattern: str) -> list[str | None]:
        with app.subscribe(pattern, after=start, poll=0.05) as subscription:
            found = []
            while (event := subscription.next_event(timeout=0.3)) is not None:
                found.append(event.job_id)
        return found

    assert jobs_of("*") == [send.id, digest.id, other.id]
    assert jobs_of("emails.*") == [send.id, digest.id]  # by task, and by queue
    assert jobs_of("reports.monthly") == [other.id]  # an exact name
    assert jobs_of("default") == [send.id, other.id]  # a queue name
    assert jobs_of("nothing.*") == []


def test_job_and_kind_filters_and_last_seq_past_skipped_events(app: App) -> None:
    @app.task(name="t")
    def t() -> None: ...

    one, two = t.delay(), t.delay()
    app.run_until_empty()
    with app.subscribe(after=0, job_id=two.id, poll=0.05) as subscription:
        assert [subscription.next_event(0.5) for _ in range(3)] == app.events(job_id=two.id)
    with app.subscribe(after=0, kinds=["succeeded"], poll=0.05) as subscription:
        first = subscription.next_event(0.5)
        assert first is not None and first.job_id == one.id
    with app.subscribe("no.such.task", after=0, poll=0.05) as subscription:
        assert subscription.next_event(timeout=0.2) is None
        assert subscription.last_seq == app.events()[-1].seq  # went past what did not match


def test_close_from_another_thread_ends_a_blocked_iteration(app: App) -> None:
    subscription = app.subscribe(poll=0.1)
    ended = threading.Event()

    def follow() -> None:
        for _ in subscription:
            pass
        ended.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert not ended.wait(0.3)  # blocked: nothing to read
    subscription.close()
    assert ended.wait(WAIT)
    assert subscription.closed


@pytest.mark.parametrize(
    "arguments, said",
    [({"after": -2}, "after must be"), ({"poll": 0}, "poll must be > 0"), ({"kinds": []}, "kinds= must name")],
)
def test_subscribe_refuses_bad_arguments(app: App, arguments: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        app.subscribe(**arguments)


def test_a_filtered_subscription_waits_instead_of_spinning_past_other_jobs_events(any_app: App) -> None:
    """A subscription to one job, with the log holding later events of other jobs only: each wait
    starts past what it has read (the head), so it blocks for its poll instead of returning at
    once, again and again (a spin on the store)."""
    mine = any_app.enqueue("app.mine")
    for _ in range(20):
        any_app.enqueue("app.other")
    calls = 0
    store = any_app.backend
    read = store.events

    def counted(query: Any) -> list[Event]:
        nonlocal calls
        calls += 1
        return read(query)

    store.events = counted  # type: ignore[method-assign]
    try:
        with any_app.subscribe(job_id=mine.id, after=0, poll=0.2) as subscription:
            first = subscription.next_event(timeout=5)
            assert first is not None and first.job_id == mine.id and first.kind == "enqueued"
            calls = 0
            assert subscription.next_event(timeout=1.0) is None  # nothing more of this job
            assert calls <= 10, f"{calls} reads in 1 s: the wait returned at once (a spin)"
            assert subscription.last_seq >= any_app.backend.last_event_seq()  # read past the other jobs'
    finally:
        del store.events
