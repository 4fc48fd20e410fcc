"""App: the task registry, its configuration, and the enqueue / query / control facade.

Thin by design: the event log's reading and following live in ``subscription.py``, operations
(registry, switches, stop requests) in ``operations.py``, ``health.py``, ``locks.py`` and
``background.py``; the App validates arguments and hands them over."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from . import operations, pipeline, tracing
from .app_accounts import AccountsMixin
from .app_pipelines import PipelinesMixin
from .app_schedules import SchedulesMixin
from .app_services import ServicesMixin
from .backends import describe_url, open_backend
from .backends.base import Backend, JobQuery
from .errors import InvalidTransition, JobNotFound
from .events import Event, EventQuery
from .execution import run_sync, unknown_task
from .handle import JobHandle
from .job import Job, NewJob, Status
from .operations import QueueInfo, Switches, SwitchScope, WorkerInfo
from .outcome import Outcome, OutcomeKind
from .subscription import Subscription, check_position, kinds_filter
from .task import CallOptions, Signature, Task, make_options

if TYPE_CHECKING:
    from .background import BackgroundWorker
    from .health import Health
    from .locks import Lock
    from .schedule_types import ScheduleRecord
    from .scheduler import Repeat
    from .services import Service
    from .stages import Pipeline

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("conveyor.app")

DEFAULT_URL = "sqlite:///conveyor.db"
FLAG, ENV, CODE, DEFAULT = "--url", "$CONVEYOR_URL", "App(url) in code", "the default"  #: where a URL came from


def default_url() -> str:
    """The store URL when none is given: $CONVEYOR_URL, else a SQLite file here."""
    return os.environ.get("CONVEYOR_URL") or DEFAULT_URL


def choose_url(flag: str | None = None, code_url: str | None = None) -> tuple[str, str]:
    """The store to use and where it came from, by the one precedence: ``--url`` > $CONVEYOR_URL >
    the URL given in code (``App(url)``) > ``sqlite:///conveyor.db`` (relative to the working directory)."""
    for url, source in ((flag, FLAG), (os.environ.get("CONVEYOR_URL"), ENV), (code_url, CODE)):
        if url:
            return url, source
    return DEFAULT_URL, DEFAULT


