"""When a schedule fires: cron expressions in a time zone and fixed intervals, behind one small
interface (``Spec``). The cron library (cronsim, pinned) is used here and nowhere else.

Across DST changes cron follows Debian cron (cronsim's rule): a *fixed-time* job (neither its
minute nor its hour field starts with ``*``) runs by the wall clock, once per matching wall time:
one the spring change skips fires at the change, one the autumn change repeats fires once, at its
first occurrence. A *wildcard* job (``*/30 * * * *``) runs by the new time: nothing fires for the
skipped hour, the repeated hour fires again. cronsim only matches wall times here (naive datetimes:
exact arithmetic); mapping them to instants is done below, because cronsim's own zone handling
leaves 6-field expressions out of the rule and, stepping whole hours, skips minutes across a
30-minute change (Australia/Lord_Howe). Ticks are Unix seconds.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

if TYPE_CHECKING:
    from .schedule_types import ScheduleRecord

MIN_EVERY = 0.001  #: the shortest interval accepted, in seconds: shorter ones are surely a mistake
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_REFERENCE = 946684800.0  #: 2000-01-01 UTC: a parsed cron must fire at least once after it
_LAST = 253370764800.0  #: 9999-01-01 UTC: no tick is computed after it
_SCAN_STEP = 6 * 3600.0  #: the step of the search for changes of UTC offset (no zone has two in 6 h)
_MAX_NOMINAL = 10_000  #: explain counts at most this many wall times skipped by a spring change


class Spec(Protocol):
    """When a schedule fires."""

    def next_after(self, t: float) -> float:
        """The first tick strictly after Unix time ``t`` (``math.inf`` if it never fires again)."""
        ...

    def describe(self) -> str:
        """The spec for people: "cron '*/5 * * * *' in Europe/Paris", "every 30 s"."""
        ...


def _zone(tz: str) -> tzinfo:
    """The named IANA zone; ValueError naming it if unknown. UTC is the fast, fixed one."""
    if not isinstance(tz, str) or not tz.strip():
        raise ValueError(f"unknown time zone {tz!r}")
    if tz in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _hm(wall: datetime) -> str:
    """A wall time as HH:MM, or HH:MM:SS when it has seconds."""
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")


def _naive_utc(ts: float) -> datetime:
    """Unix seconds as a naive UTC datetime."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def _offset(zone: tzinfo, ts: float) -> timedelta:
    offset = datetime.fromtimestamp(ts, zone).utcoffset()
    return offset if offset is not None else timedelta(0)


def _change_in(zone: tzinfo, lo: float, hi: float) -> int:
    """The first whole second in (lo, hi] with hi's UTC offset, where lo's differs: a change."""
    target = _offset(zone, hi)
    low, high = math.floor(lo), math.ceil(hi)
    while high - low > 1:
        mid = (low + high) // 2
        if _offset(zone, mid) == target:
            high = mid
        else:
            low = mid
    return high


def _changes(zone: tzinfo, lo: float, hi: float) -> Iterator[int]:
    """Every change of UTC offset in (lo, hi], oldest first (scanned in _SCAN_STEP steps)."""
    if zone is UTC or not hi > lo:
        return
    a = lo
    while a < hi:
        b = min(a + _SCAN_STEP, hi)
        if _offset(zone, a) != _offset(zone, b):
            yield _change_in(zone, a, b)
        a = b


def _ambiguous(local: datetime) -> bool:
    """True if this wall time happens twice (the autumn change repeats it)."""
    return local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()


def _goes_back_at(local: datetime) -> datetime:
    """For an ambiguous wall time: the wall time at which clocks go back (03:00 for 02:30 in Paris)."""
    zone = local.tzinfo
    assert zone is not None
    change = _change_in(zone, local.replace(fold=0).timestamp(), local.replace(fold=1).timestamp())
    return datetime.fromtimestamp(change - 1, zone).replace(tzinfo=None) + timedelta(seconds=1)


def _fold_note(local: datetime, rule: str) -> str:
    """explain's note for a tick whose wall time happens twice. ``rule``: "fixed" (a fixed-time
    cron: its first occurrence only), "wildcard" (a cron by the new time: both), "interval"."""
    head = f"clocks go back at {_hm(_goes_back_at(local))}"
    which = "first" if local.fold == 0 else "second"
    if rule == "fixed":
        return f"{head}: fires once, at the first {_hm(local)}"
    if rule == "wildcard":
        return f"{head}: {_hm(local)} happens twice and fires at both; this is the {which} ({local.tzname()})"
    return f"{head}: {_hm(local)} happens twice; this is the {which} ({local.tzname()})"


