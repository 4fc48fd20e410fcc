"""A task whose error message cannot be encoded (a lone surrogate) fails with the message escaped,
and the worker that ran it goes on finishing other jobs."""

from __future__ import annotations

import pytest

from conveyor import Status

from .conftest import Cluster, report

pytestmark = pytest.mark.chaos


def test_an_unencodable_error_message_is_stored_escaped_and_the_worker_keeps_finishing_jobs(
    cluster: Cluster, store_url: str
) -> None:
    worker = cluster.worker(concurrency=2)
    cluster.wait_started(worker)

    bad = cluster.wait_finished(cluster.app.enqueue("chaos.bad_message").id, timeout=60)
    assert bad.status is Status.FAILED
    assert bad.error is not None and bad.error.type == "ValueError"
    message = bad.error.message
    message.encode("utf-8")  # storable anywhere: the lone surrogate is escaped
    assert message.startswith("bad input ") and message.endswith(" here"), message
    assert "\udcff" not in message
    assert "\\udcff" in message or "\\xff" in message, f"the surrogate is escaped, not dropped: {message!r}"

    later = [cluster.app.enqueue("chaos.pid").id for _ in range(5)]
    finished = [cluster.wait_finished(job_id, timeout=60) for job_id in later]
    assert [job.status for job in finished] == [Status.SUCCEEDED] * 5
    assert {job.result for job in finished} == {worker.pid}, "the same worker process finished them"
    assert worker.poll() is None
    report(f"bad error message on {store_url.split(':', 1)[0]}: failed as {message!r}; the same worker then "
           "finished 5 more jobs")  # fmt: skip
