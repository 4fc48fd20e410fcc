"""The Control protocol (switches) and how claims honour them, against every store: a paused queue,
a disabled task, or everything disabled is not claimed from the commit of ``set_switch`` on (by any
store object, as by any process), an idle worker whose only due jobs are switched off waits instead
of spinning, and eager mode's ``start`` ignores them. Also ``oldest_due``, what health reads."""

from __future__ import annotations

import threading
import time

from conveyor.backends import Backend
from conveyor.events import EventQuery
from conveyor.job import NewJob
from conveyor.operations import Switches, SwitchScope

from .conftest import OpenStore
from .jobdata import LEASE, T0, new


def of_task(task: str, job_id: str | None = None, **options: object) -> NewJob:
    """A job of another task than the default one."""
    job = new(job_id, **options)  # type: ignore[arg-type]
    job.task = task
    return job


def claimed_ids(backend: Backend, queues: tuple[str, ...] = ("q",), now: float = T0) -> set[str]:
    return {job.id for job in backend.claim(queues, "w1", 100, LEASE, now)}


# switching ----------------------------------------------------------------------------------------------
def test_set_switch_says_whether_it_changed_and_switches_reads_it_back(backend: Backend) -> None:
    assert backend.switches() == Switches()
    assert backend.set_switch(SwitchScope.QUEUE, "mail", True, T0) is True
    assert backend.set_switch(SwitchScope.QUEUE, "mail", True, T0 + 1) is False  # already paused
    assert backend.set_switch(SwitchScope.TASK, "app.send", True, T0) is True
    assert backend.set_switch(SwitchScope.ALL, "", True, T0) is True
    assert backend.switches() == Switches(
        paused_queues=frozenset({"mail"}), disabled_tasks=frozenset({"app.send"}), everything=True
    )
    assert backend.set_switch(SwitchScope.QUEUE, "other", False, T0) is False  # was not paused
    assert backend.set_switch(SwitchScope.QUEUE, "mail", False, T0 + 2) is True
    assert backend.set_switch(SwitchScope.QUEUE, "mail", False, T0 + 3) is False
    assert backend.set_switch(SwitchScope.ALL, "", False, T0 + 2) is True
    assert backend.switches() == Switches(disabled_tasks=frozenset({"app.send"}))


def test_each_change_writes_its_event_once(backend: Backend) -> None:
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0)
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0 + 1)
    backend.set_switch(SwitchScope.TASK, "app.send", True, T0 + 2)
    backend.set_switch(SwitchScope.ALL, "", True, T0 + 3)
    backend.set_switch(SwitchScope.ALL, "", True, T0 + 3)
    backend.set_switch(SwitchScope.QUEUE, "mail", False, T0 + 4)
    backend.set_switch(SwitchScope.TASK, "app.send", False, T0 + 5)
    backend.set_switch(SwitchScope.TASK, "app.send", False, T0 + 5)
    backend.set_switch(SwitchScope.ALL, "", False, T0 + 6)
    events = backend.events(EventQuery())
    assert [(e.kind, e.queue, e.task, e.job_id, e.at) for e in events] == [
        ("queue_paused", "mail", None, None, T0),
        ("task_disabled", None, "app.send", None, T0 + 2),
        ("all_disabled", None, None, None, T0 + 3),
        ("queue_resumed", "mail", None, None, T0 + 4),
        ("task_enabled", None, "app.send", None, T0 + 5),
        ("all_enabled", None, None, None, T0 + 6),
    ]


# claims honour them -------------------------------------------------------------------------------------
def test_a_paused_queue_is_not_claimed_from_until_resumed(backend: Backend) -> None:
    backend.enqueue([new("m1", queue="mail"), new("m2", queue="mail"), new("q1")], T0)
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0)
    assert claimed_ids(backend, ("mail", "q")) == {"q1"}
    assert claimed_ids(backend, ("mail",)) == set()
    backend.set_switch(SwitchScope.QUEUE, "mail", False, T0)
    assert claimed_ids(backend, ("mail",)) == {"m1", "m2"}


def test_a_disabled_task_is_not_claimed_while_other_tasks_of_its_queue_are(backend: Backend) -> None:
    jobs = [of_task("app.send", "s1"), new("other1"), of_task("app.send", "s2", priority=4), new("other2")]
    backend.enqueue(jobs, T0)
    backend.set_switch(SwitchScope.TASK, "app.send", True, T0)
    assert claimed_ids(backend) == {"other1", "other2"}
    backend.set_switch(SwitchScope.TASK, "app.send", False, T0)
    assert [job.id for job in backend.claim(["q"], "w1", 100, LEASE, T0)] == ["s2", "s1"]


def test_disable_all_stops_every_claim_until_enabled(backend: Backend) -> None:
    backend.enqueue([new("a"), new("b", queue="mail")], T0)
    backend.set_switch(SwitchScope.ALL, "", True, T0)
    assert claimed_ids(backend, ("q", "mail")) == set()
    backend.set_switch(SwitchScope.ALL, "", False, T0)
    assert claimed_ids(backend, ("q", "mail")) == {"a", "b"}


