"""``conveyor demo``: the whole life of a batch of jobs, on a temporary SQLite file, in a few seconds.

It enqueues a few hundred jobs of the tasks in ``conveyor.demo_tasks`` in one
atomic batch, with two orders of a pipeline that wait for a payment message and
on a timer (``conveyor.demo_orders``), starts ``conveyor worker -p 2`` (a
supervisor with two worker processes) on the same file, follows the store with
a live progress bar, pays the orders, stops the workers with SIGTERM (graceful)
and prints what ran, retried and failed. Meanwhile both worker processes fire
the ticks of a schedule declared in code (``conveyor.demo_schedules``), one job
per tick, and one of them runs a long-running service, reloaded partway with a
new parameter and handed back at the stop (``conveyor.demo_services``). No
server is needed: the store is the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from . import demo_orders, demo_schedules, demo_services
from . import demo_tasks as tasks
from .app import App
from .job import Job, Priority, Status
from .task import Signature

PROCESSES = 2  #: worker processes under the supervisor
CONCURRENCY = 4  #: jobs at once per worker process
REMINDER_DELAY = 4.0  #: seconds the delayed jobs wait before they fall due
FINISH_WITHIN = 60.0  #: give up (and report it) if the jobs have not finished by then...
PER_JOB = 0.05  #: ...plus this many seconds per job
STOP_WITHIN = 20.0  #: seconds the workers get to stop after SIGTERM
POLL = 0.1  #: seconds between reads of the store for the live display
WORKER_POLL = 0.5  #: seconds an idle worker waits before looking for due jobs again (--poll)

REPORTS = ("q3-sales", "churn-by-region", "inventory-aging")
CURRENCIES = ("EUR", "GBP", "JPY", "CHF", "SEK", "NOK")
CSV_FILES = ("customers.csv", "orders-corrupt.csv", "products.csv", "refunds-corrupt.csv", "suppliers.csv")
CHARGES = 5
REMINDERS = ("ada", "grace", "linus")
SPECIALS = len(REPORTS) + len(CURRENCIES) + len(CSV_FILES) + CHARGES + len(REMINDERS) + demo_orders.JOBS
#: plain jobs at the least: more than the workers' slots, so the high-priority ones have a queue to jump
MIN_BULK = 2 * PROCESSES * CONCURRENCY
MINIMUM = SPECIALS + MIN_BULK  #: the fewest jobs that show every behaviour


@dataclass
class _Snapshot:
    """What the store says, read once per refresh of the display."""

    counts: dict[Status, int]
    reports: list[Job]

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED))


def run_demo(count: int, keep: bool, console: Console) -> int:
    """Run the demo with about ``count`` jobs; keep the SQLite file if ``keep``. Returns an exit code."""
    note = jobs_note(count)
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    app = App(lease=tasks.app.lease)
    app.use_url(f"sqlite:///{workdir / 'demo.db'}", source="the demo")  # its own file, whatever $CONVEYOR_URL says
    try:
        return _Demo(app, max(count, MINIMUM), workdir, console, keep).run()
    finally:
        app.close()
        if keep:
            console.print(f"\nkept the store: [bold]{app.url}[/bold]  (worker log: {workdir / 'workers.log'})")
            console.print(f"  try: [cyan]conveyor jobs --url {app.url} --status failed[/cyan]")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        console.print(dashboard_hint(app.url if keep else None))


def dashboard_hint(url: str | None) -> str:
    """How to look at the demo's jobs in the dashboard: the commands for the kept store (``url``), or
    how to keep one."""
    if url is None:
        return ("the dashboard: run the demo with [cyan]--keep[/cyan], then serve its store with "
                "[cyan]conveyor web[/cyan] (pip install -e '.\\[web]'; docs/web.md)")  # fmt: skip
    return ("the dashboard: [cyan]pip install -e '.\\[web]'[/cyan], then "
            f"[cyan]conveyor users add me --role system --url {url}[/cyan], "
            f"[cyan]conveyor tokens create me --url {url}[/cyan] (paste the token), "
            f"[cyan]conveyor web conveyor.demo_tasks:app --url {url}[/cyan] and open "
            "[bold]http://127.0.0.1:8000/[/bold] (docs/web.md)")  # fmt: skip


class _Demo:
    """One run of the demo: enqueue, start workers, watch, stop, summarise."""

    def __init__(self, app: App, total: int, workdir: Path, console: Console, keep: bool) -> None:
        self.app = app
        self.total = total
        self.keep = keep
        self.orders = demo_orders.Orders(app)
        self.ticker = demo_schedules.Ticker(app)
        self.feed = demo_services.Feed(app, workdir)
        self.workdir = workdir
        self.console = console
        self.log_path = workdir / "workers.log"
        self.started = time.monotonic()

    def run(self) -> int:
        console = self.console
        console.print(f"[bold]conveyor demo[/bold]: {self.total} jobs, {PROCESSES} worker processes x "
                      f"{CONCURRENCY} threads, store {self.app.url}")  # fmt: skip
        enqueued_at = time.monotonic()
        now, batch = self.app.clock(), self._batch()
        self.app.enqueue_jobs([sig.to_new_job(now) for sig in batch] + self.orders.new_jobs(now), now)
        console.print(f"enqueued {len(batch)} jobs and {len(demo_orders.ORDERS)} orders (pipeline jobs) in one "
                      f"transaction in {(time.monotonic() - enqueued_at) * 1000:.0f} ms")  # fmt: skip
        early = self.orders.pay(demo_orders.EARLY)
        console.print(f"sent order {demo_orders.EARLY}'s payment before any worker started: {early.value.upper()}, "
                      "kept in its mailbox until the order gets to its Message('payment') stage")  # fmt: skip
        console.print(self.feed.start())
        with self.log_path.open("wb") as log:
            workers = self._start_workers(log)
            try:
                finished = self._watch(workers)
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/yellow]: stopping the workers (SIGTERM)")
                self._stop(workers)
                return 130
            self.ticker.stop()  # pause the schedule: its last jobs run before the workers stop
            stopped_in = self._stop(workers)
        if stopped_in is None:
            console.print(f"[red]the workers did not stop within {STOP_WITHIN:.0f} s of SIGTERM; killed them[/red]")
        else:
            console.print(f"workers stopped gracefully (SIGTERM) in {stopped_in:.1f} s, exit code {workers.returncode}")
        if not finished:
            self._show_log_tail()
            return 1
        return self._summary()

    # the jobs ------------------------------------------------------------------------
    def _batch(self) -> list[Signature]:
        """Reports first (their progress shows while the bulk runs), flaky and failing jobs
        spread through the bulk, the delayed reminders, and the high-priority charges last."""
        bulk: list[Signature] = [  # the orders, and the receipts they chain, are the last SPECIALS
            tasks.resize_image.s(n, width=320 + 16 * (n % 5)) for n in range(self.total - SPECIALS)
        ]
        extra = [tasks.fetch_rates.s(c) for c in CURRENCIES] + [tasks.import_csv.s(f) for f in CSV_FILES]
        step = max(1, len(bulk) // (len(extra) + 1))
        for i, signature in enumerate(extra):
            bulk.insert((i + 1) * step + i, signature)
        return [
            *(tasks.build_report.s(name, pages=8 + 2 * i) for i, name in enumerate(REPORTS)),
            *bulk,
            *(tasks.send_reminder.options(delay=REMINDER_DELAY).s(user) for user in REMINDERS),
            *(tasks.charge_card.s(1000 + i, cents=1999 + 500 * i) for i in range(CHARGES)),
        ]

    # the workers -----------------------------------------------------------------------
    def _start_workers(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        """``conveyor worker conveyor.demo_tasks:app -p 2``, logging to a file; a session of its own,
        so a Ctrl-C in the terminal reaches only the demo, which then stops the workers itself."""
        command = [sys.executable, "-m", "conveyor", "worker", "conveyor.demo_tasks:app", "-p", str(PROCESSES),
                   "-c", str(CONCURRENCY), "-q", f"default,{tasks.TICK_QUEUE}", "--poll", f"{WORKER_POLL:g}",
                   "--url", self.app.url]  # fmt: skip
        env = {**os.environ, "CONVEYOR_URL": self.app.url}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _stop(self, workers: subprocess.Popen[bytes]) -> float | None:
        """SIGTERM: the supervisor asks each worker to finish its jobs and exit. Returns the seconds
        it took, or None if it had to be killed."""
        if workers.poll() is not None:
            return 0.0
        begun = time.monotonic()
        workers.send_signal(signal.SIGTERM)
        try:
            workers.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait()
            return None
        return time.monotonic() - begun

    # watching --------------------------------------------------------------------------
    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            counts=self.ticker.batch_counts(self.app.stats()),
            reports=self.app.jobs(task=tasks.REPORT, limit=len(REPORTS)),
        )

    def _watch(self, workers: subprocess.Popen[bytes]) -> bool:
        """Show a live progress bar until every job has finished; False if that did not happen."""
        progress = Progress(
            SpinnerColumn(), TextColumn("[bold]jobs finished"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=self.console,
        )  # fmt: skip
        bar = progress.add_task("jobs", total=self.total)
        try:
            with Live(console=self.console, refresh_per_second=12, transient=False) as live:
                return self._follow(workers, live, progress, bar)
        finally:
            if not self.console.is_interactive:
                self.console.line()  # rich leaves the last line open when the output is not a terminal

    def _follow(self, workers: subprocess.Popen[bytes], live: Live, progress: Progress, bar: TaskID) -> bool:
        """Read the store every POLL seconds and redraw; True once every job has finished."""
        limit = FINISH_WITHIN + PER_JOB * self.total
        deadline = time.monotonic() + limit
        jobs_done_at: float | None = None  # the service's reloaded run may need a moment more
        while True:
            snapshot = self._snapshot()
            progress.update(bar, completed=snapshot.finished)
            orders = self.orders.step()
            feed = self.feed.step()
            live.update(Group(progress, _status_line(snapshot), *_report_lines(snapshot), *orders, self.ticker.live(),
                              feed))  # fmt: skip
            if snapshot.finished >= self.total:
                jobs_done_at = jobs_done_at or time.monotonic()
                if self.feed.done():
                    return True
                if time.monotonic() - jobs_done_at > demo_services.WAIT_AFTER_JOBS:  # the summary says what is wrong
                    self.console.print(f"[red]{self.feed.waiting_for()} {demo_services.WAIT_AFTER_JOBS:g} s after "
                                       "the jobs finished[/red]")  # fmt: skip
                    return True
            if workers.poll() is not None:
                self.console.print(f"[red]the worker supervisor exited early, code {workers.returncode}[/red]")
                return False
            if time.monotonic() > deadline:
                self.console.print(f"[red]not finished after {limit:.0f} s[/red]")
                return False
            time.sleep(POLL)

    def _show_log_tail(self) -> None:
        lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        self.console.print("[bold]last lines of the worker log:[/bold]")
        for line in lines:
            self.console.print(Text(line))

    # the summary -----------------------------------------------------------------------
    def _summary(self) -> int:
        jobs = [job for job in self.app.jobs(limit=self.total + 10_000) if job.scheduled_by is None]  # the batch
        by_task: dict[str, list[Job]] = {}
        for job in reversed(jobs):  # oldest first: the order they were enqueued in
            by_task.setdefault(_kind(job), []).append(job)
        table = Table("task", "jobs", "succeeded", "retried", "failed", "runs", "avg time", title="what ran")
        for name, group in by_task.items():
            table.add_row(_short(name), *_row(group))
        table.add_row("total", *_row(jobs), style="bold", end_section=True)
        self.console.print(table)

        for job in (j for j in jobs if j.status is Status.FAILED):
            error = f"{job.error.type}: {job.error.message}" if job.error else "?"
            self.console.print(f"[red]failed[/red] {_short(job.task)}({', '.join(map(repr, job.args))}) "
                               f"after {job.attempts} runs: {error}")  # fmt: skip
        self._notes(by_task)
        orders_ok = self.orders.summary(self.console, self.keep)
        ticker_ok = self.ticker.summary(self.console, self.keep)
        feed_ok = self.feed.summary(self.console, self.keep)
        wall = time.monotonic() - self.started
        self.console.print(f"[bold]{len(jobs)} jobs in {wall:.1f} s[/bold] ({len(jobs) / wall:.0f} jobs/s overall, "
                           "including worker start-up, the delayed jobs' wait and the graceful stop)")  # fmt: skip

        expected_failures = sum("corrupt" in name for name in CSV_FILES)
        failed = [j for j in jobs if j.status is not Status.SUCCEEDED]
        jobs_ok = (
            len(jobs) == self.total and len(failed) == expected_failures and all(j.task == tasks.IMPORT for j in failed)
        )
        if not jobs_ok:
            self.console.print(f"[red]unexpected outcome: {len(jobs)} of {self.total} jobs found, "
                               f"{len(failed)} not succeeded (expected {expected_failures})[/red]")  # fmt: skip
            return 1
        if not (orders_ok and ticker_ok and feed_ok):
            self.console.print("[red]unexpected outcome: see the lines in red above[/red]")
            return 1
        return 0

    def _notes(self, by_task: dict[str, list[Job]]) -> None:
        """One line per behaviour the demo set out to show, proven from the stored records."""
        say = self.console.print
        normal = [j for j in by_task.get(tasks.RESIZE, []) if j.started_at is not None]
        for job in by_task.get(tasks.CHARGE, [])[:1]:
            charges = by_task[tasks.CHARGE]
            last_start = max(j.started_at or 0.0 for j in charges)
            ahead = sum(1 for j in normal if (j.started_at or 0.0) > last_start)
            say(f"[bold]priority[/bold]: the {len(charges)} {_short(job.task)} jobs (priority "
                f"{Priority(job.priority).name}) were enqueued last, yet started ahead of {ahead} of the "
                f"{len(normal)} resize_image jobs (priority NORMAL) enqueued before them")  # fmt: skip
        reminders = by_task.get(tasks.REMIND, [])
        waits = [j.started_at - j.created_at for j in reminders if j.started_at is not None]
        if waits:
            say(delay_line(len(reminders), waits))
        retried = [j for j in by_task.get(tasks.FETCH, []) if j.retries]
        if retried:
            say(f"[bold]retry[/bold]: {len(retried)} fetch_rates jobs raised ConnectionError on their first run "
                f"and succeeded when retried after a back-off (max_retries=3)")  # fmt: skip
        reports = by_task.get(tasks.REPORT, [])
        if reports:
            say(f"[bold]progress[/bold]: build_report reported progress as it ran; last message: "
                f"{reports[-1].progress_message!r}")  # fmt: skip
        processes = Counter(_process(j.worker_id) for group in by_task.values() for j in group)
        share = ", ".join(f"{process}: {n}" for process, n in sorted(processes.items()))
        say(f"[bold]workers[/bold]: jobs per worker process: {share}")
        self._events_note(retried[0] if retried else None)

    def _events_note(self, retried: Job | None) -> None:
        """The event log the run left: how many events of each kind, and one retried job's history."""
        kinds: Counter[str] = Counter()
        after = 0
        while page := self.app.events(after=after, limit=1000):
            kinds.update(event.kind for event in page)
            after = page[-1].seq
        tally = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
        self.console.print(f"[bold]events[/bold]: {sum(kinds.values())} in the log ({tally})")
        if retried is not None:
            history = " -> ".join(event.kind for event in self.app.events(job_id=retried.id))
            self.console.print(f"  one fetch_rates job's history: {history}  (conveyor events --job {retried.id[:8]})")
        registered = self.app.workers()
        self.console.print(f"  {len(registered)} worker processes registered themselves and stopped; "
                           f"follow a live system with [cyan]conveyor watch[/cyan]")  # fmt: skip
        if len(registered) > PROCESSES:
            self.console.print(f"  [red]{len(registered) - PROCESSES} of them replaced worker processes that exited "
                               "early[/red] (the supervisor restarts them): see the worker log (--keep)")  # fmt: skip


