"""What a pipeline job does next, decided in Python once for every store (DESIGN.md, rule 1).

A pipeline job holds its frozen stages (``Job.stages``: dicts, see ``conveyor.stages``) and
settings (``Job.pipeline``); its row describes the stage it is at. A worker runs that stage's
task; ``settle`` turns how the run ended into the job's outcome: ADVANCED to the next stage
(skipping those whose condition is false; a Timer or Message stage leaves the job WAITING),
SUCCEEDED after the last (with the chained job and the owner's notification), a RETRY that
restarts at the failed stage or the first (``restart``), or FAILED. ``before_run`` settles
the stages no task runs: a wait that ended, a budget that ran out. The store writes the
result in one fenced step; nothing here touches a store.
"""

from __future__ import annotations

import logging
import math
import os
import random
from typing import Any

from . import codec
from .execution import error_of
from .job import ExitCode, Job, JobError, NewJob, Status
from .outcome import NextStage, Notice, Outcome, OutcomeKind, StageRecord
from .refs import Scope, TemplateError, holds, resolve

TIMER_TASK = "conveyor:timer"  #: the row's task while a job is at a Timer stage
MESSAGE_TASK = "conveyor:message"  #: ... at a Message stage
RESTARTS = ("current", "first")
RETRY_BACKOFF = 1.0  #: first delay before a pipeline's wait stage is retried (doubles, capped)
RETRY_MAX_BACKOFF = 60.0
DEFAULT_RESULT_TTL = 7 * 24 * 3600.0

log = logging.getLogger("conveyor.pipeline")


class PipelineTimeout(TimeoutError):
    """The pipeline's whole time budget ran out (exit code 130)."""


class MessageTimeout(TimeoutError):
    """A Message stage's own time-out passed with no message (``on_timeout="fail"``)."""


# a stage's frozen form, read ---------------------------------------------------------------------
def _budget(settings: dict[str, Any]) -> float:
    return float(settings["timeout"])


def _stage_row(
    frozen: dict[str, Any], index: int, scope: Scope, settings: dict[str, Any], now: float, deadline: float | None
) -> NextStage:
    """The current-stage columns for stage ``index``, its parameters resolved (TemplateError)."""
    kind = frozen["kind"]
    if kind == "call":
        args = resolve(frozen["args"], scope)
        kwargs = resolve(frozen["kwargs"], scope)
        return NextStage(
            stage=index,
            task=frozen["task"],
            queue=frozen["queue"],
            args=args,
            kwargs=kwargs,
            timeout=frozen.get("timeout"),
            scheduled_at=now,
            deadline=deadline,
        )
    until: float | None
    name: str | None
    if kind == "timer":  # a wait: no task runs; the row names it by a task of conveyor's own
        task, until, name = TIMER_TASK, now + float(frozen["seconds"]), None
    else:
        timeout = frozen.get("timeout")
        task, until, name = MESSAGE_TASK, None if timeout is None else now + float(timeout), frozen.get("name") or ""
    return NextStage(
        stage=index,
        task=task,
        queue=settings["queue"],
        args=[],
        kwargs={},
        timeout=None,
        waiting=True,
        scheduled_at=now,
        wait_until=until,
        waiting_for=name,
        deadline=deadline,
    )


def _entry(log: list[dict[str, Any]], index: int, status: str, started: float | None, now: float) -> None:
    """Record how stage ``index`` ended in ``log`` (in place): status, times, its runs so far."""
    while len(log) <= index:
        log.append({})
    attempts = int(log[index].get("attempts", 0)) + (0 if status == "skipped" else 1)
    log[index] = {"status": status, "started_at": started, "finished_at": now, "attempts": attempts}


class _Walk:
    """The way from one stage to the next stage that runs or waits: stages whose condition is
    false are skipped (result None) on the way."""

    def __init__(self, stages: list[dict[str, Any]], settings: dict[str, Any], job_id: str) -> None:
        self.stages = stages
        self.settings = settings
        self.job_id = job_id

    def walk(
        self, start: int, results: list[Any], log: list[dict[str, Any]], now: float, deadline: float | None
    ) -> tuple[NextStage | None, list[int]]:
        """The next stage from ``start`` on (None past the last) and the stages skipped; ``results``
        and ``log`` gain the skipped stages' entries. TemplateError names the stage that failed."""
        skipped: list[int] = []
        scope = Scope(self.settings.get("kws") or {}, results, self.job_id)
        for index in range(start, len(self.stages)):
            frozen = self.stages[index]
            try:
                when = frozen.get("when")
                if when is not None and not holds(when, scope):
                    results.append(None)
                    _entry(log, index, "skipped", None, now)
                    skipped.append(index)
                    continue
                return _stage_row(frozen, index, scope, self.settings, now, deadline), skipped
            except TemplateError as exc:
                raise TemplateError(f"stage {index} ({describe_stage(frozen)}): {exc}") from None
        return None, skipped


