"""What a service replica does next, decided once for every store (DESIGN.md: Python decides,
the store writes): whether a run goes on after a renewal, and how a run's end is written (handed
back, stopped, restarted after a back-off, or FAILED after too many crashes). Pure: the time is given.
"""

from __future__ import annotations

import enum
import traceback

from .events import EventKind
from .service_types import ServiceEnd, ServiceError, ServiceRecord, ServiceStatus
from .services import ServiceOptions


class StopReason(enum.StrEnum):
    """Why a run was asked to stop (the keeper's side; ``ServiceContext.why``)."""

    STOP = "stop requested"  #: a user stopped the instance: it ends STOPPED
    RESTART = "restart requested"  #: restart or reload: a new generation is wanted; ends PENDING, at once
    LOST = "lease lost"  #: the row was taken over or removed: nothing is written
    WORKER_STOPPING = "worker stopping"  #: the worker is stopping: handed back for another worker
    UNREACHABLE = "store unreachable"  #: renewals failed for lease / 2: stopped locally, handed back if possible
    UNKNOWN = "service unknown"  #: this worker's app has no such service: handed back for a worker that has


def after_renewal(record: ServiceRecord | None, run_generation: int) -> StopReason | None:
    """Whether the run of ``run_generation`` goes on, given its row as the renewal returned it (None:
    the token is no longer current): None to go on, else why it must stop."""
    if record is None:
        return StopReason.LOST
    if not record.wanted:
        return StopReason.STOP
    if record.generation != run_generation:
        return StopReason.RESTART
    return None


def error_of(exc: BaseException) -> ServiceError:
    """A crash's error as stored: type, message, traceback (the message never empty)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ServiceError(type=type(exc).__name__, message=str(exc) or repr(exc), traceback=text[-8000:])


def stopped(why: StopReason, now: float) -> ServiceEnd:
    """A run that stopped because it was asked: STOPPED for a user's stop, else handed back (PENDING,
    free at once) for the next run, here or on another worker."""
    if why is StopReason.STOP:
        return ServiceEnd(status=ServiceStatus.STOPPED, not_before=now, event=EventKind.SERVICE_STOPPED.value,
                          data={"why": why.value})  # fmt: skip
    return ServiceEnd(status=ServiceStatus.PENDING, not_before=now, event=EventKind.SERVICE_HANDED_BACK.value,
                      data={"why": why.value})  # fmt: skip


def backoff(options: ServiceOptions, crashes: int) -> float:
    """Seconds before the run after the ``crashes``-th crash in the window: backoff * 2^(n-1), capped."""
    if crashes <= 0 or options.backoff == 0:
        return 0.0
    return float(min(options.max_backoff, options.backoff * 2 ** min(crashes - 1, 30)))


def crashed(record: ServiceRecord, options: ServiceOptions, error: ServiceError, now: float) -> ServiceEnd:
    """A run that ended unasked (raised, or returned): restarted after a back-off, or FAILED once it
    crashed ``max_crashes`` times within ``crash_window`` seconds (its error kept, for the user)."""
    window_start = now - options.crash_window
    crashes = [at for at in record.crashes if at > window_start] + [now]
    summary = {"type": error.type, "message": error.message}
    if len(crashes) >= options.max_crashes:
        return ServiceEnd(status=ServiceStatus.FAILED, not_before=now, restarted=False, crashes=crashes, error=error,
                          event=EventKind.SERVICE_FAILED.value,
                          data={"error": summary, "crashes": len(crashes)})  # fmt: skip
    restart_at = now + backoff(options, len(crashes))
    return ServiceEnd(status=ServiceStatus.PENDING, not_before=restart_at, restarted=True, crashes=crashes,
                      error=error, event=EventKind.SERVICE_CRASHED.value,
                      data={"error": summary, "restart_at": restart_at, "crashes": len(crashes)})  # fmt: skip


def returned_unasked() -> ServiceError:
    """The error recorded for a service function that returned while nobody asked it to stop."""
    return ServiceError(type="ServiceReturned", message="the service function returned without being asked to stop")
