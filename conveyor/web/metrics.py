"""``GET /metrics``: the deployment in Prometheus' text format (prometheus-client), for scraping.

Two kinds of figures. Counters and the run-time histogram come from the event log: a thread of
this server follows it (``app.subscribe`` from seq 0) and counts each job's transitions by queue
and task (``EventCounts``); a run's time is its outcome event's time minus its ``started`` event's
time (same job, same attempt). Gauges are read from the store at scrape time: jobs by queue and
status (``app.stats``), the oldest due job's age, live workers and the leader (``app.health``),
service replicas by status. The collector has its own ``CollectorRegistry``: never the global one,
so two servers in one process (tests) do not clash and nothing else of the process leaks in.

The follower starts on the first scrape (after any fork of the server's processes), and a scrape
waits a little for it to reach the log's head, so an answer counts every event written before it.
Counters start again from the log after a restart, and pruned events are not counted: Prometheus
reads a lower counter as a reset, as it should.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import StoreError
from ..events import Event, EventKind
from ..job import Status
from ..operations import WorkerState, stale_after
from ..service_types import ServiceStatus
from .errors import answer_for, error_response

if TYPE_CHECKING:
    from ..app import App
    from ..health import Health

log = logging.getLogger("conveyor.web.metrics")

#: Upper bounds of the run-time histogram's buckets, in seconds (+Inf is added).
RUN_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                                  300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
CATCH_UP = 2.0  #: longest a scrape waits for the follower to reach the log's head, in seconds
MAX_IN_FLIGHT = 100_000  #: started runs remembered while their outcome is awaited (the oldest are forgotten)
RESTART_PAUSE = 5.0  #: pause before following again after an unexpected error

#: Counters: the metric's name (``_total`` is added) -> the event kinds it counts, and its help.
COUNTERS: dict[str, tuple[frozenset[str], str]] = {
    "conveyor_jobs_enqueued": (frozenset({EventKind.ENQUEUED}), "Jobs enqueued."),
    "conveyor_jobs_started": (frozenset({EventKind.STARTED}), "Runs started (a job runs once per attempt)."),
    "conveyor_jobs_succeeded": (frozenset({EventKind.SUCCEEDED}), "Jobs that finished with a result."),
    "conveyor_jobs_failed": (frozenset({EventKind.FAILED, EventKind.TIMED_OUT}),
                             "Jobs that failed for good (timed-out ones included), no retry left."),
    "conveyor_jobs_retried": (frozenset({EventKind.RETRY_SCHEDULED}),
                              "Runs that failed and were queued again for a retry."),
    "conveyor_jobs_cancelled": (frozenset({EventKind.CANCELLED}), "Jobs cancelled by a user."),
    "conveyor_jobs_rescued": (frozenset({EventKind.RESCUED}), "Runs whose worker died; queued again by the leader."),
}  # fmt: skip

#: Outcome events that end a run with a time worth measuring (the histogram's ``outcome`` label).
MEASURED = frozenset({EventKind.SUCCEEDED, EventKind.FAILED, EventKind.TIMED_OUT, EventKind.RETRY_SCHEDULED,
                      EventKind.DISCARDED, EventKind.STAGE_DONE})  # fmt: skip
#: Events that end a run without a time worth measuring: its start is forgotten.
UNMEASURED = frozenset({EventKind.CANCELLED, EventKind.RESCUED, EventKind.HANDED_BACK})
#: Every kind the follower reads (the store filters the rest out: progress, messages, operations).
FOLLOWED: tuple[str, ...] = tuple(sorted(set().union(*(kinds for kinds, _ in COUNTERS.values()), MEASURED,
                                                    UNMEASURED)))  # fmt: skip


class RunTimes:
    """One histogram series: counts per bucket (not cumulative), their sum and count."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RUN_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one run of ``seconds``."""
        index = next((i for i, bound in enumerate(RUN_BUCKETS) if seconds <= bound), len(RUN_BUCKETS))
        self.buckets[index] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """The buckets as Prometheus wants them: (upper bound, runs at most that long), +Inf last."""
        bounds = [*(repr(float(bound)) for bound in RUN_BUCKETS), "+Inf"]
        running, result = 0, []
        for bound, n in zip(bounds, self.buckets, strict=True):
            running += n
            result.append((bound, float(running)))
        return result


