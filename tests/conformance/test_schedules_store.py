"""The schedules part of the storage contract (conveyor/backends/base.py: ``Schedules``), against every
store. What a fire writes is built by hand here, as conveyor.scheduling would plan it: a store only
writes it, once per tick however many schedulers fire it at once."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
import pytest

from conveyor.backends import Backend
from conveyor.backends.base import JobQuery, Outcome, OutcomeKind
from conveyor.backends.rows import TICK_HISTORY
from conveyor.errors import DuplicateJob
from conveyor.events import Event, EventQuery
from conveyor.job import NewJob, Status
from conveyor.schedule_types import Missed, Overlap, ScheduleRecord, Source, Tick, TickOutcome

from .conftest import OpenStore
from .jobdata import T0, claim_one, new, stored, token
from .threads import at_once

MINUTE = 60.0
TARGET = {"kind": "call", "task": "tests.task", "args": [1], "kwargs": {"x": "é"}, "queue": "q"}


def schedule(name: str = "nightly", next_at: float = T0 + MINUTE, **fields: Any) -> ScheduleRecord:
    """A cron schedule due at ``next_at``, stored (not declared in code), unless ``fields`` say otherwise."""
    values: dict[str, Any] = {"cron": "* * * * *", "tz": "Europe/Paris", "target": TARGET}
    return ScheduleRecord(name=name, next_at=next_at, **{**values, **fields})


def job(name: str, tick_at: float, job_id: str | None = None, **fields: Any) -> NewJob:
    """The job a tick of ``name`` enqueues, linked to it as the planner links it."""
    return msgspec.structs.replace(new(job_id, **fields), scheduled_by=name, tick_at=tick_at, scheduled_at=tick_at)


def enqueued(name: str, tick_at: float, job_id: str | None = None, **fields: Any) -> Tick:
    """An ENQUEUED tick with its job."""
    return Tick(tick_at=tick_at, outcome=TickOutcome.ENQUEUED, job=job(name, tick_at, job_id, **fields))


def scheduled_jobs(backend: Backend) -> list[str]:
    """The ids of every job in the store, oldest first."""
    return [j.id for j in reversed(backend.list_jobs(JobQuery(limit=10_000)))]


def schedule_events(backend: Backend, kind: str | None = None) -> list[Event]:
    """The schedules' events (or those of one kind), oldest first."""
    kinds = (kind,) if kind else ("schedule_tick", "schedule_put", "schedule_removed", "schedule_paused",
                                  "schedule_resumed")  # fmt: skip
    return backend.events(EventQuery(kinds=kinds))


def got(backend: Backend, name: str) -> ScheduleRecord:
    """The schedule as the store holds it now (the test fails if it is gone)."""
    record = backend.get_schedule(name)
    assert record is not None, f"schedule {name} is gone"
    return record


# put, get, list ------------------------------------------------------------------------------------------
def test_put_stores_every_field_and_get_reads_it_back(backend: Backend) -> None:
    cron = schedule("reports", cron="*/5 * * * * 30", missed=Missed.ALL, catch_up=600.0, grace=5.5,
                    overlap=Overlap.ALLOW, jitter=2.5, source=Source.CODE)  # fmt: skip
    interval = schedule("poll", cron=None, tz="UTC", every=30.0, anchor=7.0, next_at=T0 + 37)
    assert backend.put_schedule(cron, T0) is True
    assert backend.put_schedule(interval, T0 + 1) is True
    reports = got(backend, "reports")
    expected = msgspec.structs.replace(cron, created_at=T0, updated_at=T0)
    assert reports == expected
    assert (reports.missed, reports.overlap, reports.source) == (Missed.ALL, Overlap.ALLOW, Source.CODE)
    assert isinstance(reports.missed, Missed) and isinstance(reports.target, dict)
    poll = got(backend, "poll")
    assert poll == msgspec.structs.replace(interval, created_at=T0 + 1, updated_at=T0 + 1)
    assert (poll.cron, poll.every, poll.anchor, poll.paused, poll.last_tick_at, poll.last_job_id) == (
        None, 30.0, 7.0, False, None, None,
    )  # fmt: skip
    assert backend.get_schedule("nope") is None


