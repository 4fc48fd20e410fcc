"""Helpers of the event-log end-to-end tests (issue 10): the app their worker processes run, a
subscriber followed on a thread of the test process, and readers of the whole log.

A follower stops at a *sentinel*: a job the test enqueues (into a queue no worker serves) once
everything it waits for is done. Its ``enqueued`` event is committed after every event the test
checks, so a follower that reached it has read past all of them, and nothing it should have seen
can still arrive. The chaos suite uses the same follower (tests/chaos/test_event_log.py).
"""

from __future__ import annotations

import itertools
import textwrap
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conveyor import App, Task
from conveyor.events import Event

#: The app the event tests' worker processes run (``evapp:app``), written next to e2eapp.py.
#: Tasks append to files in $E2E_DIR (one write per line: O_APPEND keeps lines whole).
EVENTS_APP = textwrap.dedent(
    '''
    import os
    import time

    from conveyor import App, current_job

    app = App(os.environ["CONVEYOR_URL"], lease=float(os.environ.get("E2E_LEASE", "1.0")))
    OUT = os.environ["E2E_DIR"]


    def mark(name, text):
        fd = os.open(os.path.join(OUT, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (text + "\\n").encode())
        finally:
            os.close(fd)


    @app.task(name="ev.noop")
    def noop(i):
        return i


    @app.task(name="ev.flaky", max_retries=1, backoff=0.2, jitter=0.0)
    def flaky(tag):
        """Fails its first run, succeeds its second."""
        attempt = current_job().attempt
        mark(tag, f"run {attempt} {os.getpid()}")
        if attempt == 1:
            raise ValueError("the first run fails")
        return attempt


    @app.task(name="ev.stamp")
    def stamp(seconds, quick_on_retry=False):
        """Logs its start and end with its queue, its job and the time: `start|done QUEUE JOB PID TIME`."""
        job = current_job().job
        mark("stamps.txt", f"start {job.queue} {job.id} {os.getpid()} {time.time():.6f}")
        if not (quick_on_retry and job.attempts > 1):
            time.sleep(seconds)
        mark("stamps.txt", f"done {job.queue} {job.id} {os.getpid()} {time.time():.6f}")
        return os.getpid()


    @app.task(name="ev.gated")
    def gated(i):
        """A task the tests disable and enable."""
        mark("gated.txt", f"run {i} {current_job().id} {os.getpid()}")
        return i
    '''
)

#: Outcome events: how a run ends (a job's state changes with it).
OUTCOMES = frozenset({"retry_scheduled", "handed_back", "rescued", "succeeded", "failed", "timed_out", "discarded",
                      "cancelled"})  # fmt: skip
#: Terminal events, by the status a finished job ends in.
TERMINAL = {"succeeded": {"succeeded"}, "failed": {"failed", "timed_out"}, "cancelled": {"cancelled"}}
SENTINEL_QUEUE = "sentinel"


def install_events_app(directory: Path) -> str:
    """Write the event tests' app module into ``directory``; returns its MODULE:APP path."""
    (directory / "evapp.py").write_text(EVENTS_APP)
    return "evapp:app"


