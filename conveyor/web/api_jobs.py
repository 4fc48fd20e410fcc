"""The jobs routes: enqueue (a task or a pipeline), list with filters and pages, one job with its
stages and mailbox, its events, and the controls (cancel, retry, reset, send a message, bulk).

A job the user may not see is answered 404 exactly as a job that does not exist; one they may see
but not change, 403. Each change is audited (``job.enqueue``, ``job.cancel``...)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import msgspec

from ..accounts import Permission, User
from ..app import App
from ..backends.base import JobQuery
from ..errors import InvalidTransition, JobNotFound
from ..events import Event
from ..job import Job, Status
from ..stage_view import stage_views
from ..subscription import kinds_filter
from ..task import CallOptions, Signature, make_options
from . import access
from .errors import Conflict, Invalid, NotFound
from .routing import Call, Router, encoded
from .schemas import (
    MAX_BULK,
    MAX_PAGE,
    BulkBody,
    BulkResult,
    EnqueueBody,
    JobDetail,
    JobEventsQuery,
    JobFilter,
    JobsQuery,
    MessageBody,
    Page,
    PipelineBody,
    PipelineInfo,
    RetryBody,
    Sent,
    SeqPage,
    priority_of,
)

router = Router("jobs")

#: Stored statuses each bulk action applies to (QUEUED includes the scheduled: queued, not due yet).
BULK_STATUSES = {
    "cancel": (Status.QUEUED, Status.RUNNING, Status.WAITING),
    "retry": (Status.FAILED, Status.CANCELLED),
}
AUDITED_IDS = 100  #: ids kept in a bulk action's audit entry


# reading ------------------------------------------------------------------------------------------------------
def public(job: Job) -> Job:
    """A job as answered: the run's fencing token left out."""
    job.token = None
    return job


def missing(job_id: str) -> str:
    """The one message for a job that does not exist, or that the user may not see."""
    return f"no job with id {job_id!r}"


def find_job(call: Call, job_id: str) -> Job:
    """The job, as its reader sees it; 404 if there is none or the user may not see it."""
    job = call.app.backend.get(job_id)
    if job is None or not call.user.can_view(job.owner):
        raise NotFound(missing(job_id))
    job.status = job.view_status(call.app.clock())
    return job


def changeable_job(call: Call, job_id: str) -> Job:
    """The job, if the user may change it: 404 if they may not see it, 403 if they may not change it."""
    job = find_job(call, job_id)
    access.modifiable(call.user, job.owner, missing(job_id), f"job {job_id}")
    return job


def job_query(app: App, wanted: JobFilter, restrict: str | None, limit: int, offset: int) -> JobQuery | None:
    """The store's query for ``wanted``, limited to the jobs of ``restrict`` (a user without
    view-others); None when nothing can match (they asked for another owner's jobs)."""
    owner = wanted.owner
    if restrict is not None:
        if owner is not None and owner != restrict:
            return None
        owner = restrict
    query = JobQuery(queue=wanted.queue, task=wanted.task, owner=owner, limit=limit, offset=offset)
    query.search = wanted.q
    if wanted.status is not None:  # as App.jobs: SCHEDULED is QUEUED not due yet
        now = app.clock()
        query.status = Status.QUEUED if wanted.status in (Status.QUEUED, Status.SCHEDULED) else wanted.status
        if wanted.status is Status.QUEUED:
            query.due_before = now
        elif wanted.status is Status.SCHEDULED:
            query.due_after = now
    return query


def list_page(app: App, query: JobQuery | None) -> Page[Job]:
    """One page of jobs for ``query`` (read one more row to know whether another page follows)."""
    if query is None:
        return Page(items=[], next_offset=None)
    limit, offset = query.limit, query.offset
    query.limit = limit + 1
    found = app.backend.list_jobs(query)
    now = app.clock()
    items = []
    for job in found[:limit]:
        job.status = job.view_status(now)
        items.append(public(job))
    return Page(items=items, next_offset=offset + limit if len(found) > limit else None)