class App(PipelinesMixin, SchedulesMixin, ServicesMixin, AccountsMixin):
    """A set of tasks bound to one store.

    ``url``: the store given in code, kept as ``code_url``. The store used (``url``) is the first of:
    a worker's or command's ``--url`` (``use_url``), $CONVEYOR_URL, this argument, ``sqlite:///conveyor.db``;
    a warning is logged when a ``--url`` or $CONVEYOR_URL overrides a different URL given here.
    ``lease``: seconds a worker holds a job between heartbeats; short in tests.
    ``clock``: the time source (Unix seconds) for every store step; injectable for tests.
    ``migrate``: create or upgrade a server store's schema on first use (safe from many hosts at
    once); False only checks it is current, for deployments that run ``conveyor migrate`` first.
    ``max_rescues``: how many times a job is queued again after its worker died (its lease ran
    out) while running it; the next such death fails it with exit code 137 (a poison job).
    ``eager``: run every enqueued job inline at once, with no retry (see ``eager()``).
    ``event_ttl``: seconds the event log keeps an event (the leader prunes older ones; a job's
    events also go when the job is pruned). A week by default.
    ``notification_ttl``: seconds an owner's notification is kept (the leader prunes older ones).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        lease: float = 30.0,
        clock: Callable[[], float] = time.time,
        migrate: bool = True,
        max_rescues: int = 2,
        eager: bool = False,
        event_ttl: float = 7 * 86400.0,
        notification_ttl: float = 30 * 86400.0,
    ) -> None:
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        if isinstance(max_rescues, bool) or not isinstance(max_rescues, int) or max_rescues < 0:
            raise ValueError(f"max_rescues must be an int >= 0, got {max_rescues!r}")
        if isinstance(event_ttl, bool) or not isinstance(event_ttl, (int, float)) or not event_ttl > 0:
            raise ValueError(f"event_ttl must be > 0 seconds, got {event_ttl!r}")
        self.code_url: str | None = url or None  #: the URL given in code; None when none was
        self.url, self.url_source = choose_url(None, self.code_url)  #: the store used, and where it came from
        self._warn_if_overridden()
        self.lease = float(lease)
        self.clock = clock
        self.migrate = migrate
        self.max_rescues = max_rescues
        self.event_ttl = float(event_ttl)
        ttl = notification_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ValueError(f"notification_ttl must be > 0 seconds, got {notification_ttl!r}")
        self.notification_ttl = float(notification_ttl)
        self.is_eager = bool(eager)  #: True while enqueued jobs run inline (App(eager=True) or ``with app.eager()``)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.pipelines: dict[str, Pipeline] = {}  #: pipelines declared with a name, to enqueue by name
        self.periodic_schedules: dict[str, ScheduleRecord] = {}  #: declared in code (@app.periodic), synced by workers
        self.repeats: dict[str, Repeat] = {}  #: @app.repeat functions, run by each worker of this app
        self.service_defs: dict[str, Service] = {}  #: @app.service declarations; workers run their replicas
        self._backend: Backend | None = None

    def __repr__(self) -> str:
        return f"<App {self.url} tasks={sorted(self.tasks)}>"

    def use_url(self, url: str | None, source: str = FLAG) -> None:
        """Point the app at the store named on the command line (``--url``), which beats
        $CONVEYOR_URL and the URL given in code; None keeps the store chosen so far."""
        if not url or url == self.url:
            return
        self.close()
        self._backend = None
        self.url, self.url_source = url, source
        self._warn_if_overridden()

    def _warn_if_overridden(self) -> None:
        if self.code_url and self.url_source in (FLAG, ENV) and self.url != self.code_url:
            log.warning(
                "using the store %s from %s, not %s given in code (App(url)); precedence: "
                "--url > $CONVEYOR_URL > App(url) > sqlite:///conveyor.db",
                describe_url(self.url),
                self.url_source,
                describe_url(self.code_url),
            )

    @property
    def backend(self) -> Backend:
        """The store, opened (and its schema created) on first use."""
        if self._backend is None:
            backend = open_backend(self.url, migrate=self.migrate)
            backend.setup(self.migrate)
            self._backend = backend
        return self._backend

    def close(self) -> None:
        """Close the store's connections held by this thread."""
        if self._backend is not None:
            self._backend.close()

    # declaring tasks ------------------------------------------------------------
    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...
    @overload
    def task(self, fn: None = None, /, *, name: str | None = None, **options: Any) -> Callable[[F], Task[Any, Any]]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any) -> Any:
        """Register a function as a task. Options: queue, priority, max_retries, backoff,
        max_backoff, jitter, timeout, result_ttl; ``name`` defaults to module.qualname."""
        task_options = make_options(**options)

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{func.__module__}.{func.__qualname__}"
            if name is None and func.__module__ == "__main__":
                warnings.warn(
                    f"task {task_name!r} is declared in __main__ (a script run directly): a worker imports "
                    f"the module under its own name, so it will not find this task; pass "
                    f"@app.task(name=...) or declare it in an importable module",
                    stacklevel=3 if fn is not None else 2,
                )
            if task_name in self.tasks and self.tasks[task_name].fn is not func:
                raise ValueError(f"a different task is already registered as {task_name!r}")
            task = Task(self, func, task_name, task_options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    # enqueuing --------------------------------------------------------------------
    def enqueue(
        self, task: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **call_options: Any
    ) -> JobHandle:
        """Enqueue a job by task name (the task need not be registered here)."""
        registered = self.tasks.get(task)
        options = registered.settings if registered else make_options()
        return Signature(self, task, args, kwargs or {}, options, CallOptions(**call_options)).delay()

    def enqueue_many(self, signatures: Iterable[Signature], *, connection: Any = None) -> list[JobHandle]:
        """Enqueue many calls in one transaction: all are stored, or none.

        ``connection`` (or the calls' ``.options(connection=...)``, which must agree): the
        caller's own open database connection; the jobs are written in its transaction and
        exist only if the caller commits it. See ``Backend.enqueue``."""
        signatures = list(signatures)
        now = self.clock()
        new_jobs = [sig.to_new_job(now) for sig in signatures]
        if not new_jobs:
            return []
        given = [sig.call.connection for sig in signatures if sig.call.connection is not None]
        if connection is not None:
            given.append(connection)
        if any(conn is not given[0] for conn in given):
            raise ValueError("the calls of one enqueue_many must all use the same connection")
        return self.enqueue_jobs(new_jobs, now, connection=given[0] if given else None)

    def enqueue_jobs(self, new_jobs: Sequence[NewJob], now: float, *, connection: Any = None) -> list[JobHandle]:
        """Store jobs built and checked at ``now`` (``Signature.to_new_job``, ``Pipeline.to_new_job``)
        in one transaction, run them at once in eager mode; the common end of every enqueue, so the one
        place an enqueue's spans are made (conveyor.tracing)."""
        if connection is not None and self.is_eager:
            raise ValueError("eager mode cannot run a job enqueued inside your own transaction (connection=)")
        # with OpenTelemetry and an active span: a producer span per job, its context carried in the job
        stored = tracing.enqueue(new_jobs, lambda: self.backend.enqueue(new_jobs, now, connection=connection))
        if self.is_eager:
            stored = [self._run_eagerly(job) for job in stored]
        return [JobHandle(self, job) for job in stored]

    # eager mode -------------------------------------------------------------------
    @contextlib.contextmanager
    def eager(self, enabled: bool = True) -> Iterator[App]:
        """Within the block, ``.delay()`` and ``enqueue`` run each job inline at once (see
        ``is_eager``); the previous mode is restored after. For tests and scripts."""
        previous, self.is_eager = self.is_eager, enabled
        try:
            yield self
        finally:
            self.is_eager = previous

    def _run_eagerly(self, job: Job) -> Job:
        """Run a just-stored job in this thread and store how it ended, with no retry: an
        exception (Retry included) fails it. A pipeline runs stage after stage until it ends or
        waits (a Timer, a Message). A job not queued (a key's earlier job) is left as is."""
        backend = self.backend
        while True:
            started = backend.start(job.id, "eager", self.lease, self.clock())
            if started is None or started.token is None:
                return backend.get(job.id) or job
            backend.finish(started.id, started.token, self._run_inline(started, retry=False), self.clock())
            if started.stages is None:
                return backend.get(started.id) or started

    def _run_inline(self, job: Job, *, retry: bool) -> Outcome:
        """Run a claimed job's current stage in this thread and decide the job's outcome
        (conveyor.pipeline); ``retry`` False turns a retry into a failure (eager mode)."""
        early = pipeline.before_run(job, self.clock())
        if early is not None:
            return early if retry else _without_retry(early)
        task = self.tasks.get(job.task)
        outcome = unknown_task(job) if task is None else run_sync(task, job, self.backend, self.clock)
        return pipeline.settle(job, outcome if retry else _without_retry(outcome), self.clock())

    # reading ----------------------------------------------------------------------
    def _view(self, job: Job) -> Job:
        job.status = job.view_status(self.clock())
        return job

    def job(self, job_id: str) -> Job:
        """The full record of a job; raises JobNotFound."""
        job = self.backend.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return self._view(job)

    def handle(self, job_id: str) -> JobHandle:
        """A handle on an existing job; raises JobNotFound."""
        return JobHandle(self, self.job(job_id))

    def jobs(
        self,
        queue: str | None = None,
        status: Status | str | None = None,
        task: str | None = None,
        limit: int = 100,
        offset: int = 0,
        *,
        scheduled_by: str | None = None,
        owner: str | None = None,
        search: str | None = None,
    ) -> list[Job]:
        """Jobs matching every filter given, newest first (``scheduled_by``: the runs of a schedule;
        ``owner``: the jobs of that owner; ``search``: text in the arguments, or an id prefix)."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        query = JobQuery(queue=queue, task=task, scheduled_by=scheduled_by, owner=owner, search=search or None,
                         limit=limit, offset=offset)  # fmt: skip
        if status is not None:
            wanted = Status(status)
            query.status = Status.QUEUED if wanted in (Status.QUEUED, Status.SCHEDULED) else wanted
            if wanted is Status.QUEUED:
                query.due_before = self.clock()
            elif wanted is Status.SCHEDULED:
                query.due_after = self.clock()
        return [self._view(job) for job in self.backend.list_jobs(query)]

    def stats(self) -> dict[str, dict[Status, int]]:
        """Job counts: {queue: {status: n}}, with an ``all`` row summing every queue. A queued
        job not due yet counts as SCHEDULED; only statuses with jobs appear."""
        table: dict[str, dict[Status, int]] = {}
        total: dict[Status, int] = {}
        for (queue, status), n in sorted(self.backend.counts(self.clock()).items()):
            table.setdefault(queue, {})[status] = n
            total[status] = total.get(status, 0) + n
        table["all"] = total
        return table

    # control ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished: a queued one never runs, a running one is
        stopped (async) or has its result discarded (sync). Raises JobNotFound."""
        job = self.backend.cancel(job_id, self.clock())
        if job is None:
            raise JobNotFound(job_id)
        return self._view(job)

    def retry(self, job_id: str, *, reset: bool = False) -> Job:
        """Queue a failed or cancelled job again now, keeping its counters (``reset`` zeroes
        them and clears its result and error; a pipeline then starts over, as ``reset``). A
        pipeline resumes at the stage it failed at. Raises JobNotFound or InvalidTransition."""
        before = self.job(job_id)
        if before.status not in (Status.FAILED, Status.CANCELLED):
            raise InvalidTransition(
                f"job {job_id} is {before.status.value}; only failed or cancelled jobs can be retried"
            )
        if reset and before.stages is not None:  # a pipeline starts over at its first stage
            return self._view(self.reset(job_id))
        if before.stages is not None and before.error is not None and before.error.type == "TemplateError":
            raise InvalidTransition(  # the row still holds the stage before the one whose references failed
                f"job {job_id} failed resolving a stage's references ({before.error.message}); running that stage "
                "again would fail the same way: reset it (retry(reset=True)) to start over"
            )
        job = self.backend.requeue(job_id, self.clock(), reset=reset)
        if job is None:
            raise JobNotFound(job_id)
        return self._view(job)

    def prune(self, older_than: float | None = None) -> int:
        """Delete finished jobs past their result TTL, or all finished more than
        ``older_than`` seconds ago. Returns how many were deleted."""
        now = self.clock()
        return self.backend.prune(now, None if older_than is None else now - older_than)

    # the event log ------------------------------------------------------------------
    def events(
        self,
        job_id: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        kinds: Iterable[str] | str | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> list[Event]:
        """Events matching every filter given (``kinds``: any of these kinds, str or EventKind),
        with a sequence number past ``after``, oldest first, at most ``limit``. To read on, pass
        the last one's ``seq`` as ``after``."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        query = EventQuery(after=check_position(after), job_id=job_id, task=task, queue=queue,
                           kinds=kinds_filter(kinds), limit=limit)  # fmt: skip
        return self.backend.events(query)

    def subscribe(
        self,
        pattern: str = "*",
        *,
        after: int | None = None,
        job_id: str | None = None,
        kinds: Iterable[str] | str | None = None,
        poll: float = 1.0,
    ) -> Subscription:
        """Follow the event log: an iterator (and async iterator) of the events that match, as
        they are written, each exactly once and in order (see ``Subscription``).

        ``pattern``: '*' for everything, or a task or queue name, or a glob of one ('emails.*').
        ``after``: None for events from now on; a sequence number (a saved ``last_seq``) to
        resume right after it; 0 for the whole log. ``poll``: longest wait between reads."""
        if not isinstance(pattern, str):
            raise ValueError(f"pattern must be a string ('*', a name or a glob), got {pattern!r}")
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        start = self.backend.last_event_seq() if after is None else check_position(after)
        return Subscription(self.backend, after=start, pattern=pattern or "*", job_id=job_id,
                            kinds=kinds_filter(kinds), poll=float(poll))  # fmt: skip

    # operations -------------------------------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        """Every registered worker process (running, stopping, stopped or dead), newest first."""
        return self.backend.list_workers()

    def queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or is paused: paused or not, its jobs by status, and the
        due time of its oldest queued job (``conveyor queues``)."""
        now = self.clock()
        backend = self.backend
        return operations.queue_infos(backend.counts(now), backend.oldest_due(now), backend.switches())

    def switches(self) -> Switches:
        """What is turned off now: paused queues, disabled tasks, everything."""
        return self.backend.switches()

    def pause_queue(self, name: str) -> bool:
        """Stop claims from queue ``name`` on every worker, from now until ``resume_queue``
        (running jobs finish; enqueueing goes on). True if it was not paused already."""
        return self._switch(SwitchScope.QUEUE, operations.check_name("queue", name), off=True)

    def resume_queue(self, name: str) -> bool:
        """Let workers claim from queue ``name`` again. True if it was paused."""
        return self._switch(SwitchScope.QUEUE, operations.check_name("queue", name), off=False)

    def disable_task(self, name: str) -> bool:
        """Leave the queued jobs of task ``name`` queued, untouched, until ``enable_task``
        (running ones finish). True if it was not disabled already."""
        return self._switch(SwitchScope.TASK, operations.check_name("task", name), off=True)

    def enable_task(self, name: str) -> bool:
        """Let workers claim jobs of task ``name`` again. True if it was disabled."""
        return self._switch(SwitchScope.TASK, operations.check_name("task", name), off=False)

    def disable_all(self) -> bool:
        """Claim nothing anywhere until ``enable_all`` (a maintenance window). True if it changed."""
        return self._switch(SwitchScope.ALL, "", off=True)

    def enable_all(self) -> bool:
        """Undo ``disable_all``. True if everything was disabled."""
        return self._switch(SwitchScope.ALL, "", off=False)

    def _switch(self, scope: SwitchScope, name: str, *, off: bool) -> bool:
        return self.backend.set_switch(scope, name, off, self.clock())

    def stop_workers(
        self, queues: Sequence[str] | str | None = None, worker_ids: Sequence[str] | str | None = None
    ) -> list[str]:
        """Ask workers to stop gracefully, as SIGTERM would, through the store (any host): the
        running workers serving any of ``queues``, or the workers ``worker_ids`` (exactly one of
        the two; ValueError naming ids not running). Each hears it at its next heartbeat; a
        supervisor does not replace a child stopped this way. Returns the ids asked."""
        names = [queues] if isinstance(queues, str) else None if queues is None else list(queues)
        ids = [worker_ids] if isinstance(worker_ids, str) else None if worker_ids is None else list(worker_ids)
        wanted = operations.workers_to_stop(self.backend.list_workers(), names, ids)
        if not wanted:
            return []
        return self.backend.request_worker_stop(wanted, self.clock())

    def health(self, queues: Sequence[str] | None = None, *, stale_after: float | None = None) -> Health:
        """A structured report: store reachable (and its latency), schema current, live workers
        per queue, the leader, the age of each queue's oldest due job; ``.healthy`` and
        ``.problems`` say whether it is fit to work and why not (see ``conveyor.health``). Never
        raises for an unreachable store. ``queues``: queues that must have a live worker."""
        from .health import check_health

        return check_health(self, [queues] if isinstance(queues, str) else queues, stale_after)

    def lock(self, name: str, ttl: float = 30.0, owner: str | None = None) -> Lock:
        """A named lock in the store, safe across processes and hosts, held ``ttl`` seconds at a
        time (see ``conveyor.locks.Lock``). Non-blocking: ``lock.acquire()`` returns False, and
        ``with app.lock(name):`` raises LockNotAcquired, while another owner holds it."""
        from .locks import Lock

        return Lock(self.backend, name, ttl=ttl, owner=owner, clock=self.clock)

    def start_background_worker(
        self,
        queues: Sequence[str] = ("default",),
        concurrency: int = 4,
        *,
        scope: str = "host",
        ttl: float | None = None,
        **settings: Any,
    ) -> BackgroundWorker:
        """Run a worker on a daemon thread of ONE of the processes that call this (a web
        server's processes, from their startup hook, after any fork): one per host (``scope``
        "host") or per cluster ("cluster"), elected by a lock in the store whose ``ttl`` (default:
        the lease) bounds how long a crashed holder keeps the others waiting. ``settings``: any
        other WorkerOptions field (grace, poll...). See ``conveyor.background``."""
        from .background import BackgroundWorker, background_options, lock_name

        lock_name(scope)  # a bad scope fails here, before anything starts
        options = background_options({**settings, "queues": queues, "concurrency": concurrency})
        return BackgroundWorker(self, options, scope=scope, ttl=ttl).start()

    # running --------------------------------------------------------------------
    def run_until_empty(self, queues: Sequence[str] | None = None) -> int:
        """Run due jobs inline in this thread until none is due; returns how many ran.

        For tests: the same store, claim and retry rules as a worker, no worker process. A
        retry's back-off makes it not due, so it waits for a later call. (Eager mode, by
        contrast, runs each job as it is enqueued, with no retry.)
        """
        backend = self.backend
        ran = 0
        names = list(queues or ())
        while True:
            jobs = backend.claim(names, "inline", 1, self.lease, self.clock()) if names else []
            if not jobs and not queues:  # a task may have enqueued into a queue not seen yet
                names = sorted({queue for queue, _ in backend.counts(self.clock())})
                jobs = backend.claim(names, "inline", 1, self.lease, self.clock()) if names else []
            if not jobs:
                return ran
            job = jobs[0]
            assert job.token is not None
            backend.finish(job.id, job.token, self._run_inline(job, retry=True), self.clock())
            ran += 1


def _without_retry(outcome: Outcome) -> Outcome:
    """Eager mode retries nothing: a run that would be retried fails instead (a pipeline's
    settled retry keeps its stage record, without the restart)."""
    if outcome.kind is not OutcomeKind.RETRY:
        return outcome
    record = outcome.record
    if record is not None:
        record = msgspec.structs.replace(record, next=None)
    return Outcome(kind=OutcomeKind.FAILED, error=outcome.error, exit_code=outcome.exit_code, record=record)


def load_app(path: str) -> App:
    """Import ``module:attribute``, or ``module`` alone (its attribute ``app``, else the one App it
    holds), with the working directory on sys.path. Raises ImportError with one clear line."""
    import importlib
    import sys

    module_name, _, attribute = path.partition(":")
    if not module_name or (":" in path and not attribute):
        raise ImportError(f"bad app path {path!r}: write module:attribute, e.g. myapp:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import app module {module_name!r}: {exc}") from exc
    if attribute:
        if not hasattr(module, attribute):
            raise ImportError(f"module {module_name} has no attribute {attribute}")
        app = getattr(module, attribute)
        if not isinstance(app, App):
            raise ImportError(f"{path} is a {type(app).__name__}, not a conveyor App")
        return app
    app = getattr(module, "app", None)
    if isinstance(app, App):
        return app
    apps = [value for value in vars(module).values() if isinstance(value, App)]
    if len(apps) != 1:
        found = "no App" if not apps else f"{len(apps)} Apps"
        raise ImportError(f"module {module_name} has {found} and no attribute app: write {module_name}:attribute")
    return apps[0]
