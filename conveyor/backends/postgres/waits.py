"""The PostgreSQL store's waits and notifications: jobs' mailboxes (send_message, messages), the
release of ended waits, and owners' notifications. A send locks its job's row for its transaction,
so sends to one job, and a finish or release of it, take their turns; a job queued again wakes
idle workers through the jobs' update trigger, as any job that becomes queued does."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from ... import codec
from ...events import EventKind, encode_data
from ...job import TERMINAL, Status
from ...messages import Delivery, NewMessage, Notification, StoredMessage
from .connections import Connection
from .pipelines import take_and_resume
from .schema import queries

_FINISHED = frozenset(status.value for status in TERMINAL)
_WAITING = Status.WAITING.value


def _message(row: Sequence[Any]) -> StoredMessage:
    """A mailbox row (job_id, id, name, payload text, at, consumed_at, stage) as a StoredMessage."""
    job_id, message_id, name, payload, at, consumed_at, stage = row
    return StoredMessage(
        job_id=job_id, id=message_id, name=name, payload=codec.loads(payload), at=float(at),
        consumed_at=None if consumed_at is None else float(consumed_at), stage=stage,
    )  # fmt: skip


def _notification(row: Sequence[Any]) -> Notification:
    """A notifications row (id, owner, job_id, at, status, exit_code, data text, read) as a Notification."""
    note_id, owner, job_id, at, status, exit_code, data, read = row
    return Notification(
        id=int(note_id), owner=owner, job_id=job_id, at=float(at), status=status, exit_code=exit_code,
        data=codec.loads(data), read=bool(read),
    )  # fmt: skip


class WaitsMixin:
    """The Waits and Notifications concerns of PostgresBackend (base.Waits, base.Notifications).
    Runs on the store's main pool (``_conn``): sends and the leader's releases commit durably."""

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    # base.Waits ------------------------------------------------------------------------------------
    def send_message(self, job_id: str, message: NewMessage, now: float) -> Delivery:
        """One transaction, the job's row locked first (message_target): NOT_FOUND, DUPLICATE (checked
        before FINISHED), FINISHED; else the message stored (a repeat of its id, even by a concurrent
        sender, inserts nothing: DUPLICATE) and, if the job waits on that name, taken at once and the
        job queued (RESUMED), otherwise STORED."""
        q = queries()
        payload = codec.dumps(message.payload)  # TypeError for a payload JSON cannot carry: nothing written
        with self._conn("send message") as conn, conn.transaction():
            target = conn.execute(q["message_target"], {"id": job_id}).fetchone()
            if target is None:
                return Delivery.NOT_FOUND
            status, waiting_for, stage = target
            if status in _FINISHED:
                known = conn.execute(q["message_exists"], {"job_id": job_id, "id": message.id}).fetchone()
                return Delivery.FINISHED if known is None else Delivery.DUPLICATE
            params = {
                "job_id": job_id, "id": message.id, "name": message.name, "payload": payload, "now": now,
                "event_kind": EventKind.MESSAGE_RECEIVED.value, "wake": True,
                "event_data": encode_data({"name": message.name, "message_id": message.id}),
            }  # fmt: skip
            row = conn.execute(q["insert_message"], params).fetchone()
            if row is None or row[0] != 1:
                return Delivery.DUPLICATE
            waited = status == _WAITING and waiting_for == message.name
            if waited and take_and_resume(conn, job_id, stage, message.name, now, True) is not None:
                return Delivery.RESUMED
            return Delivery.STORED

    def messages(self, job_id: str) -> list[StoredMessage]:
        with self._conn("read messages") as conn:
            rows = conn.execute(queries()["messages"], {"job_id": job_id}).fetchall()
        return [_message(row) for row in rows]

    def release_waits(self, now: float, limit: int) -> int:
        """One statement: the ended waits queued again, each with its ``resumed`` event."""
        if limit < 1:
            return 0
        params = {"now": now, "limit": limit, "event_kind": EventKind.RESUMED.value, "wake": True}
        with self._conn("release waits") as conn:
            row = conn.execute(queries()["release_waits"], params).fetchone()
        return 0 if row is None else int(row[0])

    # base.Notifications --------------------------------------------------------------------------------
    def notifications(self, owner: str | None, unread: bool, limit: int) -> list[Notification]:
        params = {"owner": owner, "unread": bool(unread), "limit": limit}
        with self._conn("read notifications") as conn:
            rows = conn.execute(queries()["notifications"], params).fetchall()
        return [_notification(row) for row in rows]

    def mark_read(self, owner: str, ids: Sequence[int] | None) -> int:
        params = {"owner": owner, "ids": None if ids is None else [int(i) for i in ids]}
        with self._conn("mark notifications read") as conn:
            return conn.execute(queries()["mark_read"], params).rowcount

    def prune_notifications(self, before: float) -> int:
        with self._conn("prune notifications") as conn:
            return conn.execute(queries()["prune_notifications"], {"before": before}).rowcount