def test_a_switch_holds_for_every_process_from_its_commit(open_store: OpenStore) -> None:
    control, worker = open_store(), open_store()
    worker.enqueue([new("a"), of_task("app.send", "s", queue="mail")], T0)
    assert worker.claim(["q", "mail"], "w1", 100, LEASE, T0 - 1) == []  # warm up: nothing due yet
    control.set_switch(SwitchScope.QUEUE, "q", True, T0)
    control.set_switch(SwitchScope.TASK, "app.send", True, T0)
    assert worker.claim(["q", "mail"], "w1", 100, LEASE, T0) == []
    assert worker.switches() == control.switches()
    control.set_switch(SwitchScope.TASK, "app.send", False, T0)
    assert [job.id for job in worker.claim(["q", "mail"], "w1", 100, LEASE, T0)] == ["s"]


def test_start_ignores_the_switches(backend: Backend) -> None:
    backend.enqueue([new("a", queue="mail"), of_task("app.send", "s")], T0)
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0)
    backend.set_switch(SwitchScope.TASK, "app.send", True, T0)
    backend.set_switch(SwitchScope.ALL, "", True, T0)
    started_a = backend.start("a", "eager", LEASE, T0)
    started_s = backend.start("s", "eager", LEASE, T0)
    assert started_a is not None and started_s is not None


def test_switched_off_jobs_are_not_counted_as_work_by_wait_for_work(backend: Backend) -> None:
    """An idle worker whose only due jobs are switched off waits out its timeout rather than being
    told, again and again, that a job is due (a tight loop of empty claims)."""
    backend.enqueue([new("paused", queue="mail"), of_task("app.send", "off")], T0)
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0)
    backend.set_switch(SwitchScope.TASK, "app.send", True, T0)
    for queues in (["mail"], ["q"], ["mail", "q"]):
        backend.wait_for_work(queues, 0.05, T0)  # a wake-up the switches just sent may end this one early
        started = time.monotonic()
        backend.wait_for_work(queues, 0.3, T0)
        assert 0.2 <= time.monotonic() - started < 10.0, f"wait_for_work({queues}) returned at once"
    backend.set_switch(SwitchScope.QUEUE, "mail", False, T0)
    backend.set_switch(SwitchScope.TASK, "app.send", False, T0)
    backend.set_switch(SwitchScope.ALL, "", True, T0)
    backend.wait_for_work(["mail", "q"], 0.05, T0)  # a wake-up the switches just sent may end this one early
    started = time.monotonic()
    backend.wait_for_work(["mail", "q"], 0.3, T0)
    assert 0.2 <= time.monotonic() - started < 10.0, "wait_for_work returned at once while everything is off"
    backend.set_switch(SwitchScope.ALL, "", False, T0)
    started = time.monotonic()
    backend.wait_for_work(["mail", "q"], 20.0, T0)
    assert time.monotonic() - started < 10.0, "due jobs switched on again: wait_for_work should return at once"


def test_resuming_a_queue_wakes_a_waiting_worker(open_store: OpenStore) -> None:
    waiter, control = open_store(), open_store()
    waiter.enqueue([new("a", queue="mail")], T0)
    control.set_switch(SwitchScope.QUEUE, "mail", True, T0)
    waiter.wait_for_work(["mail"], 0.01, T0)  # warm up (connections, listeners)
    timer = threading.Timer(0.3, lambda: control.set_switch(SwitchScope.QUEUE, "mail", False, T0))
    started = time.monotonic()
    timer.start()
    waiter.wait_for_work(["mail"], 20.0, T0)
    timer.join()
    assert time.monotonic() - started < 10.0, "wait_for_work slept out its timeout after the queue was resumed"
    assert claimed_ids(waiter, ("mail",)) == {"a"}


# queues --------------------------------------------------------------------------------------------------
def test_oldest_due_is_per_queue_the_due_time_of_its_oldest_due_queued_job(backend: Backend) -> None:
    assert backend.oldest_due(T0) == {}
    backend.enqueue([new("a", due=T0 - 30), new("b", due=T0 - 10, priority=4), new("later", due=T0 + 50)], T0)
    backend.enqueue([new("m", queue="mail", due=T0 - 5, priority=1), new("x", queue="empty", due=T0 + 1)], T0)
    backend.set_switch(SwitchScope.QUEUE, "mail", True, T0)  # switches are not considered
    assert backend.oldest_due(T0) == {"q": T0 - 30, "mail": T0 - 5}
    assert [job.id for job in backend.claim(["q"], "w1", 1, LEASE, T0)] == ["b"]
    backend.claim(["q"], "w1", 1, LEASE, T0)  # a, the oldest: running jobs are not queued
    assert backend.oldest_due(T0) == {"mail": T0 - 5}
    assert backend.oldest_due(T0 + 60) == {"q": T0 + 50, "mail": T0 - 5, "empty": T0 + 1}
