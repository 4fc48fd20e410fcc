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
    from ..outcome import Outcome
    from ..task import Task


class Run:
    """One claimed job this worker runs."""

    def __init__(self, job: Job, task: Task[Any, Any], deadline: float | None) -> None:
        assert job.token is not None, "a claimed job has a token"
        self.job = job
        self.task = task
        self.token: str = job.token
        self.deadline = deadline  #: time.monotonic() at which the run times out
        self.future: Future[Outcome] | None = None
        self.abandoned: str | None = None  #: why its own outcome will not be written, once set
        self.abandoned_at = 0.0


class Runs:
    """Runs by token. A token stays here, and so keeps its lease renewed, until its outcome is
    written or given up: ``running`` (a task is on it) then ``reporting`` (an outcome waits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Run] = {}
        self._reporting: dict[str, str] = {}  # token -> job id, outcome queued or being written
        self._orphans: list[Run] = []  # abandoned sync runs whose thread may still be busy
        self.slot_free = threading.Event()  #: set whenever a slot may have come free

    def busy(self) -> int:
        """Slots taken: running runs, and finished ones whose outcome is not written yet (so a
        worker whose outcomes cannot be written stops claiming more work)."""
        with self._lock:
            return len(self._running) + len(self._reporting)

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
        self.slot_free.set()

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
