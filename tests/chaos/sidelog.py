"""Reading the side-effect log the chaos tasks write, and checking the run invariants against the store."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from conveyor import Job, Status


@dataclasses.dataclass
class Run:
    """One run of a task body, as the side-effect log tells it."""

    job: str
    token: str
    pid: int
    started: float
    done: float | None = None


def read_runs(path: Path) -> dict[str, list[Run]]:
    """Every run in the log, by job id, in the order they started. A ``done`` line closes the
    oldest open run of that job on that pid."""
    runs: dict[str, list[Run]] = defaultdict(list)
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields[0] == "start":
            runs[fields[1]].append(Run(fields[1], fields[2], int(fields[3]), float(fields[4])))
        elif fields[0] == "done":
            pid = int(fields[2])
            open_run = next((r for r in runs[fields[1]] if r.pid == pid and r.done is None), None)
            assert open_run is not None, f"a done line without its start: {line!r}"
            open_run.done = float(fields[3])
    return runs


@dataclasses.dataclass
class Kill:
    """A SIGKILL the test sent: which process, and when (wall clock, like the log's times)."""

    pid: int
    at: float


@dataclasses.dataclass
class Verdict:
    """What the invariant check found; ``problems`` is empty when every invariant held."""

    jobs: int = 0
    runs: int = 0
    duplicate_runs: int = 0  #: runs beyond the first, over all jobs
    explained: int = 0  #: duplicate runs explained by a kill of the process running them
    problems: list[str] = dataclasses.field(default_factory=list)


def check_runs(
    acknowledged: set[str],
    jobs: dict[str, Job],
    runs: dict[str, list[Run]],
    kills: list[Kill],
    outages: Sequence[tuple[float, float]] = (),
    outage_margin: float = 10.0,
) -> Verdict:
    """Check the invariants of a storm: every acknowledged job exists and SUCCEEDED (none lost, none
    stuck); its stored result names one of its runs (one committed success); every other run of it was
    on a process SIGKILLed after that run started, or was in flight around a store outage (within
    ``outage_margin`` s of it: workers could not renew leases, and a crash may lose a worker's
    asynchronous commit of a claim or an outcome): every duplicate is explained."""
    verdict = Verdict(jobs=len(acknowledged))
    killed_at = {kill.pid: kill.at for kill in kills}

    def explained(run: Run) -> bool:
        kill_time = killed_at.get(run.pid)
        if kill_time is not None and kill_time >= run.started:
            return True
        return any(run.started <= end + outage_margin and (run.done is None or run.done >= start - outage_margin)
                   for start, end in outages)  # fmt: skip

    for job_id in sorted(acknowledged):
        job = jobs.get(job_id)
        if job is None:
            verdict.problems.append(f"lost: acknowledged job {job_id} is not in the store")
            continue
        if job.status is not Status.SUCCEEDED:
            verdict.problems.append(f"not succeeded: job {job_id} is {job.status.value} ({job.error})")
            continue
        job_runs = runs.get(job_id, [])
        verdict.runs += len(job_runs)
        committed = job.result.get("token") if isinstance(job.result, dict) else None
        winners = [r for r in job_runs if r.token == committed]
        if len(winners) != 1:
            verdict.problems.append(f"job {job_id}: its result {job.result!r} names {len(winners)} of its runs")
            continue
        if winners[0].done is None:
            verdict.problems.append(f"job {job_id}: the committed run never reached its done line")
        # A server crash may lose a worker's relaxed (asynchronous) commit of a claim: that run is not
        # counted in attempts. Without outages every run started was counted.
        if not outages and job.attempts < len(job_runs):
            verdict.problems.append(f"job {job_id}: {len(job_runs)} runs logged but attempts={job.attempts}")
        for run in job_runs:
            if run is winners[0]:
                continue
            verdict.duplicate_runs += 1
            if explained(run):
                verdict.explained += 1
            else:
                verdict.problems.append(
                    f"job {job_id}: an uncommitted run on pid {run.pid} (started {run.started:.3f}, done "
                    f"{run.done}) is not explained by a kill ({killed_at.get(run.pid)}) or an outage ({outages})"
                )
    strays = set(runs) - set(jobs)
    if strays:
        verdict.problems.append(f"runs of {len(strays)} job(s) the store does not hold: {sorted(strays)[:5]}")
    return verdict