def jobs_note(count: int) -> str | None:
    """What to say when ``--jobs`` asks for fewer jobs than the demo needs to show each behaviour."""
    if count >= MINIMUM:
        return None
    return (f"--jobs {count} is below the demo's minimum of {MINIMUM} ({SPECIALS} jobs that show reports, "
            f"retries, failures, priorities, delays and pipelines, and {MIN_BULK} plain ones for the high-priority "
            f"jobs to overtake): running {MINIMUM} jobs")  # fmt: skip


LATE = 0.1  #: seconds past its due time after which a delayed job's start is explained


def delay_line(count: int, waits: list[float]) -> str:
    """The summary's line on the delayed jobs: when they started (one value if all started together),
    and why, if they started later than their delay."""
    low, high = min(waits), max(waits)
    when = f"{low:.2f} s" if high - low < 0.005 else f"between {low:.2f} and {high:.2f} s"
    line = (f"[bold]delay[/bold]: {count} send_reminder jobs enqueued with delay={REMINDER_DELAY:g} s were held "
            f"back until due, and started {when} after enqueue")  # fmt: skip
    late = high - REMINDER_DELAY
    if late > LATE:
        line += (f", up to {late:.2f} s after they fell due: a worker starts a due job once a thread is free, "
                 f"jobs due earlier first, and an idle one looks again at most every {WORKER_POLL:g} s")  # fmt: skip
    return line


