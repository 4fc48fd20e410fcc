"""``app.health()``: one structured report on whether this deployment can do its work, for a
container's liveness or readiness probe (``conveyor health`` exits non-zero when it is unhealthy).

It never raises for the store's sake: an unreachable or broken store is itself the finding.
Unhealthy means: the store cannot be reached or used, its schema is not the one this conveyor
needs, or a queue has no live worker while it has jobs due (unless it is paused, or everything
is disabled) or while the caller named it (``queues=``). A missing leader is reported, not
judged: a deployment may run every worker with ``--no-leader`` for a while.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .backends import StoreMissing, describe_url, open_backend
from .errors import StoreError, StoreUnavailable
from .leader import LOCK as LEADER_LOCK
from .operations import WorkerState, stale_after

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend


class Health(msgspec.Struct, kw_only=True):
    """What ``app.health()`` found. ``problems`` says, one line each, why it is unhealthy."""

    healthy: bool
    problems: list[str]
    checked_at: float  #: Unix seconds (the app's clock)
    store: str  #: the store's URL, without a password
    reachable: bool  #: the store answered
    latency_ms: float | None = None  #: one round trip to the store
    schema_version: int | None = None  #: the schema the store has (None: none, or not reachable)
    schema_latest: int | None = None  #: the schema this conveyor needs
    schema_current: bool = False
    leader: str | None = None  #: the worker holding the leader lock, if any
    workers_alive: dict[str, int] = {}  #: queue -> live workers serving it (heartbeat within ``stale_after``)
    oldest_due_age: dict[str, float] = {}  #: queue -> seconds its oldest due queued job has waited
    paused_queues: list[str] = []
    everything_disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON values (``conveyor health --json``)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result


def check_health(app: App, queues: Sequence[str] | None = None, stale: float | None = None) -> Health:
    """The report for ``app``'s store at the app's clock's now. ``queues``: queues that must have
    a live worker whatever their jobs; ``stale``: seconds without a heartbeat after which a worker
    is not alive (default ``operations.stale_after(app.lease)``)."""
    named = list(dict.fromkeys(queues or ()))
    for queue in named:
        if not isinstance(queue, str) or not queue.strip():
            raise ValueError(f"a queue name must be a non-empty string, got {queue!r}")
    stale = stale_after(app.lease) if stale is None else stale
    if isinstance(stale, bool) or not isinstance(stale, (int, float)) or not stale > 0:
        raise ValueError(f"stale_after must be > 0 seconds, got {stale!r}")
    now = app.clock()
    report = Health(healthy=False, problems=[], checked_at=now, store=describe_url(app.url), reachable=False)
    try:
        backend = _reach(app, report)
        if backend is None:
            return report
        _inspect(backend, report, named, now, stale)
    except StoreUnavailable as exc:
        report.reachable = False
        report.problems.append(f"store unreachable: {_line(exc)}")
    except StoreError as exc:
        report.problems.append(f"store error: {_line(exc)}")
    report.healthy = not report.problems
    return report


def _reach(app: App, report: Health) -> Backend | None:
    """The app's store, its schema and one round trip's latency, noted in ``report``; None
    (with the problem noted) if it cannot be used."""
    try:
        # A probe first: a missing SQLite file is reported, never created; an outage is the
        # finding at once, with no wait for a pool's retries.
        open_backend(app.url, migrate=False, must_exist=True, fail_on_outage=True).close()
        backend = app.backend  # opened (and migrated, if the app may) on first use
    except StoreMissing as exc:
        report.problems.append(_line(exc))
        return None
    except StoreUnavailable as exc:
        report.problems.append(f"store unreachable: {_line(exc)}")
        return None
    except StoreError as exc:  # maybe its schema is not current (App(migrate=False)): say which
        _schema_of_unusable(app, report, exc)
        return None
    started = time.perf_counter()
    current, latest = backend.schema_versions()
    report.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    report.reachable = True
    _note_schema(report, current, latest)
    return backend


def _schema_of_unusable(app: App, report: Health, error: StoreError) -> None:
    """The app could not open its store: read its schema without migrating, to tell an old
    schema from a broken store; note what was found."""
    probe = None
    try:
        probe = open_backend(app.url, migrate=False)
        started = time.perf_counter()
        current, latest = probe.schema_versions()
        report.latency_ms = round((time.perf_counter() - started) * 1000, 3)
    except StoreUnavailable as exc:
        report.problems.append(f"store unreachable: {_line(exc)}")
        return
    except StoreError:
        report.problems.append(f"store error: {_line(error)}")
        return
    finally:
        if probe is not None:
            probe.close()
    report.reachable = True
    _note_schema(report, current, latest)
    if report.schema_current:  # the schema is fine: something else is wrong
        report.problems.append(f"store error: {_line(error)}")


def _note_schema(report: Health, current: int | None, latest: int) -> None:
    report.schema_version, report.schema_latest = current, latest
    report.schema_current = current == latest
    if not report.schema_current:
        report.problems.append(
            f"schema version {current if current is not None else 'none'}, this conveyor needs {latest}:"
            " run `conveyor migrate`"
        )


def _inspect(backend: Backend, report: Health, named: list[str], now: float, stale: float) -> None:
    """Workers, switches, leader and due jobs: which queue lacks a live worker."""
    switches = backend.switches()
    report.paused_queues = sorted(switches.paused_queues)
    report.everything_disabled = switches.everything
    report.leader = backend.lock_owner(LEADER_LOCK, now)
    alive: dict[str, int] = {}
    for worker in backend.list_workers():
        if worker.state is WorkerState.RUNNING and worker.last_seen >= now - stale:
            for queue in worker.queues:
                alive[queue] = alive.get(queue, 0) + 1
    oldest = backend.oldest_due(now)
    report.oldest_due_age = {queue: round(max(0.0, now - due), 3) for queue, due in sorted(oldest.items())}
    for queue in sorted(set(oldest) | set(named)):
        alive.setdefault(queue, 0)
    report.workers_alive = dict(sorted(alive.items()))
    for queue in named:
        if not alive[queue]:
            report.problems.append(f"queue {queue!r}: no live worker")
    for queue, age in report.oldest_due_age.items():
        if queue in named or alive[queue] or queue in switches.paused_queues or switches.everything:
            continue
        report.problems.append(f"queue {queue!r}: jobs due (the oldest for {age:.0f} s) and no live worker")


def _line(exc: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