def _one_value_ranges(field: str) -> str:
    """A field with its one-value stepped ranges ("5-5/2") as the value: cronsim reads a stepped
    term of one value as "from it to the field's end" ("5/2"); Debian cron, as just that value."""
    terms = field.split(",")
    for i, term in enumerate(terms):
        stepped = re.fullmatch(r"([^-/]+)-([^-/]+)/\d+", term)
        if stepped and stepped[1].upper() == stepped[2].upper():
            terms[i] = stepped[1]
    return ",".join(terms)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class CronSpec:
    """A cron expression in a time zone: 5 fields (minute hour day-of-month month day-of-week),
    or 6 with a seconds field FIRST (second minute hour ...), as cronsim reads them."""

    __slots__ = ("_expanded", "expr", "fixed_time", "seconds", "tz", "zone")

    def __init__(self, expr: str, tz: str) -> None:
        text = " ".join(expr.split()) if isinstance(expr, str) else ""
        if not text:
            raise ValueError(f"bad cron expression {expr!r}: it is empty")
        expanded = _MACROS.get(text.lower(), text)
        parts = expanded.split()
        if len(parts) not in (5, 6):
            raise ValueError(
                f"bad cron expression {expr!r}: wrong number of fields ({len(parts)}): expected 5 "
                "(minute hour day-of-month month day-of-week) or 6 (a seconds field first)"
            )
        expanded = " ".join(_one_value_ranges(part) for part in parts)
        self.expr = text
        self.tz = tz
        self.zone = _zone(tz)
        self.seconds = len(parts) == 6
        minute, hour = parts[-5], parts[-4]
        #: Debian cron's "fixed-time" job: runs by the wall clock across DST changes
        self.fixed_time = not minute.startswith("*") and not hour.startswith("*")
        self._expanded = expanded
        try:
            CronSim(expanded, datetime.fromtimestamp(_REFERENCE, UTC))
        except CronSimError as exc:
            raise ValueError(f"bad cron expression {expr!r}: {self._problem(str(exc), parts)}") from exc
        if not math.isfinite(self.next_after(_REFERENCE)):
            raise ValueError(f"bad cron expression {expr!r}: it never fires")

    @staticmethod
    def _problem(message: str, parts: list[str]) -> str:
        """cronsim's "Bad minute" as "bad minute '61'" (the field and its text)."""
        text = message.strip().rstrip(".")
        fields = _FIELDS if len(parts) == 6 else _FIELDS[1:]
        for name, part in zip(fields, parts, strict=True):
            if text.lower() == f"bad {name}":
                return f"bad {name} {part!r}"
        return text[:1].lower() + text[1:]

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        if not math.isfinite(t):
            raise ValueError(f"a time must be finite, got {t!r}")
        if t >= _LAST:
            return math.inf
        try:
            if self.zone is UTC:
                return self._first_wall_match(_naive_utc(math.floor(t) + 1)).replace(tzinfo=UTC).timestamp()
            if self.fixed_time:
                return self._next_fixed_time(t)
            return self._next_wildcard(math.floor(t) + 1)
        except (StopIteration, OverflowError):  # no tick within cronsim's 50 years, or past year 9999
            return math.inf

    def _first_wall_match(self, wall: datetime) -> datetime:
        """The first wall time (naive) at or after ``wall`` that the expression matches. cronsim
        computes on naive datetimes here: plain wall-clock arithmetic, exact for a fixed offset."""
        return next(CronSim(self._expanded, wall - timedelta(seconds=1)))

    def _next_fixed_time(self, t: float) -> float:
        """Debian's fixed-time rule: each matching wall time once, at its first occurrence, or at
        the change if clocks skipped it; walk the matching wall times until one lands after t."""
        for wall in CronSim(self._expanded, datetime.fromtimestamp(math.floor(t), self.zone).replace(tzinfo=None)):
            at = self._resolve(wall)
            if at > t:
                return at
        return math.inf

    def _next_wildcard(self, low: int) -> float:
        """Debian's wildcard rule (by the new time): the first instant >= low whose wall time
        matches. Between two changes of UTC offset, wall time is UTC shifted by a fixed offset:
        match in wall time under the offset at ``low``; if the offset changes before that match,
        start again from the change."""
        while True:
            offset = _offset(self.zone, low)
            wall = self._first_wall_match(_naive_utc(low) + offset)
            at = (wall - offset).replace(tzinfo=UTC).timestamp()
            change = next(_changes(self.zone, low, at), None)
            if change is None:
                return at
            low = change

    def _resolve(self, wall: datetime) -> float:
        """A matching wall time (naive) as Unix seconds, the fixed-time way: its first occurrence if
        it happens twice, the change if it does not exist (clocks went forward over it)."""
        at = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        if datetime.fromtimestamp(at, self.zone).replace(tzinfo=None) == wall:
            return at
        skipped_to = wall.replace(tzinfo=self.zone, fold=1).timestamp()  # before the change
        return float(_change_in(self.zone, min(at, skipped_to), max(at, skipped_to)))

    def nominal_between(self, start: datetime, end: datetime) -> list[datetime]:
        """The wall times (naive) in [start, end) that the expression matches, at most _MAX_NOMINAL."""
        found: list[datetime] = []
        try:
            for wall in CronSim(self._expanded, start - timedelta(seconds=1)):
                if wall >= end or len(found) >= _MAX_NOMINAL:
                    break
                found.append(wall)
        except StopIteration:
            pass
        return found

    def meaning(self) -> str:
        """The expression in English, as cronsim explains it ("At 02:30"); '' if it cannot."""
        try:
            return CronSim(self._expanded, datetime.fromtimestamp(_REFERENCE, UTC)).explain()
        except Exception:  # cronsim's explainer is best effort
            return ""

    def describe(self) -> str:
        return f"cron '{self.expr}' in {self.tz}"

    def __repr__(self) -> str:
        return f"CronSpec({self.expr!r}, tz={self.tz!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CronSpec) and (self.expr, self.tz) == (other.expr, other.tz)

    def __hash__(self) -> int:
        return hash((CronSpec, self.expr, self.tz))


