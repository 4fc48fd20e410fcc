"""What the conformance tests enqueue and read back: a fixed time line (T0 onwards, injected into
every call, so a store that read its own clock would fail) and small helpers around a store."""

from __future__ import annotations

import uuid
from typing import Any

from conveyor.backends import Backend
from conveyor.job import Job, NewJob

T0 = 1_000_000.0
LEASE = 30.0


def new(
    job_id: str | None = None,
    *,
    queue: str = "q",
    priority: int = 2,
    due: float = T0,
    key: str | None = None,
    max_retries: int = 0,
    timeout: float | None = None,
    result_ttl: float | None = 100.0,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> NewJob:
    """A job to enqueue; ids are unique unless given."""
    return NewJob(
        id=job_id or uuid.uuid4().hex, task="tests.task", queue=queue, priority=priority,
        args=[1, "two"] if args is None else args, kwargs={"x": 3} if kwargs is None else kwargs,
        scheduled_at=due, max_retries=max_retries, timeout=timeout, key=key, result_ttl=result_ttl,
    )  # fmt: skip


def claim_one(backend: Backend, now: float = T0, queues: tuple[str, ...] = ("q",), worker: str = "w1") -> Job:
    """Claim exactly one job (the test fails otherwise)."""
    jobs = backend.claim(queues, worker, 1, LEASE, now)
    assert len(jobs) == 1, f"expected one job to claim, got {jobs}"
    return jobs[0]


def token(job: Job) -> str:
    """The run's fencing token (the test fails if the job is not running)."""
    assert job.token is not None
    return job.token


def stored(backend: Backend, job_id: str) -> Job:
    """The job as the store holds it now (the test fails if it is gone)."""
    job = backend.get(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job
