"""Declaring pipelines: the stages a user writes, checked and frozen into JSON.

``app.pipeline(fetch.s(url=Ref.kws("url")), Timer(60), parse.s(html=Ref.stage(0)),
Message("approval"), store.s(doc=Ref.stage(2)["doc"]).when(Ref.stage(3)["ok"]), ...)`` builds a
``Pipeline``: a value that holds its stages frozen as JSON dicts, so it can be serialised
(``to_dict`` / ``Pipeline.from_dict``), enqueued by name, and a job keeps the stages it was
enqueued with whatever the code says later. Every rule is checked here, at declaration, with an
error naming the stage and the rule; ``conveyor.pipeline`` decides what a job does at run time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import codec
from .job import NewJob, Priority
from .pipeline import DEFAULT_RESULT_TTL, RESTARTS, describe_stage, finite, new_job
from .refs import Cond, Ref, check_frozen, encode, encode_cond, refs_in
from .task import DEFAULT_QUEUE, Signature

if TYPE_CHECKING:
    from .app import App
    from .handle import JobHandle

MAX_STAGES = 100  #: the seeds' limit on a pipeline's stages
MAX_RETRIES = 10  #: ... on its retries
MIN_TIMEOUT = 10.0  #: ... on its whole time-out, in seconds
MAX_TIMEOUT = 4 * 3600.0
DEFAULT_TIMEOUT = 300.0
ON_TIMEOUT = ("fail", "continue")


class Timer:
    """A stage that waits ``seconds`` (the job is WAITING, holding no worker), then goes on with
    None as its result."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if not finite(seconds) or seconds <= 0:
            raise ValueError(f"Timer takes a number of seconds > 0, got {seconds!r}")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"Timer({self.seconds:g})"

    def freeze(self) -> dict[str, Any]:
        """The stage as the job stores it."""
        return {"kind": "timer", "seconds": self.seconds}


class Message:
    """A stage that waits for ``app.send_message(job_id, payload, name=...)``; the payload is its
    result. A message sent before the job gets here waits in its mailbox. ``timeout``: seconds to
    wait at most (None: the pipeline's budget), then ``on_timeout`` "fail" the stage or "continue"
    with None."""

    __slots__ = ("name", "on_timeout", "timeout")

    def __init__(self, name: str | None = None, *, timeout: float | None = None, on_timeout: str = "fail") -> None:
        if name is not None and (not isinstance(name, str) or not name or len(name) > 200):
            raise ValueError(
                f"a Message stage's name must be a non-empty string of at most 200 characters, got {name!r}"
            )
        if timeout is not None and (not finite(timeout) or timeout <= 0):
            raise ValueError(f"a Message stage's timeout must be a number of seconds > 0 or None, got {timeout!r}")
        if on_timeout not in ON_TIMEOUT:
            raise ValueError(f"on_timeout must be one of {ON_TIMEOUT}, got {on_timeout!r}")
        self.name = name
        self.timeout = None if timeout is None else float(timeout)
        self.on_timeout = on_timeout

    def __repr__(self) -> str:
        return f"Message({self.name!r})" if self.name else "Message()"

    def freeze(self) -> dict[str, Any]:
        """The stage as the job stores it."""
        return {"kind": "message", "name": self.name or "", "timeout": self.timeout, "on_timeout": self.on_timeout}


class Step:
    """A task call as a pipeline stage, run only when its condition holds (else skipped, result
    None). Made by ``task.s(...).when(condition)``."""

    __slots__ = ("condition", "signature")

    def __init__(self, signature: Signature, condition: Cond | Ref | None) -> None:
        self.signature = signature
        self.condition = condition

    def __repr__(self) -> str:
        return f"Step({self.signature.task}, when={self.condition!r})"

    def freeze(self) -> dict[str, Any]:
        """The stage as the job stores it: its arguments with references frozen (checked as JSON)."""
        sig, call = self.signature, self.signature.call
        args, kwargs = encode(list(sig.args)), encode(dict(sig.kwargs))
        codec.check_payload(sig.task, args, kwargs)
        return {
            "kind": "call",
            "task": sig.task,
            "queue": call.queue or sig.options.queue,
            "timeout": call.timeout if call.timeout is not None else sig.options.timeout,
            "args": args,
            "kwargs": kwargs,
            "when": encode_cond(self.condition),
        }


StageLike = Signature | Step | Timer | Message


