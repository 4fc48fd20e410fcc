"""The operations routes: queues (pause, resume), the app's tasks (disable, enable), the switches,
workers (stop: system), job counts and the health report. Anyone signed in may read them (they are
nobody's rows); pausing and disabling need modify-others; stopping workers and turning everything
off need system. Each change is audited."""

from __future__ import annotations

from ..health import Health
from ..job import Status
from ..operations import QueueInfo, Switches, WorkerInfo
from . import access
from .errors import Invalid
from .routing import Call, Router
from .schemas import Changed, HealthQuery, Page, PageQuery, Stopped, StopWorkersBody, TaskInfo

router = Router("operations")


def page_of(items: list[object], wanted: PageQuery) -> Page[object]:
    """One page of a list held whole in memory."""
    end = wanted.offset + wanted.limit
    return Page(items=items[wanted.offset : end], next_offset=end if len(items) > end else None)


@router.get("/api/queues", query=PageQuery, answer=Page[QueueInfo])
def list_queues(call: Call) -> Page[object]:
    """Every queue that has jobs or is paused: paused or not, its jobs by status, its oldest due job."""
    return page_of(list(call.app.queues()), call.query)


#: What switching a queue or a task off and on is called: the forbidden action, and the audit action off / on.
_SWITCHED = {
    "queue": ("pausing or resuming a queue", "queue.pause", "queue.resume"),
    "task": ("disabling or enabling a task", "task.disable", "task.enable"),
}


def _switch(call: Call, scope: str, off: bool) -> Changed:
    """Turn the queue (pause) or task (disable) of the path off (``off``) or on again; audited."""
    name = call.params["name"]
    what, off_action, on_action = _SWITCHED[scope]
    access.operator(call.user, what)
    if scope == "queue":
        changed = call.app.pause_queue(name) if off else call.app.resume_queue(name)
    else:
        changed = call.app.disable_task(name) if off else call.app.enable_task(name)
    call.audit(off_action if off else on_action, name, {"changed": changed})
    return Changed(changed=changed)


@router.post("/api/queues/{name}/pause", answer=Changed, errors=(403, 422))
def pause_queue(call: Call) -> Changed:
    """Stop claims from the queue on every worker until resumed (running jobs finish)."""
    return _switch(call, "queue", True)


@router.post("/api/queues/{name}/resume", answer=Changed, errors=(403, 422))
def resume_queue(call: Call) -> Changed:
    """Let workers claim from the queue again."""
    return _switch(call, "queue", False)


@router.get("/api/tasks", query=PageQuery, answer=Page[TaskInfo])
def list_tasks(call: Call) -> Page[object]:
    """The app's tasks, their options, and whether each is disabled."""
    disabled = call.app.switches().disabled_tasks
    tasks = [
        TaskInfo(name=name, queue=task.settings.queue, priority=int(task.settings.priority),
                 max_retries=task.settings.max_retries, timeout=task.settings.timeout,
                 result_ttl=task.settings.result_ttl, disabled=name in disabled)
        for name, task in sorted(call.app.tasks.items())
    ]  # fmt: skip
    return page_of(list(tasks), call.query)


@router.post("/api/tasks/{name}/disable", answer=Changed, errors=(403, 422))
def disable_task(call: Call) -> Changed:
    """Leave the task's queued jobs queued, untouched, until enabled (running ones finish)."""
    return _switch(call, "task", True)


@router.post("/api/tasks/{name}/enable", answer=Changed, errors=(403, 422))
def enable_task(call: Call) -> Changed:
    """Let workers claim the task's jobs again."""
    return _switch(call, "task", False)


@router.get("/api/switches", answer=Switches)
def switches(call: Call) -> Switches:
    """What is turned off now: paused queues, disabled tasks, everything."""
    return call.app.switches()


def _everything(call: Call, off: bool) -> Changed:
    """Turn every claim off (``off``) or on again; audited."""
    access.system(call.user, "turning every claim off or on")
    changed = call.app.disable_all() if off else call.app.enable_all()
    call.audit("all.disable" if off else "all.enable", None, {"changed": changed})
    return Changed(changed=changed)


@router.post("/api/switches/all/disable", answer=Changed, errors=(403,))
def disable_all(call: Call) -> Changed:
    """Claim nothing anywhere until enabled again (a maintenance window)."""
    return _everything(call, True)


@router.post("/api/switches/all/enable", answer=Changed, errors=(403,))
def enable_all(call: Call) -> Changed:
    """Undo turning everything off."""
    return _everything(call, False)


@router.get("/api/workers", query=PageQuery, answer=Page[WorkerInfo])
def list_workers(call: Call) -> Page[object]:
    """Every registered worker process (running, stopping, stopped or dead), newest first."""
    return page_of(list(call.app.workers()), call.query)


@router.post("/api/workers/stop", body=StopWorkersBody, answer=Stopped, errors=(403, 413, 422))
def stop_workers(call: Call) -> Stopped:
    """Ask workers to stop gracefully: those serving any of ``queues``, or ``worker_ids``."""
    access.system(call.user, "stopping workers")
    body: StopWorkersBody = call.body
    if (body.queues is None) == (body.worker_ids is None):
        raise Invalid("give exactly one of queues or worker_ids")
    asked = call.app.stop_workers(queues=body.queues, worker_ids=body.worker_ids)
    call.audit("workers.stop", None, {"queues": body.queues, "worker_ids": asked})
    return Stopped(worker_ids=asked)


@router.get("/api/stats", answer=dict[str, dict[Status, int]])
def stats(call: Call) -> dict[str, dict[Status, int]]:
    """Job counts by queue and status, with an ``all`` row summing every queue."""
    return call.app.stats()


@router.get("/api/health", query=HealthQuery, answer=Health)
def health(call: Call) -> Health:
    """The health report: the store, its schema, live workers per queue, the leader, due jobs.

    ``queues`` (comma-separated): queues that must have a live worker."""
    wanted: HealthQuery = call.query
    queues = None if wanted.queues is None else [q for q in (q.strip() for q in wanted.queues.split(",")) if q]
    return call.app.health(queues or None)
