"""conveyor.schedule: cron and interval specs. DST in Europe/Paris across the 2026 changes
(Debian cron's rule), the seconds field, interval anchoring, explain's notes, bad input, and a
property test (with an independent minute-by-minute oracle) that ticks only ever move forward."""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.schedule import CronSpec, IntervalSpec, Spec, explain, parse_spec, spec_of
from conveyor.schedule_types import ScheduleRecord

PARIS = ZoneInfo("Europe/Paris")
SPRING = (2026, 3, 29)  # 02:00 CET -> 03:00 CEST
AUTUMN = (2026, 10, 25)  # 03:00 CEST -> 02:00 CET


def cron(expr: str, tz: str = "UTC") -> Spec:
    return parse_spec(cron=expr, every=None, tz=tz)


def ticks(spec: Spec, start: float, end: float) -> list[float]:
    """Every tick in (start, end]."""
    found: list[float] = []
    t = spec.next_after(start)
    while t <= end:
        found.append(t)
        t = spec.next_after(t)
    return found


def day_walls(expr: str, day: tuple[int, int, int]) -> list[str]:
    """The wall times (HH:MM zone) of a Paris cron's ticks on one Paris day."""
    start = datetime(*day, tzinfo=PARIS)
    end = start + timedelta(days=1)
    spec = cron(expr, "Europe/Paris")
    found = ticks(spec, start.timestamp() - 1, end.timestamp() - 1)
    return [datetime.fromtimestamp(t, PARIS).strftime("%H:%M %Z") for t in found]


def hourly(first: int, last: int, zone: str, minutes: tuple[int, ...] = (0,)) -> list[str]:
    return [f"{h:02d}:{m:02d} {zone}" for h in range(first, last + 1) for m in minutes]


# DST: Europe/Paris -----------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 30 2 * * *"])  # 5 fields, and 6 with seconds first
def test_a_0230_job_runs_once_on_each_change_day(expr: str) -> None:
    # Spring: 02:30 does not exist; Debian cron runs it at the change (03:00 CEST = 01:00 UTC).
    assert day_walls(expr, SPRING) == ["03:00 CEST"]
    assert cron(expr, "Europe/Paris").next_after(datetime(2026, 3, 29, tzinfo=PARIS).timestamp()) == (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
    )
    # Autumn: 02:30 happens twice; it runs once, at the first (CEST = 00:30 UTC), not again at 02:30 CET.
    assert day_walls(expr, AUTUMN) == ["02:30 CEST"]
    assert cron(expr, "Europe/Paris").next_after(datetime(2026, 10, 25, tzinfo=PARIS).timestamp()) == (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()
    )
    # The days around are ordinary.
    assert day_walls(expr, (2026, 3, 28)) == ["02:30 CET"]
    assert day_walls(expr, (2026, 3, 30)) == ["02:30 CEST"]
    assert day_walls(expr, (2026, 10, 24)) == ["02:30 CEST"]
    assert day_walls(expr, (2026, 10, 26)) == ["02:30 CET"]


def test_a_0230_job_fired_during_the_repeated_hour_waits_for_the_next_day() -> None:
    spec = cron("30 2 * * *", "Europe/Paris")
    second_0210 = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=PARIS).timestamp()  # 02:10 CET
    assert datetime.fromtimestamp(spec.next_after(second_0210), PARIS).strftime("%m-%d %H:%M %Z") == "10-26 02:30 CET"


def test_hourly_wildcard_runs_by_the_new_time() -> None:
    # Debian cron: a wildcard job runs by the new time: no 02:00 in spring, 02:00 twice in autumn.
    assert day_walls("0 * * * *", SPRING) == hourly(0, 1, "CET") + hourly(3, 23, "CEST")
    assert day_walls("0 * * * *", AUTUMN) == hourly(0, 2, "CEST") + hourly(2, 23, "CET")
    assert len(day_walls("0 * * * *", SPRING)) == 23
    assert len(day_walls("0 * * * *", AUTUMN)) == 25


