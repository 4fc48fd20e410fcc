"""The worker: claim due jobs, run them, keep their leases, hand them back on stop.

One worker is one process running up to ``concurrency`` jobs at once: sync tasks on threads,
async tasks on an event loop in a thread of its own. Supervised helper threads do the rest
(``helpers.py``): the reporter writes every outcome (``reporter.py``), the monitor renews leases,
times runs out and refreshes the worker's registry row (``monitor.py``, ``registration.py``), the
leader does leader duties on its own timer (``conveyor.leader``; not with ``leader=False``), the
scheduler syncs the app's code schedules and fires due ticks (``conveyor.scheduler``; not with
``scheduler=False``), and each ``@app.repeat`` function runs on a thread of its own.
``run`` is the whole life of a worker; read it top to bottom.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec

from .. import pipeline
from ..backends import describe_url
from ..errors import StoreUnavailable
from ..execution import failed, failed_permanently, run_sync, storable
from ..job import Job, JobError
from ..leader import Leader
from ..operations import WorkerState
from ..outcome import Outcome, OutcomeKind, Report
from ..scheduler import Scheduler
from ..signals import relay_signals
from .event_loop import JobLoop
from .helpers import Helper
from .joblog import log_outcome
from .monitor import TICK, Monitor
from .options import WorkerOptions, renew_interval, start_jitter
from .registration import Registration, worker_info
from .reporter import Reporter, released
from .runs import Run, Runs
from .services import ServiceKeeper

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("conveyor.worker")

EXIT_HELPER_FAILED = 70  #: a helper thread failed unexpectedly; the worker stopped itself (EX_SOFTWARE)
EXIT_STUCK = 75  #: a supervised child whose abandoned sync task will not let go of its thread
EXIT_STOP_REQUESTED = 64  #: a supervised child stopped through the store (stop_workers): not to be restarted
STOP_CHECK = 0.25  #: longest idle wait before the claim loop looks at a stop request again
BATCH_WAIT = 0.001  #: how long a free slot may wait for others to free before a claim
MAX_BACKOFF = 2.0  #: longest pause between claims against an unavailable store
HELPER_JOIN = 5.0  #: seconds a stopping worker waits for each helper thread to end
BACKLOG_PER_SLOT = 4  #: unwritten outcomes per slot a worker may have before they take slots (claims stop)
MIN_BACKLOG = 32  #: ... but at least this many (the reporter writes them in batches)
UNKNOWN_DELAY = 5.0  #: first delay before a job of a task this worker does not know is due again
UNKNOWN_MAX_DELAY = 60.0  #: longest such delay; it grows with how long this worker has seen the task


class Worker:
    """Runs jobs from ``options.queues`` until stopped. See ``run``.

    ``options``: the typed settings; keyword ``settings`` (queues=, concurrency=, grace=, ...)
    override its fields, for convenience."""

    def __init__(self, app: App, options: WorkerOptions | None = None, **settings: Any) -> None:
        if "queues" in settings:
            settings["queues"] = tuple(settings["queues"])
        options = msgspec.structs.replace(options or WorkerOptions(), **settings)
        self.options = options.check()
        self.app = app
        self.backend = app.backend
        self.clock = app.clock
        self.lease = app.lease
        self.queues = list(options.queues)
        self.concurrency = options.concurrency
        self.host = socket.gethostname()
        self.id = options.worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.exit_code = 0  #: 0, or why the worker stopped itself (``run`` returns it; see there)

        # a finished run frees its slot at once; past BACKLOG_PER_SLOT unwritten outcomes a slot, claims stop
        self.runs = Runs(self.concurrency, backlog=max(MIN_BACKLOG, BACKLOG_PER_SLOT * self.concurrency))
        self.reporter = Reporter(self.backend, self.clock, self.runs)
        stuck_after = options.stuck_after if options.supervised else None
        info = worker_info(self.id, self.host, os.getpid(), self.queues, self.concurrency, self.clock())
        # a stop requested through the store, heard at a registry beat, stops gracefully as SIGTERM does
        self.registration = Registration(self.backend, self.clock, info, self._registry_status, self.stop)
        self.first_poll = start_jitter(options.poll)  #: seconds before the first claim (the staggered start)
        self.monitor = Monitor(self.backend, self.clock, self.id, self.lease, self.runs, self.reporter,
                               self._stuck, stuck_after, registration=self.registration,
                               first_beat=min(start_jitter(options.poll), renew_interval(self.lease)))  # fmt: skip
        self.leader = Leader(app, self.id)  #: does leader duties on its thread (unless ``options.leader`` is False)
        self._claiming = threading.Lock()  # held while a claim is in flight and its jobs start
        self._stopping = threading.Event()
        self._hurry = threading.Event()
        self._closed = threading.Event()  # ends the monitor, once every outcome is written or given up
        self._leader_stop = threading.Event()  # ends the side helpers: leader, scheduler, repeats
        self._failing = threading.Lock()
        self._unknown_seen: dict[str, float] = {}  # task name -> when this worker first saw a job of it
        self._threads = ThreadPoolExecutor(max_workers=self.concurrency + 32, thread_name_prefix="conveyor-job")
        self._job_loop = JobLoop(self.backend, self.clock)  # async runs' event loop, on the "loop" helper
        self._helpers = {
            "loop": Helper("loop", self._job_loop.loop.run_forever, self._helper_failed),
            "reporter": Helper("reporter", self.reporter.run, self._helper_failed),
            "monitor": Helper("monitor", functools.partial(self.monitor.run, self._closed), self._helper_failed),
        }
        if options.leader:
            self._helpers["leader"] = Helper("leader", functools.partial(self.leader.run, self._leader_stop),
                                             self._helper_failed)  # fmt: skip
        self.scheduler = Scheduler(app)  #: fires due ticks on its thread (unless ``options.scheduler`` is False)
        if options.scheduler:
            self._helpers["scheduler"] = Helper("scheduler", functools.partial(self.scheduler.run, self._leader_stop),
                                                self._helper_failed)  # fmt: skip
        #: runs the replicas of the app's services whose queue this worker serves (unless ``options.services`` is False)
        self.keeper = ServiceKeeper(app, self.id, self.queues, self._services_stuck)
        if options.services and self.keeper.active:
            self._helpers["services"] = Helper("services", functools.partial(self.keeper.run, self._leader_stop),
                                               self._helper_failed)  # fmt: skip
            self._helpers["service watch"] = Helper("service watch", self.keeper.watch, self._helper_failed)
        for name, repeat in app.repeats.items():
            self._helpers[f"repeat {name}"] = Helper(f"repeat {name}", functools.partial(repeat.run, self._leader_stop),
                                                     self._helper_failed)  # fmt: skip
        self._side = [helper for name, helper in self._helpers.items() if name not in ("loop", "reporter", "monitor")]

    @property
    def is_leader(self) -> bool:
        """True while this worker holds the leader lock."""
        return bool(self.leader.is_leader)

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested for this worker through the store (``app.stop_workers``)."""
        return self.registration.stop_requested

    # the life of a worker ---------------------------------------------------------
    def run(self) -> int:
        """Claim and run jobs until ``stop()`` or SIGTERM/SIGINT, then hand back the rest.

        A stop requested through the store (``app.stop_workers``, heard at a registry beat) is a
        graceful stop too. Returns the exit code: 0, or EXIT_HELPER_FAILED / EXIT_STUCK when the
        worker stopped itself; a supervised child then ends its process with it, for its
        supervisor to replace. A supervised child stopped through the store ends with
        EXIT_STOP_REQUESTED instead, which its supervisor does not replace."""
        self._install_signal_handlers()
        self.registration.register()  # before any claim; if the store is down, the monitor's beats retry
        for helper in self._helpers.values():
            helper.start()
        self._log_start()
        failures = 0  # claims in a row that failed
        self._stopping.wait(self.first_poll)  # staggered start: workers started together spread their first claims
        try:
            while not self._stopping.is_set():
                free = self._free_slots()
                if free <= 0:
                    continue
                try:
                    jobs = self._claim(free)
                    if not jobs:
                        self.backend.wait_for_work(self.queues, min(self.options.poll, STOP_CHECK), self.clock())
                    failures = 0
                except Exception as exc:
                    failures += 1
                    pause = min(self.options.poll * 2 ** (failures - 1), max(self.options.poll, MAX_BACKOFF))
                    if isinstance(exc, StoreUnavailable):
                        log.warning("claiming failed, the store is unavailable; trying again in %.1f s: %s",
                                    pause, storable(str(exc)))  # fmt: skip
                    else:
                        log.exception("claiming failed; trying again in %.1f s", pause)
                    self._stopping.wait(pause)
        finally:
            self._shut_down()
        code = self.exit_code
        if self.stop_requested and self.options.supervised:
            code = EXIT_STOP_REQUESTED  # whatever else happened on the way down: the user asked it to stop
        if code and self.options.supervised:
            logging.shutdown()
            os._exit(code)  # a job thread may never end: do not wait for it at exit
        return code

    def _registry_status(self) -> tuple[int, WorkerState, bool]:
        """What the registry beat writes: jobs in flight, running or stopping, leader or not."""
        state = WorkerState.STOPPING if self._stopping.is_set() else WorkerState.RUNNING
        return len(self.runs.running()), state, self.is_leader

    def _log_start(self) -> None:
        """Say which store this worker serves (a SQLite file by its absolute path, never a
        password) and which tasks it knows: the two things a user checks first."""
        tasks = sorted(self.app.tasks)
        log.info("worker %s started: queues %s, concurrency %d; store %s; %d task(s): %s",
                 self.id, ",".join(self.queues), self.concurrency, describe_url(self.app.url), len(tasks),
                 ", ".join(tasks) or "none",
                 extra={"store": describe_url(self.app.url), "queues": list(self.queues), "tasks": tasks,
                        "concurrency": self.concurrency, "worker_id": self.id})  # fmt: skip

    def stop(self, hurry: bool = False) -> None:
        """Stop claiming; running jobs get ``grace`` seconds (none if ``hurry``) before hand-back."""
        if hurry:
            self._hurry.set()
        self._stopping.set()
        self.runs.slot_free.set()

    def _free_slots(self) -> int:
        """Free slots to claim for. While jobs run, wait (briefly) until a batch's worth is free:
        one claim for several jobs costs the store one write instead of several. ``Runs`` wakes
        this loop only once that many are free, not at every finished run."""
        batch = max(1, self.concurrency // 2)
        deadline = 0.0
        while not self._stopping.is_set():
            free = self.runs.free(batch)
            if free >= batch or free == self.concurrency:
                return free
            if free <= 0:
                self.runs.slot_free.wait(self.options.poll)
                continue
            deadline = deadline or time.monotonic() + BATCH_WAIT
            if time.monotonic() >= deadline:
                return free
            self.runs.slot_free.wait(deadline - time.monotonic())
        return 0

    # starting a job ---------------------------------------------------------------
    def _claim(self, free: int) -> list[Job]:
        """Claim up to ``free`` jobs and start them. Under ``_claiming``, so that a stop never
        misses a job claimed at that moment."""
        with self._claiming:
            if self._stopping.is_set():
                return []
            jobs = self.backend.claim(self.queues, self.id, free, self.lease, self.clock())
            if jobs:
                self._start(jobs)
            return jobs

    def _start(self, jobs: list[Job]) -> None:
        """Start claimed jobs: sync tasks each on a thread, async ones on the loop in ONE call
        (one wake-up of the loop per claim, not one per job)."""
        on_loop: list[tuple[Run, Future[Outcome]]] = []
        now = time.monotonic()
        for job in jobs:
            if job.stages is not None and self._settled_early(job):
                continue
            task = self.app.tasks.get(job.task)
            if task is None:
                self._unknown(job)
                continue
            run = Run(job, task, now)
            self.runs.add(run)
            if task.is_async:
                future: Future[Outcome] = Future()  # settled from the loop (JobLoop); cancelling it cancels the task
                run.future = future
                on_loop.append((run, future))
                future.add_done_callback(functools.partial(self._finished, run))
            else:  # the job thread queues the outcome itself: no done-callback, no reading the future back
                try:
                    run.future = self._threads.submit(self._run_sync, run)
                except Exception:
                    self._not_started([run])
        if on_loop:
            try:
                self._job_loop.start(on_loop)
            except Exception:
                self._not_started([run for run, _ in on_loop])

    def _settled_early(self, job: Job) -> bool:
        """A pipeline job at a stage no task runs (a wait that ended, a budget that ran out):
        report its outcome now and return True; else cut its run's time-out to the budget left."""
        assert job.token is not None
        try:
            outcome = pipeline.before_run(job, self.clock())
        except Exception as exc:  # a bad stage record must not stop the claim loop
            log.exception("job %s: deciding its stage failed; failing it", job.id)
            outcome = failed_permanently(exc)
        if outcome is None:
            return False
        self.reporter.report(Report(job.id, job.token, outcome))
        return True

    def _not_started(self, runs: list[Run]) -> None:
        log.exception("%d job(s) could not be started; handing them back: %s",
                      len(runs), ", ".join(run.job.id for run in runs))  # fmt: skip
        for run in runs:
            if self.runs.abandon(run.token, "could not be started") is not None:
                self.reporter.report(released(run.job.id, run.token))

    def _unknown(self, job: Job) -> None:
        """A job whose task this worker's app does not know: hand it back, due again after a
        growing delay, for a worker that knows it (two apps may share a store and queue)."""
        assert job.token is not None
        now = self.clock()
        first_seen = self._unknown_seen.setdefault(job.task, now)
        if first_seen == now:
            known = ", ".join(sorted(self.app.tasks)) or "none"
            log.warning("job %s: task %r is not in this worker's app (tasks: %s); handing its jobs back for a "
                        "worker that knows it", job.id, job.task, known)  # fmt: skip
        delay = min(UNKNOWN_MAX_DELAY, max(UNKNOWN_DELAY, (now - first_seen) / 4))
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        error = JobError("UnknownTask", f"no task of that name in worker {self.id}'s app (seen at {seen})")
        self.reporter.report(Report(job.id, job.token, Outcome(kind=OutcomeKind.RELEASED, retry_at=now + delay,
                                                               error=error)))  # fmt: skip

    def _run_sync(self, run: Run) -> None:
        """On a job thread: run a sync task and queue its outcome. (A run abandoned before its
        thread took it is never started: its future was cancelled.)"""
        try:
            outcome = run_sync(run.task, run.job, self.backend, self.clock)
        except BaseException as exc:  # escaped the task (SystemExit, ...): fail or retry it, as any error
            try:
                outcome = failed(run.task, run.job, exc, self.clock())
            except Exception as inner:
                log.exception("job %s: deciding its outcome failed; failing it", run.job.id)
                outcome = failed_permanently(inner)
        self._ended(run, outcome)

    def _finished(self, run: Run, future: Future[Outcome]) -> None:
        """An async run's future is done (settled on the loop, or cancelled when abandoned)."""
        try:
            outcome = self._outcome_of(run, future)
        except Exception as exc:
            log.exception("job %s: reading how its run ended failed; failing it", run.job.id)
            outcome = failed_permanently(exc)
        self._ended(run, outcome)

    def _ended(self, run: Run, outcome: Outcome) -> None:
        """A run's task ended: queue its outcome for the reporter. Never raises (an error here
        would leave the run's lease renewed forever): the worker stops itself instead."""
        try:
            if run.job.stages is not None or run.job.notify:
                outcome = self._settled(run, outcome)
            if self.runs.finish(run):
                self.reporter.report(Report(run.job.id, run.token, outcome), kept=True)
                log_outcome(run.job, outcome, time.monotonic() - run.started, self.clock)
            else:
                log.info("job %s: dropped the outcome of an abandoned run (%s)", run.job.id, run.abandoned)
        except BaseException as exc:
            log.critical("job %s: its outcome could not be queued", run.job.id, exc_info=exc)
            self._helper_failed("outcome callback", f"{type(exc).__name__}: {exc}")

    def _settled(self, run: Run, outcome: Outcome) -> Outcome:
        """What the job does next after this run (conveyor.pipeline: the next stage, a restart,
        the owner's notification); a failure to decide fails the job rather than lose the run."""
        try:
            return pipeline.settle(run.job, outcome, self.clock())
        except Exception as exc:
            log.exception("job %s: deciding its next stage failed; failing it", run.job.id)
            return failed_permanently(exc)

    def _outcome_of(self, run: Run, future: Future[Outcome]) -> Outcome:
        if future.cancelled():
            return Outcome(kind=OutcomeKind.RELEASED)  # only abandoned runs are cancelled
        exc = future.exception()
        if exc is not None:  # a BaseException that escaped the task (SystemExit, ...)
            return failed(run.task, run.job, exc, self.clock())
        return future.result()

    # a worker that stops itself ---------------------------------------------------
    def _helper_failed(self, name: str, why: str) -> None:
        """A helper failed unexpectedly (already logged at CRITICAL): stop now, hand back what
        can be handed back, and exit with EXIT_HELPER_FAILED."""
        self._fail(EXIT_HELPER_FAILED, f"helper {name} failed: {why}")

    def _stuck(self, run: Run) -> None:
        """Called by the monitor of a supervised child whose abandoned sync task holds its thread."""
        if self._stopping.is_set():
            return
        log.error("job %s was %s and its sync task is still running; replacing this process",
                  run.job.id, run.abandoned)  # fmt: skip
        self._fail(EXIT_STUCK, f"job {run.job.id}'s abandoned sync task is stuck")

    def _services_stuck(self, why: str, urgent: bool) -> None:
        """A killed sync service will not end (blocked in a C call). Urgent (its lease may lapse, so
        another worker may start a second copy): end the process at once, with no graceful stop (the
        store may be out of reach, and a stop would wait on it). Else a supervised child exits to be
        replaced; a standalone worker keeps renewing the replica until the run ends."""
        if urgent:
            log.critical("worker %s ends its process now (exit code %d): %s, and its lease may run out; only "
                         "the process's end stops it before another worker runs a second copy", self.id,
                         EXIT_STUCK, why)  # fmt: skip
            logging.shutdown()
            os._exit(EXIT_STUCK)
        if self.options.supervised:
            self._fail(EXIT_STUCK, why)

    def _fail(self, code: int, why: str) -> None:
        with self._failing:
            if self.exit_code:
                return
            self.exit_code = code
        log.critical("worker %s stops itself (exit code %d): %s", self.id, code, why)
        self.stop(hurry=True)

    # stopping ---------------------------------------------------------------------
    def _shut_down(self) -> None:
        """Let running jobs finish (up to ``grace``), hand back the rest through the reporter,
        which gives up on an unavailable store after ``hand_back_wait``, then end the helpers."""
        for helper in self._side:
            helper.ending = True
        self._leader_stop.set()
        try:
            deadline = time.monotonic() + self.options.grace
            if self.runs.running():
                log.info("worker %s stopping: %d job(s) running, %s s to finish",
                         self.id, len(self.runs.running()), self.options.grace)  # fmt: skip
            while self.runs.running() and time.monotonic() < deadline and not self._hurry.is_set():
                time.sleep(TICK)
            self._hand_back_all()
            reporter = self._helpers["reporter"]
            reporter.ending = True
            self.reporter.close(within=self.options.hand_back_wait)
            if not reporter.join(self.options.hand_back_wait + HELPER_JOIN):
                log.error("the reporter did not finish in time; unwritten outcomes are left to lease-expiry rescue")
        finally:
            self._helpers["monitor"].ending = True
            self._closed.set()  # leases are no longer renewed: whatever is left is rescued once they expire
            self._helpers["monitor"].join(HELPER_JOIN)
            for name, helper in self._helpers.items():
                if helper in self._side:
                    helper.join(self.keeper.stop_time() if name.startswith("service") else HELPER_JOIN)
            self.registration.end()
            self._job_loop.close(self._helpers["loop"], HELPER_JOIN)
            self._threads.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped%s", self.id, f" (exit code {self.exit_code})" if self.exit_code else "")

    def _hand_back_all(self) -> None:
        """Give every unfinished job back to the queue, without using a retry, by the reporter."""
        runs = [run for run in self.runs.running() if self.runs.abandon(run.token, "handed back at shutdown")]
        if not runs:
            return
        ids = ", ".join(run.job.id for run in runs)
        if self._helpers["reporter"].failed:
            log.error("%d job(s) not handed back (the reporter failed); they are requeued when their leases run "
                      "out: %s", len(runs), ids)  # fmt: skip
            return
        for run in runs:
            self.reporter.report(released(run.job.id, run.token))
        log.info("handing back %d job(s): %s", len(runs), ids)

    def _install_signal_handlers(self) -> None:
        """Standalone: SIGTERM or SIGINT stops gracefully, a second one hands back at once.
        Supervised: SIGTERM stops gracefully however often it comes (a service manager and the
        supervisor may both send it), SIGUSR1 hands back at once, SIGINT is the supervisor's.
        Acted on off the handler (``conveyor.signals``): a handler that took a lock could deadlock."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int) -> None:
            hurry = signum == signal.SIGUSR1 or (not self.options.supervised and self._stopping.is_set())
            log.info("worker %s got %s: %s", self.id, signal.Signals(signum).name,
                     "handing back now" if hurry else "stopping")  # fmt: skip
            self.stop(hurry=hurry)

        if self.options.supervised:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            relay_signals([signal.SIGTERM, signal.SIGUSR1], on_signal)
        else:
            relay_signals([signal.SIGTERM, signal.SIGINT], on_signal)
