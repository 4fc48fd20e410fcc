"""Helpers of the service tests (tests/e2e/test_services.py, tests/chaos/test_service_chaos.py): how their
worker processes get the service app (tests/chaos/service_app.py), and reading its side-effect log.

A *run* is one call of a service function on one worker, named by its fencing token. The log gives
each run an interval: from its first line (the context's setup, or the function's start) to its last
line once it ended (stop, crash, teardown); a run of a process the test SIGKILLed ends at the kill; a
run still going ends now. The invariants are judged on those intervals: two runs of one replica never
overlap, and an instance never has more runs going than it has replicas."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent / "chaos"  #: where service_app.py is
APP_PATH = "service_app:app"  #: what the workers run
ENDS = ("stop", "crash")  #: lines that end a run's function


def prepare(env: dict[str, str], side_log: Path, *, local: bool = False, auto: int = 0) -> None:
    """Make the worker processes started with ``env`` run the service app, logging to ``side_log``;
    ``local``: with the worker-local service ``svc.local``; ``auto``: with the autostart service
    ``svc.auto`` of that many replicas."""
    env["SERVICE_LOG"] = str(side_log)
    paths = [str(APP_DIR), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(APP_DIR))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if local:
        env["SERVICE_LOCAL"] = "1"
    else:
        env.pop("SERVICE_LOCAL", None)
    env["SERVICE_AUTO"] = str(auto)


@dataclasses.dataclass
class Run:
    """One run of a service replica, as its side-effect lines tell it."""

    token: str
    name: str  #: the instance
    service: str
    replica: int
    generation: int
    pid: int
    worker: str
    began: float  #: its first line (setup or start)
    last: float  #: its latest line
    started: float | None = None  #: the function's start line
    params: dict[str, Any] | None = None
    stopped: float | None = None  #: its stop (or crash) line
    why: str | None = None  #: why the stop was asked, as the run saw it
    hooked: float | None = None  #: when the stop hook ran
    hook_why: str | None = None
    killed: str | None = None  #: the exception that ended a run killed after its grace (as it logged it)
    events: list[str] = dataclasses.field(default_factory=list)

    @property
    def ended(self) -> bool:
        """True once the function wrote its stop or crash line."""
        return self.stopped is not None

    def end(self, kills: Mapping[int, float], now: float) -> float:
        """When the run was over: its last line once it ended, the SIGKILL of its process, or now."""
        if self.ended:
            return self.last
        killed = kills.get(self.pid)
        if killed is not None and killed >= self.began:
            return max(killed, self.last)
        return max(now, self.last)

    def brief(self) -> str:
        """One line about the run, for a failing test's message."""
        return (f"{self.name}[{self.replica}] gen {self.generation} token {self.token[:8]} pid {self.pid} "
                f"{self.began:.3f}..{self.last:.3f} {'/'.join(self.events)} why={self.why}")  # fmt: skip


def read_runs(path: Path) -> list[Run]:
    """Every run the log tells of, in the order they began."""
    runs: dict[str, Run] = {}
    if not path.exists():
        return []
    for text in path.read_text().splitlines():
        line = json.loads(text)
        run = runs.get(line["token"])
        if run is None:
            run = runs[line["token"]] = Run(
                token=line["token"], name=line["name"], service=line["svc"], replica=line["replica"],
                generation=line["gen"], pid=line["pid"], worker=line["worker"], began=line["t"], last=line["t"],
            )  # fmt: skip
        assert run.pid == line["pid"], f"one token, two processes: {text}"
        run.last = max(run.last, line["t"])
        run.events.append(line["ev"])
        if line["ev"] == "start":
            run.started, run.params = line["t"], line.get("params")
        elif line["ev"] in ENDS:
            run.stopped, run.why, run.killed = line["t"], line.get("why"), line.get("killed")
        elif line["ev"] == "hook":
            run.hooked, run.hook_why = line["t"], line.get("why")
    return sorted(runs.values(), key=lambda r: r.began)


def of(runs: Iterable[Run], name: str, replica: int | None = None) -> list[Run]:
    """The runs of one instance (or of one of its replicas)."""
    return [r for r in runs if r.name == name and (replica is None or r.replica == replica)]


def going(runs: Iterable[Run], name: str | None = None, kills: Mapping[int, float] | None = None) -> list[Run]:
    """The runs that have not ended (of ``name``), leaving out those of processes SIGKILLed."""
    dead = kills or {}
    return [r for r in runs if not r.ended and r.pid not in dead and (name is None or r.name == name)]


def overlaps(runs: Iterable[Run], kills: Mapping[int, float], now: float) -> list[str]:
    """Every pair of runs of one replica whose intervals overlap (empty: never two copies at once)."""
    problems = []
    by_replica: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for run in runs:
        by_replica[run.name, run.replica].append(run)
    for (name, replica), replica_runs in sorted(by_replica.items()):
        ordered = sorted(replica_runs, key=lambda r: r.began)
        for i, later in enumerate(ordered):
            for earlier in ordered[:i]:
                if later.began < earlier.end(kills, now):
                    problems.append(f"{name}[{replica}]: two copies ran at once: {earlier.brief()} / {later.brief()}")
    return problems


def profile(runs: Iterable[Run], name: str, kills: Mapping[int, float], now: float) -> list[tuple[float, float, int]]:
    """How many runs of instance ``name`` were going, as segments ``(from, to, count)`` covering its
    first run's beginning up to ``now`` (at one instant, runs ending count before runs beginning)."""
    edges: list[tuple[float, int]] = []
    for run in of(runs, name):
        edges += [(run.began, 1), (run.end(kills, now), -1)]
    edges.sort()
    segments, count = [], 0
    for (at, delta), (following, _) in zip(edges, [*edges[1:], (now, 0)], strict=True):
        count += delta
        if following > at:
            segments.append((at, following, count))
    return segments


def most_at_once(runs: Iterable[Run], name: str, kills: Mapping[int, float], now: float) -> int:
    """The most runs of instance ``name`` going at one instant."""
    return max((count for _, _, count in profile(runs, name, kills, now)), default=0)


def short_of(
    runs: Iterable[Run], name: str, want: int, kills: Mapping[int, float], now: float, since: float,
    excused: Iterable[tuple[float, float]] = (),
) -> list[tuple[float, float, int]]:  # fmt: skip
    """The stretches after ``since`` when instance ``name`` had other than ``want`` runs going, except
    those lying wholly inside one of the ``excused`` windows (a kill's hand-over)."""
    windows = list(excused)
    return [(start, end, count) for start, end, count in profile(runs, name, kills, now)
            if end > since and count != want
            and not any(lo <= max(start, since) and end <= hi for lo, hi in windows)]  # fmt: skip


def side_lines(path: Path, name: str | None = None, last: int = 60) -> str:
    """The log's last ``last`` lines (of instance ``name``), for a failing test's message."""
    if not path.exists():
        return "(no side-effect log)"
    lines = [line for line in path.read_text().splitlines() if name is None or f'"name":"{name}"' in line]
    return "\n".join(lines[-last:])
