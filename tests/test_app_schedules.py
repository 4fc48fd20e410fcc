"""Schedules through the App (issue 12), on a SQLite file: declaring (@app.periodic, app.schedule)
with every bad input refused and nothing stored, the sync of code schedules and their retirement,
pause and resume without a burst, the audit trail, a simulated outage with an injected clock,
schedulers racing for the same tick, and the @app.repeat functions in a real Worker thread.

Ticks are fired with ``Scheduler.tick`` on the app's injected clock where times matter; the
worker tests use the real clock and short intervals."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from clock import Clock

from conveyor import (
    App,
    Missed,
    Ref,
    ScheduleNotFound,
    Source,
    Status,
    TickOutcome,
    TickRecord,
)
from conveyor.app_schedules import Synced
from conveyor.scheduler import Repeat, Scheduler

T0 = 1_800_000_000.0  #: a round start time (a multiple of 60 and of 3600): 2027-01-15T08:00:00Z


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def make_app(url: str, clock: Callable[[], float] = time.time) -> App:
    """An app with the tasks schedules enqueue here (never run by these tests unless said)."""
    app = App(url, lease=1.0, clock=clock)

    @app.task(name="t.ping")
    def ping(value: Any = None) -> Any:
        return value

    @app.task(name="t.report", queue="reports", max_retries=2, timeout=30)
    def report(day: str = "today") -> str:
        return day

    return app


@pytest.fixture
def sapp(url: str, clock: Clock) -> Iterator[App]:
    """An app on this test's store whose clock the test moves."""
    application = make_app(url, clock)
    yield application
    application.close()


def jobs_of(app: App, name: str) -> list[Any]:
    return sorted((job for job in app.jobs(limit=10_000) if job.scheduled_by == name), key=lambda job: job.tick_at)


def outcomes(records: list[TickRecord]) -> list[tuple[float, TickOutcome]]:
    return sorted((record.tick_at, record.outcome) for record in records)


# declaring -------------------------------------------------------------------------------------------
def test_periodic_declares_a_task_with_its_options_and_a_code_schedule_stored_only_by_a_sync(sapp: App) -> None:
    @sapp.periodic(every=60, name="nightly", args=("mon",), kwargs={"b": 2}, queue="reports", max_retries=3)
    def nightly(a: str, b: int = 0) -> str:
        return a * b

    assert sapp.tasks["nightly"] is nightly and nightly.settings.queue == "reports"
    assert nightly("x", b=2) == "xx", "the decorated function is still callable"
    declared = sapp.periodic_schedules["nightly"]
    assert declared.source is Source.CODE and declared.every == 60.0 and declared.cron is None
    assert declared.target["task"] == "nightly" and declared.target["queue"] == "reports"
    assert declared.target["args"] == ["mon"] and declared.target["kwargs"] == {"b": 2}
    assert declared.target["max_retries"] == 3
    assert sapp.schedules() == [], "declaring stores nothing: a worker's sync does"

    assert sapp.sync_schedules() == Synced(["nightly"], [])
    (stored,) = sapp.schedules()
    assert stored.name == "nightly" and stored.source is Source.CODE
    assert stored.next_at == T0 + 60, "the first tick strictly after now"


