"""Messages to jobs: what ``app.send_message`` stores in a job's mailbox, and what became of it.

A message is kept in its job's mailbox atomically. If the job is WAITING on a message of that
name, the same transaction resumes it (the payload becomes the stage's result); otherwise the
message waits in the mailbox and is taken when the job reaches such a stage, so a message sent
early is never missed. A repeated ``message_id`` is a duplicate and changes nothing.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class Delivery(enum.StrEnum):
    """What ``send_message`` did with a message."""

    RESUMED = "resumed"  #: the job was waiting on it: it is queued again, the payload its stage's result
    STORED = "stored"  #: kept in the mailbox until the job reaches a Message stage of that name
    DUPLICATE = "duplicate"  #: this message_id was sent to this job before: nothing changed
    FINISHED = "finished"  #: the job has finished: nothing stored (App raises InvalidTransition)
    NOT_FOUND = "not_found"  #: no such job: nothing stored (App raises JobNotFound)


class NewMessage(msgspec.Struct, kw_only=True, frozen=True):
    """A message as a sender hands it to the store."""

    id: str  #: unique per job: a repeat is a duplicate
    name: str  #: the Message stage it is for ('' for an unnamed one)
    payload: Any  #: any JSON value


class StoredMessage(msgspec.Struct, kw_only=True, frozen=True):
    """A message as the mailbox holds it."""

    job_id: str
    id: str
    name: str
    payload: Any
    at: float  #: when it was sent
    consumed_at: float | None = None  #: when a Message stage took it
    stage: int | None = None  #: the stage that took it


class Notification(msgspec.Struct, kw_only=True, frozen=True):
    """A note to a job's owner that the job finished or failed (``notify=True``)."""

    id: int
    owner: str
    job_id: str
    at: float
    status: str  #: succeeded or failed
    exit_code: int | None
    data: dict[str, Any]  #: task, results, error, stage
    read: bool = False
