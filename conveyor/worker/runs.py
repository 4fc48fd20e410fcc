"""The jobs in flight in one worker: running, or finished with their outcome waiting to be written.

Shared by the claim loop (adds runs), the job threads (finish them), the reporter (writes their
outcomes) and the monitor (renews every lease in here, times runs out). One lock guards it all.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..job import Job
    from ..task import Task


class Run:
    """One claimed job this worker runs."""

    def __init__(self, job: Job, task: Task[Any, Any], started: float) -> None:
        assert job.token is not None, "a claimed job has a token"
        self.job = job
        self.task = task
        self.token: str = job.token
        self.started = started  #: time.monotonic() at which it was handed to a thread or the loop
        #: time.monotonic() at which the run times out
        self.deadline: float | None = None if job.timeout is None else started + job.timeout
        self.future: Future[Any] | None = None  #: its thread's or the loop's; cancelled when abandoned
        self.abandoned: str | None = None  #: why its own outcome will not be written, once set
        self.abandoned_at = 0.0


class Runs:
    """Runs by token. A token stays here, and so keeps its lease renewed, until its outcome is
    written or given up: ``running`` (a task is on it) then ``reporting`` (an outcome waits).

    ``backlog``: how many unwritten outcomes a worker may have before they start taking slots. A
    finished run frees its slot at once (claiming the next jobs need not wait for the write), but a
    worker whose outcomes cannot be written stops claiming once ``backlog`` more wait."""

    def __init__(self, slots: int = 1, backlog: int = 0) -> None:
        self.slots = slots
        self.backlog = backlog
        self.wake_at = 1  #: wake the claim loop (``slot_free``) once this many slots are free
        self._lock = threading.Lock()
        self._running: dict[str, Run] = {}
        self._reporting: dict[str, str] = {}  # token -> job id, outcome queued or being written
        self._orphans: list[Run] = []  # abandoned sync runs whose thread may still be busy
        self.slot_free = threading.Event()  #: set whenever a slot may have come free

    def busy(self) -> int:
        """Slots taken: running runs, and the unwritten outcomes past ``backlog`` (so a worker
        whose outcomes cannot be written stops claiming more work)."""
        with self._lock:
            return self._busy()

    def free(self, wanted: int) -> int:
        """Free slots now; until ``wanted`` are free (or 1 if none is), ``slot_free`` is cleared and
        set again only once they are (decided under the lock, so no finish is missed)."""
        with self._lock:
            free = self.slots - self._busy()
            self.wake_at = wanted if free > 0 else 1
            self.slot_free.clear()
            return free

    def _busy(self) -> int:
        return len(self._running) + max(0, len(self._reporting) - self.backlog)

    def _freed(self) -> None:
        """Under the lock: wake the claim loop if enough slots are free (not at every finish: a
        claim for several jobs costs the store one write instead of several)."""
        if not self.slot_free.is_set() and (self.slots - self._busy() >= self.wake_at or not self._running):
            self.slot_free.set()

    def any_running(self) -> bool:
        """True while a task is on some run (its outcome may come soon)."""
        return bool(self._running)

    def running(self) -> list[Run]:
        """A snapshot of the runs a task is still on."""
        with self._lock:
            return list(self._running.values())

    def tokens(self) -> list[str]:
        """Every token whose lease this worker keeps."""
        with self._lock:
            return [*self._running, *self._reporting]

    def add(self, run: Run) -> None:
        """A claimed job starts running."""
        with self._lock:
            self._running[run.token] = run

    def finish(self, run: Run) -> bool:
        """The run's task ended: its outcome is now to be reported. False (and nothing changes)
        if the run was abandoned meanwhile: that outcome is no longer its to write."""
        with self._lock:
            if run.abandoned is not None or self._running.pop(run.token, None) is None:
                return False
            self._reporting[run.token] = run.job.id
            self._freed()
        return True

    def reporting(self, job_id: str, token: str) -> None:
        """An outcome for ``token`` is queued (time-out, hand-back, unknown task): keep its lease."""
        with self._lock:
            self._reporting[token] = job_id

    def reported(self, tokens: list[str]) -> None:
        """These outcomes are written, refused or given up: their leases are no longer ours."""
        with self._lock:
            for token in tokens:
                self._reporting.pop(token, None)
            self._freed()

    def abandon(self, token: str, why: str) -> Run | None:
        """Take a running run out of this worker's hands (timed out, lost, handed back): its own
        outcome will not be written. Cancels it; a sync task already on a thread runs on and is
        watched as an orphan. None if the token is not running here."""
        with self._lock:
            run = self._running.pop(token, None)
            if run is None:
                return None
            run.abandoned = why
            run.abandoned_at = time.monotonic()
        future = run.future  # cancelled outside the lock: cancel() runs the done callback, which takes it
        if future is not None and not future.cancel() and not run.task.is_async and not future.done():
            with self._lock:
                self._orphans.append(run)  # Python cannot stop a thread
        self.slot_free.set()
        return run

    def forget(self, token: str) -> None:
        """Drop a queued outcome's lease (the store no longer lists the run)."""
        with self._lock:
            self._reporting.pop(token, None)
        self.slot_free.set()

    def orphans(self) -> list[Run]:
        """Abandoned sync runs whose task still holds its thread."""
        with self._lock:
            self._orphans = [r for r in self._orphans if r.future is not None and not r.future.done()]
            return list(self._orphans)