def freeze_stage(stage: StageLike, index: int) -> dict[str, Any]:
    """One declared stage, frozen; TypeError for something that is not a stage."""
    if isinstance(stage, Signature):
        stage = Step(stage, None)
    if not isinstance(stage, (Step, Timer, Message)):
        raise TypeError(f"stage {index}: a stage is task.s(...), Timer(seconds) or Message(name), got {stage!r}")
    return stage.freeze()


def check_refs(frozen: Any, before: int, where: str) -> None:
    """Every ``Ref.stage(k)`` in ``frozen`` must name a stage before ``before``: ValueError saying which."""
    for path in refs_in(frozen):
        if path[0] == "stage" and path[1] >= before:
            raise ValueError(
                f"{where}: Ref.stage({path[1]}) is not an earlier stage; a stage can use the results "
                f"of stages 0 to {before - 1} only"
                if before
                else f"{where}: Ref.stage({path[1]}): the first stage has no earlier results"
            )


def check_kws(kws: Any) -> dict[str, Any]:
    """The job's keywords: a dict of str keys and JSON values (ArgumentError otherwise)."""
    if kws is None:
        return {}
    if not isinstance(kws, dict) or not all(isinstance(key, str) for key in kws):
        raise TypeError(f"kws must be a dict with str keys, got {kws!r}")
    frozen = encode(kws)  # a pipeline chained by ``then`` may take its keywords from the finished job
    for name, value in frozen.items():
        codec.check_json(value, f"kws[{name!r}]")
    return frozen  # type: ignore[no-any-return]