class EventCounts:
    """Job counters and run times counted from the event log, by a daemon thread that follows it
    from its first event (``start``; ``close`` ends it). Read ``metrics()`` from any thread."""

    def __init__(self, app: App, *, poll: float = 0.5) -> None:
        self.app = app
        self.poll = poll
        self.counted_seq = 0  #: every followed event up to this seq is counted
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}  # (counter, queue, task) -> n
        self._runs: dict[tuple[str, str, str], RunTimes] = {}  # (queue, task, outcome) -> times
        self._started: collections.OrderedDict[tuple[str, int], float] = collections.OrderedDict()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._advanced = threading.Condition(self._lock)

    def start(self) -> EventCounts:
        """Start following the log (once; later calls do nothing)."""
        with self._lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._follow, name="conveyor-metrics", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop following (within one ``poll``) and wait for the thread to end."""
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every event up to ``seq`` is counted; whether it was."""
        deadline = time.monotonic() + timeout
        with self._advanced:
            while self.counted_seq < seq:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    return False
                self._advanced.wait(min(left, 0.1))
            return True

    def _follow(self) -> None:
        """The thread: count every followed event as it is written, until closed. An unexpected
        error is logged and the log followed again, from where the counts are, after a pause."""
        while not self._closed.is_set():
            try:
                with self.app.subscribe(after=self.counted_seq, kinds=FOLLOWED, poll=self.poll) as subscription:
                    while not self._closed.is_set():
                        event = subscription.next_event(timeout=self.poll)
                        with self._advanced:
                            if event is not None:
                                self._count(event)
                            self.counted_seq = max(self.counted_seq, subscription.last_seq)
                            self._advanced.notify_all()
            except Exception:
                log.exception("metrics: following the event log failed; following it again in %s s", RESTART_PAUSE)
                self._closed.wait(RESTART_PAUSE)

    def _count(self, event: Event) -> None:
        """Count one event (the lock held)."""
        queue, task = event.queue or "", event.task or ""
        for name, (kinds, _) in COUNTERS.items():
            if event.kind in kinds:
                key = (name, queue, task)
                self._counts[key] = self._counts.get(key, 0) + 1
        if event.job_id is None:
            return
        run = (event.job_id, event.attempt)
        if event.kind == EventKind.STARTED:
            self._started[run] = event.at
            self._started.move_to_end(run)
            while len(self._started) > MAX_IN_FLIGHT:
                self._started.popitem(last=False)
        elif event.kind in MEASURED or event.kind in UNMEASURED:
            started = self._started.pop(run, None)
            if started is not None and event.kind in MEASURED:
                key = (queue, task, str(event.kind))
                self._runs.setdefault(key, RunTimes()).observe(max(0.0, event.at - started))

    def metrics(self) -> list[Metric]:
        """The counters and the histogram, as they are now."""
        with self._lock:
            counts = dict(self._counts)
            runs = {key: (times.cumulative(), times.total) for key, times in self._runs.items()}
            counted = self.counted_seq
        families: list[Metric] = []
        for name, (_, help_text) in COUNTERS.items():
            family = CounterMetricFamily(name, help_text + " By queue and task, counted from the event log.",
                                         labels=["queue", "task"])  # fmt: skip
            for (counter, queue, task), n in sorted(counts.items()):
                if counter == name:
                    family.add_metric([queue, task], n)
            families.append(family)
        histogram = HistogramMetricFamily(
            "conveyor_job_run_seconds",
            "How long runs took (outcome event time - started event time), by queue, task and outcome event.",
            labels=["queue", "task", "outcome"],
        )
        for (queue, task, outcome), (buckets, total) in sorted(runs.items()):
            histogram.add_metric([queue, task, outcome], buckets, total)
        families.append(histogram)
        families.append(GaugeMetricFamily("conveyor_metrics_counted_seq",
                                          "The event log's seq up to which the counters have counted.",
                                          value=counted))  # fmt: skip
        return families


