"""OpenTelemetry spans from enqueue to run (conveyor.tracing), on a real store and a real in-process
worker: the run's span continues the enqueue's trace through the context carried in the job's row; a
failed run's span is an error; an enqueue outside any span stores nothing; and conveyor runs without
``opentelemetry`` at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import App, JobFailed, Status, tracing
from conveyor.backends.columns import insert_row, is_plain
from conveyor.job import NewJob

WAIT = 10.0  # an upper bound for cross-thread hand-offs, never a speed assertion
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span ended while this module's tests run. The global provider can be set only once per
    process: an SDK provider is set if none is, and this module's exporter added to it (shut down at
    the end, so later tests of the process export nothing)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Callable[[str], list[ReadableSpan]]:
    """``spans(name)``: the spans of that name ended during this test, in the order they ended."""
    exporter.clear()

    def named(name: str) -> list[ReadableSpan]:
        return [span for span in exporter.get_finished_spans() if span.name == name]

    return named


def only(found: Sequence[ReadableSpan]) -> ReadableSpan:
    assert len(found) == 1, [span.name for span in found]
    return found[0]


def tracer() -> trace.Tracer:
    return trace.get_tracer("tests.tracing")


def test_tracing_is_enabled_with_the_api_installed() -> None:
    assert tracing.ENABLED


def test_a_run_continues_the_trace_of_its_enqueue(any_app: App, start_worker: Any, spans: Any) -> None:
    @any_app.task(name="traced.add", queue="maths")
    def add(a: int, b: int) -> int:
        return a + b

    with tracer().start_as_current_span("request") as request:
        handle = add.delay(2, 3)
    stored = any_app.job(handle.id).trace
    assert stored is not None and set(stored) >= {"traceparent"}
    start_worker(queues=["maths"], on=any_app)
    assert handle.result(timeout=WAIT) == 5

    enqueue = only(spans("conveyor.enqueue traced.add"))
    run = only(spans("conveyor.run traced.add"))
    assert enqueue.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert enqueue.parent is not None and enqueue.parent.span_id == request.get_span_context().span_id
    assert enqueue.context is not None and run.context is not None and run.parent is not None
    assert run.context.trace_id == enqueue.context.trace_id == request.get_span_context().trace_id
    assert run.parent.span_id == enqueue.context.span_id and run.parent.is_remote
    ids = [f"{enqueue.context.trace_id:032x}", f"{enqueue.context.span_id:016x}"]
    assert stored["traceparent"].split("-")[1:3] == ids  # the row holds the enqueue span's W3C context
    assert dict(run.attributes or {}) == {
        "messaging.system": "conveyor",
        "messaging.operation.type": "process",
        "messaging.destination.name": "maths",
        "conveyor.job_id": handle.id,
        "conveyor.attempt": 1,
        "conveyor.task": "traced.add",
        "conveyor.outcome": "succeeded",
    }
    assert (enqueue.attributes or {})["conveyor.job_id"] == handle.id
    assert (enqueue.attributes or {})["messaging.destination.name"] == "maths"
    assert run.status.status_code is StatusCode.UNSET


def test_a_failed_run_span_is_an_error_with_the_exception(any_app: App, start_worker: Any, spans: Any) -> None:
    @any_app.task(name="traced.boom")
    def boom() -> None:
        raise ValueError("no luck")

    with tracer().start_as_current_span("request"):
        handle = boom.delay()
    start_worker(on=any_app)
    with pytest.raises(JobFailed):
        handle.result(timeout=WAIT)

    enqueue = only(spans("conveyor.enqueue traced.boom"))
    run = only(spans("conveyor.run traced.boom"))
    assert enqueue.context is not None and run.parent is not None
    assert run.parent.span_id == enqueue.context.span_id
    assert run.status.status_code is StatusCode.ERROR and "no luck" in (run.status.description or "")
    [event] = [event for event in run.events if event.name == "exception"]
    attributes = dict(event.attributes or {})
    assert (attributes["exception.type"], attributes["exception.message"]) == ("ValueError", "no luck")
    assert "raise ValueError" in str(attributes["exception.stacktrace"])
    assert (run.attributes or {})["conveyor.outcome"] == "failed"


def test_a_retried_run_is_an_error_and_each_attempt_is_a_child_of_the_enqueue(
    app: App, start_worker: Any, spans: Any
) -> None:
    @app.task(name="traced.flaky", max_retries=1, backoff=0.0, jitter=0.0)
    def flaky() -> str:
        from conveyor import current_job

        if current_job().attempt == 1:
            raise RuntimeError("first time")
        return "second time"

    with tracer().start_as_current_span("request"):
        handle = flaky.delay()
    start_worker()
    assert handle.result(timeout=WAIT) == "second time"

    enqueue = only(spans("conveyor.enqueue traced.flaky"))
    runs = spans("conveyor.run traced.flaky")
    assert enqueue.context is not None
    assert [(r.attributes or {})["conveyor.attempt"] for r in runs] == [1, 2]
    assert [r.parent.span_id if r.parent else None for r in runs] == [enqueue.context.span_id] * 2
    assert [r.status.status_code for r in runs] == [StatusCode.ERROR, StatusCode.UNSET]
    assert [(r.attributes or {})["conveyor.outcome"] for r in runs] == ["retry", "succeeded"]


def test_without_an_active_span_nothing_is_stored(any_app: App, start_worker: Any, spans: Any) -> None:
    @any_app.task(name="traced.plain")
    def plain() -> str:
        return "ok"

    handle = plain.delay()
    batch = any_app.enqueue_many([plain.s(), plain.s()])
    for job in [handle, *batch]:
        assert any_app.job(job.id).trace is None
    start_worker(on=any_app)
    assert [job.result(timeout=WAIT) for job in [handle, *batch]] == ["ok"] * 3
    assert spans("conveyor.enqueue traced.plain") == []
    runs = spans("conveyor.run traced.plain")  # each run still gets its span: a root, no trace to continue
    assert len(runs) == 3 and all(run.parent is None for run in runs)


def test_a_batch_enqueue_carries_each_jobs_own_context(any_app: App, start_worker: Any, spans: Any) -> None:
    """On PostgreSQL a batch without keys is written by COPY; on SQLite a traced job leaves the plain
    insert path: both store the context of every job's own producer span."""

    @any_app.task(name="traced.echo")
    def echo(n: int) -> int:
        return n

    with tracer().start_as_current_span("request"):
        handles = any_app.enqueue_many([echo.s(n) for n in range(3)])
    carried = [any_app.job(h.id).trace for h in handles]
    assert all(c is not None for c in carried) and len({c["traceparent"] for c in carried if c}) == 3
    start_worker(on=any_app)
    assert [h.result(timeout=WAIT) for h in handles] == [0, 1, 2]

    enqueues = {(s.attributes or {})["conveyor.job_id"]: s for s in spans("conveyor.enqueue traced.echo")}
    runs = spans("conveyor.run traced.echo")
    assert len(runs) == 3
    for run in runs:
        enqueue = enqueues[(run.attributes or {})["conveyor.job_id"]]
        assert enqueue.context is not None and run.parent is not None
        assert run.parent.span_id == enqueue.context.span_id


