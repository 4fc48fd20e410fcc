"""Who may do what through the API, in one place (the rules themselves are ``accounts.User``'s:
``can_view``, ``can_modify``, ``can_write``, ``has``). Enforced here, and only here: the App and
the stores trust their caller.

- A row the user may not see answers 404, exactly as if it did not exist: a user never learns that
  another user's job (schedule, service) exists.
- A row they may see but not change answers 403; so does every change by a read-only user.
- Lists hold only the user's own rows unless they have view-others (``list_owner``).
- New rows belong to the caller; only a system user may name another owner (``new_owner``).
- Queue pause/resume and task switches need modify-others; users, others' tokens, prune, stopping
  workers and the audit log need system.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..accounts import Permission, User
from ..events import Event
from .errors import Forbidden, NotFound

if TYPE_CHECKING:
    from ..app import App


def can_see(user: User, owner: str | None) -> bool:
    """Whether ``user`` may see a row owned by ``owner``."""
    return user.can_view(owner)


def visible(user: User, owner: str | None, missing: str) -> None:
    """404 with ``missing`` (the same message as for a row that does not exist) unless ``user`` may
    see a row owned by ``owner``."""
    if not user.can_view(owner):
        raise NotFound(missing)


def modifiable(user: User, owner: str | None, missing: str, what: str) -> None:
    """404 unless ``user`` may see the row; 403 unless they may change it (``what``: the row, for the
    message)."""
    visible(user, owner, missing)
    if user.read_only:
        raise Forbidden(f"{user.name} is read-only: they cannot change {what}")
    if not user.can_modify(owner):
        raise Forbidden(f"{what} belongs to {owner or 'nobody'}: changing it needs the modify-others permission")


def writer(user: User) -> None:
    """403 for a read-only user: they change nothing, not even their own."""
    if not user.can_write:
        raise Forbidden(f"{user.name} is read-only: they cannot change anything")


def operator(user: User, what: str) -> None:
    """403 unless ``user`` may change what is nobody's row (pause a queue, disable a task): modify-others."""
    writer(user)
    if not user.has(Permission.MODIFY_OTHERS):
        raise Forbidden(f"{what} needs the modify-others permission")


def system(user: User, what: str) -> None:
    """403 unless ``user`` has the system permission."""
    if not user.has(Permission.SYSTEM):
        raise Forbidden(f"{what} needs the system permission")


def list_owner(user: User) -> str | None:
    """The owner a list is restricted to: the user's own rows, or None (every row) with view-others."""
    return None if user.has(Permission.VIEW_OTHERS) else user.name


def new_owner(user: User, given: str | None) -> str:
    """The owner of a row the user makes: themselves, or (a system user only) the one given."""
    writer(user)
    if given is None or given == user.name:
        return user.name
    if not user.has(Permission.SYSTEM):
        raise Forbidden("only a system user may make a row owned by someone else (owner)")
    return given


class EventFilter:
    """Which events of the log a user may see, for the event list and the stream: everything with
    view-others; else a job's events only if the job is theirs, a schedule's or a service instance's
    only if it is theirs, and the operations' events (queues, tasks, workers: nobody's rows) always.

    Owners are looked up in the store once and remembered for ``ttl`` seconds (a job's never
    changes); ``known`` answers from memory alone, ``visible`` may read the store (call it in a thread)."""

    def __init__(self, app: App, *, ttl: float = 30.0, size: int = 50_000) -> None:
        self.app = app
        self.ttl = ttl
        self.size = size
        self._owners: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def subject(event: Event) -> tuple[str, str] | None:
        """The owned row an event is about: ("job", id), ("schedule", name), ("service", instance);
        None for the operations' events, which everyone may see."""
        if event.job_id is not None:
            return ("job", event.job_id)
        named = event.data.get("schedule") if event.kind.startswith("schedule_") else None
        if isinstance(named, str):
            return ("schedule", named)
        named = event.data.get("service") if event.kind.startswith("service_") else None
        if isinstance(named, str):
            return ("service", named)
        if event.kind.startswith(("schedule_", "service_")):
            return ("unknown", "")  # about an owned row, but which one is not said: seen with view-others only
        return None

    def known(self, user: User, event: Event) -> bool | None:
        """Whether ``user`` may see ``event``, from memory; None when its owner must be read."""
        if user.has(Permission.VIEW_OTHERS):
            return True
        subject = self.subject(event)
        if subject is None:
            return True
        if subject[0] == "unknown":
            return False
        with self._lock:
            cached = self._owners.get(subject)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1] is not None and cached[1] == user.name

    def visible(self, user: User, event: Event) -> bool:
        """Whether ``user`` may see ``event``, reading its row's owner from the store if need be."""
        known = self.known(user, event)
        if known is not None:
            return known
        subject = self.subject(event)
        assert subject is not None
        owner = self._read_owner(*subject)
        with self._lock:
            if len(self._owners) >= self.size:
                self._owners.clear()
            self._owners[subject] = (time.monotonic() + self.ttl, owner)
        return owner is not None and owner == user.name

    def filter(self, user: User, events: list[Event]) -> list[Event]:
        """The events ``user`` may see, in order."""
        if user.has(Permission.VIEW_OTHERS):
            return events
        return [event for event in events if self.visible(user, event)]

    def _read_owner(self, kind: str, name: str) -> str | None:
        """The owner of a job, schedule or service instance (None: nobody's, or gone)."""
        backend = self.app.backend
        if kind == "job":
            job = backend.get(name)
            return None if job is None else job.owner
        if kind == "schedule":
            record = backend.get_schedule(name)
            return None if record is None else record.owner
        rows = backend.list_services(name)
        return rows[0].owner if rows else None