def test_every_30_minutes_across_the_changes() -> None:
    half = (0, 30)
    assert day_walls("*/30 * * * *", SPRING) == hourly(0, 1, "CET", half) + hourly(3, 23, "CEST", half)
    assert day_walls("*/30 * * * *", AUTUMN) == hourly(0, 2, "CEST", half) + hourly(2, 23, "CET", half)
    # Real time keeps its rhythm: every tick is 30 minutes after the one before.
    start = datetime(2026, 3, 28, 12, tzinfo=PARIS).timestamp()
    for day_ticks in (ticks(cron("*/30 * * * *", "Europe/Paris"), start, start + 2 * 86400),):
        assert {b - a for a, b in itertools.pairwise(day_ticks)} == {1800.0}


def test_fixed_times_around_the_change_collapse_into_one_tick_at_the_change() -> None:
    # 02:00 and 02:30 do not exist; they and the real 03:00 fire once, at the change.
    assert day_walls("0,30 2,3 * * *", SPRING) == ["03:00 CEST", "03:30 CEST"]
    assert day_walls("0,30 2,3 * * *", AUTUMN) == ["02:00 CEST", "02:30 CEST", "03:00 CET", "03:30 CET"]


def test_explain_notes_on_the_change_days() -> None:
    daily = cron("30 2 * * *", "Europe/Paris")
    spring = explain(daily, datetime(2026, 3, 28, 12, tzinfo=PARIS).timestamp(), 2)
    assert [t.local.strftime("%m-%d %H:%M %Z") for t in spring] == ["03-29 03:00 CEST", "03-30 02:30 CEST"]
    assert spring[0].note == "clocks go forward at 02:00: 02:30 does not exist, fires at 03:00 (the change)"
    assert spring[1].note == ""
    assert spring[0].local.tzinfo is PARIS

    autumn = explain(daily, datetime(2026, 10, 24, 12, tzinfo=PARIS).timestamp(), 2)
    assert [t.local.strftime("%m-%d %H:%M %Z") for t in autumn] == ["10-25 02:30 CEST", "10-26 02:30 CET"]
    assert autumn[0].note == "clocks go back at 03:00: fires once, at the first 02:30"
    assert autumn[1].note == ""

    hourly_spec = cron("0 * * * *", "Europe/Paris")
    spring = explain(hourly_spec, datetime(2026, 3, 29, 0, 30, tzinfo=PARIS).timestamp(), 3)
    assert [(t.local.strftime("%H:%M"), t.note) for t in spring] == [
        ("01:00", ""),
        ("03:00", "clocks go forward at 02:00: 02:00 does not exist, no tick for it"),
        ("04:00", ""),
    ]
    autumn = explain(hourly_spec, datetime(2026, 10, 25, 1, 30, tzinfo=PARIS).timestamp(), 3)
    assert [t.note for t in autumn] == [
        "clocks go back at 03:00: 02:00 happens twice and fires at both; this is the first (CEST)",
        "clocks go back at 03:00: 02:00 happens twice and fires at both; this is the second (CET)",
        "",
    ]

    half = explain(cron("*/30 * * * *", "Europe/Paris"), datetime(2026, 3, 29, 1, 45, tzinfo=PARIS).timestamp(), 1)
    assert half[0].note == "clocks go forward at 02:00: 02:00 and 02:30 do not exist, no tick for them"


def test_explain_on_ordinary_days_utc_and_intervals() -> None:
    plain = explain(cron("0 9 * * 1-5", "Europe/Paris"), datetime(2026, 6, 5, tzinfo=PARIS).timestamp(), 3)
    assert [t.local.strftime("%a %H:%M") for t in plain] == ["Fri 09:00", "Mon 09:00", "Tue 09:00"]
    assert all(t.note == "" for t in plain)
    assert [t.at for t in plain] == [t.local.timestamp() for t in plain]
    utc = explain(cron("0 0 * * *"), 0.0, 2)
    assert [t.local for t in utc] == [datetime(1970, 1, 2, tzinfo=UTC), datetime(1970, 1, 3, tzinfo=UTC)]
    every = parse_spec(cron=None, every=3600, tz="Europe/Paris")
    autumn = explain(every, datetime(2026, 10, 25, 1, 30, tzinfo=PARIS).timestamp(), 3)
    assert [t.local.strftime("%H:%M %Z") for t in autumn] == ["02:00 CEST", "02:00 CET", "03:00 CET"]
    assert autumn[1].note == "clocks go back at 03:00: 02:00 happens twice; this is the second (CET)"
    assert explain(every, 0.0, 0) == []