def _kind(job: Job) -> str:
    """What the summary's table groups a job under: its task, or its pipeline's name."""
    if job.pipeline is not None:
        return f"{job.pipeline.get('name') or 'unnamed'} (pipeline)"
    return job.task


def _short(task: str) -> str:
    return task.rsplit(".", 1)[-1]


def _process(worker_id: str | None) -> str:
    """Which process a worker id names: host:pid:suffix (standalone) or host:supervisor-pid.slot:suffix."""
    parts = (worker_id or "").split(":")
    if len(parts) != 3:
        return "?"
    pid, _, slot = parts[1].partition(".")
    return f"worker {slot} of supervisor pid {pid}" if slot else f"pid {pid}"


def _row(group: list[Job]) -> list[str]:
    """jobs, succeeded, retried, failed, runs, avg time."""
    times = [j.elapsed for j in group if j.elapsed is not None and not j.is_pipeline]  # a pipeline's: its last stage
    average = f"{1000 * sum(times) / len(times):.0f} ms" if times else "-"
    return [
        str(len(group)),
        str(sum(j.status is Status.SUCCEEDED for j in group)),
        str(sum(j.retries > 0 for j in group)),
        _red(sum(j.status is Status.FAILED for j in group)),
        str(sum(j.attempts for j in group)),
        average,
    ]


def _red(n: int) -> str:
    return f"[red]{n}[/red]" if n else "0"


def _status_line(snapshot: _Snapshot) -> Text:
    counts = snapshot.counts
    parts = [
        ("queued", counts.get(Status.QUEUED, 0), "white"),
        ("scheduled", counts.get(Status.SCHEDULED, 0), "magenta"),
        ("running", counts.get(Status.RUNNING, 0), "cyan"),
        ("waiting", counts.get(Status.WAITING, 0), "yellow"),
        ("succeeded", counts.get(Status.SUCCEEDED, 0), "green"),
        ("failed", counts.get(Status.FAILED, 0), "red"),
    ]
    line = Text("  ")
    for i, (name, n, colour) in enumerate(parts):
        if i:
            line.append(" · ", style="dim")
        line.append(f"{name} {n}", style=colour)
    return line


def _report_lines(snapshot: _Snapshot) -> list[Text]:
    lines = []
    for job in reversed(snapshot.reports):  # oldest first
        message = job.progress_message or "waiting for a worker"
        lines.append(
            Text(f"  build_report {job.progress:>3.0f}%  {message}", style="dim" if job.status.finished else "")
        )
    return lines