class IntervalSpec:
    """Every ``every`` seconds: the ticks are ``anchor + k * every`` for whole k, so every process
    computes the same ticks and they never drift. ``tz`` only names the zone explain shows them in."""

    __slots__ = ("anchor", "every", "tz", "zone")

    def __init__(self, every: float, anchor: float = 0.0, tz: str = "UTC") -> None:
        self.every = every
        self.anchor = anchor
        self.tz = tz
        self.zone = _zone(tz)

    def next_after(self, t: float) -> float:
        """The first ``anchor + k * every`` strictly after ``t``."""
        if not math.isfinite(t):
            raise ValueError(f"a time must be finite, got {t!r}")
        k = math.floor((t - self.anchor) / self.every) + 1
        while k > 0 and self.anchor + (k - 1) * self.every > t:  # float rounding: step back ...
            k -= 1
        while self.anchor + k * self.every <= t:  # ... or on, to the first tick after t
            k += 1
        return self.anchor + k * self.every

    def describe(self) -> str:
        text = f"every {self.every:g} s"
        if self.anchor:
            text += f" from {datetime.fromtimestamp(self.anchor, UTC).isoformat()}"
        return text

    def __repr__(self) -> str:
        return f"IntervalSpec(every={self.every!r}, anchor={self.anchor!r}, tz={self.tz!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSpec) and (self.every, self.anchor, self.tz) == (
            other.every,
            other.anchor,
            other.tz,
        )

    def __hash__(self) -> int:
        return hash((IntervalSpec, self.every, self.anchor, self.tz))


def _seconds(every: float | timedelta) -> float:
    if isinstance(every, timedelta):
        value = every.total_seconds()
    elif isinstance(every, bool) or not isinstance(every, (int, float)):
        raise ValueError(f"every must be seconds or a timedelta, got {every!r}")
    else:
        value = float(every)
    if not math.isfinite(value):
        raise ValueError(f"every must be a finite number of seconds, got {every!r}")
    if value <= 0:
        raise ValueError(f"every must be > 0 seconds, got {every!r}")
    if value < MIN_EVERY:
        raise ValueError(f"every must be at least {MIN_EVERY:g} s, got {every!r}")
    return value


def anchor_seconds(anchor: float | datetime | None) -> float:
    """An interval's origin in Unix seconds (a datetime, naive meaning UTC, or seconds; None: the epoch)."""
    if anchor is None:
        return 0.0
    if isinstance(anchor, datetime):  # a naive datetime is UTC, as eta= takes it
        return (anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC)).timestamp()
    if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) or not math.isfinite(anchor):
        raise ValueError(f"anchor must be Unix seconds or a datetime, got {anchor!r}")
    return float(anchor)


