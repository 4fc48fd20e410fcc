"""The reporter: the ONE path that writes how runs ended (success, failure, unknown task, time-out,
hand-back), in batches, on a thread of its own.

It never wedges. While the store is unavailable it retries with back-off and the runs keep their
leases (they stay in ``Runs``, which the heartbeat renews). A batch that fails for any other
reason is written item by item; an item that alone keeps failing is written in a storable form,
then as a failure that says why, and only then given up to lease-expiry rescue. On a stop it
keeps trying for a bounded time, then leaves what it could not write to lease-expiry rescue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ..backends.base import JobStore
from ..errors import StoreUnavailable
from ..execution import failed_permanently, storable, storable_outcome
from ..job import ExitCode
from ..outcome import Outcome, OutcomeKind, Report
from .runs import Runs

log = logging.getLogger("conveyor.worker")

REPORT_BATCH = 256  #: most outcomes written in one transaction
LINGER = 0.002  #: while other runs are going, wait this long for their outcomes to join a batch
LINGER_UNTIL = 8  #: ... unless this many already wait
FIRST_BACKOFF = 0.05  #: first pause before writing again to an unavailable store
MAX_BACKOFF = 2.0  #: longest pause between writes to an unavailable store
ITEM_ATTEMPTS = 2  #: tries of one report as it is, alone, before it is written in another form
CARRIES_DATA = frozenset({OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.RETRY})  #: may fail on their data


class _GaveUp(Exception):
    """The store stayed unavailable past the stop's bound: leave these runs to lease expiry."""