def test_list_schedules_is_by_name(backend: Backend) -> None:
    assert backend.list_schedules() == []
    for name in ["b", "c", "a"]:
        backend.put_schedule(schedule(name), T0)
    assert [s.name for s in backend.list_schedules()] == ["a", "b", "c"]
    assert backend.list_schedules()[0] == got(backend, "a")


def test_put_replaces_the_spec_and_keeps_history_last_tick_pause_and_creation(backend: Backend) -> None:
    backend.put_schedule(schedule("s", source=Source.CODE), T0)
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1")], T0 + MINUTE)
    assert backend.pause_schedule("s", True, None, T0 + 70)
    changed = schedule("s", cron="0 3 * * *", tz="UTC", target={"kind": "call", "task": "other"}, next_at=T0 + 999,
                       missed=Missed.SKIP, overlap=Overlap.ALLOW, jitter=1.0, source=Source.STORED,
                       created_at=5.0, last_tick_at=1.0, last_job_id="forged")  # fmt: skip
    assert backend.put_schedule(changed, T0 + 80) is False
    record = got(backend, "s")
    assert (record.cron, record.tz, record.target, record.next_at) == ("0 3 * * *", "UTC", changed.target, T0 + 999)
    assert (record.missed, record.overlap, record.jitter, record.source) == (
        Missed.SKIP, Overlap.ALLOW, 1.0, Source.STORED,
    )  # fmt: skip
    assert (record.paused, record.paused_at) == (True, T0 + 70)  # a sync does not resume what a user paused
    assert (record.last_tick_at, record.last_job_id) == (T0 + MINUTE, "j1")
    assert (record.created_at, record.updated_at) == (T0, T0 + 80)
    assert [t.tick_at for t in backend.ticks("s", 10)] == [T0 + MINUTE]


def test_a_put_with_an_unchanged_spec_keeps_next_at(backend: Backend) -> None:
    """Two workers syncing a new code schedule at once: the second put must not move the tick the first
    one's scheduler fired meanwhile (back: a tick recorded twice is refused; forward: one skipped)."""
    backend.put_schedule(schedule("s", source=Source.CODE), T0)
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1")], T0 + MINUTE)
    late = schedule("s", source=Source.CODE, next_at=T0 + 3 * MINUTE, jitter=2.0)  # planned from a later now
    assert backend.put_schedule(late, T0 + MINUTE + 1) is False
    record = got(backend, "s")
    assert (record.next_at, record.jitter) == (T0 + 2 * MINUTE, 2.0)  # the tick stays; the policies change
    moved = schedule("s", source=Source.CODE, every=None, cron="*/5 * * * *", next_at=T0 + 5 * MINUTE)
    backend.put_schedule(moved, T0 + MINUTE + 2)
    assert got(backend, "s").next_at == T0 + 5 * MINUTE  # a new spec: its first tick, as given


def test_a_new_paused_schedule_is_paused_since_its_paused_at_or_now(backend: Backend) -> None:
    backend.put_schedule(schedule("a", paused=True), T0)
    backend.put_schedule(schedule("b", paused=True, paused_at=T0 - 5), T0)
    backend.put_schedule(schedule("c", paused_at=T0 - 5), T0)  # not paused: no paused_at
    assert [(s.paused, s.paused_at) for s in backend.list_schedules()] == [(True, T0), (True, T0 - 5), (False, None)]
    assert backend.due_schedules(T0 + 10 * MINUTE, 10) == [got(backend, "c")]


