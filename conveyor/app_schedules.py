"""The App's schedule side: schedules declared in code (``@app.periodic``) and stored at run time
(``app.schedule``), their control and audit trail, the sync a worker does at start, and the
in-process ``@app.repeat`` functions. A part of ``App`` (a mixin), kept apart so app.py stays a
thin facade. Ticks are fired by ``conveyor.scheduler``; what a tick does is decided by
``conveyor.scheduling`` and written once by the store (``Schedules.fire``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec

from .errors import ConveyorError
from .refs import refs_in
from .schedule_types import Missed, Overlap, ScheduleRecord, Source, TickRecord
from .scheduler import Repeat

if TYPE_CHECKING:
    from .backends.base import Backend
    from .schedule import ExplainedTick, Spec
    from .stages import Pipeline
    from .task import Signature, Task

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("conveyor.schedules")

MAX_NAME = 200  #: longest schedule name
SPEC_FIELDS = ("cron", "tz", "every", "anchor")  #: what decides the ticks: a change recomputes next_at
KEPT_FIELDS = (*SPEC_FIELDS, "target", "missed", "catch_up", "grace", "overlap", "jitter", "source")
#: call options a schedule's target cannot keep: each tick makes a new job, due at its tick
UNKEPT_CALL_OPTIONS = ("id", "key", "delay", "eta", "connection", "owner", "notify")


class ScheduleNotFound(ConveyorError, LookupError):
    """No schedule of that name is stored (never was, or was removed or retired)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}")
        self.name = name


class Synced(NamedTuple):
    """What ``sync_schedules`` changed: code schedules written (new or changed), and retired."""

    put: list[str]
    retired: list[str]