def describe_stage(frozen: dict[str, Any]) -> str:
    """A stage in a few words: its task, or Timer(60), or Message('payment')."""
    kind = frozen.get("kind")
    if kind == "timer":
        return f"Timer({frozen['seconds']:g})"
    if kind == "message":
        return f"Message({frozen.get('name') or ''!r})" if frozen.get("name") else "Message()"
    return str(frozen.get("task"))


# enqueueing ----------------------------------------------------------------------------------------
def new_job(
    stages: list[dict[str, Any]],
    settings: dict[str, Any],
    *,
    now: float,
    due: float,
    max_retries: int,
    priority: int,
    job_id: str | None = None,
    key: str | None = None,
    owner: str | None = None,
    notify: bool = False,
    result_ttl: float | None = DEFAULT_RESULT_TTL,
) -> NewJob:
    """The record of a pipeline job before it exists, due at ``due``: at its first stage (past any
    skipped by a false condition), queued, or WAITING for a first stage that waits. Raises
    TemplateError (a ValueError) for a first stage whose references fail: nothing is stored."""
    the_id = job_id if job_id is not None else os.urandom(16).hex()
    deadline = due + _budget(settings)
    results: list[Any] = []
    log: list[dict[str, Any]] = []
    first, _ = _Walk(stages, settings, the_id).walk(0, results, log, due, deadline)
    if first is None:
        raise ValueError("every stage of this pipeline would be skipped (their conditions are false): nothing to run")
    return NewJob(
        id=the_id,
        task=first.task,
        queue=first.queue,
        priority=priority,
        args=first.args,
        kwargs=first.kwargs,
        scheduled_at=due,
        max_retries=max_retries,
        timeout=first.timeout,
        key=key,
        result_ttl=result_ttl,
        stages=stages,
        owner=owner,
        notify=notify,
        pipeline=settings,
        deadline=deadline,
        status=Status.WAITING if first.waiting else Status.QUEUED,
        wait_until=first.wait_until,
        waiting_for=first.waiting_for,
        stage=first.stage,
        results=results,
        stage_log=log,
    )


def first_stage(job: Job, now: float) -> NextStage:
    """Stage 0 (or the first not skipped) of a finished job being reset, due now, with a fresh
    budget; raises TemplateError (ValueError) if its references fail."""
    assert job.stages is not None and job.pipeline is not None
    first, _ = _Walk(job.stages, job.pipeline, job.id).walk(0, [], [], now, now + _budget(job.pipeline))
    if first is None:
        raise ValueError(f"job {job.id}: every stage would be skipped (their conditions are false)")
    return first


# settling a run ------------------------------------------------------------------------------------
def settle(job: Job, outcome: Outcome, now: float) -> Outcome:
    """The outcome of ``job`` once a run of its current stage ended with ``outcome`` (as
    ``conveyor.execution`` decided it for a task). A plain job is unchanged, unless it notifies
    its owner; other kinds (hand-back, rescue, discard) are unchanged."""
    if job.stages is None:
        if job.notify and job.owner and outcome.kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED):
            return _notified(job, outcome, [outcome.result] if outcome.kind is OutcomeKind.SUCCEEDED else [])
        return outcome
    kind = outcome.kind
    if kind is OutcomeKind.SUCCEEDED:
        return _advance(job, outcome.result, now)
    if kind is OutcomeKind.RETRY:
        return _restart(job, _as_pipeline_timeout(job, outcome, now), now)
    if kind is OutcomeKind.FAILED:
        return _failed(job, _as_pipeline_timeout(job, outcome, now), now)
    return outcome


def _advance(job: Job, result: Any, now: float) -> Outcome:
    """Stage ``job.stage`` returned ``result``: on to the next stage, or the pipeline succeeded."""
    assert job.stages is not None and job.pipeline is not None
    results = [*job.results[: job.stage], result]
    log = [dict(entry) for entry in job.stage_log]
    _entry(log, job.stage, "succeeded", job.started_at, now)
    try:
        nxt, skipped = _Walk(job.stages, job.pipeline, job.id).walk(job.stage + 1, results, log, now, job.deadline)
    except TemplateError as exc:  # the next stage's references fail: it never runs, the job fails
        failing = len(results)
        _entry(log, failing, "failed", None, now)
        record = StageRecord(stage=failing, results=results, stage_log=log, done=job.stage)
        error = JobError("TemplateError", str(exc))
        return _notified(
            job,
            Outcome(kind=OutcomeKind.FAILED, error=error, exit_code=ExitCode.EXECUTION_ERROR, record=record),
            results,
        )
    if nxt is not None:
        record = StageRecord(stage=nxt.stage, results=results, stage_log=log, next=nxt, done=job.stage, skipped=skipped)
        return Outcome(kind=OutcomeKind.ADVANCED, record=record)
    last = results[-1]
    record = StageRecord(stage=len(job.stages) - 1, results=results, stage_log=log, done=job.stage, skipped=skipped)
    outcome = Outcome(
        kind=OutcomeKind.SUCCEEDED,
        result=last,
        result_json=codec.dumps(last),
        exit_code=ExitCode.SUCCESS,
        record=record,
        then=chained(job, results, now),
    )
    return _notified(job, outcome, results)