def test_put_writes_a_schedule_put_event_saying_whether_it_was_new(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.put_schedule(schedule("s", cron="0 * * * *"), T0 + 1)
    events = schedule_events(backend)
    assert [(e.kind, e.at, e.data) for e in events] == [
        ("schedule_put", T0, {"schedule": "s", "new": True}),
        ("schedule_put", T0 + 1, {"schedule": "s", "new": False}),
    ]
    assert all((e.job_id, e.task, e.queue, e.worker_id) == (None, None, None, None) for e in events)


# remove, retire --------------------------------------------------------------------------------------------
def test_remove_deletes_the_schedule_and_its_ticks_but_not_its_jobs(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.put_schedule(schedule("other"), T0)
    backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1")], T0 + MINUTE)
    backend.fire("other", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("other", T0 + MINUTE, "j2")], T0 + MINUTE)
    assert backend.remove_schedule("s", T0 + 100) is True
    assert backend.get_schedule("s") is None
    assert backend.ticks("s", 10) == []
    assert stored(backend, "j1").scheduled_by == "s"
    assert len(backend.ticks("other", 10)) == 1
    assert backend.remove_schedule("s", T0 + 101) is False
    assert [(e.kind, e.at, e.data) for e in schedule_events(backend, "schedule_removed")] == [
        ("schedule_removed", T0 + 100, {"schedule": "s"})
    ]
    # its name may be used again, with a fresh history: the old tick is no longer recorded
    backend.put_schedule(schedule("s"), T0 + 200)
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j3")], T0 + 201)
    assert stored(backend, "j3").tick_at == T0 + MINUTE


def test_retire_deletes_code_schedules_not_kept_and_never_stored_ones(backend: Backend) -> None:
    for name in ["a", "b", "c"]:
        backend.put_schedule(schedule(name, source=Source.CODE), T0)
    backend.put_schedule(schedule("stored"), T0)
    backend.fire("b", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("b", T0 + MINUTE)], T0 + MINUTE)
    assert backend.retire_schedules(["a", "not-there"], T0 + 100) == ["b", "c"]
    assert [s.name for s in backend.list_schedules()] == ["a", "stored"]
    assert backend.ticks("b", 10) == []
    removed = schedule_events(backend, "schedule_removed")
    assert sorted((e.at, e.data["schedule"], e.data["retired"]) for e in removed) == [
        (T0 + 100, "b", True), (T0 + 100, "c", True),
    ]  # fmt: skip
    assert backend.retire_schedules(["a"], T0 + 101) == []
    assert backend.retire_schedules([], T0 + 102) == ["a"]
    assert [s.name for s in backend.list_schedules()] == ["stored"]