#: from a job made to the routes of that job
JOB_LINKS = tuple((f"{name}", f"jobs_{name}", "id", "/id") for name in
                  ("get_job", "job_events", "cancel", "retry", "reset", "send_message"))  # fmt: skip


#: from a listed job to the routes of that job
LISTED_JOB_LINKS = tuple(
    (name, target, parameter, f"/items/0{pointer}") for name, target, parameter, pointer in JOB_LINKS
)


@router.get("/api/jobs", query=JobsQuery, answer=Page[Job], links=LISTED_JOB_LINKS)
def list_jobs(call: Call) -> Page[Job]:
    """List jobs, newest first.

    Filters: queue, status, task, owner, q (an id prefix, or text in the arguments). Without
    view-others only the caller's own jobs are listed."""
    wanted: JobsQuery = call.query
    restrict = access.list_owner(call.user)
    return list_page(call.app, job_query(call.app, wanted.filter(), restrict, wanted.limit, wanted.offset))


@router.get("/api/jobs/{id}", answer=JobDetail, errors=(404,))
def get_job(call: Call) -> JobDetail:
    """One job, with its stages as a reader sees them and its mailbox."""
    job = find_job(call, call.params["id"])
    fields = msgspec.structs.asdict(public(job))
    views = stage_views(job, call.app.clock())
    return JobDetail(**fields, elapsed=job.elapsed, stage_view=views, messages=call.app.messages(job.id))


@router.get("/api/jobs/{id}/events", query=JobEventsQuery, answer=SeqPage[Event], errors=(404,))
def job_events(call: Call) -> SeqPage[Event]:
    """The job's events, oldest first (``after``: read on from a sequence number)."""
    job = find_job(call, call.params["id"])
    wanted: JobEventsQuery = call.query
    kinds = None if wanted.kinds is None else kinds_filter([k for k in wanted.kinds.split(",") if k])
    events = call.app.events(job_id=job.id, kinds=kinds, after=wanted.after, limit=wanted.limit)
    return SeqPage(items=list(events), next_after=events[-1].seq if events else wanted.after)


# making jobs --------------------------------------------------------------------------------------------------
def _answer_new(call: Call, job: Job, given_id: str, action: str, data: dict[str, Any]) -> Any:
    """The answer to an enqueue: 201 and the new job; 200 and the job already holding its key (if the
    user may see it; else 409, saying nothing of it)."""
    job.status = job.view_status(call.app.clock())
    if job.id != given_id:
        if not call.user.can_view(job.owner):
            raise Conflict("the key is held by another unfinished job")
        return encoded(public(job), 200)
    call.audit(action, job.id, data)
    return encoded(public(job), 201)


@router.post("/api/jobs", body=EnqueueBody, answer=Job, status=201, also=(200,), errors=(403, 409, 413, 422),
             links=JOB_LINKS)  # fmt: skip
def enqueue(call: Call) -> Any:
    """Enqueue a job of one of the app's tasks.

    Options left out are the task's own. The job is the caller's (a system user may give another
    ``owner``). A key already held by an unfinished job answers that job (200)."""
    body: EnqueueBody = call.body
    app = call.app
    owner = access.new_owner(call.user, body.owner)
    task = app.tasks.get(body.task)
    if task is None:
        raise Invalid(f"unknown task {body.task!r}; the app's tasks: {_names(app.tasks)}")
    try:
        inspect.signature(task.fn).bind(*body.args, **body.kwargs)
    except TypeError as exc:
        raise Invalid(f"task {task.name!r} cannot take these arguments: {exc}") from None
    options = task.settings
    if body.result_ttl is not None:
        options = make_options(**{**msgspec.structs.asdict(options), "result_ttl": body.result_ttl})
    job_id = body.id or os.urandom(16).hex()
    given = CallOptions(delay=body.delay, eta=body.eta, priority=priority_of(body.priority), queue=body.queue,
                        key=body.key, max_retries=body.max_retries, timeout=body.timeout, id=job_id, owner=owner,
                        notify=body.notify)  # fmt: skip
    handle = app.enqueue_many([Signature(app, task.name, body.args, body.kwargs, options, given)])[0]
    return _answer_new(call, handle.record, job_id, "job.enqueue", {"task": task.name, "queue": handle.record.queue})