def _restart(job: Job, outcome: Outcome, now: float) -> Outcome:
    """A failed stage with retries left: again at the same stage (CURRENT, earlier results kept) or
    at the first (FIRST, results cleared), due at the retry time, with a fresh time budget."""
    assert job.stages is not None and job.pipeline is not None
    due = outcome.retry_at if outcome.retry_at is not None else now
    deadline = due + _budget(job.pipeline)
    log = [dict(entry) for entry in job.stage_log]
    _entry(log, job.stage, "failed", job.started_at, now)
    walk = _Walk(job.stages, job.pipeline, job.id)
    if job.pipeline.get("restart") == "first":
        results: list[Any] = []
        log = []
        try:
            nxt, _ = walk.walk(0, results, log, due, deadline)
        except TemplateError as exc:
            return _failed(
                job,
                Outcome(
                    kind=OutcomeKind.FAILED,
                    error=JobError("TemplateError", str(exc)),
                    exit_code=ExitCode.EXECUTION_ERROR,
                ),
                now,
            )
        if nxt is None:  # cannot happen: stage 0 ran, so not every stage is skipped; fail rather than loop
            return _failed(job, outcome, now)
    else:
        results = list(job.results[: job.stage])
        frozen = job.stages[job.stage]
        if frozen.get("kind") == "call":  # the stage's parameters as they were resolved when it was reached
            nxt = NextStage(
                stage=job.stage,
                task=job.task,
                queue=job.queue,
                args=job.args,
                kwargs=job.kwargs,
                timeout=frozen.get("timeout"),
                scheduled_at=due,
                deadline=deadline,
            )
        else:  # a wait starts again
            nxt = _stage_row(frozen, job.stage, Scope({}, results, job.id), job.pipeline, due, deadline)
    record = StageRecord(stage=nxt.stage, results=results, stage_log=log, next=nxt)
    return Outcome(
        kind=OutcomeKind.RETRY,
        error=outcome.error,
        exit_code=outcome.exit_code,
        retry_at=due,
        record=record,
        lease_before=outcome.lease_before,
    )


def _failed(job: Job, outcome: Outcome, now: float) -> Outcome:
    """The pipeline failed at its current stage; its results so far are kept."""
    assert job.stages is not None
    log = [dict(entry) for entry in job.stage_log]
    _entry(log, job.stage, "failed", job.started_at, now)
    results = list(job.results[: job.stage])
    record = StageRecord(stage=job.stage, results=results, stage_log=log)
    failed = Outcome(
        kind=OutcomeKind.FAILED,
        error=outcome.error,
        exit_code=outcome.exit_code,
        record=record,
        lease_before=outcome.lease_before,
    )
    return _notified(job, failed, results)


def _as_pipeline_timeout(job: Job, outcome: Outcome, now: float) -> Outcome:
    """A stage aborted at the pipeline's deadline (its time-out was cut to the budget left) says so."""
    if outcome.exit_code != ExitCode.ABORTED or job.deadline is None or now < job.deadline - 0.5:
        return outcome
    error = error_of(PipelineTimeout(f"the pipeline exceeded its time-out of {_budget(job.pipeline or {}):g} s"))
    return Outcome(
        kind=outcome.kind,
        error=error,
        exit_code=ExitCode.ABORTED,
        retry_at=outcome.retry_at,
        lease_before=outcome.lease_before,
    )


def _notified(job: Job, outcome: Outcome, results: list[Any]) -> Outcome:
    """``outcome`` with the owner's notification, if the job asks for one: not for a time-out
    abort (exit code 130), which notifies nobody (kaiju_tasks)."""
    if not (job.notify and job.owner) or outcome.exit_code == ExitCode.ABORTED:
        return outcome
    status = Status.SUCCEEDED if outcome.kind is OutcomeKind.SUCCEEDED else Status.FAILED
    error = None if outcome.error is None else {"type": outcome.error.type, "message": outcome.error.message}
    data = {
        "task": job.task,
        "pipeline": (job.pipeline or {}).get("name"),
        "stage": job.stage if outcome.record is None else outcome.record.stage,
        "results": results,
        "error": error,
    }
    outcome.notice = Notice(owner=job.owner, job_id=job.id, status=status.value, exit_code=outcome.exit_code, data=data)
    return outcome