class SchedulesMixin:
    """``App``'s schedule methods."""

    tasks: dict[str, Task[Any, Any]]
    clock: Callable[[], float]
    periodic_schedules: dict[str, ScheduleRecord]
    repeats: dict[str, Repeat]

    @property
    def backend(self) -> Backend:
        raise NotImplementedError  # App's

    def task(self, fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
        raise NotImplementedError  # App's

    # declaring in code ------------------------------------------------------------------------------------
    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        name: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        missed: Missed | str = Missed.LATEST,
        catch_up: float = 3600.0,
        grace: float = 30.0,
        overlap: Overlap | str = Overlap.SKIP,
        jitter: float = 0.0,
        anchor: float | datetime | None = None,
        **task_options: Any,
    ) -> Callable[[F], Task[Any, Any]]:
        """Declare the function as a task (``task_options`` as ``@app.task``'s: queue, priority,
        max_retries, timeout...) and a schedule that enqueues it with ``args``/``kwargs`` at each tick.

        ``name`` names the task and its schedule (default: module.qualname). ``cron`` (5 fields, or 6
        with seconds) in the zone ``tz``, or ``every`` (seconds or a timedelta) counted from ``anchor``
        (Unix seconds or a datetime, naive meaning UTC; default the epoch), never both. Policies: ``missed``
        (latest, earliest, skip, all: ticks that fell due while no scheduler ran, within ``catch_up``
        seconds; a tick fired within ``grace`` seconds of falling due is on time), ``overlap`` (skip:
        no tick while the previous job is unfinished; allow), ``jitter`` (each job is due up to this
        many seconds after its tick). Checked here: ValueError naming the bad one, nothing declared.
        Workers put it into the store when they start (``sync_schedules``)."""
        record = check_schedule(
            name or "periodic", {"kind": "call"}, cron=cron, every=every, tz=tz, missed=missed, catch_up=catch_up,
            grace=grace, overlap=overlap, jitter=jitter, anchor=anchor, source=Source.CODE,
        )  # fmt: skip
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {kwargs!r}")
        from .stages import freeze_target
        from .task import CallOptions, Signature, make_options

        options = make_options(**task_options)  # a bad task option fails before anything is registered

        def register(fn: F) -> Task[Any, Any]:
            task_name = check_name(name or f"{fn.__module__}.{fn.__qualname__}")
            call = Signature(self, task_name, tuple(args), dict(kwargs or {}), options, CallOptions())  # type: ignore[arg-type]
            declared = msgspec.structs.replace(record, name=task_name, target=check_target(freeze_target(call)))
            self._check_declared(declared)  # everything is checked before the task is registered
            task: Task[Any, Any] = self.task(fn, name=name, **task_options)
            self.periodic_schedules[task_name] = declared
            return task

        return register

    def declare_schedule(
        self,
        name: str,
        target: Signature | Pipeline,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        missed: Missed | str = Missed.LATEST,
        catch_up: float = 3600.0,
        grace: float = 30.0,
        overlap: Overlap | str = Overlap.SKIP,
        jitter: float = 0.0,
        anchor: float | datetime | None = None,
    ) -> ScheduleRecord:
        """Declare in code a schedule of an existing task call (``task.s(...)``) or pipeline, as
        ``@app.periodic`` does for a new task: synced into the store by workers, retired when no
        longer declared. The same arguments as ``schedule``; returns the declared record."""
        record = check_schedule(
            name, _frozen(target), cron=cron, every=every, tz=tz, missed=missed, catch_up=catch_up, grace=grace,
            overlap=overlap, jitter=jitter, anchor=anchor, source=Source.CODE,
        )  # fmt: skip
        self._check_declared(record)
        self.periodic_schedules[name] = record
        return record

    def _check_declared(self, record: ScheduleRecord) -> None:
        """A name is declared once (the same declaration again is a module imported twice: fine)."""
        known = self.periodic_schedules.get(record.name)
        if known is not None and _fields(known, KEPT_FIELDS) != _fields(record, KEPT_FIELDS):
            raise ValueError(f"a different schedule is already declared as {record.name!r}")

    def repeat(self, seconds: float, *, name: str | None = None, at_start: bool = False) -> Callable[[F], F]:
        """Run the function every ``seconds`` in each worker process of this app, on a thread of
        its own, while the worker runs (first ``seconds`` after it starts, or at once with
        ``at_start``). Not persisted, not a job: no retries, no record. An error is logged and the
        next run comes as usual; a run still going when the next falls due delays it (no burst).
        An ``async def`` runs on an event loop of its own."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"repeat needs a number of seconds > 0, got {seconds!r}")
        if seconds <= 0:
            raise ValueError(f"repeat needs a number of seconds > 0, got {seconds!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@app.repeat decorates a function, got {fn!r}")
            repeat_name = name or f"{fn.__module__}.{fn.__qualname__}"
            known = self.repeats.get(repeat_name)
            if known is not None and known.fn is not fn:
                raise ValueError(f"a different function already repeats as {repeat_name!r}")
            self.repeats[repeat_name] = Repeat(repeat_name, fn, float(seconds), at_start=bool(at_start))
            return fn

        return register

    # stored at run time ---------------------------------------------------------------------------------------
    def schedule(
        self,
        name: str,
        target: Signature | Pipeline,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        missed: Missed | str = Missed.LATEST,
        catch_up: float = 3600.0,
        grace: float = 30.0,
        overlap: Overlap | str = Overlap.SKIP,
        jitter: float = 0.0,
        anchor: float | datetime | None = None,
        owner: str | None = None,
    ) -> ScheduleRecord:
        """Store a schedule now: each tick enqueues ``target`` (``task.s(...)`` or a Pipeline; no
        references: a tick has no job to take them from). It lives in the store, surviving restarts,
        until ``unschedule``. Storing it again under the same name replaces its spec, target and
        policies, keeping its history and paused state; an unchanged spec keeps its next tick. See
        ``periodic`` for the arguments; ``owner``: the user it belongs to (the web side shows it only
        to them, and to users who may view others'; None: nobody's). ValueError (nothing stored) for
        anything invalid, or a name declared in code. Returns the stored record."""
        if owner is not None and (not isinstance(owner, str) or not owner):
            raise ValueError(f"owner must be a non-empty string or None, got {owner!r}")
        record = check_schedule(
            name, _frozen(target), cron=cron, every=every, tz=tz, missed=missed, catch_up=catch_up, grace=grace,
            overlap=overlap, jitter=jitter, anchor=anchor, source=Source.STORED,
        )  # fmt: skip
        if name in self.periodic_schedules:
            raise ValueError(f"schedule {name!r} is declared in this app's code; change it there")
        backend = self.backend
        existing = backend.get_schedule(name)
        if existing is not None and existing.source is Source.CODE:
            raise ValueError(f"schedule {name!r} is declared in code (@app.periodic); change it there")
        now = self.clock()
        record.next_at = _next_at(record, existing, now)
        record.owner = owner
        backend.put_schedule(record, now)
        stored = backend.get_schedule(name)
        if stored is None:  # removed in between
            raise ScheduleNotFound(name)
        return stored

    # reading and control ------------------------------------------------------------------------------------
    def schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule, by name (code schedules once a worker has synced them)."""
        return self.backend.list_schedules()

    def get_schedule(self, name: str) -> ScheduleRecord:
        """The stored schedule of that name; raises ScheduleNotFound."""
        record = self.backend.get_schedule(name)
        if record is None:
            raise ScheduleNotFound(name)
        return record

    def unschedule(self, name: str, *, force: bool = False) -> None:
        """Remove a schedule and its tick history (its jobs stay). A schedule declared in code is
        refused (a worker would put it back at its next start: remove it from the code, or pause
        it) unless ``force``. Raises ScheduleNotFound."""
        record = self.get_schedule(name)
        if record.source is Source.CODE and not force:
            raise ValueError(
                f"schedule {name!r} is declared in code (@app.periodic): remove it there and it is retired when a "
                "worker starts, or pause it; force=True (--force) removes it now"
            )
        if not self.backend.remove_schedule(name, self.clock()):
            raise ScheduleNotFound(name)

    def pause_schedule(self, name: str) -> bool:
        """Stop the schedule's ticks until ``resume_schedule``; False if it already was paused.
        Raises ScheduleNotFound."""
        record = self.get_schedule(name)
        if record.paused:
            return False
        return self.backend.pause_schedule(name, True, None, self.clock())

    def resume_schedule(self, name: str) -> bool:
        """Start a paused schedule again from its first tick after now: no burst of the ticks it
        skipped, which are recorded as one SKIPPED_PAUSED tick (``data``: count, until). False if
        it was not paused. Raises ScheduleNotFound."""
        from .schedule import spec_of
        from .scheduling import plan_resume

        record = self.get_schedule(name)
        if not record.paused:
            return False
        now = self.clock()
        planned = plan_resume(record, spec_of(record), now)
        if not self.backend.pause_schedule(name, False, planned.next_at, now):
            return False  # resumed meanwhile by another caller, who records the skipped ticks
        if planned.ticks:  # no tick is due before planned.next_at: this compare-and-set only records them
            self.backend.fire(name, planned.next_at, planned.next_at, planned.ticks, now)
        return True

    def schedule_ticks(self, name: str, limit: int = 50) -> list[TickRecord]:
        """The schedule's audit trail, newest first: each tick's outcome (enqueued and its job,
        skipped because the previous job overlapped or while paused, missed). Raises ScheduleNotFound."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        self.get_schedule(name)
        return self.backend.ticks(name, limit)

    def explain_schedule(self, name: str, count: int = 10) -> list[ExplainedTick]:
        """The schedule's next ``count`` fire times after now, in its zone, with a note where a DST
        change moves one. A schedule declared in this app's code is explained before it is synced."""
        from .schedule import explain, spec_of

        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
            raise ValueError(f"count must be an int from 1 to 1000, got {count!r}")
        record = self.backend.get_schedule(name) or self.periodic_schedules.get(name)
        if record is None:
            raise ScheduleNotFound(name)
        return explain(spec_of(record), self.clock(), count)

    def describe_schedule(self, record: ScheduleRecord) -> str:
        """The schedule's spec in words ("cron '*/5 * * * *' in Europe/Paris", "every 30 s")."""
        from .schedule import spec_of

        return spec_of(record).describe()

    # the sync ---------------------------------------------------------------------------------------------------
    def _owns(self, record: ScheduleRecord) -> bool:
        """Whether this app declares the task(s) the schedule's target runs: a code schedule only
        this app may retire (a pipeline's: all its call stages' tasks)."""
        target = record.target
        if target.get("kind") == "pipeline":
            stages = (target.get("pipeline") or {}).get("stages") or []
            names = [stage.get("task") for stage in stages if stage.get("kind") == "call"]
        else:
            names = [target.get("task")]
        return bool(names) and all(name in self.tasks for name in names)

    def sync_schedules(self) -> Synced:
        """Put the schedules declared in this app's code into the store and retire the code
        schedules it no longer declares, of tasks it does declare (another app sharing the store
        keeps its own); a worker (or ``conveyor scheduler``) does it at start.

        Only what changed is written. A schedule's paused state and tick history are kept; its
        next tick too, unless its spec (cron, tz, every, anchor) changed: re-syncing never skips a
        tick that is due. A stored schedule of the same name is taken over by the code's."""
        backend = self.backend
        now = self.clock()
        stored = {record.name: record for record in backend.list_schedules()}
        put: list[str] = []
        for name, declared in sorted(self.periodic_schedules.items()):
            existing = stored.get(name)
            record = msgspec.structs.replace(declared, next_at=_next_at(declared, existing, now))
            if existing is not None and _fields(existing, (*KEPT_FIELDS, "next_at")) == _fields(
                record, (*KEPT_FIELDS, "next_at")
            ):
                continue
            if existing is not None and existing.source is Source.STORED:
                log.warning("schedule %r stored at run time is replaced by the one declared in code", name)
            backend.put_schedule(record, now)
            put.append(name)
        # retire only the code schedules this app owns, by their tasks: another app sharing the
        # store (or an older deploy of this one) keeps the schedules it declares
        others = [name for name, r in stored.items() if r.source is Source.CODE and not self._owns(r)]
        retired: list[str] = []
        if any(r.source is Source.CODE and name not in self.periodic_schedules and self._owns(r)
               for name, r in stored.items()):  # fmt: skip
            retired = backend.retire_schedules(sorted({*self.periodic_schedules, *others}), now)
        if put or retired:
            log.info("schedules synced: %d put (%s), %d retired (%s)", len(put), ", ".join(put) or "-",
                     len(retired), ", ".join(retired) or "-")  # fmt: skip
        return Synced(put, retired)


