"""The App's pipeline side: declaring pipelines, messages to waiting jobs, resetting a job, and
the owners' notifications. A part of ``App`` (a mixin), kept apart so app.py stays a thin facade."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import codec, pipeline
from .errors import InvalidTransition, JobNotFound
from .messages import Delivery, NewMessage, Notification, StoredMessage

if TYPE_CHECKING:
    from .backends.base import Backend
    from .handle import JobHandle
    from .job import Job
    from .stages import Pipeline, StageLike
    from .task import Signature, Task


class PipelinesMixin:
    """``App``'s pipeline, message and notification methods."""

    tasks: dict[str, Task[Any, Any]]
    pipelines: dict[str, Pipeline]
    clock: Callable[[], float]

    @property
    def backend(self) -> Backend:
        raise NotImplementedError  # App's

    def job(self, job_id: str) -> Job:
        raise NotImplementedError  # App's

    # declaring --------------------------------------------------------------------------------------
    def pipeline(
        self,
        *stages: StageLike,
        name: str | None = None,
        kws: dict[str, Any] | None = None,
        restart: str = "current",
        max_retries: int = 0,
        timeout: float = 300.0,
        owner: str | None = None,
        notify: bool = False,
        then: Signature | Pipeline | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> Pipeline:
        """Declare a multi-stage job: ``stages`` run in order, each a task call (``task.s(...)``,
        its arguments may be ``Ref``s to the job's ``kws``, earlier stages' results or the job id;
        ``.when(cond)`` skips it with result None when the condition is false), a ``Timer(seconds)``
        or a ``Message(name)``, which leave the job WAITING and holding nothing.

        ``restart``: after a failed stage, with retries left, run again from that stage ("current",
        earlier results kept) or from the first ("first", results cleared); ``max_retries`` 0-10.
        ``timeout``: the whole job's budget, 10 s to 4 h, started again on each retry; past it the
        job is aborted (exit code 130). ``owner``/``notify``: a notification for the owner when it
        finishes or fails. ``then``: a task call or pipeline started when it succeeds (its
        ``Ref``s resolved against this job). ``queue``/``priority``: of the job (a call stage runs
        on its task's queue). ``name``: registers it in ``app.pipelines``, to enqueue by name.
        Every rule is checked here: ValueError/TypeError naming the stage and the rule."""
        from .stages import declare

        declared = declare(
            self,  # type: ignore[arg-type]  # a PipelinesMixin is always an App
            stages,
            name=name,
            kws=kws,
            restart=restart,
            max_retries=max_retries,
            timeout=timeout,
            owner=owner,
            notify=notify,
            then=then,
            queue=queue,
            priority=priority,
        )
        if name is not None:
            if name in self.pipelines and self.pipelines[name].to_dict() != declared.to_dict():
                raise ValueError(f"a different pipeline is already declared as {name!r}")
            self.pipelines[name] = declared
        return declared

    def enqueue_pipeline(
        self,
        pipeline: str | dict[str, Any],
        *,
        kws: dict[str, Any] | None = None,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        owner: str | None = None,
        notify: bool | None = None,
    ) -> JobHandle:
        """Enqueue a pipeline by the name it was declared with, or from its ``to_dict`` form
        (JSON: a schedule, the HTTP API), checked against every rule and this app's tasks."""
        from .stages import Pipeline

        if isinstance(pipeline, str):
            declared = self.pipelines.get(pipeline)
            if declared is None:
                raise LookupError(f"no pipeline named {pipeline!r}; declared: {sorted(self.pipelines) or 'none'}")
        else:
            declared = Pipeline.from_dict(self, pipeline)  # type: ignore[arg-type]  # always an App
        if owner is not None or notify is not None:
            declared = declared.options(owner=owner, notify=notify)
        return declared.delay(kws=kws, id=id, key=key, delay=delay, eta=eta)

    # messages ---------------------------------------------------------------------------------------
    def send_message(
        self, job_id: str, payload: Any = None, *, name: str | None = None, message_id: str | None = None
    ) -> Delivery:
        """Send a message to a job: stored in its mailbox atomically; a job WAITING on a Message
        stage of that ``name`` resumes at once with ``payload`` as that stage's result, and one
        that has not reached it yet takes it when it gets there. A ``message_id`` already sent to
        this job is a duplicate: nothing changes (Delivery.DUPLICATE). Raises JobNotFound, or
        InvalidTransition for a finished job; ValueError/ArgumentError for a bad argument."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
            raise ValueError(f"a message's name must be a non-empty string of at most 200 characters, got {name!r}")
        if message_id is not None and (not isinstance(message_id, str) or not message_id or len(message_id) > 255):
            raise ValueError(f"message_id must be a non-empty string of at most 255 characters, got {message_id!r}")
        codec.check_json(payload, "the message's payload")
        message = NewMessage(id=message_id or os.urandom(16).hex(), name=name or "", payload=payload)
        delivery = self.backend.send_message(job_id, message, self.clock())
        if delivery is Delivery.NOT_FOUND:
            raise JobNotFound(job_id)
        if delivery is Delivery.FINISHED:
            raise InvalidTransition(f"job {job_id} has finished; a message can no longer reach it")
        return delivery

    def messages(self, job_id: str) -> list[StoredMessage]:
        """The job's mailbox, oldest first: messages waiting for a Message stage, and those taken."""
        return self.backend.messages(job_id)

    # resetting ----------------------------------------------------------------------------------------
    def reset(self, job_id: str) -> Job:
        """Put a finished job (succeeded, failed or cancelled) back to its first stage with fresh
        state: results, counters, error and time budget cleared, due now. Raises JobNotFound, or
        InvalidTransition for a job that has not finished (or whose key another job holds)."""
        before = self.job(job_id)
        if not before.status.finished:
            raise InvalidTransition(f"job {job_id} is {before.status.value}; only a finished job can be reset")
        now = self.clock()
        first = pipeline.first_stage(before, now) if before.stages is not None else None
        if first is None and before.status.value == "succeeded":
            raise InvalidTransition(
                f"job {job_id} succeeded; only a pipeline job can be reset after success, "
                "a plain job is run again with a new enqueue"
            )
        job = self.backend.requeue(job_id, now, reset=True, first=first)
        if job is None:
            raise JobNotFound(job_id)
        return job

    # notifications ------------------------------------------------------------------------------------
    def notifications(self, owner: str | None = None, *, unread: bool = False, limit: int = 100) -> list[Notification]:
        """The newest notifications of ``owner`` (None: everyone's), only unread ones if ``unread``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        return self.backend.notifications(owner, bool(unread), limit)

    def mark_read(self, owner: str, ids: Sequence[int] | None = None) -> int:
        """Mark ``owner``'s notifications read: these ``ids`` (others' are ignored) or all of them.
        Returns how many changed."""
        if not isinstance(owner, str) or not owner:
            raise ValueError(f"owner must be a non-empty string, got {owner!r}")
        if ids is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ValueError(f"ids must be ints, got {ids!r}")
        return self.backend.mark_read(owner, None if ids is None else list(ids))
