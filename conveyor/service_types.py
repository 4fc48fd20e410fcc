"""Services as the store holds them: plain values shared by the worker's keeper
(``conveyor.worker.services``), the decisions in ``conveyor.service_policy``, the stores and the App.

A service instance (``orders-eu``, of the service ``consume_orders``) has one row per replica. A row
says what is wanted (``wanted``: running or stopped; ``generation``: bumped by a restart or a reload)
and what is so (``status``, the worker holding it, its fencing ``token`` and ``lease_until``, the
``run_generation`` it runs). A worker holds a row with a lease its keeper renews, like a job's run;
when the lease runs out any worker serving the queue may take the row over.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class ServiceStatus(enum.StrEnum):
    """Where one replica of a service instance is."""

    PENDING = "pending"  #: wanted running, held by no worker (new, handed back, or waiting its restart back-off)
    STARTING = "starting"  #: taken by a worker, its function not started yet (its context being entered)
    RUNNING = "running"  #: its function runs on ``worker_id``
    STOPPING = "stopping"  #: asked to stop (stop, restart, reload): its worker is stopping it
    STOPPED = "stopped"  #: stopped on purpose; stays so, across worker restarts, until started again
    FAILED = "failed"  #: crashed ``max_crashes`` times within ``crash_window``; ``last_error`` says why


#: Statuses in which a worker holds the row (a worker id, a token, a lease).
HELD = frozenset({ServiceStatus.STARTING, ServiceStatus.RUNNING, ServiceStatus.STOPPING})


class ServiceSource(enum.StrEnum):
    """Who made a service instance."""

    CODE = "code"  #: a worker's sync of an ``@app.service`` with autostart (its default instance)
    API = "api"  #: ``app.start_service`` (or the CLI, or the HTTP API)
    LOCAL = "local"  #: an ``@app.service(local=True)`` instance of one worker process, named ``service@worker_id``


class ServiceAction(enum.StrEnum):
    """A request to an instance (``control_service``)."""

    START = "start"  #: wanted running again (a STOPPED or FAILED one is PENDING again, its crashes forgotten)
    STOP = "stop"  #: wanted stopped: a held replica is STOPPING until its worker stops it, an unheld one STOPPED
    RESTART = "restart"  #: stop, then start with the stored parameters (generation + 1)
    RELOAD = "reload"  #: as restart, with new parameters written first (generation + 1)


class ServiceError(msgspec.Struct, kw_only=True, frozen=True):
    """Why a service's run crashed."""

    type: str
    message: str
    traceback: str | None = None


class ServiceSpec(msgspec.Struct, kw_only=True, frozen=True):
    """A new service instance, for ``create_service``: ``replicas`` rows, wanted running, PENDING."""

    name: str  #: the instance's name (unique in the store)
    service: str  #: the ``@app.service`` it runs
    queue: str  #: workers serving this queue run it
    params: dict[str, Any] = {}  #: the function's keyword arguments (JSON values)
    replicas: int = 1
    source: ServiceSource = ServiceSource.API
    local_to: str | None = None  #: LOCAL: the only worker that may take it
    wanted: bool = True  #: False: created STOPPED
    owner: str | None = None  #: the user it belongs to (None: nobody's; seen only by users with view-others)


class ServiceRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One replica of a service instance, as stored."""

    name: str
    replica: int  #: 0 .. replicas - 1
    service: str
    queue: str
    params: dict[str, Any]
    source: ServiceSource
    local_to: str | None
    wanted: bool  #: running (True) or stopped (False) is what the user asked for
    generation: int  #: bumped by every restart and reload; a run of an older one must stop
    status: ServiceStatus
    worker_id: str | None  #: who holds it (HELD statuses), else who held it last
    token: str | None  #: the current run's fencing token (HELD statuses only)
    lease_until: float | None  #: HELD: the holder's lease; past it, any worker may take the row over
    run_generation: int | None  #: the generation the holder runs
    started_at: float | None  #: when the current (or last) run's function started
    free_since: float | None  #: when it was last let go (PENDING): spreading waits on it
    not_before: float  #: PENDING: not taken before this (a crash's back-off)
    restarts: int  #: runs started again after a crash or an unasked exit
    crashes: list[float]  #: when its recent runs crashed (those within the crash window)
    last_error: ServiceError | None
    created_at: float
    updated_at: float
    owner: str | None = None  #: the user the instance belongs to (None: nobody's), the same on every replica

    @property
    def held(self) -> bool:
        """True while a worker holds this replica (its lease may have run out)."""
        return self.status in HELD


class ServiceEnd(msgspec.Struct, kw_only=True, frozen=True):
    """How a replica's run ended, decided in Python (``conveyor.service_policy``), written by
    ``end_service_run``: the row's new status and what goes with it, and the event to append."""

    status: ServiceStatus  #: PENDING (free to take: handed back, reload, restart after a crash), STOPPED or FAILED
    not_before: float  #: PENDING: when it may be taken (now, or after the crash back-off)
    restarted: bool = False  #: counts as a restart (a crash, or the function returned unasked)
    crashes: list[float] | None = None  #: the crash times to keep (None: leave them)
    error: ServiceError | None = None  #: the crash's error (None: leave ``last_error``)
    event: str  #: the EventKind to append (service_stopped, service_crashed, service_failed, service_handed_back)
    data: dict[str, Any] = {}  #: the event's payload (besides the instance and replica, which the store adds)