@router.post("/api/pipelines", body=PipelineBody, answer=Job, status=201, also=(200,), errors=(403, 409, 413, 422),
             links=JOB_LINKS)  # fmt: skip
def enqueue_pipeline(call: Call) -> Any:
    """Enqueue a pipeline: one declared in the app by name, or its ``to_dict`` form."""
    body: PipelineBody = call.body
    owner = access.new_owner(call.user, body.owner)
    if not isinstance(body.pipeline, str) and _has_nul(body.pipeline):
        raise Invalid("a pipeline's names and queues cannot hold a NUL character")
    job_id = body.id or os.urandom(16).hex()
    handle = call.app.enqueue_pipeline(body.pipeline, kws=body.kwargs, id=job_id, key=body.key, delay=body.delay,
                                       eta=body.eta, owner=owner, notify=body.notify)  # fmt: skip
    name = body.pipeline if isinstance(body.pipeline, str) else (handle.record.pipeline or {}).get("name")
    return _answer_new(call, handle.record, job_id, "job.enqueue", {"pipeline": name, "task": handle.record.task})


@router.get("/api/pipelines", answer=list[PipelineInfo])
def list_pipelines(call: Call) -> list[PipelineInfo]:
    """The pipelines the app declares by name, to enqueue with ``POST /api/pipelines``."""
    from ..pipeline import describe_stage

    return [
        PipelineInfo(name=name, stages=[describe_stage(stage) for stage in declared.stages],
                     kws=dict(declared.settings.get("kws") or {}), queue=str(declared.settings.get("queue")))
        for name, declared in sorted(call.app.pipelines.items())
    ]  # fmt: skip


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in any string (key or value) of a JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _names(named: dict[str, Any], shown: int = 20) -> str:
    """The first ``shown`` names, for a message."""
    names = sorted(named)
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return (", ".join(names[:shown]) + more) or "none"


# controls -----------------------------------------------------------------------------------------------------
@router.post("/api/jobs/{id}/cancel", answer=Job, errors=(403, 404, 409))
def cancel(call: Call) -> Job:
    """Cancel a job that has not finished (a running one is stopped, or its result discarded)."""
    job_id = call.params["id"]
    job = changeable_job(call, job_id)
    if job.status.finished:
        raise Conflict(f"job {job_id} is {job.status.value}; only an unfinished job can be cancelled")
    done = call.app.cancel(job_id)
    call.audit("job.cancel", job_id)
    return public(done)


@router.post("/api/jobs/{id}/retry", body=RetryBody, answer=Job, errors=(403, 404, 409, 413))
def retry(call: Call) -> Job:
    """Queue a failed or cancelled job again now (``reset``: counters zeroed; a pipeline starts over)."""
    job_id = call.params["id"]
    changeable_job(call, job_id)
    body: RetryBody = call.body
    done = call.app.retry(job_id, reset=body.reset)
    call.audit("job.retry", job_id, {"reset": body.reset})
    return public(done)


@router.post("/api/jobs/{id}/reset", answer=Job, errors=(403, 404, 409))
def reset(call: Call) -> Job:
    """Put a finished job back to its first stage with fresh state."""
    job_id = call.params["id"]
    changeable_job(call, job_id)
    done = call.app.reset(job_id)
    call.audit("job.reset", job_id)
    return public(done)


