"""``GET /metrics`` (conveyor.web.metrics): after a real drain (an in-process Worker running jobs
that succeed, fail, and are retried), the scrape, parsed with prometheus-client's own parser,
counts exactly what the store holds: jobs by queue, task and status, the events of each kind, the
runs' times; and the gauges read the store as it is (queue depths, oldest due job, live workers,
the leader, service replicas). Served without a user only when public."""

from __future__ import annotations

import collections
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

with warnings.catch_warnings():  # starlette >= 1.0 nudges TestClient's users from httpx to httpx2: not ours to act on
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor import App, Status, current_job
from conveyor.accounts import User
from conveyor.job import Job
from conveyor.web import metrics
from conveyor.web.metrics import MetricsEndpoint, routes

from .conftest import WebServer, ok

OPS = User(name="ops")  #: a user with no permission beyond their own rows: enough for /metrics
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def with_user(inner: ASGIApp, user: User | None) -> ASGIApp:
    """What the API's auth middleware does for an authenticated request: the user in request.state."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if user is not None:
            scope.setdefault("state", {})["user"] = user
        await inner(scope, receive, send)

    return asgi


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """``serve(app, user=..., public=...)``: a client of a server with only the metrics route;
    every follower is stopped at the end. A scrape waits for its follower as long as a loaded
    machine may need (a bound to end a hung test, not a speed assertion)."""
    monkeypatch.setattr(metrics, "CATCH_UP", 30.0)
    endpoints: list[MetricsEndpoint] = []

    def make(app: App, *, user: User | None = OPS, public: bool = False) -> TestClient:
        found = routes(app, public=public)
        endpoints.append(found[0].endpoint.__self__)  # type: ignore[attr-defined]
        return TestClient(with_user(Starlette(routes=found), user))

    yield make
    for endpoint in endpoints:
        endpoint.close()


def scrape(client: TestClient) -> Samples:
    """Every sample of one scrape, by name and labels, parsed as Prometheus would."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def by_labels(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of one name, keyed by the values of ``keys`` (summing over other labels)."""
    found: dict[tuple[str, ...], float] = collections.defaultdict(float)
    for (sample, labels), value in samples.items():
        if sample == name:
            as_dict = dict(labels)
            found[tuple(as_dict[key] for key in keys)] += value
    return dict(found)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def event_counts(app: App, *kinds: str) -> dict[tuple[str, str], int]:
    """Events of these kinds in the store's log, by (queue, task)."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    after = 0
    while page := app.events(kinds=kinds, after=after, limit=1000):
        counts.update((event.queue or "", event.task or "") for event in page)
        after = page[-1].seq
    return dict(counts)


def jobs_by(jobs: list[Job], status: Status | None = None) -> dict[tuple[str, str], int]:
    counts = collections.Counter((job.queue, job.task) for job in jobs if status is None or job.status is status)
    return dict(counts)


def test_a_scrape_after_a_drain_counts_what_the_store_holds(
    app: App, start_worker: Callable[..., Any], wait_for: Callable[..., Any], serve: Callable[..., TestClient]
) -> None:
    @app.task(name="m.ok")
    def ok(n: int) -> int:
        return n

    @app.task(name="m.flaky", queue="mail", max_retries=2, backoff=0.01, jitter=0)
    def flaky(n: int) -> int:
        if current_job().attempt == 1:
            raise RuntimeError("first run fails")
        return n

    @app.task(name="m.bad", max_retries=1, backoff=0.01, jitter=0)
    def bad() -> None:
        raise ValueError("always")

    @app.task(name="m.slow", queue="mail")
    def slow() -> None:
        time.sleep(0.3)

    @app.service(name="m.svc", queue="nobody", autostart=False)
    def svc(ctx: Any) -> None:
        ctx.wait(60)

    for n in range(12):
        ok.delay(n)
    for n in range(6):
        ok.options(queue="mail").delay(n)
    for n in range(4):
        flaky.delay(n)
    for _ in range(3):
        bad.delay()
    slow.delay()
    for n in range(3):
        ok.options(queue="later", delay=3600).delay(n)
    for n in range(2):
        ok.options(queue="idle").delay(n)
    app.start_service("m.svc")
    client = serve(app)
    before = scrape(client)  # the follower starts: counts while the worker runs, too
    assert by_labels(before, "conveyor_jobs_enqueued_total", "queue") == {
        ("default",): 15, ("mail",): 11, ("later",): 3, ("idle",): 2,
    }  # fmt: skip

    worker = start_worker(queues=("default", "mail"), concurrency=2)
    served = [job for job in app.jobs(limit=1000) if job.queue in ("default", "mail")]
    assert len(served) == 26
    wait_for(lambda: all(app.job(job.id).status.finished for job in served), "the drain", timeout=60)
    wait_for(lambda: app.health().leader == worker.worker.id, "the worker takes the leader lock", timeout=20)
    samples = scrape(client)

    # every event written before the scrape is counted
    assert one(samples, "conveyor_metrics_counted_seq") >= one(samples, "conveyor_event_log_seq") > 0

    # counters: equal to the store's jobs and to its event log, by queue and task
    jobs = app.jobs(limit=1000)
    served = [app.job(job.id) for job in served]
    assert by_labels(samples, "conveyor_jobs_enqueued_total", "queue", "task") == jobs_by(jobs)
    assert by_labels(samples, "conveyor_jobs_enqueued_total", "queue", "task") == event_counts(app, "enqueued")
    for name, status in (("succeeded", Status.SUCCEEDED), ("failed", Status.FAILED)):
        counted = by_labels(samples, f"conveyor_jobs_{name}_total", "queue", "task")
        assert counted == jobs_by(jobs, status), name
    stats = app.stats()
    for queue in ("default", "mail"):
        succeeded = by_labels(samples, "conveyor_jobs_succeeded_total", "queue").get((queue,), 0)
        failed = by_labels(samples, "conveyor_jobs_failed_total", "queue").get((queue,), 0)
        assert (succeeded, failed) == (stats[queue].get(Status.SUCCEEDED, 0), stats[queue].get(Status.FAILED, 0))
    started = event_counts(app, "started")
    assert by_labels(samples, "conveyor_jobs_started_total", "queue", "task") == started
    assert sum(started.values()) == sum(job.attempts for job in served) == 26 + 4 + 3
    retried = by_labels(samples, "conveyor_jobs_retried_total", "queue", "task")
    assert retried == event_counts(app, "retry_scheduled") == {("mail", "m.flaky"): 4, ("default", "m.bad"): 3}
    assert sum(job.retries for job in served) == 7
    assert by_labels(samples, "conveyor_jobs_failed_total", "queue", "task") == {("default", "m.bad"): 3}

    # run times: one per run, by its outcome; buckets cumulative; the slow job's time is its run's
    runs = by_labels(samples, "conveyor_job_run_seconds_count", "queue", "task")
    assert runs == started
    outcomes = by_labels(samples, "conveyor_job_run_seconds_count", "outcome")
    assert outcomes == {("succeeded",): 23, ("retry_scheduled",): 7, ("failed",): 3}
    infinite = by_labels(samples, "conveyor_job_run_seconds_bucket", "queue", "task", "le")
    assert all(infinite[(queue, task, "+Inf")] == n for (queue, task), n in runs.items())
    slow_job = next(job for job in jobs if job.task == "m.slow")
    assert slow_job.started_at is not None and slow_job.finished_at is not None
    slow_sum = one(samples, "conveyor_job_run_seconds_sum", queue="mail", task="m.slow", outcome="succeeded")
    assert slow_sum == pytest.approx(slow_job.finished_at - slow_job.started_at, abs=0.05)
    assert slow_sum >= 0.3
    assert one(samples, "conveyor_job_run_seconds_bucket", queue="mail", task="m.slow", outcome="succeeded",
               le="0.25") == 0  # fmt: skip

    # gauges, read at scrape time
    for queue, row in stats.items():
        if queue == "all":
            continue
        for status in Status:
            assert one(samples, "conveyor_queue_jobs", queue=queue, status=status.value) == row.get(status, 0)
    assert one(samples, "conveyor_queue_jobs", queue="later", status="scheduled") == 3
    assert one(samples, "conveyor_queue_jobs", queue="idle", status="queued") == 2
    assert one(samples, "conveyor_queue_oldest_due_age_seconds", queue="idle") > 0
    assert one(samples, "conveyor_queue_oldest_due_age_seconds", queue="later") == 0
    assert one(samples, "conveyor_queue_workers_alive", queue="mail") == 1
    assert one(samples, "conveyor_queue_workers_alive", queue="idle") == 0
    assert one(samples, "conveyor_workers_alive") == 1
    assert one(samples, "conveyor_workers", state="running") == 1
    assert one(samples, "conveyor_leader_present") == 1
    assert one(samples, "conveyor_service_replicas", status="pending") == 1
    assert one(samples, "conveyor_store_up") == 1
    assert one(samples, "conveyor_healthy") == 0  # queue "idle" has jobs due and no worker

    # a paused queue; then, the worker stopped: no live worker, no leader, the counters unchanged
    app.pause_queue("idle")
    worker.stop()
    after = scrape(client)
    assert one(after, "conveyor_queue_paused", queue="idle") == 1
    assert one(after, "conveyor_queue_paused", queue="mail") == 0
    assert one(after, "conveyor_workers_alive") == 0
    assert one(after, "conveyor_leader_present") == 0  # a worker that stops lets the lock go
    assert one(after, "conveyor_workers", state="stopped") == 1
    assert by_labels(after, "conveyor_jobs_started_total", "queue", "task") == started


def test_two_servers_count_alike_and_apart(app: App, serve: Callable[..., TestClient]) -> None:
    """Each server has its own registry and follower: a second one counts the whole log too."""

    @app.task(name="m.ok")
    def ok() -> None:
        return None

    for _ in range(5):
        ok.delay()
    first = scrape(serve(app))
    second = scrape(serve(app))
    key = ("conveyor_jobs_enqueued_total", (("queue", "default"), ("task", "m.ok")))
    assert first[key] == second[key] == 5


def test_metrics_need_a_user_unless_public(app: App, serve: Callable[..., TestClient]) -> None:
    anonymous = serve(app, user=None).get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in anonymous.json()["message"]
    assert serve(app, user=User(name="ada")).get("/metrics").status_code == 200
    assert serve(app, public=True).get("/metrics").status_code == 200


def test_a_real_server_counts_a_drain_and_needs_a_token(
    start_web_server: Callable[..., WebServer], wait_for: Callable[..., Any]
) -> None:
    """The whole stack: uvicorn serving create_app, the auth middleware's user, jobs enqueued through
    the API and run from another process's App; the scrape equals the store."""
    server = start_web_server()
    owner = server.client("owner")
    for n in range(5):
        ok(owner.post("/api/jobs", json={"task": "add", "args": [n, 1]}), 201)
    for _ in range(2):
        ok(owner.post("/api/jobs", json={"task": "fail"}), 201)
    ok(owner.post("/api/jobs", json={"task": "add", "args": [0, 0], "queue": "later", "delay": 3600}), 201)
    assert server.app.run_until_empty(["default"]) == 7

    def counted() -> Samples | None:
        answer = server.client("reader").get("/metrics")  # read-only: any user may scrape
        assert answer.status_code == 200, answer.text
        samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families(answer.text) for sample in family.samples}  # fmt: skip
        caught_up = one(samples, "conveyor_metrics_counted_seq") >= one(samples, "conveyor_event_log_seq")
        return samples if caught_up else None

    samples = wait_for(counted, "the server's metrics count the whole log", timeout=30)
    jobs = server.app.jobs(limit=100)
    assert by_labels(samples, "conveyor_jobs_enqueued_total", "queue", "task") == jobs_by(jobs) == {
        ("default", "add"): 5, ("default", "fail"): 2, ("later", "add"): 1,
    }  # fmt: skip
    assert by_labels(samples, "conveyor_jobs_succeeded_total", "queue", "task") == jobs_by(jobs, Status.SUCCEEDED)
    assert by_labels(samples, "conveyor_jobs_failed_total", "queue", "task") == jobs_by(jobs, Status.FAILED)
    assert by_labels(samples, "conveyor_job_run_seconds_count", "queue", "task") == event_counts(server.app, "started")
    assert one(samples, "conveyor_queue_jobs", queue="later", status="scheduled") == 1

    anonymous = server.client(None).get("/metrics")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    bad = server.client(None).get("/metrics", headers={"Authorization": "Bearer cv_000000000000_" + "x" * 40})
    assert bad.status_code == 401
    public = start_web_server(metrics_public=True)
    assert public.client(None).get("/metrics").status_code == 200
    assert public.client(None).get("/api/jobs").status_code == 401


def test_an_unreachable_store_is_reported_not_raised(tmp_path: Any, serve: Callable[..., TestClient]) -> None:
    """A store that is not there: the scrape answers, saying so (store_up 0), and creates nothing."""
    missing = tmp_path / "none.db"
    samples = scrape(serve(App(f"sqlite:///{missing}"), user=None, public=True))
    assert one(samples, "conveyor_store_up") == 0
    assert one(samples, "conveyor_healthy") == 0
    assert not missing.exists()