def test_an_async_task_on_the_worker_loop_is_traced(app: App, start_worker: Any, spans: Any) -> None:
    @app.task(name="traced.async_add")
    async def async_add(a: int, b: int) -> int:
        current = trace.get_current_span().get_span_context()
        assert current.is_valid  # the run's span is current inside the task
        return a + b

    with tracer().start_as_current_span("request"):
        handle = async_add.delay(1, 1)
    start_worker()
    assert handle.result(timeout=WAIT) == 2
    enqueue = only(spans("conveyor.enqueue traced.async_add"))
    run = only(spans("conveyor.run traced.async_add"))
    assert enqueue.context is not None and run.parent is not None and run.parent.span_id == enqueue.context.span_id


def test_eager_mode_is_traced_and_a_job_enqueued_by_a_task_is_a_child_of_its_run(app: App, spans: Any) -> None:
    @app.task(name="traced.inner")
    def inner() -> str:
        return "inner"

    @app.task(name="traced.outer")
    def outer() -> str:
        return str(inner.delay().id)

    with app.eager(), tracer().start_as_current_span("request"):
        handle = outer.delay()
    assert handle.status is Status.SUCCEEDED
    outer_enqueue = only(spans("conveyor.enqueue traced.outer"))
    outer_run = only(spans("conveyor.run traced.outer"))
    inner_enqueue = only(spans("conveyor.enqueue traced.inner"))
    inner_run = only(spans("conveyor.run traced.inner"))
    assert outer_enqueue.context is not None and outer_run.context is not None and inner_enqueue.context is not None
    assert outer_run.parent is not None and outer_run.parent.span_id == outer_enqueue.context.span_id
    assert inner_enqueue.parent is not None and inner_enqueue.parent.span_id == outer_run.context.span_id
    assert inner_run.parent is not None and inner_run.parent.span_id == inner_enqueue.context.span_id
    assert len({s.context.trace_id for s in (outer_enqueue, outer_run, inner_enqueue, inner_run) if s.context}) == 1


def test_a_failed_enqueue_ends_its_span_as_an_error(app: App, spans: Any) -> None:
    @app.task(name="traced.dup")
    def dup() -> None:
        return None

    dup.options(id="taken").delay()
    with tracer().start_as_current_span("request"), pytest.raises(Exception, match="taken"):
        dup.options(id="taken").delay()
    enqueue = only(spans("conveyor.enqueue traced.dup"))
    assert enqueue.status.status_code is StatusCode.ERROR
    assert [event.name for event in enqueue.events] == ["exception"]


def test_a_traced_job_is_not_plain_and_its_row_holds_the_carrier() -> None:
    new = NewJob(id="j", task="t", queue="q", priority=2, args=[], kwargs={}, scheduled_at=0.0, max_retries=0)
    assert is_plain(new) and insert_row(new, 0.0)[-1] is None  # SQL NULL, not JSON null
    new.trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    assert not is_plain(new)
    assert insert_row(new, 0.0)[-1] == '{"traceparent":"00-11111111111111111111111111111111-2222222222222222-01"}'


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_conveyor_enqueues_and_runs_without_opentelemetry(tmp_path: Path) -> None:
    result = _python(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed: every import of it fails
        from conveyor import App, tracing
        assert not tracing.ENABLED
        app = App("sqlite:///{tmp_path / "plain.db"}")

        @app.task(name="plain.add")
        def add(a, b):
            return a + b

        handle = add.delay(2, 3)
        assert app.job(handle.id).trace is None
        assert app.run_until_empty() == 1
        assert handle.result(timeout=5) == 5
        with app.eager():
            assert add.delay(1, 1).result(timeout=5) == 2
        print("ran")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran"


def test_importing_conveyor_does_not_import_opentelemetry(tmp_path: Path) -> None:
    """Only the namespace package ``opentelemetry`` is loaded (``find_spec``'s probe, no code): the API
    is imported at the first enqueue or run, so a CLI command never pays for it."""
    result = _python(
        """
        import sys
        import conveyor, conveyor.worker
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry.")))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
