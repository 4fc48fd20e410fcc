"""Optional OpenTelemetry spans from enqueue to run: the only module that imports ``opentelemetry``.

When ``opentelemetry-api`` is installed, an enqueue made while a span is active gets a producer span
``conveyor.enqueue <task>`` per job, whose W3C context (``traceparent``, ``tracestate`` and whatever
else the global propagator writes) is stored in the job's ``trace`` column; every run gets a consumer
span ``conveyor.run <task>``, a child of that context, so a trace follows a job from the code that
enqueued it to each worker that ran it. Spans go wherever the application's tracer provider sends
them: conveyor configures nothing.

Why it costs nothing when unused: whether ``opentelemetry`` is importable is checked once, when this
module is imported (``ENABLED``); without it ``enqueue`` and ``start_run`` are trivial functions. With
it, the API is imported at the first enqueue or run, not with conveyor (a CLI command never pays for
it), and an enqueue outside any span stores nothing: the job stays plain and takes the store's plain
insert path.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .job import Job, NewJob
from .outcome import Outcome, OutcomeKind

if TYPE_CHECKING:
    from types import ModuleType

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("conveyor.tracing")

SYSTEM = "conveyor"  #: messaging.system of every span
#: Outcomes of a run that failed: its span's status is ERROR. (A retry is a failed run; a discard is not.)
_FAILED = frozenset({OutcomeKind.FAILED, OutcomeKind.RETRY})


def _importable() -> bool:
    """Whether the OpenTelemetry API can be imported, without importing it (a namespace package's
    parent is all ``find_spec`` loads); an import blocked in ``sys.modules`` counts as absent."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


#: Whether ``opentelemetry-api`` is installed; decided once, at import.
ENABLED = _importable()


class _Api:
    """The OpenTelemetry API's modules and conveyor's tracer, imported at first use."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace

        self.context: ModuleType = context
        self.propagate: ModuleType = propagate
        self.trace: ModuleType = trace
        # A ProxyTracer until the application sets a provider, then the provider's: taken once.
        self.tracer: Tracer = trace.get_tracer("conveyor")


_api: _Api | None = None


def _otel() -> _Api:
    global _api
    if _api is None:
        _api = _Api()
    return _api


def _plain_enqueue(new_jobs: Sequence[NewJob], store: Callable[[], list[Job]]) -> list[Job]:
    """``enqueue`` without OpenTelemetry: just the store's write."""
    return store()


def _traced_enqueue(new_jobs: Sequence[NewJob], store: Callable[[], list[Job]]) -> list[Job]:
    """``enqueue`` with OpenTelemetry installed (see ``enqueue``)."""
    api = _otel()
    trace = api.trace
    if not trace.get_current_span().get_span_context().is_valid:
        return store()  # no trace to continue: the jobs stay plain
    spans = [_start_enqueue_span(api, new) for new in new_jobs]
    try:
        stored = store()
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))
            span.end()
        raise
    for span, new, job in zip(spans, new_jobs, stored, strict=False):
        if job.id != new.id:  # a key held by an unfinished job: that job was returned, nothing stored
            span.set_attributes({"conveyor.job_id": job.id, "conveyor.deduplicated": True})
        span.end()
    return stored


def _start_enqueue_span(api: _Api, new: NewJob) -> Span:
    """Start job ``new``'s producer span (a child of the current one) and carry its context in the job."""
    span = api.tracer.start_span(
        f"conveyor.enqueue {new.task}",
        kind=api.trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": new.queue,
            "conveyor.job_id": new.id,
            "conveyor.task": new.task,
        },
    )
    # No SDK (the API's no-op tracer gives an invalid span): pass the caller's context through instead.
    context = api.trace.set_span_in_context(span) if span.get_span_context().is_valid else None
    carrier: dict[str, str] = {}
    api.propagate.inject(carrier, context=context)
    if carrier:
        new.trace = carrier
    return span


#: ``enqueue(new_jobs, store)``: call ``store()`` (the store's write of ``new_jobs``) and return what it
#: returns. With OpenTelemetry and an active span, each job gets a producer span around the write, its
#: context stored in the job's ``trace``; a write that raises ends them with status ERROR.
enqueue: Callable[[Sequence[NewJob], Callable[[], list[Job]]], list[Job]] = (
    _traced_enqueue if ENABLED else _plain_enqueue
)


class RunSpan:
    """A run's consumer span, current in this thread (or asyncio task) until ``end`` or ``abort``,
    so spans the task starts, and jobs it enqueues, are its children."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def end(self, outcome: Outcome) -> None:
        """The run ended with ``outcome``: a failure (FAILED, RETRY) sets status ERROR and records
        its error as an ``exception`` event (the stored form: type, message, traceback)."""
        span = self._span
        try:
            span.set_attribute("conveyor.outcome", outcome.kind.value)
            if outcome.kind in _FAILED:
                error = outcome.error
                if error is not None:
                    span.add_event(
                        "exception",
                        {
                            "exception.type": error.type,
                            "exception.message": error.message,
                            "exception.stacktrace": error.traceback,
                        },
                    )
                description = f"{error.type}: {error.message}" if error is not None else outcome.kind.value
                trace = _otel().trace
                span.set_status(trace.Status(trace.StatusCode.ERROR, description))
        finally:
            self._close()

    def abort(self, exc: BaseException) -> None:
        """The run ended by an exception that escaped it (cancelled, SystemExit): recorded, ERROR."""
        try:
            trace = _otel().trace
            self._span.record_exception(exc, escaped=True)
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__qualname__))
        finally:
            self._close()

    def _close(self) -> None:
        try:
            _otel().context.detach(self._token)
        finally:
            self._span.end()


def _no_run(job: Job) -> RunSpan | None:
    """``start_run`` without OpenTelemetry: no span."""
    return None


def _start_run(job: Job) -> RunSpan | None:
    """``start_run`` with OpenTelemetry installed (see ``start_run``)."""
    api = _otel()
    trace = api.trace
    parent: Context | None = None
    if job.trace:
        try:
            parent = api.propagate.extract(job.trace)
        except Exception:  # a carrier edited by hand must never fail the run
            log.debug("job %s: its trace context could not be read", job.id, exc_info=True)
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": job.queue,
        "conveyor.job_id": job.id,
        "conveyor.attempt": job.attempts,
        "conveyor.task": job.task,
    }
    if job.stages is not None:
        attributes["conveyor.stage"] = job.stage
    span = api.tracer.start_span(
        f"conveyor.run {job.task}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    )
    if span.get_span_context().is_valid:
        context = trace.set_span_in_context(span, parent)
    elif parent is not None:  # no SDK: nothing recorded, but the job's trace still reaches the task
        context = parent
    else:
        return None
    return RunSpan(span, api.context.attach(context))


#: ``start_run(job)``: start a claimed job's consumer span, a child of the context carried in the job
#: (or of the current one when it carries none), and make it current; None without OpenTelemetry.
start_run: Callable[[Job], RunSpan | None] = _start_run if ENABLED else _no_run
