"""The schedules routes: list, one schedule with its next ticks, its tick records, pause, resume and
remove. A schedule has an ``owner`` (None: nobody's, e.g. declared in code): without view-others a
user sees only their own; changing one needs ``can_modify`` of its owner. Each change is audited."""

from __future__ import annotations

from ..app_schedules import ScheduleNotFound
from ..schedule_types import ScheduleRecord, TickRecord
from . import access
from .errors import NotFound
from .routing import Call, Router
from .schemas import Changed, ForceQuery, Page, PageQuery, Removed, ScheduleDetail, TicksQuery

router = Router("schedules")


def owner_of(record: ScheduleRecord) -> str | None:
    """Whose schedule it is (None: nobody's)."""
    return record.owner


def missing(name: str) -> str:
    """The one message for a schedule that does not exist, or that the user may not see."""
    return str(ScheduleNotFound(name))


def find_schedule(call: Call, name: str) -> ScheduleRecord:
    """The schedule; 404 if there is none or the user may not see it."""
    record = call.app.backend.get_schedule(name)
    if record is None or not call.user.can_view(owner_of(record)):
        raise NotFound(missing(name))
    return record


def changeable_schedule(call: Call, name: str) -> ScheduleRecord:
    """The schedule, if the user may change it (404 / 403 otherwise)."""
    record = find_schedule(call, name)
    access.modifiable(call.user, owner_of(record), missing(name), f"schedule {name!r}")
    return record


#: from a listed schedule to the routes of that schedule
SCHEDULE_LINKS = tuple(
    (name, f"schedules_{name}", "name", "/items/0/name")
    for name in ("get_schedule", "schedule_ticks", "pause_schedule", "resume_schedule", "remove_schedule")
)


@router.get("/api/schedules", query=PageQuery, answer=Page[ScheduleRecord], links=SCHEDULE_LINKS)
def list_schedules(call: Call) -> Page[ScheduleRecord]:
    """Every stored schedule the caller may see, by name."""
    wanted: PageQuery = call.query
    records = [r for r in call.app.schedules() if call.user.can_view(owner_of(r))]
    end = wanted.offset + wanted.limit
    return Page(items=records[wanted.offset : end], next_offset=end if len(records) > end else None)


@router.get("/api/schedules/{name}", answer=ScheduleDetail, errors=(404,))
def get_schedule(call: Call) -> ScheduleDetail:
    """One schedule, its spec in words and its next ten ticks in its zone (with DST notes)."""
    record = find_schedule(call, call.params["name"])
    app = call.app
    return ScheduleDetail(schedule=record, description=app.describe_schedule(record),
                          next=app.explain_schedule(record.name, 10))  # fmt: skip


@router.get("/api/schedules/{name}/ticks", query=TicksQuery, answer=Page[TickRecord], errors=(404,))
def schedule_ticks(call: Call) -> Page[TickRecord]:
    """The schedule's tick records, newest first: enqueued (and the job), skipped, missed."""
    record = find_schedule(call, call.params["name"])
    wanted: TicksQuery = call.query
    return Page(items=call.app.schedule_ticks(record.name, wanted.limit), next_offset=None)


@router.post("/api/schedules/{name}/pause", answer=Changed, errors=(403, 404))
def pause_schedule(call: Call) -> Changed:
    """Stop the schedule's ticks until resumed."""
    record = changeable_schedule(call, call.params["name"])
    changed = call.app.pause_schedule(record.name)
    call.audit("schedule.pause", record.name, {"changed": changed})
    return Changed(changed=changed)


@router.post("/api/schedules/{name}/resume", answer=Changed, errors=(403, 404))
def resume_schedule(call: Call) -> Changed:
    """Start a paused schedule again from its first tick after now (no burst of missed ticks)."""
    record = changeable_schedule(call, call.params["name"])
    changed = call.app.resume_schedule(record.name)
    call.audit("schedule.resume", record.name, {"changed": changed})
    return Changed(changed=changed)


@router.delete("/api/schedules/{name}", query=ForceQuery, answer=Removed, errors=(403, 404, 422))
def remove_schedule(call: Call) -> Removed:
    """Remove a schedule and its tick records (its jobs stay).

    One declared in code needs ``force`` (a worker puts it back at its next start otherwise)."""
    record = changeable_schedule(call, call.params["name"])
    wanted: ForceQuery = call.query
    call.app.unschedule(record.name, force=wanted.force)
    call.audit("schedule.remove", record.name, {"force": wanted.force})
    return Removed(removed=True)
