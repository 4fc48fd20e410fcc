"""The worker: claim due jobs, run them, keep their leases, hand them back on stop.

One worker is one process running up to ``concurrency`` jobs at once: sync
tasks on threads, async tasks on an event loop in a thread of its own. Two
helper threads do the rest: the reporter writes how runs ended, in batches;
the monitor renews leases, enforces time-outs and does leader duties. The
loop in ``run`` is the whole life of a worker; read it top to bottom.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .backends.base import Outcome, OutcomeKind, Report
from .errors import StoreUnavailable
from .execution import failed, run_async, run_sync, timed_out, unknown_task
from .job import Job
from .maintenance import Maintenance

if TYPE_CHECKING:
    from .app import App
    from .task import Task

log = logging.getLogger("conveyor.worker")

EXIT_STUCK = 75  #: a supervised child exits with this when an abandoned sync task will not let go of its thread
TICK = 0.05  #: seconds between monitor passes (time-out checks)
STOP_CHECK = 0.25  #: longest idle wait before the claim loop looks at a stop request again
BATCH_WAIT = 0.001  #: how long a free slot may wait for others to free before a claim
REPORT_BATCH = 256  #: most outcomes written in one transaction
MAX_BACKOFF = 2.0  #: longest pause between retries against an unreachable store


class _Run:
    """One job in flight in this worker."""

    def __init__(self, job: Job, task: Task[Any, Any], deadline: float | None) -> None:
        self.job = job
        self.task = task
        self.deadline = deadline  #: time.monotonic() at which the run times out
        self.future: Future[Outcome] | None = None
        self.abandoned: str | None = None  #: why its outcome will not be written, once set
        self.abandoned_at = 0.0

    @property
    def token(self) -> str:
        assert self.job.token is not None
        return self.job.token


class Worker:
    """Runs jobs from ``queues`` until stopped. See ``run``."""

    def __init__(
        self,
        app: App,
        queues: Sequence[str] = ("default",),
        concurrency: int = 8,
        *,
        grace: float = 5.0,
        poll: float = 1.0,
        supervised: bool = False,
        stuck_after: float = 5.0,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.app = app
        self.backend = app.backend
        self.clock = app.clock
        self.lease = app.lease
        self.queues = list(queues)
        self.concurrency = concurrency
        self.grace = grace
        self.poll = poll
        self.supervised = supervised
        self.stuck_after = stuck_after
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_every = min(self.lease / 3, 1.0)
        self.maintenance = Maintenance(self.backend, self.id, self.clock, self.lease)

        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._claiming = threading.Lock()  # held while a claim is in flight and its jobs start
        self._slot_free = threading.Event()
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._done: queue.SimpleQueue[tuple[_Run, Outcome] | None] = queue.SimpleQueue()
        self._threads = ThreadPoolExecutor(max_workers=concurrency + 32, thread_name_prefix="conveyor-job")
        self._loop = asyncio.new_event_loop()
        self._orphans: list[_Run] = []  # abandoned sync runs (timed out, cancelled) maybe still on a thread
        self._unreported: set[str] = set()  # tokens of finished runs whose outcome waits for the store
        self._store_down = False  # the store was unreachable at the last heartbeat

    # the life of a worker ---------------------------------------------------------
    def run(self) -> None:
        """Claim and run jobs until ``stop()`` or SIGTERM/SIGINT, then hand back the rest."""
        self._install_signal_handlers()
        helpers = [
            threading.Thread(target=self._loop.run_forever, name="conveyor-loop", daemon=True),
            threading.Thread(target=self._report_outcomes, name="conveyor-reporter", daemon=True),
            threading.Thread(target=self._monitor, name="conveyor-monitor", daemon=True),
        ]
        for thread in helpers:
            thread.start()
        log.info("worker %s started: queues %s, concurrency %d", self.id, ",".join(self.queues), self.concurrency)
        failures = 0  # claims in a row that found the store unreachable
        try:
            while not self._stopping.is_set():
                free = self._free_slots()
                if free <= 0:
                    continue
                try:
                    jobs = self._claim(free)
                    failures = 0
                except StoreUnavailable as exc:
                    failures += 1
                    pause = min(self.poll * 2 ** (failures - 1), max(self.poll, MAX_BACKOFF))
                    log.warning("claiming failed, the store is unreachable; trying again in %.1f s: %s", pause, exc)
                    self._stopping.wait(pause)
                    continue
                except Exception:
                    log.exception("claiming failed; trying again in %s s", self.poll)
                    self._stopping.wait(self.poll)
                    continue
                if not jobs:
                    self.backend.wait_for_work(self.queues, min(self.poll, STOP_CHECK))
        finally:
            self._shut_down(helpers)

    def stop(self, hurry: bool = False) -> None:
        """Stop claiming; running jobs get ``grace`` seconds (none if ``hurry``) before hand-back."""
        if hurry:
            self._hurry.set()
        self._stopping.set()
        self._slot_free.set()

    def _free_slots(self) -> int:
        """Free slots to claim for. While jobs run, wait (briefly) until a batch's worth is free:
        one claim for several jobs costs the store one write instead of several."""
        batch = max(1, self.concurrency // 2)
        deadline = 0.0
        while not self._stopping.is_set():
            self._slot_free.clear()
            free = self.concurrency - len(self._runs)
            if free >= batch or (free > 0 and not self._runs):
                return free
            if free <= 0:
                self._slot_free.wait(self.poll)
                continue
            deadline = deadline or time.monotonic() + BATCH_WAIT
            if time.monotonic() >= deadline:
                return free
            self._slot_free.wait(deadline - time.monotonic())
        return 0

    # starting a job ---------------------------------------------------------------
    def _claim(self, free: int) -> list[Job]:
        """Claim up to ``free`` jobs and start them. Under ``_claiming``, so that whoever holds
        that lock knows every job this worker has claimed is in ``_runs`` (see ``_check_stuck``)."""
        with self._claiming:
            if self._stopping.is_set():
                return []
            jobs = self.backend.claim(self.queues, self.id, free, self.lease, self.clock())
            for job in jobs:
                self._start(job)
            return jobs

    def _start(self, job: Job) -> None:
        task = self.app.tasks.get(job.task)
        assert job.token is not None
        if task is None:
            log.error("job %s: unknown task %r", job.id, job.task)
            self._write_outcomes([Report(job.id, job.token, unknown_task(job))])
            return
        deadline = None if job.timeout is None else time.monotonic() + job.timeout
        run = _Run(job, task, deadline)
        with self._lock:
            self._runs[run.token] = run
        future: Future[Outcome]
        if task.is_async:
            coro = run_async(task, job, self.backend, self.clock)
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        else:
            future = self._threads.submit(run_sync, task, job, self.backend, self.clock)
        run.future = future
        future.add_done_callback(lambda f: self._done.put((run, self._outcome_of(run, f))))

    def _outcome_of(self, run: _Run, future: Future[Outcome]) -> Outcome:
        if future.cancelled():
            return Outcome(kind=OutcomeKind.RELEASED)  # only abandoned runs are cancelled
        exc = future.exception()
        if exc is not None:  # a BaseException that escaped the task (SystemExit, ...)
            return failed(run.task, run.job, exc, self.clock())
        return future.result()

    # threads ----------------------------------------------------------------------
    def _report_outcomes(self) -> None:
        """Write finished runs' outcomes, all that are waiting in one transaction, except
        those of runs abandoned meanwhile (their outcome is no longer theirs to write)."""
        stopping = False
        while not stopping:
            items = [self._done.get()]
            while len(items) < REPORT_BATCH and not self._done.empty():
                items.append(self._done.get())
            reports = []
            with self._lock:
                for item in items:
                    if item is None:
                        stopping = True
                        continue
                    run, outcome = item
                    if run.abandoned:
                        log.info("job %s: dropped the outcome of an abandoned run (%s)", run.job.id, run.abandoned)
                        continue
                    del self._runs[run.token]
                    reports.append(Report(run.job.id, run.token, outcome))
            if reports:
                self._write_outcomes(reports)
                self._slot_free.set()

    def _write_outcomes(self, reports: list[Report]) -> None:
        """Write how runs ended; while the store is unreachable, retry with back-off and keep
        the runs' leases renewed meanwhile (they join the heartbeat), so an outage loses no
        outcome and makes no job run twice."""
        now = self.clock()
        pause = 0.05
        while True:
            try:
                written = self.backend.finish_many(reports, now)
                break
            except StoreUnavailable as exc:
                with self._lock:
                    self._unreported.update(report.token for report in reports)
                log.warning("%d outcome(s) wait: the store is unreachable, writing again in %.1f s: %s",
                            len(reports), pause, exc)  # fmt: skip
                time.sleep(pause)
                pause = min(pause * 2, MAX_BACKOFF)
        for report, ok in zip(reports, written, strict=True):
            if not ok:
                log.warning("job %s: the store refused a stale report (cancelled or rescued)", report.job_id)
        with self._lock:
            self._unreported.difference_update(report.token for report in reports)

    def _monitor(self) -> None:
        """Enforce time-outs, renew leases, do leader duties; until the worker shuts down."""
        next_beat = 0.0
        while not self._hurry.is_set() or self._runs:
            now = time.monotonic()
            for run in [r for r in list(self._runs.values()) if r.deadline is not None and r.deadline <= now]:
                self._time_out(run)
            if now >= next_beat:
                next_beat = now + self.heartbeat_every
                try:
                    self._beat()
                    if self._store_down:
                        log.info("the store is reachable again")
                        self._store_down = False
                except StoreUnavailable as exc:
                    self.maintenance.store_unreachable()
                    if not self._store_down:
                        log.warning("heartbeat failed, the store is unreachable; running jobs go on: %s", exc)
                    self._store_down = True
                except Exception:
                    log.exception("heartbeat failed; retrying")
            self._check_stuck(now)
            if self._stopping.is_set() and not self._runs:
                return
            time.sleep(TICK)

    def _beat(self) -> None:
        with self._lock:
            tokens = [*self._runs, *self._unreported]
        lost = self.backend.heartbeat(self.id, tokens, self.lease, self.clock())
        for token in lost:
            run = self._abandon(token, "the store no longer lists this run (cancelled or rescued)")
            if run is not None:
                log.warning("job %s: run %s lost: %s", run.job.id, token, run.abandoned)
        if not self._stopping.is_set():
            self.maintenance.tick()

    def _time_out(self, run: _Run) -> None:
        if self._abandon(run.token, "timed out") is None:
            return
        log.warning("job %s timed out after %s s", run.job.id, run.job.timeout)
        try:
            self.backend.finish(run.job.id, run.token, timed_out(run.task, run.job, self.clock()), self.clock())
        except StoreUnavailable as exc:
            log.warning("job %s: the store is unreachable; the leader will abort it later: %s", run.job.id, exc)

    def _abandon(self, token: str, why: str) -> _Run | None:
        """Take a run out of this worker's hands: its outcome will not be written."""
        with self._lock:
            run = self._runs.pop(token, None)
            if run is None:
                return None
            run.abandoned = why
            run.abandoned_at = time.monotonic()
        if run.future is not None:
            run.future.cancel()  # stops an async task; a sync one already on a thread runs on, its result dropped
            if not run.task.is_async and not run.future.done():
                self._orphans.append(run)
        self._slot_free.set()
        return run

    def _check_stuck(self, now: float) -> None:
        """A child whose abandoned (timed-out or cancelled) sync task holds its thread too long
        exits, to be replaced: Python cannot stop a thread, but it can end a process."""
        self._orphans = [r for r in self._orphans if r.future is not None and not r.future.done()]
        if not self.supervised or self._stopping.is_set():
            return
        stuck = [r for r in self._orphans if now - r.abandoned_at > self.stuck_after]
        if stuck:
            log.error("job %s was %s and its sync task is still running; replacing this process",
                      stuck[0].job.id, stuck[0].abandoned)  # fmt: skip
            self.stop(hurry=True)
            with self._claiming:  # no claim in flight: a job claimed now would be lost with us
                self._hand_back_all()
            os._exit(EXIT_STUCK)

    # stopping ---------------------------------------------------------------------
    def _shut_down(self, helpers: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.grace
        if self._runs:
            log.info("worker %s stopping: %d job(s) running, %s s to finish", self.id, len(self._runs), self.grace)
        while self._runs and time.monotonic() < deadline and not self._hurry.is_set():
            time.sleep(TICK)
        self._hand_back_all()
        self._hurry.set()
        self._done.put(None)
        for thread in helpers[1:]:
            thread.join(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._threads.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.id)

    def _hand_back_all(self) -> None:
        """Give every unfinished job back to the queue at once, without using a retry."""
        runs = [run for token in list(self._runs) if (run := self._abandon(token, "handed back at shutdown"))]
        if not runs:
            return
        released = [Report(run.job.id, run.token, Outcome(kind=OutcomeKind.RELEASED)) for run in runs]
        try:
            self.backend.finish_many(released, self.clock())
            log.info("handed back %d job(s): %s", len(runs), ", ".join(run.job.id for run in runs))
        except StoreUnavailable as exc:
            log.warning("%d job(s) not handed back, the store is unreachable; they are requeued when their"
                        " leases run out: %s", len(runs), exc)  # fmt: skip

    def _install_signal_handlers(self) -> None:
        """Standalone: SIGTERM or SIGINT stops gracefully, a second one hands back at once.
        Supervised: SIGTERM stops gracefully however often it comes (a service manager and the
        supervisor may both send it), SIGUSR1 hands back at once, SIGINT is the supervisor's."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: object) -> None:
            hurry = signum == signal.SIGUSR1 or (not self.supervised and self._stopping.is_set())
            log.info("worker %s got %s: %s", self.id, signal.Signals(signum).name,
                     "handing back now" if hurry else "stopping")  # fmt: skip
            self.stop(hurry=hurry)

        signal.signal(signal.SIGTERM, on_signal)
        if self.supervised:
            signal.signal(signal.SIGUSR1, on_signal)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, on_signal)