def client_tasks(app: App) -> dict[str, Task[Any, Any]]:
    """Declare the events app's tasks on the test's client App (bodies never run here), so the
    test can build signatures for enqueue_many."""

    def stub(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never run here
        raise AssertionError("a client stub ran")

    tasks: dict[str, Task[Any, Any]] = {}
    for name in ("ev.noop", "ev.flaky", "ev.stamp", "ev.gated"):
        tasks[name] = app.tasks.get(name) or app.task(name=name)(stub)
    return tasks


class Follower:
    """``app.subscribe(after=...)`` iterated on a daemon thread of this process, keeping every event
    it yields, until it yields a sentinel job's event (``stop_followers``)."""

    def __init__(self, app: App, *, after: int | None = None, poll: float = 0.2) -> None:
        self.subscription = app.subscribe(after=after, poll=poll)
        self.start_seq: int = self.subscription.last_seq  #: the subscription yields events after this
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._follow, name="event-follower", daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        try:
            for event in self.subscription:
                self.events.append(event)
                if event.queue == SENTINEL_QUEUE and event.job_id is not None and event.job_id.startswith("sentinel-"):
                    return
        except BaseException as exc:  # reported by stop_followers
            self.error = exc


def stop_followers(app: App, *followers: Follower, timeout: float = 60.0) -> int:
    """Enqueue one sentinel job; wait for every follower to reach it. Returns the sentinel's seq."""
    sentinel = app.enqueue("sentinel", id=f"sentinel-{uuid.uuid4().hex}", queue=SENTINEL_QUEUE)
    for follower in followers:
        follower.thread.join(timeout)
        try:
            assert follower.error is None, f"the subscription raised {follower.error!r}"
            assert not follower.thread.is_alive(), (
                f"a subscriber did not reach the sentinel within {timeout} s; its last events: "
                f"{[brief(e) for e in follower.events[-5:]]}"
            )
        finally:
            follower.subscription.close()
    (event,) = app.events(job_id=sentinel.id)
    return event.seq


def read_log(app: App, after: int = 0, upto: int | None = None, page: int = 1000) -> list[Event]:
    """The whole log after ``after`` (and up to ``upto``, included), read in pages with app.events."""
    events: list[Event] = []
    while True:
        batch = app.events(after=after, limit=page)
        for event in batch:
            if upto is not None and event.seq > upto:
                return events
            events.append(event)
        if len(batch) < page:
            return events
        after = batch[-1].seq


def by_job(events: Iterable[Event]) -> dict[str, list[Event]]:
    """Job events grouped by job id, in log order."""
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.job_id is not None:
            grouped[event.job_id].append(event)
    return grouped


def brief(event: Event) -> tuple[int, str, str | None, int]:
    """What a failure message shows of an event."""
    return event.seq, event.kind, event.job_id, event.attempt


def assert_same_events(seen: list[Event], log: list[Event], who: str) -> None:
    """``seen`` (what a subscriber yielded) is exactly ``log``: every event once, in seq order."""
    seqs = [e.seq for e in seen]
    assert all(a < b for a, b in itertools.pairwise(seqs)), f"{who}: seq not strictly increasing"
    missing = sorted({e.seq for e in log} - set(seqs))
    extra = sorted(set(seqs) - {e.seq for e in log})
    assert not missing and not extra, f"{who}: missed seqs {missing[:20]} ({len(missing)}), extra {extra[:20]}"
    assert [brief(e) for e in seen] == [brief(e) for e in log], f"{who}: events differ from the log"
    assert seen == log, f"{who}: an event's fields differ from the log's"


def job_event_problems(job_id: str, events: list[Event], status: str, attempts: int) -> list[str]:
    """What is wrong with one finished job's events: they must read ``enqueued``, then for each run
    ``started`` (attempt 1, 2, ...) followed by exactly one outcome, the last one terminal and
    matching the job's final ``status``; ``attempts`` runs in all. Other kinds (progress, a task's
    own events) may come between a start and its outcome."""
    problems: list[str] = []
    kinds = [e.kind for e in events]
    if not kinds or kinds[0] != "enqueued" or kinds.count("enqueued") != 1:
        problems.append(f"job {job_id}: does not begin with exactly one enqueued event: {kinds}")
    starts = [e for e in events if e.kind == "started"]
    if [e.attempt for e in starts] != list(range(1, len(starts) + 1)):
        problems.append(f"job {job_id}: started events carry attempts {[e.attempt for e in starts]}")
    if len(starts) != attempts:
        problems.append(f"job {job_id}: {len(starts)} started events but attempts={attempts}")
    open_run = False
    ends: list[str] = []
    for event in events:
        if event.kind == "started":
            if open_run:
                problems.append(f"job {job_id}: a started event with no outcome before the next start: {kinds}")
            open_run = True
        elif event.kind in OUTCOMES:
            if not open_run and event.kind != "cancelled":
                problems.append(f"job {job_id}: an outcome {event.kind} with no run started: {kinds}")
            open_run = False
            ends.append(event.kind)
    terminal = [kind for kind in ends if kind in {"succeeded", "failed", "timed_out", "cancelled"}]
    wanted = TERMINAL.get(status)
    if wanted is None:
        problems.append(f"job {job_id}: not finished (status {status}); events {kinds}")
    elif len(terminal) != 1 or terminal[0] not in wanted:
        problems.append(f"job {job_id}: status {status} but terminal events {terminal}: {kinds}")
    elif ends[-1] != terminal[0]:
        problems.append(f"job {job_id}: its terminal event is not its last outcome: {kinds}")
    if open_run:
        problems.append(f"job {job_id}: its last started event has no outcome: {kinds}")
    return problems