def check_settings(restart: str, max_retries: int, timeout: float) -> tuple[str, int, float]:
    """The seeds' limits on a pipeline's settings, each with a clear ValueError."""
    if not isinstance(restart, str) or restart.lower() not in RESTARTS:
        raise ValueError(f"restart must be one of {RESTARTS}, got {restart!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= MAX_RETRIES:
        raise ValueError(f"a pipeline's max_retries must be an int from 0 to {MAX_RETRIES}, got {max_retries!r}")
    if not finite(timeout) or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise ValueError(
            f"a pipeline's timeout must be from {MIN_TIMEOUT:g} to {MAX_TIMEOUT:g} seconds, got {timeout!r}"
        )
    return restart.lower(), max_retries, float(timeout)


class Pipeline:
    """A declared pipeline: frozen stages and settings, ready to enqueue (``delay``), serialise
    (``to_dict``) or chain (``then=``). Made by ``app.pipeline``; immutable (``options`` copies)."""

    def __init__(
        self,
        app: App,
        stages: list[dict[str, Any]],
        settings: dict[str, Any],
        *,
        max_retries: int,
        priority: int,
        owner: str | None,
        notify: bool,
    ) -> None:
        self.app = app
        self.stages = stages
        self.settings = settings  #: name, kws, restart, timeout, queue, then (Job.pipeline)
        self.max_retries = max_retries
        self.priority = priority
        self.owner = owner
        self.notify = notify

    def __repr__(self) -> str:
        name = self.settings.get("name")
        steps = ", ".join(describe_stage(stage) for stage in self.stages)
        return f"<Pipeline {name + ' ' if name else ''}[{steps}]>"

    @property
    def name(self) -> str | None:
        """The name it is registered under (``app.pipelines``), if any."""
        name: str | None = self.settings.get("name")
        return name

    def options(
        self, *, kws: dict[str, Any] | None = None, owner: str | None = None, notify: bool | None = None
    ) -> Pipeline:
        """A copy with other keywords (merged over the declared ones), owner or notify."""
        settings = copy.deepcopy(self.settings)
        if kws is not None:
            settings["kws"] = {**settings.get("kws", {}), **check_kws(kws)}
        return Pipeline(
            self.app,
            self.stages,
            settings,
            max_retries=self.max_retries,
            priority=self.priority,
            owner=_check_owner(owner) if owner is not None else self.owner,
            notify=self.notify if notify is None else _check_notify(notify),
        )

    def to_new_job(
        self,
        now: float,
        *,
        kws: dict[str, Any] | None = None,
        job_id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
    ) -> NewJob:
        """The job to store: validated, its first stage's references resolved; raises before anything is written."""
        pipeline = self.options(kws=kws) if kws is not None else self
        settings = pipeline.settings
        missing = [
            path[1]
            for stage in self.stages
            for path in refs_in(stage)
            if path[0] == "kws" and len(path) > 1 and path[1] not in settings["kws"]
        ]
        if missing:
            raise ValueError(f"the pipeline refers to keyword(s) {sorted(set(missing))} that kws does not give")
        if job_id is not None and (not isinstance(job_id, str) or not job_id or len(job_id) > 255):
            raise ValueError(f"a job id must be a non-empty string of at most 255 characters, got {job_id!r}")
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        return new_job(
            self.stages,
            settings,
            now=now,
            due=_due(now, delay, eta),
            max_retries=self.max_retries,
            priority=self.priority,
            job_id=job_id,
            key=key,
            owner=pipeline.owner,
            notify=pipeline.notify,
            result_ttl=DEFAULT_RESULT_TTL,
        )

    def delay(
        self,
        *,
        kws: dict[str, Any] | None = None,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        eta: datetime | None = None,
        connection: Any = None,
    ) -> JobHandle:
        """Enqueue a job of this pipeline (``kws`` merged over the declared keywords); returns its handle."""
        now = self.app.clock()
        new = self.to_new_job(now, kws=kws, job_id=id, key=key, delay=delay, eta=eta)
        return self.app.enqueue_jobs([new], now, connection=connection)[0]

    # the serialised form -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The pipeline as JSON-ready data (``Pipeline.from_dict`` reads it back)."""
        return {
            "stages": copy.deepcopy(self.stages),
            "settings": copy.deepcopy(self.settings),
            "max_retries": self.max_retries,
            "priority": self.priority,
            "owner": self.owner,
            "notify": self.notify,
        }

    @classmethod
    def from_dict(cls, app: App, data: dict[str, Any]) -> Pipeline:
        """Read ``to_dict``'s form back (from JSON: a schedule, the HTTP API), checking every rule,
        and that each stage's task is one of ``app``'s."""
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise ValueError("a pipeline is a dict with a list of 'stages'")
        settings = data.get("settings") or {}
        stages = [_check_frozen_stage(app, stage, i) for i, stage in enumerate(data["stages"])]
        then = settings.get("then")
        if then is not None:
            _check_then(app, then, len(stages))
        return build(
            app,
            stages,
            name=settings.get("name"),
            kws=settings.get("kws"),
            restart=settings.get("restart", "current"),
            max_retries=data.get("max_retries", 0),
            timeout=settings.get("timeout", DEFAULT_TIMEOUT),
            owner=data.get("owner"),
            notify=data.get("notify", False),
            then=then,
            queue=settings.get("queue"),
            priority=data.get("priority"),
        )


def declare(
    app: App,
    stages: Sequence[StageLike],
    *,
    name: str | None,
    kws: dict[str, Any] | None,
    restart: str,
    max_retries: int,
    timeout: float,
    owner: str | None,
    notify: bool,
    then: Signature | Pipeline | None,
    queue: str | None,
    priority: int | None,
) -> Pipeline:
    """``app.pipeline``: freeze and check the stages and settings."""
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    if len(stages) > MAX_STAGES:
        raise ValueError(f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}")
    frozen = [freeze_stage(stage, i) for i, stage in enumerate(stages)]
    return build(
        app,
        frozen,
        name=name,
        kws=kws,
        restart=restart,
        max_retries=max_retries,
        timeout=timeout,
        owner=owner,
        notify=notify,
        then=None if then is None else freeze_target(then, what="then"),
        queue=queue,
        priority=priority,
    )


def build(
    app: App,
    stages: list[dict[str, Any]],
    *,
    name: Any,
    kws: Any,
    restart: Any,
    max_retries: Any,
    timeout: Any,
    owner: Any,
    notify: Any,
    then: dict[str, Any] | None,
    queue: Any,
    priority: Any,
) -> Pipeline:
    """Check frozen stages and settings against every rule and make the Pipeline."""
    if not stages:
        raise ValueError("a pipeline needs at least one stage")
    if len(stages) > MAX_STAGES:
        raise ValueError(f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}")
    restart, max_retries, timeout = check_settings(restart, max_retries, timeout)
    for index, stage in enumerate(stages):
        check_refs(stage, index, f"stage {index} ({describe_stage(stage)})")
    if then is not None:
        check_refs(then, len(stages), "then")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"a pipeline's name must be a non-empty string, got {name!r}")
    queue = DEFAULT_QUEUE if queue is None else queue
    if not isinstance(queue, str) or not queue.strip():
        raise ValueError(f"queue must be a non-empty string, got {queue!r}")
    priority = Priority.NORMAL if priority is None else priority
    if isinstance(priority, bool) or priority not in set(Priority):
        raise ValueError(f"priority must be one of {[p.name for p in Priority]}, got {priority!r}")
    settings = {
        "name": name,
        "kws": check_kws(kws),
        "restart": restart,
        "timeout": timeout,
        "queue": queue,
        "then": then,
    }
    return Pipeline(
        app,
        stages,
        settings,
        max_retries=max_retries,
        priority=int(priority),
        owner=_check_owner(owner),
        notify=_check_notify(notify),
    )


