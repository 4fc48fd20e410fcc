"""A service replica's row and its events as every SQL store writes and reads them: the column
order, row -> ServiceRecord, the parameters of ``end_service_run``, and each step's event row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import codec
from ..events import EventKind, encode_data
from ..service_types import ServiceAction, ServiceEnd, ServiceError, ServiceRecord, ServiceSource, ServiceStatus
from .rows import EventRow

#: The columns of a service row as every dialect's ``service_columns`` lists them, in ``row_to_service``'s order.
SERVICE_COLUMNS = (
    "name", "replica", "service", "queue", "params", "source", "local_to", "wanted", "generation", "status",
    "worker_id", "token", "lease_until", "run_generation", "started_at", "free_since", "not_before", "restarts",
    "crashes", "last_error", "created_at", "updated_at", "owner",
)  # fmt: skip


def _json(value: Any) -> Any:
    """A JSON column's value decoded (SQLite hands back text, psycopg may hand back the value)."""
    return codec.loads(value) if isinstance(value, str | bytes) else value


def _real(value: Any) -> float | None:
    return None if value is None else float(value)


def checked_replicas(name: str, replicas: int) -> int:
    """An instance's replica count as stored: one at least (removing it is ``remove_service``)."""
    if replicas < 1:
        raise ValueError(f"service instance {name!r}: replicas must be >= 1, got {replicas}")
    return int(replicas)


def checked_control(
    name: str, action: ServiceAction, params: dict[str, Any] | None
) -> tuple[ServiceAction, str | None]:
    """``control_service``'s action and its new parameters as stored (JSON text, or None to keep
    them); only a reload takes parameters."""
    action = ServiceAction(action)
    if params is not None and action is not ServiceAction.RELOAD:
        raise ValueError(f"service instance {name!r}: only a reload takes parameters, not a {action.value}")
    return action, None if params is None else codec.dumps(dict(params))


def row_to_service(row: Sequence[Any]) -> ServiceRecord:
    """A replica from a row of ``SERVICE_COLUMNS``."""
    (name, replica, service, queue, params, source, local_to, wanted, generation, status, worker_id, token,
     lease_until, run_generation, started_at, free_since, not_before, restarts, crashes, last_error, created_at,
     updated_at, owner) = row  # fmt: skip
    error = _json(last_error)
    return ServiceRecord(
        name=name, replica=int(replica), service=service, queue=queue, params=dict(_json(params) or {}),
        source=ServiceSource(source), local_to=local_to, wanted=bool(wanted), generation=int(generation),
        status=ServiceStatus(status), worker_id=worker_id, token=token, lease_until=_real(lease_until),
        run_generation=None if run_generation is None else int(run_generation), started_at=_real(started_at),
        free_since=_real(free_since), not_before=float(not_before), restarts=int(restarts),
        crashes=[float(at) for at in _json(crashes) or []],
        last_error=None if error is None else ServiceError(**error), created_at=float(created_at),
        updated_at=float(updated_at), owner=owner,
    )  # fmt: skip


def error_text(error: ServiceError | None) -> str | None:
    """A crash's error as the JSON text of ``last_error``."""
    return None if error is None else codec.dumps({"type": error.type, "message": error.message,
                                                   "traceback": error.traceback})  # fmt: skip


def end_params(name: str, replica: int, token: str, end: ServiceEnd, now: float) -> dict[str, Any]:
    """The named parameters of ``end_service_run``: NULL crashes / error mean "leave them"."""
    return {
        "name": name, "replica": replica, "token": token, "status": ServiceStatus(end.status).value,
        "not_before": float(end.not_before), "restarted": 1 if end.restarted else 0,
        "crashes": None if end.crashes is None else codec.dumps([float(at) for at in end.crashes]),
        "last_error": error_text(end.error), "now": now,
    }  # fmt: skip


def service_row(kind: EventKind | str, record: ServiceRecord | None, now: float, data: dict[str, Any] | None = None,
                *, name: str | None = None, service: str | None = None, queue: str | None = None,
                worker_id: str | None = None) -> EventRow:  # fmt: skip
    """An event about a service instance (no job): ``task`` is the service, ``queue`` its queue; data
    names the instance (``service``) and, for one replica's event, the ``replica``, then says what
    ``data`` says. From ``record`` (a replica) or from the keywords (an instance's event)."""
    payload: dict[str, Any] = {"service": record.name if record is not None else name}
    if record is not None:
        payload["replica"] = record.replica
    payload.update(data or {})
    task = record.service if record is not None else service
    in_queue = record.queue if record is not None else queue
    worker = worker_id if worker_id is not None else (record.worker_id if record is not None else None)
    return (now, EventKind(kind).value, None, task, in_queue, 0, worker, encode_data(payload))