# The seconds field -----------------------------------------------------------------------------------
def test_seconds_field_comes_first() -> None:
    every_15s = cron("*/15 * * * * *")
    assert ticks(every_15s, 1_000_000.0, 1_000_060.0) == [1_000_005.0, 1_000_020.0, 1_000_035.0, 1_000_050.0]
    at_12_00_30 = cron("30 0 12 * * *")
    noon = datetime(2026, 5, 1, 12, tzinfo=UTC).timestamp()
    assert at_12_00_30.next_after(noon - 3600) == noon + 30
    assert isinstance(at_12_00_30, CronSpec) and at_12_00_30.seconds
    assert ticks(cron("* * * * * *"), 10.5, 13.0) == [11.0, 12.0, 13.0]


def test_macros_and_names() -> None:
    assert cron("@hourly").next_after(10.0) == 3600.0
    assert cron("@daily").next_after(10.0) == 86400.0
    jan_first = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert cron("@yearly").next_after(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) == jan_first
    assert cron("0 0-0/1 * * *").next_after(0.0) == 86400.0  # a stepped one-value range is that value
    monday = datetime(2026, 6, 8, 9, tzinfo=UTC).timestamp()
    assert cron("0 9 * * mon").next_after(datetime(2026, 6, 5, tzinfo=UTC).timestamp()) == monday


# Intervals -----------------------------------------------------------------------------------------
def test_interval_ticks_are_anchored_not_relative_to_now() -> None:
    # Two processes that start at different times compute the same ticks.
    first = parse_spec(cron=None, every=timedelta(seconds=30))
    second = IntervalSpec(30.0)  # a separate object, as another process would build
    a = ticks(first, 1_000_007.3, 1_000_300.0)
    b = ticks(second, 1_000_121.9, 1_000_300.0)
    assert a[0] == 1_000_020.0 and b[0] == 1_000_140.0
    assert a[-len(b) :] == b
    assert all(t % 30 == 0 for t in a)


def test_interval_anchor_and_no_drift() -> None:
    anchor = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    spec = parse_spec(cron=None, every=7.5, anchor=anchor)
    assert spec.next_after(anchor.timestamp() - 100) == anchor.timestamp() - 97.5
    naive = parse_spec(cron=None, every=7.5, anchor=datetime(2026, 1, 1, 0, 0, 10))  # naive means UTC
    assert naive.next_after(0.0) == spec.next_after(0.0)
    t = anchor.timestamp()
    for _ in range(100_000):
        t = spec.next_after(t)
    assert t == anchor.timestamp() + 100_000 * 7.5  # exactly: each tick is anchor + k * every
    assert spec.describe() == "every 7.5 s from 2026-01-01T00:00:10+00:00"
    assert parse_spec(cron=None, every=30).describe() == "every 30 s"


def test_interval_next_after_is_strict_on_a_tick_and_handles_awkward_floats() -> None:
    spec = parse_spec(cron=None, every=0.1)
    t = 0.0
    seen = []
    for _ in range(1000):
        nxt = spec.next_after(t)
        assert nxt > t
        seen.append(nxt)
        t = nxt
    assert len(set(seen)) == 1000
    assert spec.next_after(0.30000000000000004) > 0.30000000000000004


# Bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *': bad minute '61'"),
        ({"cron": "* 24 * * *"}, "bad cron expression '* 24 * * *': bad hour '24'"),
        ({"cron": "0 0 31 2 *"}, "bad cron expression '0 0 31 2 *': bad day-of-month '31'"),
        ({"cron": "* * * 13 *"}, "bad month '13'"),
        ({"cron": "* * * * funday"}, "bad day-of-week 'funday'"),
        ({"cron": "61 * * * * *"}, "bad cron expression '61 * * * * *': bad second '61'"),
        ({"cron": "* * *"}, "wrong number of fields (3)"),
        ({"cron": "* * * * * * *"}, "wrong number of fields (7)"),
        ({"cron": "   "}, "it is empty"),
        ({"cron": "@reboot"}, "wrong number of fields (1)"),
        ({"cron": "* * * * *", "tz": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"cron": "* * * * *", "tz": "../../etc/passwd"}, "unknown time zone"),
        ({"cron": "* * * * *", "tz": ""}, "unknown time zone"),
        ({"every": 0}, "every must be > 0 seconds"),
        ({"every": -5}, "every must be > 0 seconds"),
        ({"every": timedelta(0)}, "every must be > 0 seconds"),
        ({"every": math.nan}, "every must be a finite number"),
        ({"every": math.inf}, "every must be a finite number"),
        ({"every": 1e-6}, "every must be at least 0.001 s"),
        ({"every": True}, "every must be seconds or a timedelta"),
        ({"every": "30"}, "every must be seconds or a timedelta"),
        ({"every": 30, "tz": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"every": 30, "anchor": math.nan}, "anchor must be"),
        ({"cron": "* * * * *", "every": 30}, "exactly one of cron= and every="),
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "anchor": 5.0}, "anchor= applies to every="),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"cron": None, "every": None, **kwargs}
    with pytest.raises(ValueError) as caught:
        parse_spec(**arguments)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_describe_and_spec_of() -> None:
    record = ScheduleRecord(name="r", cron="*/5 * * * *", tz="Europe/Paris", target={}, next_at=0.0)
    assert spec_of(record).describe() == "cron '*/5 * * * *' in Europe/Paris"
    record = ScheduleRecord(name="r", every=30.0, anchor=15.0, target={}, next_at=0.0)
    assert spec_of(record).next_after(15.0) == 45.0
    assert spec_of(record) == IntervalSpec(30.0, 15.0)


def test_next_after_is_cheap() -> None:
    spec = cron("*/5 * * * *", "Europe/Paris")
    t, began = 1.78e9, time.perf_counter()
    for _ in range(5000):
        t = spec.next_after(t)
    assert time.perf_counter() - began < 5.0  # ~35 us a call here; generous for a loaded machine


# Property: ticks only move forward -------------------------------------------------------------------
ZONES = [
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight too
    "America/St_Johns",
    "Australia/Lord_Howe",  # a 30-minute change
    "Pacific/Chatham",
    "Asia/Kolkata",
    "Africa/Casablanca",  # Ramadan changes
    "Pacific/Apia",  # skipped a whole day (2011-12-30)
]


