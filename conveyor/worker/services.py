"""The keeper: runs the service replicas a worker holds (docs/services.md).

Two helper threads. ``run`` talks to the store: at start it syncs the app's autostart instances
and creates this worker's local ones; then every ``tick`` it renews its replicas' leases (a
renewal that finds a stop asked, a new generation wanted or the row gone asks the run to stop),
writes the runs that started (RUNNING) and those that ended (decided by conveyor.service_policy),
and takes free replicas of the services whose queue this worker serves. ``watch`` needs no store:
it kills a run whose stop took longer than its grace (stop-before-kill), and stops every replica
whose lease it could not renew for lease / 2, so a worker cut off from the store has stopped its
replicas before any other worker may take them over (pytask's outage rule, C49).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import StoreUnavailable
from ..service_policy import StopReason, after_renewal, crashed, error_of, returned_unasked, stopped
from ..service_types import ServiceRecord, ServiceSource, ServiceSpec
from .service_runs import ReplicaRun, ServiceKilled

if TYPE_CHECKING:
    from ..app import App
    from ..services import Service

log = logging.getLogger("conveyor.services")

MAX_REPLICAS = 64  #: replicas one worker runs at most
SPREAD_WAIT = 2.0  #: seconds a free replica of an instance this worker already runs is left for other workers
WATCH_EVERY = 0.1  #: seconds between the watch thread's passes
MAX_TICK = 1.0  #: longest pause between the store passes (renewals come every lease / 6, at most this)
STUCK_AFTER = 2.0  #: seconds after a kill before a sync run that still runs is reported stuck


class ServiceKeeper:
    """Runs this worker's service replicas. ``services``: the app's services this worker runs (those
    whose queue it serves, and the local ones). ``stuck``: called (once per run) with a reason when a
    killed sync run will not end, and whether it is urgent (its lease may lapse: only the process's
    end can stop it before another worker takes the replica over)."""

    def __init__(self, app: App, worker_id: str, queues: list[str],
                 stuck: Callable[[str, bool], None] | None = None) -> None:  # fmt: skip
        self.app = app
        self.worker_id = worker_id
        self.services: dict[str, Service] = {
            name: svc for name, svc in app.service_defs.items() if svc.options.local or svc.options.queue in queues
        }
        self.stuck = stuck
        leases = [svc.options.lease for svc in self.services.values()] or [30.0]
        self.tick = max(0.1, min(MAX_TICK, min(leases) / 6))
        self.runs: dict[tuple[str, int], ReplicaRun] = {}
        self._claim_groups: dict[float, list[str]] = {}  # lease -> the services claimed with it (``_claim``)
        for name, svc in sorted(self.services.items()):
            self._claim_groups.setdefault(svc.options.lease, []).append(name)
        self._lock = threading.Lock()  # guards ``runs`` between the two threads
        self._loop: asyncio.AbstractEventLoop | None = None  # async runs' loop, made by ``run``: none when idle
        self._failures = 0
        self._ended = threading.Event()  # set once ``run`` has stopped every replica: ends ``watch``

    def __repr__(self) -> str:
        return f"<ServiceKeeper {self.worker_id} services={sorted(self.services)} running={len(self.runs)}>"

    @property
    def active(self) -> bool:
        """True if this worker has any service to run (else the worker starts no keeper)."""
        return bool(self.services)

    def local_name(self, svc: Service) -> str:
        """The name of this worker's instance of a local service."""
        return f"{svc.name}@{self.worker_id}"

    # the store thread -----------------------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Pass every ``tick`` until ``stopping`` is set, then stop every replica (grace, then kill),
        hand them back for other workers and remove the local ones. Store outages are waited out."""
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="conveyor-services-loop", daemon=True).start()
        synced = False
        while not stopping.is_set():
            try:
                if not synced:
                    self._sync()
                    synced = True
                self._pass(claim=True)
                if self._failures:
                    log.info("the service keeper reaches the store again")
                self._failures = 0
            except StoreUnavailable as exc:
                self._failures += 1
                if self._failures == 1 or self._failures % 30 == 0:
                    log.warning("the service keeper cannot reach the store (%d tries): %s", self._failures, exc)
            except Exception:
                self._failures += 1
                log.exception("the service keeper's pass failed; trying again")
            stopping.wait(self.tick)
        self._shut_down()

    def _sync(self) -> None:
        """The app's autostart instances, and this worker's local ones."""
        created = self.app.sync_services()
        if created:
            log.info("service instance(s) created or resized from code: %s", ", ".join(created))
        now = self.app.clock()
        for svc in self.services.values():
            if svc.options.local:
                spec = ServiceSpec(name=self.local_name(svc), service=svc.name, queue=svc.options.queue,
                                   source=ServiceSource.LOCAL, local_to=self.worker_id)  # fmt: skip
                self.app.backend.create_service(spec, now)

    def _pass(self, *, claim: bool) -> None:
        self._renew()
        self._write_started()
        self._write_ended()
        if claim:
            self._claim()

    def _renew(self) -> None:
        """Extend the leases of the runs still going; a run whose row says otherwise is asked to stop."""
        with self._lock:
            going = [run for run in self.runs.values() if not run.done.is_set()]
        by_lease: dict[float, list[ReplicaRun]] = {}
        for run in going:
            by_lease.setdefault(run.svc.options.lease, []).append(run)
        for lease, runs in by_lease.items():
            began = time.monotonic()
            rows = self.app.backend.renew_services(self.worker_id, [run.token for run in runs], lease, self.app.clock())
            kept = {row.token: row for row in rows}
            for run in runs:
                row = kept.get(run.token)
                if row is not None:
                    run.record = row
                    run.renewed_at = began
                why = after_renewal(row, run.run_generation)
                if why is not None and run.ask_stop(why):
                    log.info("service %s[%d]: stopping (%s)", run.record.name, run.record.replica, why.value)

    def _write_started(self) -> None:
        with self._lock:
            started = [run for run in self.runs.values() if run.started.is_set() and not run.reported_running]
        for run in started:
            name, replica = run.key
            if self.app.backend.service_running(name, replica, run.token, self.app.clock()):
                log.info("service %s[%d] running (generation %d)", name, replica, run.run_generation)
            run.reported_running = True  # written, or the token is gone (the next renewal stops the run)

    def _write_ended(self) -> None:
        """Write how each ended run ended; forget it once written (or once its token is gone)."""
        with self._lock:
            ended = [run for run in self.runs.values() if run.done.is_set()]
        for run in ended:
            self._write_end(run)
            with self._lock:
                self.runs.pop(run.key, None)

    def _write_end(self, run: ReplicaRun) -> None:
        name, replica = run.key
        why = run.why
        if why is StopReason.LOST:
            log.info("service %s[%d] stopped: its lease was lost", name, replica)
            return
        now = self.app.clock()
        if why is not None:
            end = stopped(why, now)
        else:
            error = returned_unasked() if run.error is None else error_of(run.error)
            end = crashed(run.record, run.svc.options, error, now)
            log.error("service %s[%d] crashed (%s: %s); %s", name, replica, error.type, error.message,
                      end.status.value if end.status.value == "failed" else
                      f"starting again in {end.not_before - now:.1f} s")  # fmt: skip
        if run.svc.options.local and why is StopReason.WORKER_STOPPING:
            self.app.backend.remove_service(name, now)
            return
        if not self.app.backend.end_service_run(name, replica, run.token, end, now):
            log.info("service %s[%d]: its end was not written (taken over meanwhile)", name, replica)

    def _claim(self) -> None:
        """Take free replicas one at a time, each claim spreading away from the instances this worker
        already runs (so two replicas of one instance go to two workers while there are two); an idle
        pass costs one claim per lease length in use (a replica is taken with its own service's lease,
        which the outage rule counts on)."""
        for lease, names in self._claim_groups.items():
            while True:
                with self._lock:
                    room = MAX_REPLICAS - len(self.runs)
                    spread = sorted({name for name, _ in self.runs})
                if room <= 0:
                    return
                began = time.monotonic()
                now = self.app.clock()
                rows = self.app.backend.claim_services(self.worker_id, names, spread, 1, lease, now - SPREAD_WAIT, now)
                if not rows:
                    break
                for row in rows:
                    self._start(row, began)

    def _start(self, row: ServiceRecord, began: float) -> None:
        svc = self.services[row.service]
        run = ReplicaRun(row, svc, self.worker_id, began)
        with self._lock:
            self.runs[run.key] = run
        log.info("service %s[%d]: taken (generation %d)", row.name, row.replica, run.run_generation)
        try:
            assert self._loop is not None, "replicas are started by ``run`` only"
            run.start(self._loop)
        except Exception as exc:
            run.error = exc
            run.done.set()

    def _shut_down(self) -> None:
        """Stop every replica, keep renewing while they stop (no other worker may take one over
        before it stopped), then write their ends: handed back, free at once."""
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            run.ask_stop(StopReason.WORKER_STOPPING)
        if runs:
            log.info("stopping %d service replica(s) before the worker stops", len(runs))
        longest = max((run.svc.options.grace for run in runs), default=0.0)
        deadline = time.monotonic() + longest + STUCK_AFTER + 1.0
        while time.monotonic() < deadline:
            with self._lock:
                if all(run.done.is_set() for run in self.runs.values()):
                    break
            try:
                self._pass(claim=False)
            except Exception as exc:  # an outage at shutdown: the leases run out instead
                log.warning("the service keeper could not write to the store while stopping: %s", exc)
            time.sleep(min(self.tick, 0.1))
        try:
            self._pass(claim=False)
        except Exception as exc:
            log.warning("the service keeper could not hand its replicas back; their leases will run out: %s", exc)
        with self._lock:
            left = [run for run in self.runs.values() if not run.done.is_set()]
        for run in left:
            log.error("service %s[%d] did not stop; it ends with the process", *run.key)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._ended.set()

    def stop_time(self) -> float:
        """Seconds the keeper may take to stop once asked: the longest grace, the kill, a last write."""
        longest = max((svc.options.grace for svc in self.services.values()), default=0.0)
        return longest + STUCK_AFTER + 5.0

    # the watch thread -----------------------------------------------------------------------------------------
    def watch(self) -> None:
        """Every WATCH_EVERY until ``run`` has ended: kill runs whose stop outlasted their grace, report a
        killed sync run that still runs, and stop the runs whose lease could not be renewed for
        lease / 2 (the store out of reach)."""
        while not self._ended.wait(WATCH_EVERY):
            now = time.monotonic()
            with self._lock:
                runs = list(self.runs.values())
            for run in runs:
                if run.done.is_set():
                    continue
                if now - run.renewed_at > run.svc.options.lease / 2 and run.ask_stop(StopReason.UNREACHABLE):
                    log.warning("service %s[%d]: lease not renewed for %.1f s; stopping it here so that no other "
                                "worker runs it at the same time", *run.key, now - run.renewed_at)  # fmt: skip
                if run.stop_asked_at is not None and run.killed_at is None:
                    if now - run.stop_asked_at > run.svc.options.grace:
                        log.warning("service %s[%d] did not stop within its grace (%.1f s); killing it", *run.key,
                                    run.svc.options.grace)  # fmt: skip
                        run.kill()
                elif run.killed_at is not None and not run.stuck_reported:
                    # a run whose lease may lapse (not renewed for lease / 2) must be over before it does:
                    # judge it quickly, and the worker then ends its process at once
                    urgent = now - run.renewed_at > run.svc.options.lease / 2
                    wait = min(STUCK_AFTER, run.svc.options.lease / 12) if urgent else STUCK_AFTER
                    if now - run.killed_at > wait:
                        run.stuck_reported = True
                        log.error("service %s[%d] still runs after it was killed", *run.key)
                        if self.stuck is not None:
                            self.stuck(f"service {run.key[0]}[{run.key[1]}] will not stop", urgent)


__all__ = ["ServiceKeeper", "ServiceKilled"]