# pause, resume ---------------------------------------------------------------------------------------------
def test_pause_and_resume(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    assert backend.pause_schedule("s", True, None, T0 + 10) is True
    record = got(backend, "s")
    assert (record.paused, record.paused_at, record.next_at, record.updated_at) == (True, T0 + 10, T0 + MINUTE, T0 + 10)
    assert backend.pause_schedule("s", True, None, T0 + 11) is False  # already paused: unchanged, no event
    assert got(backend, "s").paused_at == T0 + 10
    assert backend.due_schedules(T0 + 10 * MINUTE, 10) == []
    assert backend.pause_schedule("s", False, T0 + 11 * MINUTE, T0 + 10 * MINUTE) is True
    record = got(backend, "s")
    assert (record.paused, record.paused_at, record.next_at) == (False, None, T0 + 11 * MINUTE)
    assert backend.pause_schedule("s", False, T0 + 99 * MINUTE, T0 + 10 * MINUTE) is False
    assert got(backend, "s").next_at == T0 + 11 * MINUTE
    assert backend.pause_schedule("nope", True, None, T0) is False
    assert backend.pause_schedule("nope", False, T0, T0) is False
    assert [(e.kind, e.at, e.data) for e in schedule_events(backend)[1:]] == [
        ("schedule_paused", T0 + 10, {"schedule": "s"}),
        ("schedule_resumed", T0 + 10 * MINUTE, {"schedule": "s"}),
    ]


def test_resume_without_a_next_tick_keeps_next_at(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.pause_schedule("s", True, None, T0)
    assert backend.pause_schedule("s", False, None, T0 + 1)
    assert got(backend, "s").next_at == T0 + MINUTE


# due_schedules -------------------------------------------------------------------------------------------
def test_due_schedules_most_overdue_first_paused_and_not_yet_due_left_out(backend: Backend) -> None:
    for name, next_at in [("late", T0 - 50), ("b-tie", T0 - 10), ("a-tie", T0 - 10), ("now", T0), ("later", T0 + 1)]:
        backend.put_schedule(schedule(name, next_at=next_at), T0 - 100)
    backend.put_schedule(schedule("paused", next_at=T0 - 99, paused=True), T0 - 100)
    assert [s.name for s in backend.due_schedules(T0, 10)] == ["late", "a-tie", "b-tie", "now"]
    assert [s.name for s in backend.due_schedules(T0, 2)] == ["late", "a-tie"]
    assert backend.due_schedules(T0, 0) == []
    assert backend.due_schedules(T0 - 1000, 10) == []
    assert backend.due_schedules(T0, 1)[0] == got(backend, "late")


# fire --------------------------------------------------------------------------------------------------------
def test_fire_enqueues_the_tick_job_as_enqueue_does_and_records_the_tick(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    tick_at = T0 + MINUTE
    assert backend.fire("s", tick_at, tick_at + MINUTE, [enqueued("s", tick_at, "j1")], tick_at + 0.25) is True
    record = got(backend, "s")
    assert (record.next_at, record.last_tick_at, record.last_job_id) == (tick_at + MINUTE, tick_at, "j1")
    assert record.updated_at == T0  # a fire is not a change of the schedule
    j1 = stored(backend, "j1")
    assert (j1.scheduled_by, j1.tick_at, j1.status, j1.scheduled_at) == ("s", tick_at, Status.QUEUED, tick_at)
    assert (j1.task, j1.queue, j1.args, j1.kwargs, j1.created_at) == ("tests.task", "q", [1, "two"], {"x": 3},
                                                                      tick_at + 0.25)  # fmt: skip
    assert [e.kind for e in backend.events(EventQuery(job_id="j1"))] == ["enqueued"]
    [tick] = backend.ticks("s", 10)
    assert (tick.schedule, tick.tick_at, tick.outcome, tick.job_id, tick.at, tick.data) == (
        "s", tick_at, TickOutcome.ENQUEUED, "j1", tick_at + 0.25, {},
    )  # fmt: skip
    [event] = schedule_events(backend, "schedule_tick")
    assert (event.at, event.job_id, event.task, event.queue) == (tick_at + 0.25, None, None, None)
    assert event.data == {"schedule": "s", "tick_at": tick_at, "outcome": "enqueued", "job_id": "j1"}
    assert claim_one(backend, now=tick_at + 1).id == "j1"


def test_fire_links_a_job_the_planner_left_unlinked(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    tick = Tick(tick_at=T0 + MINUTE, outcome=TickOutcome.ENQUEUED, job=new("plain"))
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [tick], T0 + MINUTE)
    assert (stored(backend, "plain").scheduled_by, stored(backend, "plain").tick_at) == ("s", T0 + MINUTE)


def test_list_jobs_finds_every_run_of_a_schedule(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.put_schedule(schedule("other"), T0)
    backend.enqueue([new("plain")], T0)
    for i in range(1, 4):
        tick_at = T0 + i * MINUTE
        assert backend.fire("s", tick_at, tick_at + MINUTE, [enqueued("s", tick_at, f"s{i}")], tick_at)
    assert backend.fire("other", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("other", T0 + MINUTE, "o1")], T0 + MINUTE)
    assert [j.id for j in backend.list_jobs(JobQuery(scheduled_by="s"))] == ["s3", "s2", "s1"]
    assert [j.id for j in backend.list_jobs(JobQuery(scheduled_by="nobody"))] == []


def test_a_plain_enqueue_has_no_schedule(backend: Backend) -> None:
    backend.enqueue([new("plain")], T0)
    assert (stored(backend, "plain").scheduled_by, stored(backend, "plain").tick_at) == (None, None)


def test_two_fires_with_the_same_expected_next_at_one_wins(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    tick_at = T0 + MINUTE
    first = backend.fire("s", tick_at, tick_at + MINUTE, [enqueued("s", tick_at, "first")], tick_at)
    seq = backend.last_event_seq()
    second = backend.fire("s", tick_at, tick_at + 2 * MINUTE, [enqueued("s", tick_at, "second")], tick_at + 1)
    assert (first, second) == (True, False)
    assert scheduled_jobs(backend) == ["first"]
    assert [(t.tick_at, t.job_id) for t in backend.ticks("s", 10)] == [(tick_at, "first")]
    assert got(backend, "s").next_at == tick_at + MINUTE  # the loser wrote nothing
    assert backend.last_event_seq() == seq


def test_a_paused_schedule_fires_nothing_even_for_a_pass_that_read_it_before_the_pause(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    read = got(backend, "s")  # a scheduler's pass reads it ...
    assert backend.pause_schedule("s", True, None, T0 + 1)  # ... a pause commits ...
    tick_at = read.next_at
    assert backend.fire("s", tick_at, tick_at + MINUTE, [enqueued("s", tick_at, "late")], tick_at) is False
    assert backend.get("late") is None and backend.ticks("s", 10) == []


def test_a_fire_on_a_schedule_that_is_gone_writes_nothing(backend: Backend) -> None:
    seq = backend.last_event_seq()
    assert backend.fire("nope", T0, T0 + MINUTE, [enqueued("nope", T0, "j")], T0) is False
    assert backend.get("j") is None
    assert backend.ticks("nope", 10) == []
    assert backend.last_event_seq() == seq


def test_eight_schedulers_firing_the_same_tick_at_once_create_one_job(open_store: OpenStore) -> None:
    """Each thread is a scheduler of its own (its own store object, its own connections), as eight
    worker processes that all believe they lead would be."""
    stores = [open_store() for _ in range(8)]
    stores[0].put_schedule(schedule("s"), T0)
    tick_at = T0 + MINUTE
    results: dict[int, bool] = {}

    def scheduler(i: int) -> None:
        ticks = [enqueued("s", tick_at, f"job-{i}")]
        results[i] = stores[i].fire("s", tick_at, tick_at + MINUTE, ticks, tick_at + i / 1000)

    assert at_once([partial(scheduler, i) for i in range(len(stores))]) == []
    assert sorted(results.values()) == [False] * 7 + [True]
    winner = next(i for i, won in results.items() if won)
    backend = stores[0]
    assert scheduled_jobs(backend) == [f"job-{winner}"]
    assert [(t.tick_at, t.job_id) for t in backend.ticks("s", 10)] == [(tick_at, f"job-{winner}")]
    assert len(schedule_events(backend, "schedule_tick")) == 1
    assert got(backend, "s").last_job_id == f"job-{winner}"


def test_a_tick_already_recorded_is_not_enqueued_again_whatever_next_at_says(backend: Backend) -> None:
    """A scheduler whose compare-and-set passes on a next_at that does not match the ticks it planned
    (a clock far behind, a put that moved next_at back) still cannot fire a recorded tick again."""
    backend.put_schedule(schedule("s"), T0)
    tick_at = T0 + MINUTE
    assert backend.fire("s", tick_at, tick_at + MINUTE, [enqueued("s", tick_at, "first")], tick_at)
    seq = backend.last_event_seq()
    again = [enqueued("s", tick_at, "again"), enqueued("s", tick_at + MINUTE, "next")]
    assert backend.fire("s", tick_at + MINUTE, tick_at + 2 * MINUTE, again, tick_at + MINUTE) is True
    assert scheduled_jobs(backend) == ["first", "next"]
    assert [(t.tick_at, t.job_id) for t in backend.ticks("s", 10)] == [(tick_at + MINUTE, "next"), (tick_at, "first")]
    new_events = backend.events(EventQuery(after=seq))
    assert [(e.kind, e.job_id or e.data["job_id"]) for e in new_events] == [
        ("enqueued", "next"), ("schedule_tick", "next"),
    ]  # fmt: skip
    record = got(backend, "s")
    assert (record.next_at, record.last_tick_at, record.last_job_id) == (tick_at + 2 * MINUTE, tick_at + MINUTE, "next")
    # a fire of nothing but recorded ticks moves next_at and writes nothing else
    seq = backend.last_event_seq()
    assert backend.fire("s", tick_at + 2 * MINUTE, tick_at + 3 * MINUTE, again, tick_at + 2 * MINUTE) is True
    assert scheduled_jobs(backend) == ["first", "next"]
    assert backend.last_event_seq() == seq
    assert got(backend, "s").last_job_id == "next"


def test_fire_records_skipped_and_missed_ticks_without_jobs(backend: Backend) -> None:
    backend.put_schedule(schedule("s", next_at=T0), T0 - 1)
    ticks = [
        Tick(tick_at=T0, outcome=TickOutcome.MISSED, data={"count": 8, "until": T0 + 7 * MINUTE}),
        enqueued("s", T0 + 8 * MINUTE, "latest"),
        Tick(tick_at=T0 + 9 * MINUTE, outcome=TickOutcome.SKIPPED_OVERLAP, job=job("s", T0 + 9 * MINUTE, "no")),
        Tick(tick_at=T0 + 10 * MINUTE, outcome=TickOutcome.SKIPPED_PAUSED, data={"count": 1}),
    ]
    now = T0 + 10 * MINUTE + 3
    assert backend.fire("s", T0, T0 + 11 * MINUTE, ticks, now)
    assert scheduled_jobs(backend) == ["latest"]  # a skipped tick's job is not enqueued
    assert [(t.tick_at, t.outcome, t.job_id, t.data) for t in backend.ticks("s", 10)] == [
        (T0 + 10 * MINUTE, TickOutcome.SKIPPED_PAUSED, None, {"count": 1}),
        (T0 + 9 * MINUTE, TickOutcome.SKIPPED_OVERLAP, None, {}),
        (T0 + 8 * MINUTE, TickOutcome.ENQUEUED, "latest", {}),
        (T0, TickOutcome.MISSED, None, {"count": 8, "until": T0 + 7 * MINUTE}),
    ]
    assert (got(backend, "s").last_tick_at, got(backend, "s").last_job_id) == (T0 + 8 * MINUTE, "latest")
    assert [e.data for e in schedule_events(backend, "schedule_tick")] == [
        {"schedule": "s", "tick_at": T0, "outcome": "missed", "job_id": None, "count": 8, "until": T0 + 7 * MINUTE},
        {"schedule": "s", "tick_at": T0 + 8 * MINUTE, "outcome": "enqueued", "job_id": "latest"},
        {"schedule": "s", "tick_at": T0 + 9 * MINUTE, "outcome": "skipped_overlap", "job_id": None},
        {"schedule": "s", "tick_at": T0 + 10 * MINUTE, "outcome": "skipped_paused", "job_id": None, "count": 1},
    ]


def test_fire_enqueues_every_tick_of_a_catch_up_in_one_transaction(backend: Backend) -> None:
    backend.put_schedule(schedule("s", next_at=T0), T0 - 1)
    ticks = [enqueued("s", T0 + i * MINUTE, f"j{i}") for i in range(5)]
    ticks.append(enqueued("s", T0, "duplicate-tick"))  # the same tick twice in one plan: the first one counts
    assert backend.fire("s", T0, T0 + 5 * MINUTE, ticks, T0 + 5 * MINUTE - 1)
    assert scheduled_jobs(backend) == [f"j{i}" for i in range(5)]
    assert [stored(backend, f"j{i}").tick_at for i in range(5)] == [T0 + i * MINUTE for i in range(5)]
    assert len(backend.ticks("s", 10)) == 5
    assert (got(backend, "s").last_tick_at, got(backend, "s").last_job_id) == (T0 + 4 * MINUTE, "j4")
    assert len(schedule_events(backend, "schedule_tick")) == 5
    assert len(backend.events(EventQuery(kinds=("enqueued",)))) == 5


def test_a_fire_with_no_ticks_only_moves_next_at(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    seq = backend.last_event_seq()
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [], T0 + MINUTE)
    assert got(backend, "s").next_at == T0 + 2 * MINUTE
    assert backend.last_event_seq() == seq


def test_a_tick_job_whose_key_is_held_records_the_job_that_holds_it(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.enqueue([new("holder", key="report")], T0)
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1", key="report")], T0 + 60)
    assert backend.get("j1") is None
    assert [(t.outcome, t.job_id) for t in backend.ticks("s", 1)] == [(TickOutcome.ENQUEUED, "holder")]
    assert got(backend, "s").last_job_id == "holder"
    assert schedule_events(backend, "schedule_tick")[0].data["job_id"] == "holder"


def test_a_tick_job_with_a_taken_id_raises_and_the_fire_writes_nothing(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.enqueue([new("taken")], T0)
    seq = backend.last_event_seq()
    with pytest.raises(DuplicateJob):
        backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "taken")], T0 + 60)
    assert got(backend, "s").next_at == T0 + MINUTE
    assert backend.ticks("s", 10) == []
    assert backend.last_event_seq() == seq
    assert stored(backend, "taken").scheduled_by is None


# ticks ---------------------------------------------------------------------------------------------------------
def test_ticks_are_newest_first_and_limited(backend: Backend) -> None:
    backend.put_schedule(schedule("s", next_at=T0), T0)
    backend.put_schedule(schedule("other", next_at=T0), T0)
    for i in range(4):
        tick = Tick(tick_at=T0 + i * MINUTE, outcome=TickOutcome.SKIPPED_OVERLAP)
        assert backend.fire("s", T0 + i * MINUTE, T0 + (i + 1) * MINUTE, [tick], T0 + i * MINUTE + 1)
    backend.fire("other", T0, T0 + MINUTE, [Tick(tick_at=T0, outcome=TickOutcome.SKIPPED_OVERLAP)], T0)
    assert [t.tick_at for t in backend.ticks("s", 10)] == [T0 + i * MINUTE for i in (3, 2, 1, 0)]
    assert [t.at for t in backend.ticks("s", 2)] == [T0 + 3 * MINUTE + 1, T0 + 2 * MINUTE + 1]
    assert backend.ticks("s", 0) == []
    assert backend.ticks("nope", 10) == []


def test_the_tick_history_keeps_the_newest_records(backend: Backend) -> None:
    extra = 5
    backend.put_schedule(schedule("s", next_at=T0), T0)
    ticks = [Tick(tick_at=T0 + i, outcome=TickOutcome.SKIPPED_OVERLAP) for i in range(TICK_HISTORY + extra)]
    assert backend.fire("s", T0, T0 + TICK_HISTORY + extra, ticks, T0 + TICK_HISTORY + extra)
    kept = backend.ticks("s", TICK_HISTORY * 2)
    assert len(kept) == TICK_HISTORY
    assert (kept[0].tick_at, kept[-1].tick_at) == (T0 + TICK_HISTORY + extra - 1, T0 + extra)


# admin ---------------------------------------------------------------------------------------------------------
def test_destroy_all_deletes_schedules_and_ticks(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1")], T0 + MINUTE)
    backend.destroy_all()
    assert backend.list_schedules() == []
    assert backend.ticks("s", 10) == []
    backend.put_schedule(schedule("s"), T0)  # a clean slate: the same tick fires again
    assert backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j2")], T0 + MINUTE)
    assert scheduled_jobs(backend) == ["j2"]


def test_prune_deletes_a_schedule_job_but_leaves_the_schedule_and_its_ticks(backend: Backend) -> None:
    backend.put_schedule(schedule("s"), T0)
    backend.fire("s", T0 + MINUTE, T0 + 2 * MINUTE, [enqueued("s", T0 + MINUTE, "j1")], T0 + MINUTE)
    running = claim_one(backend, now=T0 + MINUTE)
    assert backend.finish("j1", token(running), Outcome(kind=OutcomeKind.SUCCEEDED, result=1), T0 + MINUTE + 1)
    assert backend.prune(T0 + 10_000) == 1
    assert backend.get("j1") is None
    record = got(backend, "s")
    assert (record.last_job_id, record.next_at) == ("j1", T0 + 2 * MINUTE)
    assert [(t.tick_at, t.job_id) for t in backend.ticks("s", 10)] == [(T0 + MINUTE, "j1")]
    assert backend.prune(T0 + 10_000, finished_before=T0 + 10_000) == 0
    assert backend.list_schedules() == [record]