def field(low: int, high: int, hot: list[int]) -> st.SearchStrategy[str]:
    """One cron field from a small grammar, biased towards ``hot`` values (where DST happens)."""
    value = st.one_of(st.sampled_from(hot), st.integers(low, high))
    ranges = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    return st.one_of(
        st.just("*"),
        st.integers(1, max(1, (high - low) // 2)).map(lambda n: f"*/{n}"),
        value.map(str),
        ranges,
        st.lists(value, min_size=2, max_size=3, unique=True).map(lambda xs: ",".join(map(str, sorted(xs)))),
        st.tuples(ranges, st.integers(1, 5)).map(lambda rs: f"{rs[0]}/{rs[1]}"),
    )


MINUTE = field(0, 59, [0, 15, 30, 45])
HOUR = field(0, 23, [0, 1, 2, 3, 23])
DOM = st.one_of(st.just("*"), st.just("*"), field(1, 28, [1, 15, 28]))
MONTH = st.one_of(st.just("*"), st.just("*"), field(1, 12, [3, 10]))
DOW = st.one_of(st.just("*"), st.just("*"), field(0, 6, [0, 6]))
SECOND = st.one_of(st.just("0"), field(0, 59, [0, 30]))
FIVE = st.tuples(MINUTE, HOUR, DOM, MONTH, DOW).map(" ".join)
SIX = st.tuples(SECOND, MINUTE, HOUR, DOM, MONTH, DOW).map(" ".join)
START = st.floats(min_value=datetime(1990, 1, 1, tzinfo=UTC).timestamp(), max_value=4.1e9)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=st.one_of(FIVE, SIX), tz=st.sampled_from(ZONES), start=START, data=st.data())
def test_next_after_is_strictly_increasing_and_skips_nothing(
    expr: str, tz: str, start: float, data: st.DataObject
) -> None:
    spec = cron(expr, tz)
    t = start
    for _ in range(25):
        nxt = spec.next_after(t)
        assert nxt > t, (expr, tz, t)
        if math.isinf(nxt):
            break
        # Any point between t and the tick finds the same tick: nothing in between was skipped.
        between = data.draw(st.floats(min_value=t, max_value=nxt, exclude_max=True))
        assert spec.next_after(between) == nxt, (expr, tz, t, between)
        assert nxt == math.floor(nxt)  # cron ticks are whole seconds
        t = nxt


def _values(text: str, low: int, high: int) -> set[int]:
    """The oracle's own reading of one field of the small grammar."""
    found: set[int] = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            a, b = low, high
        elif "-" in body:
            a, b = (int(x) for x in body.split("-"))
        else:
            a = int(body)
            b = high if step else a
        found.update(range(a, b + 1, int(step) if step else 1))
    return found


def _matcher(expr: str) -> Callable[[datetime], bool]:
    minute, hour, dom, month, dow = expr.split()
    minutes, hours = _values(minute, 0, 59), _values(hour, 0, 23)
    doms, months, dows = _values(dom, 1, 31), _values(month, 1, 12), _values(dow, 0, 6)
    either = not (dom.startswith("*") or dow.startswith("*"))  # Debian cron: OR when both are restricted

    def matches(wall: datetime) -> bool:
        day_ok = (wall.day in doms, (wall.weekday() + 1) % 7 in dows)
        day = any(day_ok) if either else all(day_ok)
        return wall.minute in minutes and wall.hour in hours and wall.month in months and day

    return matches


def _oracle(expr: str, zone: ZoneInfo, start: float, end: float) -> list[float]:
    """The ticks in (start, end] by brute force, minute by minute over real instants. A wildcard job
    fires at each instant whose wall time matches; a fixed-time one fires at the first instant
    whose wall time reaches a matching wall time it has not reached before (so a wall time the
    spring change skips fires at the change, a repeated one only the first time)."""
    matches = _matcher(expr)
    minute, hour = expr.split()[:2]
    fixed = not minute.startswith("*") and not hour.startswith("*")
    s = math.floor(start / 60) * 60
    reached = datetime.fromtimestamp(s, zone).replace(tzinfo=None)
    found = []
    while s + 60 <= end:
        s += 60
        wall = datetime.fromtimestamp(s, zone).replace(tzinfo=None)
        if not fixed:
            if matches(wall):
                found.append(float(s))
        elif wall > reached:
            v = reached + timedelta(minutes=1)
            while v <= wall and not matches(v):
                v += timedelta(minutes=1)
            if v <= wall:
                found.append(float(s))
            reached = wall
    return [t for t in found if t > start]


@functools.lru_cache
def _changes_of(zone: ZoneInfo, year: int) -> list[float]:
    """The instants in ``year`` where the zone's UTC offset changes (to the hour, near enough)."""
    t = datetime(year, 1, 1, tzinfo=UTC).timestamp()
    end = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()
    found = []
    while t < end:
        if datetime.fromtimestamp(t, zone).utcoffset() != datetime.fromtimestamp(t + 3600, zone).utcoffset():
            found.append(t)
        t += 3600
    return found


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=FIVE,
    tz=st.sampled_from([z for z in ZONES if z != "UTC"]),
    year=st.integers(2005, 2035),
    shift=st.floats(min_value=-24 * 3600, max_value=6 * 3600),
    which=st.integers(0, 10),
)
def test_cron_matches_a_brute_force_oracle_around_dst_changes(
    expr: str, tz: str, year: int, shift: float, which: int
) -> None:
    zone = ZoneInfo(tz)
    changes = _changes_of(zone, year) or [datetime(year, 6, 1, tzinfo=UTC).timestamp()]
    start = changes[which % len(changes)] + shift
    end = start + 30 * 3600
    assert ticks(cron(expr, tz), start, end) == _oracle(expr, zone, start, end), (expr, tz, start)


def test_a_half_hour_change_does_not_shift_the_minutes() -> None:
    # Lord Howe's clocks go forward 30 minutes (2000-08-27 02:00 -> 02:30): stepping whole hours
    # across it would land on :30 and skip 08:15-08:29 (as cronsim's own time zone handling does).
    zone = ZoneInfo("Australia/Lord_Howe")
    expr = "15-49/2 */8 27 8 *"
    start = datetime(2000, 8, 27, 0, 40, tzinfo=zone).timestamp()
    end = datetime(2000, 8, 27, 9, 0, tzinfo=zone).timestamp()
    found = ticks(cron(expr, "Australia/Lord_Howe"), start, end)
    assert found == _oracle(expr, zone, start, end)
    walls = [datetime.fromtimestamp(t, zone).strftime("%H:%M") for t in found]
    assert walls[:6] == ["00:41", "00:43", "00:45", "00:47", "00:49", "08:15"]