def parse_spec(
    *,
    cron: str | None,
    every: float | timedelta | None,
    tz: str = "UTC",
    anchor: float | datetime | None = None,
) -> Spec:
    """A validated Spec from exactly one of ``cron`` and ``every``; ValueError naming the problem.

    ``cron``: 5 fields (minute hour day-of-month month day-of-week), or 6 with a seconds field
    FIRST (``*/10 * * * * *``: every 10 s); names (MON, JAN), ``L``, ``LW``, ``MON#2`` as cronsim
    reads them, and the macros @hourly @daily @midnight @weekly @monthly @yearly @annually.
    Computed in ``tz`` (an IANA name). ``every``: seconds or a timedelta, ticks at ``anchor + k *
    every`` (anchor: Unix seconds or a datetime, naive meaning UTC; default the Unix epoch)."""
    if (cron is None) == (every is None):
        raise ValueError("give exactly one of cron= and every=")
    if cron is not None:
        if anchor is not None and anchor_seconds(anchor) != 0.0:
            raise ValueError("anchor= applies to every= schedules, not to cron ones")
        if not isinstance(cron, str):
            raise ValueError(f"bad cron expression {cron!r}: it must be a string")
        return _cron(cron, tz)
    assert every is not None
    return _interval(_seconds(every), anchor_seconds(anchor), tz)


@functools.lru_cache(maxsize=1024)
def _cron(expr: str, tz: str) -> CronSpec:
    return CronSpec(expr, tz)  # immutable: safe to share between threads and calls


@functools.lru_cache(maxsize=1024)
def _interval(every: float, anchor: float, tz: str) -> IntervalSpec:
    return IntervalSpec(every, anchor, tz)


def spec_of(record: ScheduleRecord) -> Spec:
    """The Spec of a stored schedule."""
    return parse_spec(
        cron=record.cron,
        every=record.every,
        tz=record.tz,
        anchor=record.anchor if record.every is not None else None,
    )


class ExplainedTick(msgspec.Struct, frozen=True, kw_only=True):
    """One upcoming tick, for people: when, in the schedule's zone, and what DST does to it."""

    at: float  #: Unix seconds
    local: datetime  #: the tick in the schedule's zone
    note: str = ""  #: '' or what a DST change does here


def explain(spec: Spec, after: float, count: int) -> list[ExplainedTick]:
    """The next ``count`` ticks after ``after``, in the spec's zone, with DST notes: a wall time the
    spring change skips ("clocks go forward at 02:00: 02:30 does not exist, fires at 03:00 (the
    change)") and one the autumn change repeats ("clocks go back at 03:00: fires once, at the first
    02:30")."""
    zone = spec.zone if isinstance(spec, CronSpec | IntervalSpec) else UTC
    result: list[ExplainedTick] = []
    previous = after
    for _ in range(max(0, count)):
        at = spec.next_after(previous)
        if not math.isfinite(at):
            break
        local = datetime.fromtimestamp(at, zone)
        notes: list[str] = []
        if isinstance(spec, CronSpec):
            notes.extend(_gap_notes(spec, previous, at, local))
        if zone is not UTC and _ambiguous(local):
            rule = "interval" if not isinstance(spec, CronSpec) else "fixed" if spec.fixed_time else "wildcard"
            notes.append(_fold_note(local, rule))
        result.append(ExplainedTick(at=at, local=local, note="; ".join(notes)))
        previous = at
    return result


def _gap_notes(spec: CronSpec, previous: float, at: float, local: datetime) -> Iterator[str]:
    """Notes for the spring changes between two ticks whose skipped wall times the cron matches."""
    for change in _changes(spec.zone, previous, at):
        old, new = _offset(spec.zone, change - 1), _offset(spec.zone, change)
        if new <= old:
            continue  # clocks went back: the ticks themselves say so (_fold_note)
        start = datetime.fromtimestamp(change - 1, spec.zone).replace(tzinfo=None) + timedelta(seconds=1)
        end = datetime.fromtimestamp(change, spec.zone).replace(tzinfo=None)
        skipped = spec.nominal_between(start, end)
        if not skipped:
            continue
        on = "" if start.date() == local.date() else f" on {start.date().isoformat()}"
        if len(skipped) <= 3:
            times = _join([_hm(w) for w in skipped])
        else:
            times = f"the {len(skipped)} times from {_hm(skipped[0])} to {_hm(skipped[-1])}"
        verb = "does" if len(skipped) == 1 else "do"
        if spec.fixed_time and at == change:
            yield f"clocks go forward{on} at {_hm(start)}: {times} {verb} not exist, fires at {_hm(end)} (the change)"
        else:
            them = "it" if len(skipped) == 1 else "them"
            yield f"clocks go forward{on} at {_hm(start)}: {times} {verb} not exist, no tick for {them}"
