"""The service part of ``conveyor demo``: ``demo_tasks.price_feed`` is a long-running service
(``@app.service``, docs/services.md), run by one worker process at a time.

The demo starts an instance of it before any worker has started (``app.start_service``, with the
symbol it follows and the path of a beat file in the demo's work dir); one of the two worker
processes takes it and runs it. Once it has beaten a few times the demo reloads it with a new symbol
(``app.reload_service``): its run is asked to stop (the on_stop hook hangs up its connection), and
the next generation runs with the new parameter, on whichever worker takes it. At the end SIGTERM
stops the workers and the replica is handed back (PENDING). The live display shows the replica's
status, worker and symbol; the summary proves from the beat file, where each run writes its start,
its beats, the on_stop hook's call and its end, in the order they happened, that no two runs ever
overlapped, that the reload took effect, and that on_stop ran; and from the store, that the replica
was handed back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from . import demo_tasks as tasks
from .app import App
from .service_policy import StopReason
from .service_types import ServiceRecord, ServiceStatus

NAME = tasks.FEED  #: the instance: named like its service
FIRST, SECOND = tasks.SYMBOL, "GBP/USD"  #: the symbol it starts with, and the one the reload gives it
RELOAD_AFTER = 6  #: beats of the first run before the demo reloads the service
SETTLED_AFTER = 4  #: beats of the reloaded run before the demo stops the workers
WAIT_AFTER_JOBS = 10.0  #: seconds the demo waits for those beats once its jobs are done, before it gives up


@dataclass
class Run:
    """One run of the service, as the beat file tells it: its lines, in the order they were written."""

    run: str  #: the run's fencing token (its first 8 characters)
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        """Its start line (its pid, worker, generation, symbol)."""
        return self.lines[0]

    @property
    def beats(self) -> int:
        """How many times it beat."""
        return sum(line["what"] == "beat" for line in self.lines)

    @property
    def whats(self) -> list[str]:
        """What each of its lines says: start, beat, on_stop, end."""
        return [line["what"] for line in self.lines]

    @property
    def why(self) -> str | None:
        """Why its on_stop hook was called, if it was."""
        return next((line["why"] for line in self.lines if line["what"] == "on_stop"), None)

    def at(self, what: str) -> float | None:
        """When its first line saying ``what`` was written (the machine's clock), if there is one."""
        return next((float(line["t"]) for line in self.lines if line["what"] == what), None)

    def well_formed(self) -> bool:
        """A start, beats, the on_stop hook's call, the end; one pid, generation and symbol throughout."""
        whats = self.whats
        shape = (
            len(whats) >= 3
            and whats[0] == "start"
            and whats[-2:] == ["on_stop", "end"]
            and all(w == "beat" for w in whats[1:-2])
        )
        same = {(line["pid"], line["generation"], line["symbol"]) for line in self.lines}
        return shape and len(same) == 1

    def describe(self) -> str:
        """Where it ran and what it was given: its worker, pid, generation and symbol."""
        line = self.first
        return f"{_worker(line['worker'])} (pid {line['pid']}, generation {line['generation']}, {line['symbol']})"


class Feed:
    """The demo's service: started, followed, reloaded once, summed up."""

    def __init__(self, app: App, workdir: Path) -> None:
        self.app = app
        self.path = workdir / "price_feed.jsonl"  #: the beat file the service's runs append to
        self.reloaded_at: float | None = None  #: when the demo reloaded it (the app's clock)
        self._runs: list[Run] = []

    def start(self) -> str:
        """Start the instance (before the workers start); the line that says so."""
        rows = self.app.start_service(tasks.price_feed, symbol=FIRST, beats=str(self.path))
        return (f"started service {NAME} (app.start_service, symbol={FIRST!r}) before any worker started: "
                f"{len(rows)} replica {rows[0].status.value.upper()} until a worker process takes it")  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        """The beat file's lines, in the order they were appended."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]  # a line being written: later

    def step(self) -> Text:
        """Read the beat file and the replica; reload once the first run has beaten RELOAD_AFTER times.
        One line for the live display."""
        self._runs = runs_of(self.lines())
        if self.reloaded_at is None and self._runs and self._runs[0].beats >= RELOAD_AFTER:
            asked = self.app.clock()
            self.app.reload_service(NAME, symbol=SECOND)
            self.reloaded_at = asked
        rows = self.app.services(NAME)
        return _live_line(rows[0], self._runs) if rows else Text(f"  service {NAME}: gone", style="red")

    def done(self) -> bool:
        """True once the reloaded run has beaten SETTLED_AFTER times: the workers may be stopped."""
        return self.reloaded_at is not None and any(
            run.first["symbol"] == SECOND and run.beats >= SETTLED_AFTER for run in self._runs
        )

    def waiting_for(self) -> str:
        """What the demo still waits for, if the jobs are done and the service is not."""
        if not self._runs:
            return f"service {NAME} never started"
        return f"service {NAME}: {'not reloaded yet' if self.reloaded_at is None else 'the reloaded run has not run'}"

    def summary(self, console: Console, keep: bool) -> bool:
        """The service's lines in the summary; True if the beat file and the store show what they should."""
        say = console.print
        lines = self.lines()
        runs = runs_of(lines)
        apart, verdict = one_at_a_time(lines)
        told = ", then ".join(f"{_beats(run.beats)} on {run.describe()}" for run in runs) or "no beats"
        say(f"[bold]service[/bold]: {NAME} (@app.service(lease={tasks.FEED_LEASE:g}, grace={tasks.FEED_GRACE:g}), "
            f"app.start_service(symbol={FIRST!r})) ran {len(runs)} times: {told}; in its beat file "
            f"each run's start, beats, on_stop and end come before the next run's start: {verdict}")  # fmt: skip
        reloaded = self._reload_line(say, runs)
        row = next(iter(self.app.services(NAME)), None)
        handed_back = row is not None and row.status is ServiceStatus.PENDING and row.token is None
        last_why = runs[-1].why if runs else None
        state = "[red]not stored[/red]" if row is None else _state(row)
        say(f"  at SIGTERM its on_stop hook ran ({last_why or '[red]not called[/red]'}), the run ended, and the "
            f"replica was handed back: {state}, for the next worker to take")  # fmt: skip
        history = " -> ".join(_step(event.kind, event.data) for event in self.app.events(task=NAME, limit=100))
        where = (f" --url {self.app.url} (its beat file: {self.path})" if keep
                 else "  (run the demo with --keep to keep its store and beat file)")  # fmt: skip
        say(f"  its history in the event log: {history}; [cyan]conveyor services[/cyan] lists it, [cyan]conveyor "
            f"service reload|stop|start {NAME}[/cyan] controls it{where}; how to write a service: "
            "docs/services.md")  # fmt: skip
        return apart and reloaded and handed_back and last_why == StopReason.WORKER_STOPPING.value

    def _reload_line(self, say: Callable[[str], None], runs: list[Run]) -> bool:
        """The line on the reload; True if it took effect: the old run stopped through its hook, and the
        next run (generation + 1) follows the new symbol."""
        if self.reloaded_at is None or len(runs) < 2:
            say(f"  [red]reload: {'never asked' if self.reloaded_at is None else 'no run after it'}[/red]")
            return False
        old, new = runs[0], runs[1]
        hooked, started = old.at("on_stop"), new.at("start")
        ok = (
            old.why == StopReason.RESTART.value
            and new.first["generation"] == old.first["generation"] + 1
            and all(line["symbol"] == SECOND for run in runs[1:] for line in run.lines)
            and hooked is not None
            and started is not None
            and started > self.reloaded_at
            and len(runs) == 2
        )
        verdict = "took effect" if ok else "[red]DID NOT TAKE EFFECT AS IT SHOULD[/red]"
        gap = "?" if hooked is None else f"{hooked - self.reloaded_at:.2f} s"
        began = "?" if started is None else f"{started - self.reloaded_at:.2f} s"
        say(f"  reload: app.reload_service({NAME!r}, symbol={SECOND!r}) after {RELOAD_AFTER} beats: the running "
            f"copy's on_stop hook ran {gap} later ({old.why}), and generation {new.first['generation']} began "
            f"{began} after the reload, every beat with symbol {new.first['symbol']}: {verdict}")  # fmt: skip
        return ok


def one_at_a_time(lines: list[dict[str, Any]]) -> tuple[bool, str]:
    """Whether the beat file shows one run at a time, each whole (start, beats, on_stop, end), and the
    verdict to print: a run's lines broken by another run's mean two copies ran at once."""
    segments = [run for run, _ in groupby(line["run"] for line in lines)]  # a run per stretch of its lines
    if len(segments) != len(set(segments)):
        return False, "[red]TWO COPIES RAN AT ONCE[/red]"
    if not all(run.well_formed() for run in runs_of(lines)):
        return False, "[red]a run did not go start, beats, on_stop, end[/red]"
    return True, "never two copies at once"


def runs_of(lines: list[dict[str, Any]]) -> list[Run]:
    """The runs in the beat file, in the order they began."""
    runs: dict[str, Run] = {}
    for line in lines:
        runs.setdefault(line["run"], Run(line["run"])).lines.append(line)
    return list(runs.values())


def _live_line(row: ServiceRecord, runs: list[Run]) -> Text:
    """Where the replica is: its status, and the run's worker, generation, symbol and beats."""
    head = f"  service {NAME}: "
    status = row.status.value.upper()
    current = next((run for run in runs if row.token is not None and run.run == row.token[:8]), None)
    if current is None:
        symbol = row.params.get("symbol", FIRST)
        where = f" on {_worker(row.worker_id)}" if row.held else ""
        return Text(f"{head}{status}{where}, generation {row.generation}, symbol {symbol}", style="dim" if not
                    row.held and runs else "")  # fmt: skip
    line = current.first
    text = (f"{head}{status} on {_worker(line['worker'])} (pid {line['pid']}), generation {line['generation']}, "
            f"symbol {line['symbol']}: {_beats(current.beats)}")  # fmt: skip
    if row.generation != line["generation"]:
        text += f"; reload asked: generation {row.generation}, symbol {row.params.get('symbol')}"
    return Text(text)


def _beats(n: int) -> str:
    return f"{n} beat" if n == 1 else f"{n} beats"


def _step(kind: str, data: dict[str, Any] | None) -> str:
    """An event in the instance's history: its kind, short, with the action asked (reload, stop, ...)."""
    action = (data or {}).get("action")
    return kind.removeprefix("service_") + (f" ({action})" if action else "")


def _state(row: ServiceRecord) -> str:
    holder = "held by no worker" if row.token is None else f"[red]still held by {_worker(row.worker_id)}[/red]"
    status = row.status.value.upper()
    return f"{status}, {holder}" if row.status is ServiceStatus.PENDING else f"[red]{status}[/red], {holder}"


def _worker(worker_id: str | None) -> str:
    """A worker process by its slot under the supervisor (host:supervisor-pid.slot:suffix)."""
    parts = (worker_id or "").split(":")
    slot = parts[1].partition(".")[2] if len(parts) == 3 else ""
    return f"worker {slot}" if slot else f"worker {worker_id}"
