"""The SQLite store's services (base.Services): one row per replica of a service instance, held by a
worker with a lease and a fencing token per run. A part of ``SQLiteBackend`` (mixed into it); every
statement is in queries.sql, each change's events are written in its transaction.

SQLite's writers are serial, so a claim picks its rows (``claimable_services``) and takes them
(``take_service``) under one write lock: two claimers never take the same row. A claim reads first,
outside the lock, whether there is anything to take, so an idle keeper's pass writes nothing.
Services are a worker's own bookkeeping (like a job's run) except for the user's requests (create,
resize, control, remove), which are producer commits: synced, so an acknowledged request survives a
power cut.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ... import codec
from ...events import EventKind
from ...service_types import ServiceAction, ServiceEnd, ServiceRecord, ServiceSource, ServiceSpec
from ..rows import EventRow
from ..service_rows import checked_control, checked_replicas, end_params, row_to_service, service_row


class SQLiteServices:
    """Services of the SQLite store (``SQLiteBackend`` supplies the statements, the transactions and
    ``_log``, the events of no job)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

        def _log(self, conn: sqlite3.Connection, rows: Sequence[EventRow]) -> None: ...

    # a user's requests -------------------------------------------------------------------------------
    def create_service(self, spec: ServiceSpec, now: float) -> bool:
        replicas = checked_replicas(spec.name, spec.replicas)
        source = ServiceSource(spec.source).value
        params = {
            "name": spec.name, "replicas": replicas, "service": spec.service, "queue": spec.queue,
            "params": codec.dumps(dict(spec.params)), "source": source, "local_to": spec.local_to,
            "wanted": 1 if spec.wanted else 0, "owner": spec.owner, "now": now,
        }  # fmt: skip
        with self._write("create a service", producer=True) as conn:
            if conn.execute(self._sql["create_service"], params).rowcount < 1:
                return False  # an instance of that name exists
            data = {"replicas": replicas, "source": source}
            event = service_row(EventKind.SERVICE_CREATED, None, now, data, name=spec.name, service=spec.service,
                                queue=spec.queue)  # fmt: skip
            self._log(conn, [event])
        return True

    def resize_service(self, name: str, replicas: int, queue: str, now: float) -> bool:
        params = {"name": name, "replicas": checked_replicas(name, replicas), "queue": queue, "now": now}
        sql = self._sql
        with self._write("resize a service", producer=True) as conn:
            changed = conn.execute(sql["set_service_queue"], params).rowcount
            changed += conn.execute(sql["add_service_replicas"], params).rowcount
            changed += conn.execute(sql["drop_service_replicas"], params).rowcount
            if changed:  # its event (a sync that changes nothing writes none)
                (service,) = conn.execute(sql["service_of"], {"name": name}).fetchone()
                data = {"replicas": params["replicas"], "queue": queue}
                self._log(conn, [service_row(EventKind.SERVICE_RESIZED, None, now, data, name=name, service=service,
                                             queue=queue)])  # fmt: skip
        return changed > 0

    def control_service(
        self, name: str, action: ServiceAction, params: dict[str, Any] | None, now: float
    ) -> list[ServiceRecord]:
        action, new_params = checked_control(name, action, params)
        values = {"name": name, "action": action.value, "params": new_params, "now": now}
        with self._write(f"{action.value} a service", producer=True) as conn:
            if conn.execute(self._sql["control_service"], values).rowcount < 1:
                return []
            records = [row_to_service(row) for row in conn.execute(self._sql["list_services"], {"name": name})]
            first = records[0]
            event = service_row(EventKind.SERVICE_REQUESTED, None, now, {"action": action.value}, name=name,
                                service=first.service, queue=first.queue)  # fmt: skip
            self._log(conn, [event])
        return records

    def remove_service(self, name: str, now: float) -> bool:
        with self._write("remove a service", producer=True) as conn:
            rows = conn.execute(self._sql["remove_service"], {"name": name}).fetchall()
            if not rows:
                return False
            service, queue = rows[0]
            event = service_row(EventKind.SERVICE_REMOVED, None, now, name=name, service=service, queue=queue)
            self._log(conn, [event])
        return True

    def list_services(self, name: str | None = None) -> list[ServiceRecord]:
        with self._read("list services") as conn:
            return [row_to_service(row) for row in conn.execute(self._sql["list_services"], {"name": name})]

    # a worker's keeper -------------------------------------------------------------------------------
    def claim_services(self, worker_id: str, services: Sequence[str], spread: Sequence[str], limit: int,
                       lease: float, spread_before: float, now: float) -> list[ServiceRecord]:  # fmt: skip
        """A read first (``services_due``): nothing to take or to stop, no write lock taken. Then, in
        one write transaction: the expired rows not wanted STOPPED, and up to ``limit`` rows picked
        and taken one by one, each with a fresh token."""
        sql = self._sql
        wanted = json.dumps(list(services))
        with self._read("claim services") as conn:
            due = conn.execute(sql["services_due"], {"services": wanted, "worker_id": worker_id, "now": now})
            if not due.fetchone()[0]:
                return []
        taken: list[ServiceRecord] = []
        with self._write("claim services") as conn:
            stopped = [row_to_service(row) for row in conn.execute(sql["stop_expired_services"], {"now": now})]
            events = [service_row(EventKind.SERVICE_STOPPED, r, now, {"why": "lease expired"}) for r in stopped]
            if services and limit > 0:
                pick = {
                    "services": wanted, "spread": json.dumps(list(spread)), "worker_id": worker_id, "now": now,
                    "spread_before": spread_before, "limit": limit,
                }  # fmt: skip
                for name, replica, lost_by in conn.execute(sql["claimable_services"], pick).fetchall():
                    take = {
                        "name": name, "replica": replica, "worker_id": worker_id, "token": uuid.uuid4().hex,
                        "until": now + lease, "now": now,
                    }  # fmt: skip
                    record = row_to_service(conn.execute(sql["take_service"], take).fetchone())
                    data: dict[str, Any] = {"worker_id": worker_id}
                    if lost_by is not None:
                        data["from"] = lost_by
                    events.append(service_row(EventKind.SERVICE_ASSIGNED, record, now, data))
                    taken.append(record)
            self._log(conn, events)
        return taken

    def renew_services(self, worker_id: str, tokens: Sequence[str], lease: float, now: float) -> list[ServiceRecord]:
        if not tokens:
            return []
        params = {"worker_id": worker_id, "tokens": json.dumps(list(tokens)), "until": now + lease}
        with self._write("renew service leases") as conn:
            records = [row_to_service(row) for row in conn.execute(self._sql["renew_services"], params)]
        return sorted(records, key=lambda r: (r.name, r.replica))

    def service_running(self, name: str, replica: int, token: str, now: float) -> bool:
        params = {"name": name, "replica": replica, "token": token, "now": now}
        with self._write("start a service") as conn:
            row = conn.execute(self._sql["service_running"], params).fetchone()
            if row is None:
                return False
            record = row_to_service(row)
            data = {"worker_id": record.worker_id, "generation": record.run_generation}
            self._log(conn, [service_row(EventKind.SERVICE_STARTED, record, now, data)])
        return True

    def end_service_run(self, name: str, replica: int, token: str, end: ServiceEnd, now: float) -> bool:
        params = end_params(name, replica, token, end, now)
        with self._write("end a service's run") as conn:
            row = conn.execute(self._sql["end_service_run"], params).fetchone()
            if row is None:
                return False  # a stale run: nothing written
            self._log(conn, [service_row(end.event, row_to_service(row), now, end.data)])
        return True

    def forget_local_services(self, worker_ids: Sequence[str], now: float) -> int:
        """With one ``service_removed`` event per instance deleted (data: ``local_to``)."""
        if not worker_ids:
            return 0
        with self._write("forget local services") as conn:
            rows = conn.execute(self._sql["forget_local_services"], {"worker_ids": json.dumps(list(worker_ids))})
            deleted = rows.fetchall()
            instances = {name: (service, queue, local_to) for name, service, queue, local_to in deleted}
            events = [
                service_row(EventKind.SERVICE_REMOVED, None, now, {"local_to": local_to}, name=name, service=service,
                            queue=queue)
                for name, (service, queue, local_to) in sorted(instances.items())
            ]  # fmt: skip
            self._log(conn, events)
        return len(deleted)
