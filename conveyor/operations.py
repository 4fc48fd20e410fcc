"""What the store holds about operations, beside the jobs: the worker registry and the switches
that pause queues and disable tasks (docs/events.md). Plain values; the App and the CLI read them,
with the few rules that read them (``queue_infos``, ``workers_to_stop``, ``stale_after``)."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import msgspec

from .job import Status


class WorkerState(enum.StrEnum):
    """Where a registered worker process is in its life."""

    RUNNING = "running"
    STOPPING = "stopping"  #: stopping gracefully: claims no more, finishes or hands back its jobs
    STOPPED = "stopped"  #: ended cleanly
    DEAD = "dead"  #: its heartbeat stopped; the leader marked it (its jobs are rescued by lease expiry)


class WorkerInfo(msgspec.Struct, kw_only=True, gc=False):
    """One worker process as it registers itself, refreshed with its heartbeat."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    version: str
    started_at: float
    last_seen: float
    in_flight: int = 0  #: jobs running now
    state: WorkerState = WorkerState.RUNNING
    stop_requested: bool = False  #: ``stop_workers`` asked it to stop; it does at its next heartbeat
    leader: bool = False  #: held the leader lock at its last heartbeat


class SwitchScope(enum.StrEnum):
    """What a switch turns off: a queue (paused: not claimed from), a task (disabled: its queued
    jobs stay queued), or everything (``disable_all``: nothing is claimed)."""

    QUEUE = "queue"
    TASK = "task"
    ALL = "all"  #: its name is always ''


class Switches(msgspec.Struct, kw_only=True, frozen=True):
    """Everything turned off right now. A claim never takes a job of a paused queue or a disabled
    task, nor any job while ``everything`` is off; enqueueing is never refused."""

    paused_queues: frozenset[str] = frozenset()
    disabled_tasks: frozenset[str] = frozenset()
    everything: bool = False


class QueueInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One queue as ``app.queues()`` and ``conveyor queues`` show it: whether it is paused, its
    jobs by status (queued: due now; scheduled: due later) and when its oldest due job fell due."""

    name: str
    paused: bool = False
    queued: int = 0
    scheduled: int = 0
    running: int = 0
    failed: int = 0
    oldest_due: float | None = None  #: Unix seconds: the due time of its oldest queued job due now


def stale_after(lease: float) -> float:
    """Seconds without a heartbeat after which a registered worker counts as gone: three lease
    renewals missed, and never less than 10 s (so a busy store's slow beat is not a death)."""
    return max(3 * lease, 10.0)


def check_name(what: str, name: object) -> str:
    """A queue's or task's name for a switch: a non-empty string. Raises ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    return name


def queue_infos(
    counts: Mapping[tuple[str, Status], int], oldest_due: Mapping[str, float], switches: Switches
) -> list[QueueInfo]:
    """Every queue that has jobs or is paused, by name: ``counts`` by (queue, status) as
    ``Backend.counts`` gives them, ``oldest_due`` as ``Backend.oldest_due`` does."""
    tally: dict[str, dict[Status, int]] = {}
    for (queue, status), n in counts.items():
        tally.setdefault(queue, {})[status] = n
    names = sorted(set(tally) | set(oldest_due) | set(switches.paused_queues))
    return [
        QueueInfo(
            name=name,
            paused=name in switches.paused_queues,
            queued=tally.get(name, {}).get(Status.QUEUED, 0),
            scheduled=tally.get(name, {}).get(Status.SCHEDULED, 0),
            running=tally.get(name, {}).get(Status.RUNNING, 0),
            failed=tally.get(name, {}).get(Status.FAILED, 0),
            oldest_due=oldest_due.get(name),
        )
        for name in names
    ]


def workers_to_stop(workers: list[WorkerInfo], queues: list[str] | None, worker_ids: list[str] | None) -> list[str]:
    """The ids ``stop_workers`` asks: the running workers serving any of ``queues``, or exactly
    ``worker_ids`` (ValueError naming those not registered, or not running or stopping)."""
    if (queues is None) == (worker_ids is None):
        raise ValueError("stop_workers takes exactly one of queues= or worker_ids=")
    if queues is not None:
        wanted = {check_name("queue", queue) for queue in queues}
        if not wanted:
            raise ValueError("stop_workers(queues=...) needs at least one queue name")
        return [w.id for w in workers if w.state is WorkerState.RUNNING and wanted.intersection(w.queues)]
    assert worker_ids is not None
    ids = list(dict.fromkeys(check_name("worker id", worker_id) for worker_id in worker_ids))
    if not ids:
        raise ValueError("stop_workers(worker_ids=...) needs at least one worker id")
    live = {w.id for w in workers if w.state in (WorkerState.RUNNING, WorkerState.STOPPING)}
    unknown = [worker_id for worker_id in ids if worker_id not in live]
    if unknown:
        known = {w.id for w in workers}
        said = ", ".join(f"{i} ({'not running' if i in known else 'not registered'})" for i in unknown)
        raise ValueError(f"no running worker with id: {said}")
    return ids