@router.post("/api/jobs/{id}/messages", body=MessageBody, answer=Sent, errors=(403, 404, 409, 413, 422))
def send_message(call: Call) -> Sent:
    """Send a message to a job: a job waiting on a Message stage of that name resumes with it."""
    job_id = call.params["id"]
    changeable_job(call, job_id)
    body: MessageBody = call.body
    delivery = call.app.send_message(job_id, body.payload, name=body.name, message_id=body.id)
    call.audit("job.message", job_id, {"name": body.name, "message_id": body.id, "delivery": delivery.value})
    return Sent(delivery=delivery)


@router.post("/api/jobs/bulk", body=BulkBody, answer=BulkResult, errors=(403, 413, 422))
def bulk(call: Call) -> BulkResult:
    """Cancel or retry many jobs: the ``ids`` given, or every job matching ``filter``.

    At most 10,000. Only jobs the caller may change, in a state the action applies to, are
    matched; ``dry_run`` counts them and changes nothing."""
    body: BulkBody = call.body
    access.writer(call.user)
    if (body.ids is None) == (body.filter is None):
        raise Invalid("give exactly one of ids or filter")
    matched = _matched_ids(call, body, body.ids) if body.ids is not None else _matched_filter(call, body)
    if body.dry_run:
        return BulkResult(action=body.action, dry_run=True, matched=len(matched), changed=0, ids=matched)
    changed = [job_id for job_id in matched if _apply(call.app, body.action, job_id)]
    described: dict[str, Any] = {"matched": len(matched), "changed": len(changed), "ids": changed[:AUDITED_IDS]}
    if body.filter is not None:
        described["filter"] = msgspec.to_builtins(body.filter)
    call.audit(f"jobs.bulk_{body.action}", None, described)
    return BulkResult(action=body.action, dry_run=False, matched=len(matched), changed=len(changed), ids=changed)


def _applies(action: str, job: Job, user: User) -> bool:
    """Whether a bulk ``action`` applies to ``job`` (its state) and ``user`` may change it."""
    return job.status in BULK_STATUSES[action] and user.can_modify(job.owner)


def _matched_ids(call: Call, body: BulkBody, ids: list[str]) -> list[str]:
    """Of ``ids``, those the user may change, in a state the action applies to."""
    matched = []
    for job_id in dict.fromkeys(ids):
        job = call.app.backend.get(job_id)
        if job is not None and _applies(body.action, job, call.user):
            matched.append(job_id)
    return matched


def _matched_filter(call: Call, body: BulkBody) -> list[str]:
    """Every job matching the filter that the user may change, in a state the action applies to, at
    most MAX_BULK, collected before any is changed (a change moves it out of the listing)."""
    assert body.filter is not None
    user, wanted = call.user, body.filter
    restrict = None if user.has(Permission.MODIFY_OTHERS) else user.name
    statuses = BULK_STATUSES[body.action]
    if wanted.status is not None:
        stored = Status.QUEUED if wanted.status is Status.SCHEDULED else wanted.status
        if stored not in statuses:
            return []
        filters = [wanted]
    else:
        filters = [msgspec.structs.replace(wanted, status=status) for status in statuses]
    found: dict[str, None] = {}
    for one in filters:
        offset = 0
        while len(found) < MAX_BULK:
            query = job_query(call.app, one, restrict, MAX_PAGE, offset)
            if query is None:
                return []
            if one.status is Status.QUEUED and wanted.status is None:  # every queued job, due or not
                query.due_before = None
            page = call.app.backend.list_jobs(query)
            for job in page:
                if _applies(body.action, job, user):
                    found.setdefault(job.id)
            if len(page) < MAX_PAGE:
                break
            offset += MAX_PAGE
    return list(found)[:MAX_BULK]


def _apply(app: App, action: str, job_id: str) -> bool:
    """Cancel or retry one job; False if it changed state meanwhile (or went)."""
    try:
        if action == "cancel":
            return app.cancel(job_id).status is Status.CANCELLED
        app.retry(job_id)
        return True
    except (InvalidTransition, JobNotFound):
        return False
