"""The SQLite store's WAITING jobs: the mailbox (``send_message``, ``messages``), the take of a
waiting message by a Message stage, and the leader's release of ended waits. A part of
``SQLiteBackend`` (mixed into it); every statement is in queries.sql, each change's events are
written in its transaction. SQLite's writers are serial, so a send reads the job and writes the
message under one write lock: two sends of one message id cannot both store it."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ... import codec
from ...job import TERMINAL
from ...messages import Delivery, NewMessage, StoredMessage
from . import event_writes
from .pipeline_rows import CopiedEvent, received, resumed, row_to_message

_FINISHED = frozenset(status.value for status in TERMINAL)
_WAITING = "waiting"


def take_waiting_message(
    conn: sqlite3.Connection, sql: dict[str, str], job_id: str, stage: int, name: str, now: float
) -> list[CopiedEvent]:
    """In the open transaction: the job, just made to wait on a message ``name`` at ``stage``, takes
    its mailbox's oldest unconsumed message of that name, if any, and is queued at once with it as
    its inbox. Returns the ``resumed`` event to write (none if the mailbox had no such message)."""
    row = conn.execute(sql["take_message"], {"job_id": job_id, "name": name, "stage": stage, "now": now}).fetchone()
    if row is None:
        return []
    message_id, payload = row
    conn.execute(sql["resume_with_message"], {"id": job_id, "now": now, "message_id": message_id, "payload": payload})
    return [resumed(job_id, stage, "message", message_id)]


class SQLiteWaits:
    """Waits of the SQLite store (``SQLiteBackend`` supplies the statements and transactions)."""

    _sql: dict[str, str]

    if TYPE_CHECKING:

        def _read(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...

        def _write(self, what: str, *, producer: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    def send_message(self, job_id: str, message: NewMessage, now: float) -> Delivery:
        params = {
            "job_id": job_id, "id": message.id, "name": message.name, "payload": codec.dumps(message.payload),
            "now": now,
        }  # fmt: skip
        with self._write("send a message", producer=True) as conn:  # acknowledged: durable, like an enqueue
            target = conn.execute(self._sql["message_target"], {"id": job_id}).fetchone()
            if target is None:
                return Delivery.NOT_FOUND
            status, waiting_for, stage = target
            if status in _FINISHED:  # a retried send of a message that resumed it is still a duplicate
                seen = conn.execute(self._sql["message_exists"], {"job_id": job_id, "id": message.id}).fetchone()
                return Delivery.DUPLICATE if seen is not None else Delivery.FINISHED
            if conn.execute(self._sql["insert_message"], params).rowcount != 1:
                return Delivery.DUPLICATE
            events = [received(job_id, message)]
            taken: list[CopiedEvent] = []
            if status == _WAITING and waiting_for == message.name:
                taken = take_waiting_message(conn, self._sql, job_id, stage, message.name, now)
            event_writes.copy(conn, self._sql["copy_job_events"], events + taken, now)
        return Delivery.RESUMED if taken else Delivery.STORED

    def messages(self, job_id: str) -> list[StoredMessage]:
        with self._read("read a mailbox") as conn:
            return [row_to_message(row) for row in conn.execute(self._sql["messages"], {"job_id": job_id})]

    def release_waits(self, now: float, limit: int) -> int:
        if limit <= 0:
            return 0
        with self._write("release ended waits") as conn:
            rows = conn.execute(self._sql["release_waits"], {"now": now, "limit": limit}).fetchall()
            events = [resumed(job_id, stage, by) for job_id, stage, by in rows]
            event_writes.copy(conn, self._sql["copy_job_events"], events, now)
        return len(rows)
