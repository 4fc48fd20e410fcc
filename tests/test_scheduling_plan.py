"""conveyor.scheduling.plan with an injected clock (plain floats): on-time ticks never leave a gap,
missed ticks after an outage follow the catch-up policy, overlap skip, jitter. No store."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.job import NewJob
from conveyor.schedule import CronSpec, IntervalSpec, Spec, parse_spec, spec_of
from conveyor.schedule_types import Missed, Overlap, ScheduleRecord, Tick, TickOutcome
from conveyor.scheduling import MAX_CATCH_UP, MAX_DUE, FirePlan, plan, plan_resume

PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC).timestamp()  # a Monday noon, on every minute and second


def make_job(tick_at: float) -> NewJob:
    return NewJob(
        id=f"job-{tick_at}",
        task="tasks.report",
        queue="default",
        priority=2,
        args=[],
        kwargs={},
        scheduled_at=tick_at,
        max_retries=0,
    )


def schedule(spec: Spec, first: float, **policies: Any) -> ScheduleRecord:
    """A schedule of ``spec`` whose next tick is the first at or after ``first``."""
    assert isinstance(spec, CronSpec | IntervalSpec)
    when: dict[str, Any] = (
        {"cron": spec.expr, "tz": spec.tz}
        if isinstance(spec, CronSpec)
        else {"every": spec.every, "anchor": spec.anchor}
    )
    return ScheduleRecord(name="s", target={"kind": "call"}, next_at=spec.next_after(first - 0.001), **when, **policies)


EVERY_SECOND = parse_spec(cron=None, every=1)
EVERY_MINUTE = parse_spec(cron="* * * * *", every=None)
DAILY = parse_spec(cron="0 3 * * *", every=None, tz="Europe/Paris")


class Scheduler:
    """The App's loop in miniature: plan, then 'fire' (the store's part: move next_at, keep ticks)."""

    def __init__(self, record: ScheduleRecord) -> None:
        self.record = record
        self.spec = spec_of(record)
        self.ticks: list[Tick] = []

    def run(self, now: float, previous_unfinished: bool = False, **kwargs: Any) -> FirePlan:
        fired = plan(self.record, self.spec, now, previous_unfinished, make_job, **kwargs)
        if fired.ticks or fired.next_at != self.record.next_at:
            self.record = msgspec.structs.replace(self.record, next_at=fired.next_at)
            self.ticks.extend(fired.ticks)
        return fired

    def of(self, outcome: TickOutcome) -> list[Tick]:
        return [t for t in self.ticks if t.outcome is outcome]

    def enqueued(self) -> list[float]:
        return [t.tick_at for t in self.of(TickOutcome.ENQUEUED)]


# On time: no gaps ----------------------------------------------------------------------------------
def test_one_second_schedule_every_half_second_and_once_3s_late_fires_every_tick_once() -> None:
    s = Scheduler(schedule(EVERY_SECOND, T0, overlap=Overlap.ALLOW))
    now = T0 + 0.1
    passes = 0
    while now < T0 + 60:
        s.run(now)
        passes += 1
        now += 3.2 if passes == 20 else 0.5  # one pass 3 s late
    assert s.enqueued() == [T0 + k for k in range(60)]
    assert s.of(TickOutcome.MISSED) == []
    assert len({t.job.id for t in s.ticks if t.job}) == 60
    assert s.record.next_at == T0 + 60


def test_a_late_pass_with_overlap_skip_records_every_tick_once() -> None:
    s = Scheduler(schedule(EVERY_SECOND, T0))  # Overlap.SKIP, the default
    s.run(T0 + 0.2)
    fired = s.run(T0 + 3.4)  # ticks 1, 2, 3 due at once: the first job enqueued, the others overlap it
    assert [(t.tick_at - T0, t.outcome) for t in fired.ticks] == [
        (1, TickOutcome.ENQUEUED),
        (2, TickOutcome.SKIPPED_OVERLAP),
        (3, TickOutcome.SKIPPED_OVERLAP),
    ]
    assert [t.tick_at - T0 for t in s.ticks] == [0, 1, 2, 3]


def test_on_time_is_decided_by_the_oldest_due_tick_against_grace() -> None:
    record = schedule(EVERY_MINUTE, T0, overlap=Overlap.ALLOW, grace=30.0, missed=Missed.SKIP)
    on_time = plan(record, EVERY_MINUTE, T0 + 30.0, False, make_job)  # exactly grace late: on time
    assert [t.outcome for t in on_time.ticks] == [TickOutcome.ENQUEUED]
    late = plan(record, EVERY_MINUTE, T0 + 30.5, False, make_job)
    assert [t.outcome for t in late.ticks] == [TickOutcome.MISSED]
    assert on_time.next_at == late.next_at == T0 + 60


def test_next_at_is_the_first_tick_strictly_after_now() -> None:
    record = schedule(EVERY_MINUTE, T0)
    fired = plan(record, EVERY_MINUTE, T0 + 60.0, False, make_job)  # now exactly on the next tick
    assert [t.tick_at for t in fired.ticks] == [T0, T0 + 60]
    assert fired.next_at == T0 + 120


def test_not_due_or_paused_fires_nothing_and_keeps_next_at() -> None:
    record = schedule(EVERY_MINUTE, T0)
    assert plan(record, EVERY_MINUTE, T0 - 0.5, False, make_job) == FirePlan(next_at=T0, ticks=[])
    paused = msgspec.structs.replace(record, paused=True)
    assert plan(paused, EVERY_MINUTE, T0 + 600, False, make_job) == FirePlan(next_at=T0, ticks=[])


def test_a_daily_schedule_fired_on_time_fires_even_with_skip() -> None:
    first = datetime(2026, 5, 5, 3, 0, tzinfo=PARIS).timestamp()
    record = schedule(DAILY, first - 3600, missed=Missed.SKIP)
    assert record.next_at == first
    fired = plan(record, DAILY, first + 0.4, False, make_job)
    assert [(t.tick_at, t.outcome) for t in fired.ticks] == [(first, TickOutcome.ENQUEUED)]
    assert fired.next_at == first + 86400
    # An hour late is beyond grace: missed, and SKIP runs none of it.
    fired = plan(record, DAILY, first + 3600, False, make_job)
    assert [(t.tick_at, t.outcome, t.data) for t in fired.ticks] == [
        (first, TickOutcome.MISSED, {"count": 1, "until": first})
    ]


# After a 10-minute outage --------------------------------------------------------------------------
def outage(spec: Spec, missed: Missed, **policies: Any) -> tuple[Scheduler, FirePlan]:
    """Run on time until T0, stop for 10 minutes, then one pass: returns the scheduler and that plan."""
    s = Scheduler(schedule(spec, T0 - 5, missed=missed, overlap=Overlap.ALLOW, **policies))
    for k in range(11):
        s.run(T0 - 5 + k * 0.5)
    assert s.record.next_at == spec.next_after(T0)
    s.ticks.clear()
    return s, s.run(T0 + 600.3)


def due_after_outage(spec: Spec) -> list[float]:
    found, t = [], spec.next_after(T0)
    while t <= T0 + 600.3:
        found.append(t)
        t = spec.next_after(t)
    return found


def missed_record(fired: FirePlan) -> dict[str, Any] | None:
    records = [t for t in fired.ticks if t.outcome is TickOutcome.MISSED]
    assert len(records) <= 1
    return None if not records else {"tick_at": records[0].tick_at, **records[0].data}


def test_after_an_outage_latest_creates_one_job_for_the_latest_tick() -> None:
    for spec in (EVERY_MINUTE, EVERY_SECOND):
        due = due_after_outage(spec)
        _, fired = outage(spec, Missed.LATEST)
        assert [j.tick_at for j in fired.jobs] == [due[-1]]
        assert missed_record(fired) == {"tick_at": due[0], "count": len(due) - 1, "until": due[-2]}
        assert fired.next_at == spec.next_after(T0 + 600.3)
    assert len(due_after_outage(EVERY_MINUTE)) == 10 and len(due_after_outage(EVERY_SECOND)) == 600


def test_after_an_outage_earliest_creates_one_job_for_the_earliest_tick() -> None:
    for spec in (EVERY_MINUTE, EVERY_SECOND):
        due = due_after_outage(spec)
        _, fired = outage(spec, Missed.EARLIEST)
        assert [j.tick_at for j in fired.jobs] == [due[0]]
        assert missed_record(fired) == {"tick_at": due[1], "count": len(due) - 1, "until": due[-1]}


def test_after_an_outage_skip_creates_none() -> None:
    for spec in (EVERY_MINUTE, EVERY_SECOND):
        due = due_after_outage(spec)
        _, fired = outage(spec, Missed.SKIP)
        assert fired.jobs == []
        assert missed_record(fired) == {"tick_at": due[0], "count": len(due), "until": due[-1]}


def test_after_an_outage_all_runs_every_tick_within_catch_up_at_most_max_catch_up() -> None:
    due = due_after_outage(EVERY_MINUTE)
    _, fired = outage(EVERY_MINUTE, Missed.ALL)
    assert [j.tick_at for j in fired.jobs] == due  # 10 ticks: all of them
    assert missed_record(fired) is None

    due = due_after_outage(EVERY_SECOND)  # 600 ticks: the latest MAX_CATCH_UP run
    _, fired = outage(EVERY_SECOND, Missed.ALL)
    assert [j.tick_at for j in fired.jobs] == due[-MAX_CATCH_UP:]
    assert missed_record(fired) == {"tick_at": due[0], "count": 600 - MAX_CATCH_UP, "until": due[-MAX_CATCH_UP - 1]}

    _, fired = outage(EVERY_MINUTE, Missed.ALL, catch_up=300.0)  # only ticks at most 5 minutes old
    recent = [t for t in due_after_outage(EVERY_MINUTE) if T0 + 600.3 - t <= 300]
    assert [j.tick_at for j in fired.jobs] == recent and len(recent) == 5
    assert missed_record(fired) == {"tick_at": T0 + 60, "count": 5, "until": recent[0] - 60}


def test_ticks_older_than_catch_up_are_dropped_by_every_policy() -> None:
    for missed in (Missed.LATEST, Missed.EARLIEST, Missed.ALL):
        _, fired = outage(EVERY_MINUTE, missed, catch_up=30.0)  # the latest tick is 0.3 s old
        assert [j.tick_at for j in fired.jobs] == [T0 + 600]
        assert missed_record(fired) == {"tick_at": T0 + 60, "count": 9, "until": T0 + 540}
    _, fired = outage(EVERY_MINUTE, Missed.LATEST, catch_up=0.1)  # none recent enough: all missed
    assert fired.jobs == []
    assert missed_record(fired) == {"tick_at": T0 + 60, "count": 10, "until": T0 + 600}


def test_a_week_long_outage_stays_cheap_and_bounded() -> None:
    week = 7 * 86400
    record = schedule(EVERY_SECOND, T0, overlap=Overlap.ALLOW)
    began = time.perf_counter()
    fired = plan(record, EVERY_SECOND, T0 + week + 0.5, False, make_job)
    assert [j.tick_at for j in fired.jobs] == [T0 + week]
    data = missed_record(fired)
    assert data is not None and data["tick_at"] == T0 and data["more"] is True
    assert MAX_DUE < data["count"] < week
    everything = msgspec.structs.replace(record, missed=Missed.ALL, catch_up=float(week))
    fired = plan(everything, EVERY_SECOND, T0 + week + 0.5, False, make_job)
    assert [j.tick_at for j in fired.jobs] == [T0 + week - k for k in range(MAX_CATCH_UP - 1, -1, -1)]
    assert time.perf_counter() - began < 10.0  # a few seconds at most, however long the outage


# Overlap -----------------------------------------------------------------------------------------
def test_overlap_skip_while_the_previous_job_is_unfinished() -> None:
    record = schedule(EVERY_MINUTE, T0)
    fired = plan(record, EVERY_MINUTE, T0 + 1, True, make_job)
    assert [(t.tick_at, t.outcome, t.job) for t in fired.ticks] == [(T0, TickOutcome.SKIPPED_OVERLAP, None)]
    allow = msgspec.structs.replace(record, overlap=Overlap.ALLOW)
    fired = plan(allow, EVERY_MINUTE, T0 + 1, True, make_job)
    assert [t.outcome for t in fired.ticks] == [TickOutcome.ENQUEUED]


def test_overlap_skip_within_one_plan() -> None:
    record = schedule(EVERY_SECOND, T0)
    fired = plan(record, EVERY_SECOND, T0 + 4.5, False, make_job)
    assert [t.outcome for t in fired.ticks] == [TickOutcome.ENQUEUED] + [TickOutcome.SKIPPED_OVERLAP] * 4
    fired = plan(record, EVERY_SECOND, T0 + 4.5, True, make_job)
    assert [t.outcome for t in fired.ticks] == [TickOutcome.SKIPPED_OVERLAP] * 5
    allow = msgspec.structs.replace(record, overlap=Overlap.ALLOW)
    assert len(plan(allow, EVERY_SECOND, T0 + 4.5, False, make_job).jobs) == 5
    # Catching up "all" with overlap skip: the first runs, the rest overlap it.
    everything = msgspec.structs.replace(record, missed=Missed.ALL)
    fired = plan(everything, EVERY_SECOND, T0 + 60.5, False, make_job)
    outcomes = [t.outcome for t in fired.ticks]
    assert outcomes == [TickOutcome.ENQUEUED] + [TickOutcome.SKIPPED_OVERLAP] * 60


# Jobs and jitter -----------------------------------------------------------------------------------
def test_jobs_record_their_schedule_and_tick() -> None:
    record = schedule(EVERY_SECOND, T0, overlap=Overlap.ALLOW)
    fired = plan(record, EVERY_SECOND, T0 + 2.5, False, make_job)
    assert len(fired.jobs) == 3
    for tick, job in zip(fired.ticks, fired.jobs, strict=True):
        assert (job.scheduled_by, job.tick_at, job.scheduled_at) == ("s", tick.tick_at, tick.tick_at)
        assert job.id == f"job-{tick.tick_at}"


def test_jitter_delays_each_job_by_up_to_jitter() -> None:
    record = schedule(EVERY_SECOND, T0, overlap=Overlap.ALLOW, jitter=5.0)
    fired = plan(record, EVERY_SECOND, T0 + 0.1, False, make_job, rand=lambda: 0.5)
    assert [j.scheduled_at for j in fired.jobs] == [T0 + 2.5]
    assert [j.tick_at for j in fired.jobs] == [T0]
    source = random.Random(7)
    fired = plan(record, EVERY_SECOND, T0 + 20.1, False, make_job, rand=source.random)
    delays = [j.scheduled_at - j.tick_at for j in fired.jobs if j.tick_at is not None]
    assert len(delays) == 21 and all(0 <= d < 5.0 for d in delays) and len(set(delays)) == 21
    no_jitter = msgspec.structs.replace(record, jitter=0.0)

    def never() -> float:
        raise AssertionError("no jitter, no randomness")

    fired = plan(no_jitter, EVERY_SECOND, T0 + 2.1, False, make_job, rand=never)
    assert [j.scheduled_at for j in fired.jobs] == [T0, T0 + 1, T0 + 2]


# Resuming ------------------------------------------------------------------------------------------
def test_resume_records_the_paused_ticks_once_and_fires_no_burst() -> None:
    record = msgspec.structs.replace(schedule(EVERY_MINUTE, T0), paused=True, paused_at=T0 - 1)
    resumed = plan_resume(record, EVERY_MINUTE, T0 + 300.5)
    assert resumed.next_at == T0 + 360
    assert [(t.tick_at, t.outcome, t.data) for t in resumed.ticks] == [
        (T0, TickOutcome.SKIPPED_PAUSED, {"count": 6, "until": T0 + 300})
    ]
    assert plan_resume(record, EVERY_MINUTE, T0 - 1) == FirePlan(next_at=T0, ticks=[])


# Property: every tick is accounted for once ----------------------------------------------------------
@settings(max_examples=60, deadline=None, database=None)
@given(
    gaps=st.lists(st.floats(min_value=0.05, max_value=400.0), min_size=1, max_size=40),
    missed=st.sampled_from(list(Missed)),
    overlap=st.sampled_from(list(Overlap)),
    grace=st.sampled_from([0.0, 2.0, 30.0]),
    catch_up=st.sampled_from([0.0, 10.0, 120.0, 3600.0]),
    every=st.sampled_from([1.0, 7.0, 60.0]),
)
def test_every_tick_is_recorded_once_whatever_the_passes(
    gaps: list[float], missed: Missed, overlap: Overlap, grace: float, catch_up: float, every: float
) -> None:
    spec = parse_spec(cron=None, every=every)
    s = Scheduler(schedule(spec, T0, missed=missed, overlap=overlap, grace=grace, catch_up=catch_up))
    now = T0
    for gap in gaps:
        now += gap
        s.run(now, previous_unfinished=gap > 100)
    recorded = [t.tick_at for t in s.ticks]
    assert recorded == sorted(set(recorded))  # unique, in order
    individual = sum(1 for t in s.ticks if t.outcome is not TickOutcome.MISSED)
    summed = sum(t.data["count"] for t in s.of(TickOutcome.MISSED))
    first = spec.next_after(T0 - 0.001)
    every_tick = int((now - first) // every) + 1 if now >= first else 0
    assert individual + summed == every_tick
    for t in s.of(TickOutcome.MISSED):
        assert t.tick_at <= t.data["until"]
    assert s.record.next_at == spec.next_after(now)