def test_periodic_takes_cron_with_a_zone_and_the_default_name_is_module_qualname(sapp: App) -> None:
    @sapp.periodic(cron="30 2 * * *", tz="Europe/Paris")
    def cleanup() -> None: ...

    name = f"{__name__}.test_periodic_takes_cron_with_a_zone_and_the_default_name_is_module_qualname.<locals>.cleanup"
    assert name in sapp.tasks and name in sapp.periodic_schedules
    assert sapp.periodic_schedules[name].tz == "Europe/Paris"


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"cron": "61 * * * *"}, "minute"),
    ({"cron": "* * * *"}, "cron"),
    ({"cron": "0 3 * * *", "tz": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
    ({"every": 0}, "every"),
    ({"every": -5}, "every"),
    ({"every": timedelta(seconds=-1)}, "every"),
    ({}, "exactly one"),
    ({"cron": "* * * * *", "every": 5}, "exactly one"),
    ({"every": 5, "missed": "sometimes"}, "missed must be one of latest, earliest, skip, all"),
    ({"every": 5, "overlap": "never"}, "overlap must be one of skip, allow"),
    ({"every": 5, "grace": -1}, "grace"),
    ({"every": 5, "catch_up": float("nan")}, "catch_up"),
    ({"every": 5, "jitter": "lots"}, "jitter"),
    ({"every": 5, "missed": "all"}, "overlap='allow'"),  # with the default overlap='skip', "all" would run one
]


@pytest.mark.parametrize(("spec", "phrase"), BAD_SPECS)
def test_a_bad_periodic_is_refused_at_declaration_and_declares_nothing(
    sapp: App, spec: dict[str, Any], phrase: str
) -> None:
    before = set(sapp.tasks)
    with pytest.raises(ValueError, match=phrase):

        @sapp.periodic(name="bad", **spec)
        def bad() -> None: ...

    assert set(sapp.tasks) == before and sapp.periodic_schedules == {}
    assert sapp.schedules() == []


@pytest.mark.parametrize(("spec", "phrase"), BAD_SPECS)
def test_a_bad_stored_schedule_is_refused_and_nothing_is_stored(sapp: App, spec: dict[str, Any], phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        sapp.schedule("bad", sapp.tasks["t.ping"].s(), **spec)
    assert sapp.schedules() == []


def test_a_bad_task_option_or_argument_of_periodic_declares_nothing(sapp: App) -> None:
    with pytest.raises(ValueError, match="queue"):
        sapp.periodic(every=5, name="x", queue="")
    with pytest.raises(Exception, match=r"JSON|serial|encode"):

        @sapp.periodic(every=5, name="y", args=(object(),))
        def y(value: Any) -> None: ...

    assert "x" not in sapp.tasks and "y" not in sapp.tasks and sapp.periodic_schedules == {}


def test_a_target_with_references_or_per_call_options_is_refused(sapp: App) -> None:
    ping = sapp.tasks["t.ping"]
    with pytest.raises(ValueError, match="cannot use references"):
        sapp.schedule("refs", ping.s(Ref.kws("x")), every=5)
    with pytest.raises(ValueError, match="cannot use references"):
        sapp.schedule("refs", sapp.pipeline(ping.s(1), kws={"x": Ref.job_id()}), every=5)
    for option in ({"id": "fixed"}, {"key": "k"}, {"delay": 5}, {"owner": "alice"}):
        with pytest.raises(ValueError, match="cannot keep the call option"):
            sapp.schedule("opts", ping.options(**option).s(), every=5)
    with pytest.raises(TypeError, match=r"task\.s"):
        sapp.schedule("fn", ping, every=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        sapp.schedule("", ping.s(), every=5)
    assert sapp.schedules() == []


def test_a_periodic_declared_twice_differently_is_refused(sapp: App) -> None:
    sapp.declare_schedule("twice", sapp.tasks["t.ping"].s(1), every=5)
    sapp.declare_schedule("twice", sapp.tasks["t.ping"].s(1), every=5)  # the same again: a re-import
    with pytest.raises(ValueError, match="a different schedule is already declared"):
        sapp.declare_schedule("twice", sapp.tasks["t.ping"].s(2), every=5)
    with pytest.raises(ValueError, match="a different schedule is already declared"):

        @sapp.periodic(every=6, name="twice")
        def other() -> None: ...

    assert "twice" not in sapp.tasks, "nothing registered: the conflict is found first"


# stored schedules ----------------------------------------------------------------------------------------------
def test_schedule_stores_now_and_storing_again_replaces_the_spec_keeping_history_and_pause(
    sapp: App, clock: Clock
) -> None:
    ping = sapp.tasks["t.ping"]
    record = sapp.schedule("poll", ping.s(1), every=timedelta(seconds=30))
    assert record.source is Source.STORED and record.every == 30.0 and record.next_at == T0 + 30
    clock.now = T0 + 30
    Scheduler(sapp).tick()
    assert [job.args for job in jobs_of(sapp, "poll")] == [[1]]
    sapp.pause_schedule("poll")

    clock.now = T0 + 40
    same_spec = sapp.schedule("poll", ping.s(2), every=30, missed="skip")
    assert same_spec.next_at == T0 + 60, "an unchanged spec keeps its next tick"
    assert same_spec.target["args"] == [2] and same_spec.missed is Missed.SKIP
    assert same_spec.paused, "replacing keeps the paused state"
    new_spec = sapp.schedule("poll", ping.s(3), cron="*/5 * * * *")
    assert new_spec.cron == "*/5 * * * *" and new_spec.every is None
    assert new_spec.next_at == T0 + 300, "a changed spec starts at its first tick after now"
    assert len(sapp.schedule_ticks("poll")) == 1, "the history is kept"
    assert new_spec.last_job_id == jobs_of(sapp, "poll")[0].id


def test_a_stored_schedule_cannot_take_a_code_schedules_name(sapp: App) -> None:
    sapp.declare_schedule("code", sapp.tasks["t.ping"].s(), every=5)
    with pytest.raises(ValueError, match="declared in this app's code"):
        sapp.schedule("code", sapp.tasks["t.ping"].s(), every=5)
    sapp.sync_schedules()
    other = make_app(sapp.url, sapp.clock)
    with pytest.raises(ValueError, match="declared in code"):
        other.schedule("code", other.tasks["t.ping"].s(), every=7)
    other.close()


def test_a_tick_enqueues_the_target_with_its_options_and_the_schedule_and_tick(sapp: App, clock: Clock) -> None:
    sapp.schedule("reports", sapp.tasks["t.report"].s(day="mon"), every=60)
    clock.now = T0 + 60
    Scheduler(sapp).tick()
    (job,) = jobs_of(sapp, "reports")
    assert (job.task, job.queue, job.max_retries, job.timeout) == ("t.report", "reports", 2, 30)
    assert job.kwargs == {"day": "mon"} and job.scheduled_by == "reports" and job.tick_at == T0 + 60
    assert job.scheduled_at == T0 + 60
    assert sapp.get_schedule("reports").last_job_id == job.id
    (tick,) = sapp.schedule_ticks("reports")
    assert (tick.tick_at, tick.outcome, tick.job_id) == (T0 + 60, TickOutcome.ENQUEUED, job.id)


def test_a_pipeline_schedule_enqueues_a_pipeline_job(sapp: App, clock: Clock) -> None:
    ping = sapp.tasks["t.ping"]
    sapp.schedule("pipe", sapp.pipeline(ping.s(Ref.kws("x")), ping.s(Ref.stage(0)), kws={"x": 7}), every=10)
    clock.now = T0 + 10
    Scheduler(sapp).tick()
    (job,) = jobs_of(sapp, "pipe")
    assert job.is_pipeline and job.tick_at == T0 + 10
    assert sapp.run_until_empty() == 2
    assert sapp.job(job.id).results == [7, 7]


# the sync ----------------------------------------------------------------------------------------------------------
def test_sync_puts_declared_schedules_retires_undeclared_code_ones_and_leaves_stored_ones(
    sapp: App, clock: Clock
) -> None:
    ping = sapp.tasks["t.ping"]
    sapp.declare_schedule("a", ping.s("a"), every=10)
    sapp.declare_schedule("b", ping.s("b"), every=10)
    sapp.schedule("stored", ping.s("s"), every=10)
    assert sapp.sync_schedules() == Synced(["a", "b"], [])
    assert sapp.sync_schedules() == Synced([], []), "nothing changed: nothing written"

    newer = make_app(sapp.url, clock)  # the next release of the code: "b" was removed, "a" changed
    newer.declare_schedule("a", newer.tasks["t.ping"].s("a2"), every=10)
    assert newer.sync_schedules() == Synced(["a"], ["b"])
    assert {r.name: r.source for r in sapp.schedules()} == {"a": Source.CODE, "stored": Source.STORED}
    assert sapp.get_schedule("a").target["args"] == ["a2"]
    newer.close()


def test_a_sync_never_retires_the_code_schedules_of_another_app_sharing_the_store(sapp: App, clock: Clock) -> None:
    sapp.declare_schedule("mine", sapp.tasks["t.ping"].s(), every=10)
    sapp.sync_schedules()
    other = App(sapp.url, lease=1.0, clock=clock)  # another app: it declares none of sapp's tasks

    @other.periodic(every=10, name="theirs")
    def theirs() -> None: ...

    assert other.sync_schedules() == Synced(["theirs"], [])
    assert sapp.sync_schedules() == Synced([], [])
    assert {r.name for r in sapp.schedules()} == {"mine", "theirs"}
    other.close()


def test_a_resync_keeps_a_due_tick_and_the_paused_state_and_a_changed_spec_recomputes_next_at(
    sapp: App, clock: Clock
) -> None:
    ping = sapp.tasks["t.ping"]
    sapp.declare_schedule("s", ping.s(1), every=10)
    sapp.sync_schedules()
    sapp.pause_schedule("s")
    clock.now = T0 + 25  # the tick at T0 + 10 is due and not fired

    later = make_app(sapp.url, clock)
    later.declare_schedule("s", later.tasks["t.ping"].s(2), every=10)  # target changed, spec not
    later.sync_schedules()
    record = later.get_schedule("s")
    assert record.next_at == T0 + 10 and record.paused and record.target["args"] == [2]

    respec = make_app(sapp.url, clock)
    respec.declare_schedule("s", respec.tasks["t.ping"].s(2), every=7)
    respec.sync_schedules()
    assert respec.get_schedule("s").next_at > T0 + 25 and respec.get_schedule("s").next_at % 7 == 0
    later.close()
    respec.close()


def test_a_worker_syncs_code_schedules_at_start_and_fires_them(
    url: str, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    app = make_app(url)

    @app.periodic(every=0.5, name="half", grace=5)
    def half() -> str:
        return "tick"

    start_worker(on=app)
    wait_for(lambda: len([j for j in jobs_of(app, "half") if j.status is Status.SUCCEEDED]) >= 3, timeout=15,
             what="three ticks run")  # fmt: skip
    ticks = [job.tick_at for job in jobs_of(app, "half")]
    assert len(ticks) == len(set(ticks)) and all(b - a == 0.5 for a, b in itertools.pairwise(ticks))
    assert app.get_schedule("half").source is Source.CODE
    app.close()


def test_a_worker_without_its_scheduler_neither_syncs_nor_fires(url: str, start_worker: Callable[..., Any]) -> None:
    app = make_app(url)
    app.schedule("stored", app.tasks["t.ping"].s(), every=0.2, grace=5)
    app.declare_schedule("code", app.tasks["t.ping"].s(), every=0.2)
    start_worker(on=app, scheduler=False)
    time.sleep(1.0)
    assert jobs_of(app, "stored") == [] and [r.name for r in app.schedules()] == ["stored"]
    app.close()


# pause, resume, unschedule ------------------------------------------------------------------------------------
def test_pause_stops_ticks_and_resume_fires_no_burst_recording_the_skipped_ticks_once(sapp: App, clock: Clock) -> None:
    sapp.schedule("p", sapp.tasks["t.ping"].s(), every=10, overlap="allow")
    scheduler = Scheduler(sapp)
    clock.now = T0 + 10
    scheduler.tick()
    assert sapp.pause_schedule("p") is True
    assert sapp.pause_schedule("p") is False, "already paused"
    clock.now = T0 + 105
    scheduler.tick()
    assert len(jobs_of(sapp, "p")) == 1, "no tick while paused"

    assert sapp.resume_schedule("p") is True
    assert sapp.resume_schedule("p") is False, "not paused any more"
    record = sapp.get_schedule("p")
    assert not record.paused and record.next_at == T0 + 110, "the first tick after now"
    scheduler.tick()
    assert len(jobs_of(sapp, "p")) == 1, "resuming fires no burst"
    skipped = [t for t in sapp.schedule_ticks("p") if t.outcome is TickOutcome.SKIPPED_PAUSED]
    assert len(skipped) == 1
    assert skipped[0].tick_at == T0 + 20 and skipped[0].data == {"count": 9, "until": T0 + 100}
    clock.now = T0 + 110
    scheduler.tick()
    assert [job.tick_at for job in jobs_of(sapp, "p")] == [T0 + 10, T0 + 110]


def test_resuming_a_schedule_paused_for_no_tick_records_nothing(sapp: App, clock: Clock) -> None:
    sapp.schedule("p", sapp.tasks["t.ping"].s(), every=10)
    sapp.pause_schedule("p")
    clock.now = T0 + 5
    sapp.resume_schedule("p")
    assert sapp.schedule_ticks("p") == [] and sapp.get_schedule("p").next_at == T0 + 10


def test_unschedule_removes_a_stored_schedule_and_refuses_a_code_one_unless_forced(sapp: App) -> None:
    sapp.schedule("stored", sapp.tasks["t.ping"].s(), every=10)
    sapp.declare_schedule("code", sapp.tasks["t.ping"].s(), every=10)
    sapp.sync_schedules()
    sapp.unschedule("stored")
    with pytest.raises(ValueError, match="declared in code"):
        sapp.unschedule("code")
    sapp.unschedule("code", force=True)
    assert sapp.schedules() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda app: app.get_schedule("nope"),
        lambda app: app.unschedule("nope"),
        lambda app: app.pause_schedule("nope"),
        lambda app: app.resume_schedule("nope"),
        lambda app: app.schedule_ticks("nope"),
        lambda app: app.explain_schedule("nope"),
    ],
)
def test_an_unknown_schedule_raises_schedule_not_found(sapp: App, call: Callable[[App], Any]) -> None:
    with pytest.raises(ScheduleNotFound, match="no schedule named 'nope'"):
        call(sapp)


def test_explain_lists_the_next_fire_times_even_before_a_sync(sapp: App) -> None:
    sapp.declare_schedule("paris", sapp.tasks["t.ping"].s(), cron="30 2 * * *", tz="Europe/Paris")
    ticks = sapp.explain_schedule("paris", count=3)
    assert len(ticks) == 3 and all(t.local.strftime("%H:%M") == "02:30" for t in ticks)
    assert all(b.at - a.at == 86400 for a, b in itertools.pairwise(ticks))
    with pytest.raises(ValueError, match="count"):
        sapp.explain_schedule("paris", count=0)


# catching up, overlap, racing schedulers ----------------------------------------------------------------------
def test_after_a_ten_minute_outage_latest_and_earliest_fire_one_job_and_skip_none(sapp: App, clock: Clock) -> None:
    ping = sapp.tasks["t.ping"]
    for policy in ("latest", "earliest", "skip", "all"):
        sapp.schedule(policy, ping.s(), every=1, grace=2, missed=policy, catch_up=60, overlap="allow")
    scheduler = Scheduler(sapp)
    clock.now = T0 + 1
    scheduler.tick()
    clock.now = T0 + 601  # no scheduler ran for ten minutes
    scheduler.tick()

    def outage_jobs(name: str) -> list[float]:
        return [job.tick_at for job in jobs_of(sapp, name) if job.tick_at > T0 + 1]

    assert outage_jobs("latest") == [T0 + 601]
    assert outage_jobs("earliest") == [T0 + 541], "the earliest within the catch-up window"
    assert outage_jobs("skip") == []
    assert outage_jobs("all") == [T0 + 541 + k for k in range(61)], "every one within the catch-up window"
    for name in ("latest", "earliest", "skip"):
        missed = [t for t in sapp.schedule_ticks(name) if t.outcome is TickOutcome.MISSED]
        assert len(missed) == 1, f"{name}: the missed ticks are recorded once: {missed}"
        assert sapp.get_schedule(name).next_at == T0 + 602


def test_overlap_skip_records_a_tick_while_the_previous_job_is_unfinished(sapp: App, clock: Clock) -> None:
    sapp.schedule("o", sapp.tasks["t.ping"].s(), every=10)
    sapp.schedule("a", sapp.tasks["t.ping"].s(), every=10, overlap="allow")
    scheduler = Scheduler(sapp)
    for k in (1, 2, 3):
        clock.now = T0 + 10 * k
        scheduler.tick()
    assert [j.tick_at for j in jobs_of(sapp, "o")] == [T0 + 10], "its first job never ran: later ticks skipped"
    assert outcomes(sapp.schedule_ticks("o")) == [(T0 + 10, TickOutcome.ENQUEUED),
                                                   (T0 + 20, TickOutcome.SKIPPED_OVERLAP),
                                                   (T0 + 30, TickOutcome.SKIPPED_OVERLAP)]  # fmt: skip
    assert len(jobs_of(sapp, "a")) == 3, "overlap allow enqueues each tick"
    sapp.run_until_empty()
    clock.now = T0 + 40
    scheduler.tick()
    assert [j.tick_at for j in jobs_of(sapp, "o")] == [T0 + 10, T0 + 40], "the previous job finished: it fires"


def test_many_schedulers_racing_for_the_same_ticks_make_one_job_per_tick(url: str, clock: Clock) -> None:
    apps = [make_app(url, clock) for _ in range(6)]
    apps[0].schedule("race", apps[0].tasks["t.ping"].s(), every=1, overlap="allow", grace=100)
    barrier = threading.Barrier(len(apps))
    won: list[int] = []

    def fire(app: App) -> None:
        scheduler = Scheduler(app)
        barrier.wait(10)
        for k in range(1, 11):
            scheduler.tick(T0 + k)
        won.append(scheduler.fired)

    threads = [threading.Thread(target=fire, args=(app,)) for app in apps]
    clock.now = T0 + 10
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ticks = [job.tick_at for job in jobs_of(apps[0], "race")]
    assert Counter(ticks) == Counter(T0 + k for k in range(1, 11)), "each tick once, none missing"
    assert len(won) == len(apps)
    for app in apps:
        app.close()


def test_a_broken_target_is_logged_and_left_alone_while_the_others_fire(
    sapp: App, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    sapp.schedule("good", sapp.tasks["t.ping"].s(), every=10)
    sapp.schedule("broken", sapp.tasks["t.ping"].s(), every=10)
    broken = msgspec.structs.replace(sapp.get_schedule("broken"), target={"kind": "call"})  # no task, no args
    sapp.backend.put_schedule(broken, clock())
    clock.now = T0 + 10
    scheduler = Scheduler(sapp)
    scheduler.tick()
    assert len(jobs_of(sapp, "good")) == 1 and jobs_of(sapp, "broken") == []
    assert "schedule 'broken'" in caplog.text
    caplog.clear()
    clock.now = T0 + 20
    scheduler.tick()
    assert "schedule 'broken'" not in caplog.text, "left alone for a while, not logged at every pass"


def test_anchor_places_interval_ticks(sapp: App) -> None:
    anchor = datetime.fromtimestamp(T0 + 7, UTC)
    record = sapp.schedule("anchored", sapp.tasks["t.ping"].s(), every=60, anchor=anchor)
    assert record.anchor == T0 + 7 and record.next_at == T0 + 7
    naive = sapp.schedule("naive", sapp.tasks["t.ping"].s(), every=60, anchor=anchor.replace(tzinfo=None))
    assert naive.anchor == T0 + 7, "a naive anchor is UTC"


# repeat -------------------------------------------------------------------------------------------------------------
def test_repeat_functions_run_in_a_worker_on_their_own_threads_and_stop_with_it(
    url: str, start_worker: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    app = make_app(url)
    calls: list[str] = []

    @app.repeat(0.05)
    def beat() -> None:
        calls.append(threading.current_thread().name)

    @app.repeat(0.05, name="boom")
    def boom() -> None:
        calls.append("boom")
        raise RuntimeError("a repeat that always fails")

    @app.repeat(0.05, at_start=True)
    async def later() -> None:
        calls.append("async")

    assert beat() is None and "boom" in app.repeats, "the decorator returns the function itself"
    runner = start_worker(on=app)
    wait_for(lambda: calls.count("boom") >= 3 and calls.count("async") >= 3 and len(calls) >= 10, timeout=10)
    assert runner.thread.is_alive() and runner.worker.exit_code == 0, "a failing repeat never stops the worker"
    assert any("repeat" in name for name in calls if name not in ("boom", "async"))
    runner.stop()
    stopped = len(calls)
    time.sleep(0.3)
    assert len(calls) == stopped, "the repeats stopped with the worker"
    assert app.repeats["boom"].errors >= 3
    app.close()


def test_repeat_refuses_a_bad_period_and_a_name_taken_by_another_function(sapp: App) -> None:
    for seconds in (0, -1, float("inf"), True, "5"):
        with pytest.raises(ValueError, match="seconds > 0"):
            sapp.repeat(seconds)  # type: ignore[arg-type]
    sapp.repeat(1, name="r")(lambda: None)
    with pytest.raises(ValueError, match="already repeats"):
        sapp.repeat(1, name="r")(lambda: None)


def test_a_repeat_that_overruns_skips_the_slots_it_covered() -> None:
    calls: list[float] = []

    def slow() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(0.35)

    repeat = Repeat("slow", slow, 0.1, at_start=True)
    stopping = threading.Event()
    thread = threading.Thread(target=repeat.run, args=(stopping,))
    thread.start()
    time.sleep(0.62)
    stopping.set()
    thread.join(5)
    assert 2 <= len(calls) <= 4, calls
    assert calls[1] - calls[0] >= 0.35 and calls[1] - calls[0] < 0.5, "the next on the grid, no burst"


def test_a_stored_schedule_belongs_to_its_owner(sapp: App) -> None:
    ping = sapp.tasks["t.ping"]
    assert sapp.schedule("mine", ping.s(), every=60, owner="alice").owner == "alice"
    assert sapp.schedule("nobodys", ping.s(), every=60).owner is None
    assert sapp.schedule("mine", ping.s(), every=30).owner is None  # storing it again replaces the owner too
    with pytest.raises(ValueError, match="owner"):
        sapp.schedule("bad-owner", ping.s(), every=60, owner="")
    assert [s.name for s in sapp.schedules()] == ["mine", "nobodys"]