# stages no task runs ----------------------------------------------------------------------------------
def before_run(job: Job, now: float) -> Outcome | None:
    """For a claimed pipeline job: its settled outcome when no task is to run (its budget ran out;
    a Timer that ended; a Message that came, or whose time-out passed), else None, after cutting
    the run's time-out (``job.timeout``, in place) to the budget left."""
    if job.stages is None:
        return None
    if job.deadline is not None and now >= job.deadline:
        exc = PipelineTimeout(f"the pipeline exceeded its time-out of {_budget(job.pipeline or {}):g} s")
        return settle(job, _stage_failure(job, exc, now, ExitCode.ABORTED), now)
    frozen = job.stages[job.stage]
    kind = frozen.get("kind")
    if kind in ("timer", "message"):  # the stage began when the wait did, not when its end was picked up
        job.started_at = _wait_began(job)
    if kind == "timer":
        return settle(job, Outcome(kind=OutcomeKind.SUCCEEDED, exit_code=ExitCode.SUCCESS, result_json="null"), now)
    if kind == "message":
        if job.inbox is not None:
            payload = job.inbox.get("payload")
            return settle(job, Outcome(kind=OutcomeKind.SUCCEEDED, result=payload, exit_code=ExitCode.SUCCESS), now)
        if frozen.get("on_timeout") == "continue":
            return settle(job, Outcome(kind=OutcomeKind.SUCCEEDED, exit_code=ExitCode.SUCCESS, result_json="null"), now)
        name = frozen.get("name") or ""
        late = MessageTimeout(f"no message{f' {name!r}' if name else ''} came within {frozen.get('timeout'):g} s")
        return settle(job, _stage_failure(job, late, now, ExitCode.EXECUTION_ERROR), now)
    if job.deadline is not None:
        left = job.deadline - now
        job.timeout = left if job.timeout is None else min(job.timeout, left)
    return None


def _wait_began(job: Job) -> float:
    """When the job's current (wait) stage began: when the stage before it ended (skipped ones
    included), or when the job was due for a first stage."""
    for entry in reversed(job.stage_log[: job.stage]):
        if entry.get("finished_at") is not None:
            return float(entry["finished_at"])
    return job.created_at


def _stage_failure(job: Job, exc: BaseException, now: float, exit_code: int) -> Outcome:
    """A stage failure no task raised (a wait's time-out, the budget): retried while retries remain."""
    if job.retries >= job.max_retries:
        return Outcome(kind=OutcomeKind.FAILED, error=error_of(exc), exit_code=exit_code)
    delay = min(RETRY_BACKOFF * 2.0**job.retries, RETRY_MAX_BACKOFF) * random.uniform(0.8, 1.2)
    return Outcome(kind=OutcomeKind.RETRY, error=error_of(exc), exit_code=exit_code, retry_at=now + delay)


# chaining ------------------------------------------------------------------------------------------
def chained(job: Job, results: list[Any], now: float) -> NewJob | None:
    """The job ``then`` starts once ``job`` succeeded: a task call or a pipeline, fresh (stage 0,
    no old results), its references resolved against the finished job. None if there is none, or
    if its references fail (logged): the finished job's success stands."""
    settings = job.pipeline or {}
    then = settings.get("then")
    if not then:
        return None
    scope = Scope(settings.get("kws") or {}, results, job.id)
    try:
        return then_job(then, scope, now, owner=job.owner)
    except (ValueError, TypeError) as exc:  # TemplateError is a ValueError
        log.error("job %s succeeded, but its next job cannot be started: %s", job.id, exc)
        return None


def then_job(then: dict[str, Any], scope: Scope, now: float, owner: str | None) -> NewJob:
    """The NewJob of a frozen ``then`` (conveyor.stages freezes it), its references resolved."""
    if then["kind"] == "pipeline":
        spec = then["pipeline"]
        settings = dict(spec["settings"])
        settings["kws"] = resolve(settings.get("kws") or {}, scope)
        return new_job(
            spec["stages"],
            settings,
            now=now,
            due=now,
            max_retries=spec["max_retries"],
            priority=spec["priority"],
            owner=spec.get("owner") or owner,
            notify=bool(spec.get("notify")),
        )
    args, kwargs = resolve(then["args"], scope), resolve(then["kwargs"], scope)
    codec.check_payload(then["task"], args, kwargs)
    return NewJob(
        id=os.urandom(16).hex(),
        task=then["task"],
        queue=then["queue"],
        priority=then["priority"],
        args=args,
        kwargs=kwargs,
        scheduled_at=now,
        max_retries=then["max_retries"],
        timeout=then.get("timeout"),
        result_ttl=then.get("result_ttl", DEFAULT_RESULT_TTL),
        owner=owner,
    )


def finite(value: float) -> bool:
    """True for a finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
