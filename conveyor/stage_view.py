"""A job's stages as a reader sees them: one row per stage with its status, result, times and
runs, worked out from the record alone (``Job.stages``, ``stage_log``, ``results`` and the
current-stage columns). Pure, so the CLI, the HTTP API and the dashboard show the same thing."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .job import Job, Status
from .pipeline import describe_stage
from .refs import COND, REF, describe_cond

PENDING = "pending"  #: a stage the job has not reached yet
#: The statuses a stage ends with in ``Job.stage_log``.
ENDED = ("succeeded", "skipped", "failed")


class StageView(msgspec.Struct, kw_only=True, frozen=True):
    """One stage of a job for a reader: what it is, as declared, and where it stands."""

    index: int
    kind: str  #: call, timer or message
    label: str  #: its task, or Timer(60), or Message('payment')
    params: str  #: its parameters as declared, references as written (``Ref.stage(0)['doc']``)
    declared: str  #: the stage as written: ``fetch(url=Ref.kws('url'))``, ``Message('pay', timeout=60)``
    condition: str | None = None  #: its ``.when(...)`` condition as written, if it has one
    status: str  #: pending, skipped, succeeded, failed, or the job's status for the current stage
    current: bool = False  #: the stage an unfinished job is at
    has_result: bool = False  #: ``result`` is the stage's result (which may be None)
    result: Any = None
    started_at: float | None = None  #: when its latest run started (a wait: when the wait began)
    finished_at: float | None = None
    attempts: int = 0  #: runs of it started (a skipped stage: 0)
    waiting_for: str | None = None  #: a waiting Message stage: the message's name ('' for unnamed)
    wait_until: float | None = None  #: a waiting stage: when its timer (or the message's time-out) ends

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data


def stage_views(job: Job, now: float | None = None) -> list[StageView]:
    """The job's stages, in order. A plain job is the one-stage case: its task call. ``now``
    decides whether a queued current stage reads as scheduled (not due yet)."""
    now = time.time() if now is None else now
    if job.stages is None:
        return [_plain(job, now)]
    return [_view(job, index, frozen, now) for index, frozen in enumerate(job.stages)]


def _plain(job: Job, now: float) -> StageView:
    status = job.view_status(now).value
    done = job.status is Status.SUCCEEDED
    params = describe_params(job.args, job.kwargs)
    return StageView(
        index=0,
        kind="call",
        label=job.task,
        params=params,
        declared=f"{job.task}({params})",
        status=status,
        current=not job.status.finished,
        has_result=done,
        result=job.result if done else None,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
    )


def _view(job: Job, index: int, frozen: dict[str, Any], now: float) -> StageView:
    """Stage ``index``: its log entry if it ended, the job's state if the job is at it, else pending."""
    entry = job.stage_log[index] if index < len(job.stage_log) else {}
    kind = str(frozen.get("kind", "call"))
    logged = entry.get("status") if entry.get("status") in ENDED else None
    at_it = index == job.stage
    started, finished = entry.get("started_at"), entry.get("finished_at")
    attempts = int(entry.get("attempts", 0))
    waiting_for = wait_until = None
    if at_it and not job.status.finished:  # where the job is now: a retry's earlier failure is history
        status = job.view_status(now).value
        finished = None
        if job.status is Status.RUNNING:
            started, attempts = job.started_at, attempts + 1
        elif job.status is Status.WAITING:
            started = job.scheduled_at  # the wait began when the job got here
            waiting_for, wait_until = job.waiting_for, job.wait_until
        else:
            started = None
    elif at_it and job.status is Status.CANCELLED:
        status = Status.CANCELLED.value
    elif logged is not None:
        status = logged
    elif at_it:  # finished at this stage with no stage record (e.g. failed by the leader)
        status = job.status.value
    else:
        status = PENDING if index > job.stage else Status.SUCCEEDED.value
    has_result = status in ("succeeded", "skipped") and index < len(job.results)
    label, params = describe_stage(frozen), _declared(frozen)
    return StageView(
        index=index,
        kind=kind,
        label=label,
        params=params,
        declared=_written(kind, label, params),
        condition=None if frozen.get("when") is None else describe_cond(frozen["when"]),
        status=status,
        current=at_it and not job.status.finished,
        has_result=has_result,
        result=job.results[index] if has_result else None,
        started_at=started,
        finished_at=finished,
        attempts=attempts,
        waiting_for=waiting_for,
        wait_until=wait_until,
    )


def _declared(frozen: dict[str, Any]) -> str:
    """A stage's parameters as declared: a call's arguments, a Message's time-out (a Timer's
    seconds are in its label)."""
    kind = frozen.get("kind")
    if kind == "timer":
        return ""
    if kind == "message":
        if frozen.get("timeout") is None:
            return ""
        return f"timeout={frozen['timeout']:g}, on_timeout={frozen.get('on_timeout', 'fail')!r}"
    return describe_params(frozen.get("args") or [], frozen.get("kwargs") or {})


def _written(kind: str, label: str, params: str) -> str:
    """The stage as the user wrote it, from its label and parameters."""
    if kind == "call":
        return f"{label}({params})"
    if not params:
        return label
    return f"{label[:-1]}, {params})" if not label.endswith("()") else f"{label[:-1]}{params})"


def describe_params(args: list[Any], kwargs: dict[str, Any]) -> str:
    """A call's arguments as Python would write them: ``'a', url=Ref.kws('url')``."""
    return ", ".join([describe_value(arg) for arg in args] + [f"{k}={describe_value(v)}" for k, v in kwargs.items()])


def describe_value(frozen: Any) -> str:
    """A frozen value as written: references and conditions as in code, at any depth; the rest as
    Python literals."""
    if isinstance(frozen, dict):
        if REF in frozen or COND in frozen:
            return describe_cond(frozen)
        return "{" + ", ".join(f"{key!r}: {describe_value(item)}" for key, item in frozen.items()) + "}"
    if isinstance(frozen, list):
        return "[" + ", ".join(describe_value(item) for item in frozen) + "]"
    return repr(frozen)
