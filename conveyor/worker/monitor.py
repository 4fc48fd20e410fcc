"""The monitor: renews the leases of every run in ``Runs``, times out runs past their deadline
(their time-out outcome goes to the reporter), notices a sync task stuck on its thread, and
refreshes the worker's registry row (``registration.py``: how a stop request is heard).

A bad run or a failed heartbeat is logged and survived. A heartbeat that fails with an
unexpected error for half a lease, or a reporter blocked in one store call past ``STALL_AFTER``,
raises ``MonitorFailed``: the worker then stops (and hands back what it can) rather than keep
leases on work nobody will finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .. import pipeline
from ..backends.base import JobStore
from ..errors import StoreUnavailable
from ..execution import failed_permanently, storable, timed_out
from ..job import ExitCode
from ..outcome import Report
from .joblog import log_outcome
from .options import renew_interval
from .registration import Registration, beat_interval
from .reporter import Reporter
from .runs import Run, Runs

log = logging.getLogger("conveyor.worker")

TICK = 0.05  #: seconds between monitor passes (time-out checks)
STALL_AFTER = 60.0  #: seconds one store call of the reporter may take before the worker counts it as wedged


class MonitorFailed(RuntimeError):
    """Leases could not be renewed for half a lease, for a reason other than an outage."""


class Monitor:
    """Leases, time-outs and the stuck check of one worker; ``run`` is its thread's loop."""

    def __init__(
        self,
        store: JobStore,
        clock: Callable[[], float],
        worker_id: str,
        lease: float,
        runs: Runs,
        reporter: Reporter,
        on_stuck: Callable[[Run], None],
        stuck_after: float | None,
        *,
        registration: Registration | None = None,
        first_beat: float = 0.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker_id = worker_id
        self.lease = lease
        self.runs = runs
        self.reporter = reporter
        self.on_stuck = on_stuck
        self.stuck_after = stuck_after  #: None: never (a standalone worker cannot be replaced)
        self.beat_every = renew_interval(lease)
        self.registration = registration  #: the worker's registry row, refreshed every ``registry_every``
        self.registry_every = beat_interval(lease)
        self.first_beat = first_beat  #: seconds before the first heartbeat (the staggered start)
        self._store_down = False
        self._failing_since: float | None = None  # time.monotonic() of the first unexpected failure in a row

    def run(self, closed: threading.Event) -> None:
        """Time out, renew, check for stuck threads, every TICK until ``closed`` is set."""
        next_beat = next_registry = time.monotonic() + self.first_beat
        while not closed.is_set():
            now = time.monotonic()
            for run in self.runs.running():
                if run.deadline is not None and run.deadline <= now:
                    self.time_out(run)
            if now >= next_beat:
                next_beat = now + self.beat_every
                self.beat()
            if self.registration is not None and now >= next_registry:
                next_registry = now + self.registry_every
                self.registration.beat()
            self.check_stuck(now)
            self.check_reporter(now)
            closed.wait(TICK)

    def time_out(self, run: Run) -> None:
        """Abandon an overdue run and hand its time-out outcome to the reporter."""
        if self.runs.abandon(run.token, "timed out") is None:
            return
        log.warning("job %s timed out after %s s", run.job.id, run.job.timeout)
        try:
            outcome = pipeline.settle(run.job, timed_out(run.task, run.job, self.clock()), self.clock())
        except Exception as exc:  # a bad item: still written, as a plain failure
            log.exception("job %s: deciding its time-out outcome failed; failing it", run.job.id)
            outcome = failed_permanently(
                RuntimeError(f"timed out after {run.job.timeout} s; deciding a retry failed: {exc!r}"),
                exit_code=ExitCode.ABORTED,
            )
        self.reporter.report(Report(run.job.id, run.token, outcome))
        log_outcome(run.job, outcome, time.monotonic() - run.started, self.clock)

    def beat(self) -> None:
        """Renew every lease this worker keeps; drop the runs the store no longer lists."""
        try:
            lost = self.store.heartbeat(self.worker_id, self.runs.tokens(), self.lease, self.clock())
        except StoreUnavailable as exc:
            if not self._store_down:
                log.warning("heartbeat failed, the store is unavailable; running jobs go on: %s", storable(str(exc)))
            self._store_down = True
            return
        except Exception as exc:
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since > self.lease / 2:  # stop and hand back before the leases run out
                raise MonitorFailed(f"leases could not be renewed for {now - self._failing_since:.1f} s") from exc
            log.exception("heartbeat failed; trying again in %.2f s", self.beat_every)
            return
        self._failing_since = None
        if self._store_down:
            log.info("the store is available again; leases renewed")
            self._store_down = False
        for token in lost:
            run = self.runs.abandon(token, "the store no longer lists this run (cancelled or rescued)")
            if run is not None:
                log.warning("job %s: run %s lost: %s", run.job.id, token, run.abandoned)
            else:
                self.runs.forget(token)

    def check_reporter(self, now: float) -> None:
        """A reporter blocked in one store call for good would have its outcomes' leases renewed
        forever: past ``STALL_AFTER`` (or two leases), the worker stops instead."""
        since = self.reporter.calling_since
        if since is not None and now - since > max(STALL_AFTER, 2 * self.lease):
            raise MonitorFailed(f"the reporter has waited {now - since:.0f} s for one store call")

    def check_stuck(self, now: float) -> None:
        """An abandoned sync task that holds its thread past ``stuck_after`` gets its process
        replaced (Python cannot stop a thread, but it can end a process)."""
        orphans = self.runs.orphans()
        if self.stuck_after is None:
            return
        stuck = [run for run in orphans if now - run.abandoned_at > self.stuck_after]
        if stuck:
            self.on_stuck(stuck[0])