def freeze_target(target: Signature | Pipeline, what: str = "a target") -> dict[str, Any]:
    """What a job is made from, frozen: a task call (its arguments checked as JSON; references
    allowed, resolved when it is made) or a whole pipeline (started fresh). ``then=`` and schedules
    hold their job this way; ``pipeline.then_job`` makes it."""
    if isinstance(target, Pipeline):
        return {"kind": "pipeline", "pipeline": target.to_dict()}
    if not isinstance(target, Signature):
        raise TypeError(f"{what} must be task.s(...) or a Pipeline, got {target!r}")
    call = Step(target, None).freeze()
    options = target.options
    return {
        **call,
        "priority": int(target.call.priority or options.priority),
        "max_retries": target.call.max_retries if target.call.max_retries is not None else options.max_retries,
        "result_ttl": options.result_ttl,
    }


def _check_then(app: App, then: Any, stages: int) -> None:
    if not isinstance(then, dict) or then.get("kind") not in ("call", "pipeline"):
        raise ValueError(f"then must be a frozen call or pipeline, got {then!r}")
    if then["kind"] == "pipeline":
        Pipeline.from_dict(app, then.get("pipeline") or {})
        return
    _check_frozen_stage(
        app,
        {k: then[k] for k in ("kind", "task", "queue", "timeout", "args", "kwargs") if k in then} | {"when": None},
        stages,
    )


def _check_frozen_stage(app: App, stage: Any, index: int) -> dict[str, Any]:
    """A stage read back from JSON: its form, its task known to ``app``, its references well formed."""
    if not isinstance(stage, dict) or stage.get("kind") not in ("call", "timer", "message"):
        raise ValueError(f"stage {index}: a stage is a dict with kind 'call', 'timer' or 'message', got {stage!r}")
    kind = stage["kind"]
    if kind == "timer":
        return Timer(stage.get("seconds", 0)).freeze()
    if kind == "message":
        return Message(
            stage.get("name") or None, timeout=stage.get("timeout"), on_timeout=stage.get("on_timeout", "fail")
        ).freeze()
    task = app.tasks.get(stage.get("task"))  # type: ignore[arg-type]
    if task is None:
        raise ValueError(f"stage {index}: unknown task {stage.get('task')!r}; the app's tasks: {sorted(app.tasks)}")
    for part in ("args", "kwargs", "when"):
        check_frozen(stage.get(part))
    args, kwargs = stage.get("args", []), stage.get("kwargs", {})
    codec.check_payload(task.name, args, kwargs)
    timeout = stage.get("timeout", task.settings.timeout)
    if timeout is not None and (not finite(timeout) or timeout <= 0):
        raise ValueError(f"stage {index}: timeout must be a number of seconds > 0, got {timeout!r}")
    return {
        "kind": "call",
        "task": task.name,
        "queue": stage.get("queue") or task.settings.queue,
        "timeout": timeout,
        "args": args,
        "kwargs": kwargs,
        "when": stage.get("when"),
    }


def _check_owner(owner: Any) -> str | None:
    if owner is not None and (not isinstance(owner, str) or not owner or len(owner) > 255):
        raise ValueError(f"owner must be a non-empty string of at most 255 characters, got {owner!r}")
    return owner


def _check_notify(notify: Any) -> bool:
    if not isinstance(notify, bool):
        raise ValueError(f"notify must be True or False, got {notify!r}")
    return notify


def _due(now: float, delay: float | None, eta: datetime | None) -> float:
    if delay is not None and eta is not None:
        raise ValueError("give delay or eta, not both")
    if delay is not None:
        if not finite(delay) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        return now + float(delay)
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ValueError(f"eta must be a datetime, got {eta!r}")
        return (eta if eta.tzinfo else eta.replace(tzinfo=UTC)).timestamp()
    return now