class Collector:
    """The prometheus-client collector: ``EventCounts``' figures and gauges read from the store."""

    def __init__(self, app: App, counts: EventCounts) -> None:
        self.app = app
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        """Every metric at this moment (blocking: reads the store; run it off the event loop). A store
        that cannot be reached is reported (``conveyor_store_up`` 0), never created nor raised."""
        report = self.app.health()
        yield _gauge("conveyor_store_up", "1 if the store answered.", report.reachable)
        yield _gauge("conveyor_healthy", "1 if app.health() found no problem (conveyor health).", report.healthy)
        if report.reachable:
            self.counts.start()
            try:
                head = self.app.backend.last_event_seq()
            except StoreError:
                head = None
            if head is not None:
                self.counts.wait_for(head, CATCH_UP)
                yield GaugeMetricFamily("conveyor_event_log_seq", "The last seq of the event log.", value=head)
        yield from self.counts.metrics()
        if report.reachable:
            yield from self._gauges(report)

    def _gauges(self, report: Health) -> Iterator[Metric]:
        """The store's state now, beside what ``report`` found."""
        if report.latency_ms is not None:
            yield _gauge("conveyor_store_latency_seconds", "One round trip to the store.", report.latency_ms / 1000)
        yield _gauge("conveyor_leader_present", "1 if a worker holds the leader lock.", report.leader is not None)
        try:
            stats = self.app.stats()
            workers = self.app.workers()
            services = self.app.services()
        except StoreError as exc:
            log.warning("metrics: reading the store failed: %s", exc)
            return
        yield from _queue_gauges(report, stats)
        now = self.app.clock()
        stale = stale_after(self.app.lease)
        alive = sum(1 for w in workers if w.state is WorkerState.RUNNING and w.last_seen >= now - stale)
        yield _gauge("conveyor_workers_alive", "Worker processes running with a recent heartbeat.", alive)
        by_state = GaugeMetricFamily("conveyor_workers", "Registered worker processes by state.", labels=["state"])
        for state in WorkerState:
            by_state.add_metric([state.value], sum(1 for w in workers if w.state is state))
        yield by_state
        replicas = GaugeMetricFamily("conveyor_service_replicas", "Service replicas by status.", labels=["status"])
        for status in ServiceStatus:
            replicas.add_metric([status.value], sum(1 for s in services if s.status is status))
        yield replicas


def _gauge(name: str, help_text: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=float(value))


def _queue_gauges(report: Health, stats: dict[str, dict[Status, int]]) -> Iterable[Metric]:
    """Per queue: jobs by status (every status, zeros too), the oldest due job's age (0: none due),
    paused or not, live workers serving it."""
    names = sorted((set(stats) - {"all"}) | set(report.oldest_due_age) | set(report.paused_queues)
                   | set(report.workers_alive))  # fmt: skip
    depth = GaugeMetricFamily("conveyor_queue_jobs", "Jobs by queue and status (scheduled: queued, not due yet).",
                              labels=["queue", "status"])  # fmt: skip
    oldest = GaugeMetricFamily(
        "conveyor_queue_oldest_due_age_seconds",
        "How long the queue's oldest due job has waited (0: none due).",
        labels=["queue"],
    )
    paused = GaugeMetricFamily("conveyor_queue_paused", "1 if the queue is paused.", labels=["queue"])
    alive = GaugeMetricFamily("conveyor_queue_workers_alive", "Live workers serving the queue.", labels=["queue"])
    for name in names:
        for status in Status:
            depth.add_metric([name, status.value], stats.get(name, {}).get(status, 0))
        oldest.add_metric([name], report.oldest_due_age.get(name, 0.0))
        paused.add_metric([name], float(name in report.paused_queues))
        alive.add_metric([name], report.workers_alive.get(name, 0))
    return [depth, oldest, paused, alive]


class MetricsEndpoint:
    """``GET /metrics`` for one server: its registry, its collector and its follower. ``public``:
    served without a user (``conveyor web --metrics-public``), else it needs the user the auth
    middleware puts in ``request.state.user`` (401 without one)."""

    def __init__(self, app: App, *, public: bool = False) -> None:
        self.public = public
        self.counts = EventCounts(app)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(app, self.counts))

    async def scrape(self, request: Request) -> Response:
        """The scrape: Prometheus text, or 401 JSON for a request with no user when not public."""
        if not self.public and getattr(request.state, "user", None) is None:
            problem = getattr(request.state, "auth_problem", None)  # the auth middleware's reason, if it gave one
            if isinstance(problem, Exception):  # a bad token 401, an unreachable store 503: as the API answers
                return answer_for(problem)
            return error_response(
                401,
                "/metrics needs a token: send the header 'Authorization: Bearer <token>' "
                "(or serve it with --metrics-public)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await run_in_threadpool(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def close(self) -> None:
        """Stop following the event log (a server shutting down)."""
        self.counts.close()


def routes(app: App, *, public: bool = False) -> list[BaseRoute]:
    """The metrics route for a server on ``app``: ``GET /metrics``. Its endpoint is a
    ``MetricsEndpoint``'s ``scrape`` (``route.endpoint.__self__.close()`` stops its follower)."""
    return [Route("/metrics", MetricsEndpoint(app, public=public).scrape, methods=["GET"], name="metrics")]