class Reporter:
    """Writes outcomes queued by ``report``; ``run`` is its thread's loop, ``close`` ends it."""

    def __init__(self, store: JobStore, clock: Callable[[], float], runs: Runs) -> None:
        self.store = store
        self.clock = clock
        self.runs = runs
        self._queue: queue.SimpleQueue[Report | None] = queue.SimpleQueue()
        self._give_up_at: float | None = None  # time.monotonic() after which an outage ends the retries
        self._closing = threading.Event()  # wakes a back-off early when a stop starts
        self._outage_logged = 0.0  # time.monotonic() of the last "store unavailable" warning
        self.left: list[str] = []  #: ids of jobs whose outcome was given up (left to lease expiry)
        self.calling_since: float | None = None  #: time.monotonic() at which the store call in progress began

    def report(self, report: Report, *, kept: bool = False) -> None:
        """Queue one run's outcome; its lease is kept until the outcome is written or given up.
        ``kept``: ``Runs.finish`` already keeps it (the common path: one lock taken, not two)."""
        if not kept:
            self.runs.reporting(report.job_id, report.token)
        self._queue.put(report)

    def close(self, within: float) -> None:
        """Write what is queued, trying an unavailable store for at most ``within`` more seconds,
        then end ``run``. Call after the last ``report``."""
        self._give_up_at = time.monotonic() + within
        self._closing.set()
        self._queue.put(None)

    def run(self) -> None:
        """Write queued outcomes, all that wait (up to a batch) in one transaction, until closed."""
        closed = False
        while not closed:
            batch = [self._queue.get()]
            self._take(batch)
            if len(batch) < LINGER_UNTIL and None not in batch and self.runs.any_running():
                time.sleep(LINGER)  # one write for several outcomes, not one (and a wake-up) per outcome
                self._take(batch)
            closed = None in batch
            reports = [item for item in batch if item is not None]
            if closed:  # whatever was queued before close() is written too
                while not self._queue.empty():
                    item = self._queue.get()
                    if item is not None:
                        reports.append(item)
            for start in range(0, len(reports), REPORT_BATCH):
                self._write(reports[start : start + REPORT_BATCH])

    def _take(self, batch: list[Report | None]) -> None:
        """Add what is queued now, up to a batch, without waiting."""
        while len(batch) < REPORT_BATCH and not self._queue.empty():
            batch.append(self._queue.get())

    # writing --------------------------------------------------------------------------
    def _write(self, reports: Sequence[Report]) -> None:
        """Write a batch; on an error other than an outage, write its items one by one."""
        try:
            written = self._finish_many(reports)
        except _GaveUp as exc:
            self._leave(reports, str(exc.__cause__))
            return
        except Exception as exc:
            if len(reports) == 1:
                self._write_alone(reports[0], exc)
                return
            log.warning("writing %d outcomes failed (%s: %s); writing them one by one",
                        len(reports), type(exc).__name__, storable(str(exc)))  # fmt: skip
            for report in reports:
                self._write([report])
            return
        self._written(reports, written)

    def _write_alone(self, report: Report, error: Exception) -> None:
        """One report keeps failing: try it again, then in a storable form, then (if it carries a
        result or an error) as a failure that names the error; if even that fails, give it up to
        lease-expiry rescue. Never raises."""
        fallback = failed_permanently(
            RuntimeError(f"conveyor could not store this run's outcome: {type(error).__name__}: {error}"),
            exit_code=ExitCode.EXECUTION_ERROR,
        )
        forms = [(report.outcome, "again")] * (ITEM_ATTEMPTS - 1)
        forms.append((storable_outcome(report.outcome), "in a storable form"))
        if report.outcome.kind in CARRIES_DATA:  # a hand-back is never turned into a failure
            forms.append((fallback, "as a failure that says why"))
        for outcome, how in forms:
            log.error("job %s: writing its %s outcome failed (%s: %s); writing it %s",
                      report.job_id, report.outcome.kind, type(error).__name__, storable(str(error)), how)  # fmt: skip
            time.sleep(FIRST_BACKOFF)
            candidate = Report(report.job_id, report.token, outcome)
            try:
                written = self._finish_many([candidate])
            except _GaveUp as exc:
                self._leave([report], str(exc.__cause__))
                return
            except Exception as exc:
                error = exc
                continue
            self._written([candidate], written)
            return
        log.error("job %s: its outcome cannot be written (%s: %s); leaving it to lease-expiry rescue",
                  report.job_id, type(error).__name__, storable(str(error)))  # fmt: skip
        self.left.append(report.job_id)
        self.runs.reported([report.token])

    def _finish_many(self, reports: Sequence[Report]) -> list[bool]:
        """``finish_many``, retried with back-off while the store is unavailable; raises _GaveUp
        once a stop's bound has passed, and any other error as it came."""
        pause = FIRST_BACKOFF
        while True:
            self.calling_since = time.monotonic()
            try:
                return self.store.finish_many(reports, self.clock())
            except StoreUnavailable as exc:
                self.calling_since = None
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    raise _GaveUp() from exc
                now = time.monotonic()
                if now - self._outage_logged >= 10 * MAX_BACKOFF:
                    self._outage_logged = now
                    log.warning("%d outcome(s) wait: the store is unavailable; their leases are kept and "
                                "writing is retried with back-off: %s", len(reports), storable(str(exc)))  # fmt: skip
                if self._give_up_at is None:
                    self._closing.wait(pause)  # a stop wakes it: the retries are then bounded
                else:
                    time.sleep(max(0.0, min(pause, self._give_up_at - time.monotonic())))
                pause = min(pause * 2, MAX_BACKOFF)
            finally:
                self.calling_since = None

    def _written(self, reports: Sequence[Report], written: Sequence[bool]) -> None:
        if self._outage_logged:
            self._outage_logged = 0.0
            log.info("the store is available again; outcomes are being written")
        for report, ok in zip(reports, written, strict=True):
            if not ok:
                log.warning("job %s: the store refused a stale %s report (cancelled, rescued or timed out)",
                            report.job_id, report.outcome.kind)  # fmt: skip
        self.runs.reported([report.token for report in reports])

    def _leave(self, reports: Sequence[Report], why: str) -> None:
        ids = [report.job_id for report in reports]
        self.left.extend(ids)
        log.warning("stopping: %d outcome(s) not written, the store is unavailable (%s); their jobs are "
                    "requeued when their leases run out: %s", len(ids), storable(why), ", ".join(ids))  # fmt: skip
        self.runs.reported([report.token for report in reports])


def released(job_id: str, token: str) -> Report:
    """A hand-back: the job goes back to its queue untouched, no retry used."""
    return Report(job_id, token, Outcome(kind=OutcomeKind.RELEASED))
