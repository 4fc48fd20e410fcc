"""The PostgreSQL store's services (base.Services): service instances, one row per replica, and the
steps of a replica's runs as a worker's keeper takes, renews, starts and ends them.

Each step is one statement that writes its events itself (queries.sql, "Services"), except resize,
control and remove, which lock the instance's rows first (``lock_service``) and then act in the next
statements of the same transaction, sent in one pipeline: the lock makes these steps on one instance
run one after the other, and the statements after it see every row the step before wrote. A claim
is two statements in one transaction (one pipeline): the lapsed stops, then the rows taken, both
passing over locked rows (FOR UPDATE SKIP LOCKED): concurrent keepers never take the same row and
never wait for each other. Everything runs on the main pool, committed durably: a run taken, started
or ended survives a crash of the server (a lost claim would let two workers run a replica until the
first one's next renewal). Every ``now`` is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from psycopg import Cursor
from psycopg import errors as pg_errors

from ... import codec
from ...events import EventKind
from ...service_types import ServiceAction, ServiceEnd, ServiceRecord, ServiceSource, ServiceSpec, ServiceStatus
from ..service_rows import SERVICE_COLUMNS, checked_control, checked_replicas, end_params, row_to_service, service_row
from .connections import Connection
from .schema import queries

_WIDTH = len(SERVICE_COLUMNS)
#: resize_service's statements, in its transaction after lock_service (each one's rowcount: what changed).
_RESIZE = ("set_service_queue", "add_service_replicas", "drop_service_replicas")


def _instance_data(kind: EventKind | str, name: str, now: float, data: dict[str, Any] | None = None) -> str:
    """The JSON data of an event about the instance ``name`` (service_rows.service_row's); the
    statement fills in its task and queue from the rows."""
    return service_row(kind, None, now, data, name=name)[7]


def _replica_data(kind: EventKind | str, name: str, replica: int, now: float, data: dict[str, Any]) -> str:
    """The JSON data of an event about one replica, as service_rows.service_row writes it from a record
    (the instance, the replica, then ``data``), for a statement that knows the row only by its key."""
    return service_row(kind, None, now, {"replica": replica, **data}, name=name)[7]


class ServicesMixin:
    """The Services concern of PostgresBackend (base.Services). Uses the store's main pool (``_conn``)."""

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    def _locked(
        self, conn: Connection, name: str, statements: Sequence[str], params: dict[str, Any]
    ) -> list[Cursor[tuple[Any, ...]]]:
        """``statements`` run after ``lock_service`` (of instance ``name``) in one transaction, all sent in
        one pipeline (one round trip): the instance's rows are locked before the first of them takes its
        snapshot. Their cursors, their results in."""
        q = queries()
        with conn.pipeline(), conn.transaction():
            conn.execute(q["lock_service"], {"name": name})
            cursors = [conn.execute(q[statement], params) for statement in statements]
        return cursors

    def create_service(self, spec: ServiceSpec, now: float) -> bool:
        replicas = checked_replicas(spec.name, spec.replicas)
        kind = EventKind.SERVICE_CREATED
        source = ServiceSource(spec.source).value
        params = {
            "name": spec.name, "service": spec.service, "queue": spec.queue,
            "params": codec.dumps(dict(spec.params)), "source": source, "local_to": spec.local_to,
            "wanted": bool(spec.wanted), "owner": spec.owner,
            "status": (ServiceStatus.PENDING if spec.wanted else ServiceStatus.STOPPED).value,
            "replicas": replicas, "now": now, "event_kind": kind.value,
            "event_data": _instance_data(kind, spec.name, now, {"replicas": replicas, "source": source}),
            "wake": True,
        }  # fmt: skip
        with self._conn("create a service") as conn:
            try:
                row = conn.execute(queries()["create_service"], params).fetchone()
            except pg_errors.UniqueViolation:  # created concurrently: nothing of ours was written
                return False
        return row is not None and int(row[0]) > 0

    def resize_service(self, name: str, replicas: int, queue: str, now: float) -> bool:
        replicas = checked_replicas(name, replicas)
        kind = EventKind.SERVICE_RESIZED
        params = {"name": name, "replicas": replicas, "queue": queue, "now": now, "event_kind": kind.value,
                  "event_data": _instance_data(kind, name, now, {"replicas": replicas, "queue": queue}),
                  "wake": True}  # fmt: skip
        with self._conn("resize a service") as conn, conn.transaction():
            changed = sum(cursor.rowcount for cursor in self._locked(conn, name, _RESIZE, params)) > 0
            if changed:  # its event, in the same transaction (a sync that changes nothing writes none)
                conn.execute(queries()["log_service_resized"], params)
        return changed

    def control_service(
        self, name: str, action: ServiceAction, params: dict[str, Any] | None, now: float
    ) -> list[ServiceRecord]:
        action, new_params = checked_control(name, action, params)
        kind = EventKind.SERVICE_REQUESTED
        values = {
            "name": name, "action": action.value, "params": new_params, "now": now, "event_kind": kind.value,
            "event_data": _instance_data(kind, name, now, {"action": action.value}), "wake": True,
        }  # fmt: skip
        with self._conn(f"{action.value} a service") as conn:
            [cursor] = self._locked(conn, name, ["control_service"], values)
            rows = cursor.fetchall()
        return [row_to_service(row[:_WIDTH]) for row in rows]

    def remove_service(self, name: str, now: float) -> bool:
        kind = EventKind.SERVICE_REMOVED
        params = {"name": name, "now": now, "event_kind": kind.value, "event_data": _instance_data(kind, name, now),
                  "wake": True}  # fmt: skip
        with self._conn("remove a service") as conn:
            [cursor] = self._locked(conn, name, ["remove_service"], params)
            row = cursor.fetchone()
        return row is not None and int(row[0]) > 0

    def list_services(self, name: str | None = None) -> list[ServiceRecord]:
        with self._conn("list services") as conn:
            rows = conn.execute(queries()["list_services"], {"name": name}).fetchall()
        return [row_to_service(row) for row in rows]

    def claim_services(self, worker_id: str, services: Sequence[str], spread: Sequence[str], limit: int,
                       lease: float, spread_before: float, now: float) -> list[ServiceRecord]:  # fmt: skip
        """One transaction, sent in one pipeline: the rows not wanted whose lease ran out STOPPED
        (stop_expired_services), then the rows taken (claim_services), both passing over locked rows;
        returned in the order taken (the longest free first, then name and replica)."""
        q = queries()
        expired = {"now": now, "event_kind": EventKind.SERVICE_STOPPED.value, "why": "lease expired", "wake": True}
        with self._conn("claim services") as conn:
            with conn.pipeline(), conn.transaction():
                conn.execute(q["stop_expired_services"], expired)
                cursor = None
                if services and limit > 0:
                    cursor = conn.execute(q["claim_services"], {
                        "worker_id": worker_id, "services": list(services), "spread": list(spread),
                        "limit": int(limit), "now": now, "until": now + lease, "spread_before": spread_before,
                        "event_kind": EventKind.SERVICE_ASSIGNED.value, "wake": True,
                    })  # fmt: skip
            rows = [] if cursor is None else cursor.fetchall()
        taken = [(float(row[_WIDTH]), row_to_service(row[:_WIDTH])) for row in rows]
        taken.sort(key=lambda t: (t[0], t[1].name, t[1].replica))
        return [record for _, record in taken]

    def renew_services(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> list[ServiceRecord]:
        if not tokens:
            return []
        params = {"worker_id": worker_id, "tokens": list(tokens), "until": now + lease}
        with self._conn("renew service leases") as conn:
            rows = conn.execute(queries()["renew_services"], params).fetchall()
        return [row_to_service(row) for row in rows]

    def service_running(self, name: str, replica: int, token: str, now: float) -> bool:
        params = {"name": name, "replica": int(replica), "token": token, "now": now,
                  "event_kind": EventKind.SERVICE_STARTED.value, "wake": True}  # fmt: skip
        with self._conn("mark a service running") as conn:
            row = conn.execute(queries()["service_running"], params).fetchone()
        return row is not None and row[0] == 1

    def end_service_run(self, name: str, replica: int, token: str, end: ServiceEnd, now: float) -> bool:
        params = end_params(name, int(replica), token, end, now) | {
            "event_kind": EventKind(end.event).value,
            "event_data": _replica_data(end.event, name, int(replica), now, dict(end.data)),
            "wake": True,
        }
        with self._conn("end a service run") as conn:
            row = conn.execute(queries()["end_service_run"], params).fetchone()
        return row is not None and row[0] == 1

    def forget_local_services(self, worker_ids: Sequence[str], now: float) -> int:
        if not worker_ids:
            return 0
        params = {"worker_ids": list(worker_ids), "now": now, "event_kind": EventKind.SERVICE_REMOVED.value,
                  "wake": True}  # fmt: skip
        with self._conn("forget local services") as conn:
            row = conn.execute(queries()["forget_local_services"], params).fetchone()
        return 0 if row is None else int(row[0])