# checking ------------------------------------------------------------------------------------------------------
def check_name(name: Any) -> str:
    """A schedule's name: a non-empty string of at most MAX_NAME characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValueError(f"a schedule's name must be a non-empty string of at most {MAX_NAME} characters, got {name!r}")
    return name


def check_schedule(
    name: str,
    target: dict[str, Any],
    *,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    missed: Missed | str,
    catch_up: float,
    grace: float,
    overlap: Overlap | str,
    jitter: float,
    anchor: float | datetime | None,
    source: Source,
) -> ScheduleRecord:
    """Every argument of a schedule checked (the spec by ``schedule.parse_spec``: a bad cron, an
    unknown zone, an interval <= 0), as the record to store (``next_at`` 0: set when stored)."""
    from .schedule import anchor_seconds, parse_spec

    check_name(name)
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    origin = anchor_seconds(anchor)
    parse_spec(cron=cron, every=seconds, tz=tz, anchor=origin)
    policies = {
        "missed": _choice(Missed, missed, "missed"),
        "overlap": _choice(Overlap, overlap, "overlap"),
        "catch_up": _seconds(catch_up, "catch_up"),
        "grace": _seconds(grace, "grace"),
        "jitter": _seconds(jitter, "jitter"),
    }
    if policies["missed"] is Missed.ALL and policies["overlap"] is Overlap.SKIP:
        raise ValueError(
            "missed='all' enqueues every missed tick at once, and overlap='skip' would skip all but the "
            "first: pass overlap='allow' with it"
        )
    return ScheduleRecord(
        name=name,
        cron=cron,
        tz=tz,
        every=None if seconds is None else float(seconds),
        anchor=origin,
        target=target,
        source=source,
        next_at=0.0,
        **policies,
    )


def check_target(target: dict[str, Any]) -> dict[str, Any]:
    """A frozen target with no references outside a pipeline's stages (a tick has no job to take
    them from): ValueError otherwise."""
    parts = [target.get("args"), target.get("kwargs")]
    if target.get("kind") == "pipeline":
        parts = [(target.get("pipeline") or {}).get("settings", {}).get("kws")]
    for part in parts:
        for path in refs_in(part):
            raise ValueError(
                f"a schedule's target cannot use references ({'.'.join(map(str, path))}): a tick has no job "
                "to take them from; give the values"
            )
    return target


def _frozen(target: Any) -> dict[str, Any]:
    """A schedule's target, frozen as ``then=`` holds it (``stages.freeze_target``), checked."""
    from .stages import Pipeline, freeze_target
    from .task import Signature

    if isinstance(target, Signature):
        given = [option for option in UNKEPT_CALL_OPTIONS if getattr(target.call, option) not in (None, False)]
        if given:
            raise ValueError(
                f"a schedule's target cannot keep the call option(s) {', '.join(given)}: each tick makes a new "
                "job, due at its tick; queue, priority, max_retries and timeout are kept"
            )
    elif not isinstance(target, Pipeline):
        raise TypeError(f"a schedule's target is task.s(...) or a Pipeline, got {target!r}")
    return check_target(freeze_target(target))


def _choice(kind: type[Missed] | type[Overlap], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {', '.join(m.value for m in kind)}; got {value!r}") from None


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _fields(record: ScheduleRecord, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(record, field) for field in names)


def _next_at(record: ScheduleRecord, existing: ScheduleRecord | None, now: float) -> float:
    """The next tick to store: the existing one if the spec did not change (a due tick is not
    skipped by storing the schedule again), else the first after now."""
    from .schedule import spec_of

    if existing is not None and _fields(existing, SPEC_FIELDS) == _fields(record, SPEC_FIELDS):
        return existing.next_at
    spec: Spec = spec_of(record)
    return spec.next_after(now)
