"""README.md runs as written: its tour (the python blocks) and its command lines (the sh blocks) run
against a temporary SQLite store and a real ``conveyor worker`` process, and what the README says
they print or do is asserted, so the README cannot drift from the behaviour.

Conventions the README follows (and this test reads):
- a python block whose first line is ``# NAME.py`` is that module, written to the directory; every
  other python block is run there as a script, in order;
- ``print(...)  # -> TEXT``: the line prints TEXT, where ``...`` stands for anything;
- in sh blocks, ``conveyor worker ...`` starts in the background (stopped with SIGTERM at the end),
  ``export NAME=VALUE`` sets the environment of the lines after it, and ``JOB_ID`` is the id the
  last ``conveyor enqueue`` printed;
- ``<!-- readme-test: skip (REASON) -->`` on the line before a block leaves it out: installs and
  PostgreSQL-only blocks. The list is kept short (``MAX_SKIPPED``).

Also: every file a README or docs/ page names (a link, or a path in backticks) exists."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor import App, Priority, Status

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_SKIPPED = 5
SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```", re.M | re.S)
EXPECT = re.compile(r"\bprint\(.*#\s*-> (?P<text>.*)$")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  #: where it starts in README.md, for messages
    skip: str | None  #: the reason given by a skip marker, if any


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the skip marker on the line before it."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = SKIP.search(before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(match["lang"], match["code"], line, marker["reason"] if marker else None))
    return found


def shell_lines(code: str) -> list[str]:
    """A sh block's commands: continuation lines joined, blank and comment-only lines dropped."""
    lines, current = [], ""
    for raw in code.splitlines():
        current += raw[:-1] + " " if raw.endswith("\\") else raw
        if raw.endswith("\\"):
            continue
        if current.strip() and not current.strip().startswith("#"):
            lines.append(current.strip())
        current = ""
    return lines


def expected_lines(code: str) -> list[re.Pattern[str]]:
    """What the block's ``print(...)  # -> TEXT`` lines print, in order, as patterns."""
    patterns = []
    for line in code.splitlines():
        match = EXPECT.search(line)
        if match:
            text = re.escape(match["text"].strip()).replace(re.escape("..."), ".*")
            patterns.append(re.compile(text))
    return patterns


def test_the_readme_marks_few_blocks_to_skip_and_only_python_and_sh() -> None:
    found = blocks(README.read_text())
    skipped = [b for b in found if b.skip]
    assert 0 < len(skipped) <= MAX_SKIPPED, [(b.line, b.skip) for b in skipped]
    assert {b.lang for b in found} <= {"python", "sh"}, "a block the test cannot run or check"
    runnable = [b for b in found if not b.skip]
    assert any(b.code.startswith("# myapp.py") for b in runnable)
    assert any("conveyor worker" in b.code for b in runnable if b.lang == "sh")
    assert any(expected_lines(b.code) for b in runnable if b.lang == "python")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A new user's shell: no store or app chosen yet; the project's ``conveyor`` on PATH."""
    base = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    bin_dir = str(Path(sys.executable).parent)
    return {**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def _run_python(block: Block, index: int, cwd: Path, env: dict[str, str]) -> None:
    script = cwd / f"readme_block_{index}.py"
    script.write_text(block.code)
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"README.md line {block.line}: the block failed:\n{done.stderr}"
    printed = done.stdout.splitlines()
    patterns = expected_lines(block.code)
    assert len(printed) == len(patterns), f"README.md line {block.line}: printed {printed}"
    for pattern, line in zip(patterns, printed, strict=True):
        assert pattern.fullmatch(line), f"README.md line {block.line}: {line!r} does not match {pattern.pattern!r}"


class Shell:
    """Runs a README's sh lines one by one in ``cwd``, keeping exports and the last enqueued id."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.enqueued: list[str] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(self, line: str, where: int) -> None:
        if line.startswith("export "):
            name, _, value = shlex.split(line, comments=True)[1].partition("=")
            self.env[name] = value
            return
        if self.enqueued:
            line = line.replace("JOB_ID", self.enqueued[-1])
        if line.startswith("conveyor worker "):
            log = (self.cwd / f"worker-{len(self.workers)}.log").open("wb")
            self.workers.append(subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip
            return
        check = " && complete -p conveyor" if "_CONVEYOR_COMPLETE=" in line else ""
        done = subprocess.run(["bash", "-c", line + check], cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"README.md line {where}: {line!r} exited {done.returncode}:\n{done.stderr}"
        command = shlex.split(line, comments=True)
        if command[:2] == ["conveyor", "enqueue"]:
            printed = done.stdout.strip()
            assert JOB_ID.fullmatch(printed), f"README.md line {where}: enqueue printed {printed!r}, not a job id"
            self.enqueued.append(printed)
        self.outputs[line] = done

    def stop_workers(self) -> list[int | None]:
        codes = []
        for worker in self.workers:
            worker.send_signal(signal.SIGTERM)
            try:
                codes.append(worker.wait(60))
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
                codes.append(None)
        return codes


def _wait(predicate, what: str, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_the_readme_tour_and_command_lines_run_as_written(tmp_path: Path, env: dict[str, str]) -> None:
    shell = Shell(tmp_path, env)
    try:
        for index, block in enumerate(blocks(README.read_text())):
            if block.skip:
                continue
            if block.lang == "python" and (name := re.match(r"# (\w+\.py)\n", block.code)):
                (tmp_path / name[1]).write_text(block.code)
            elif block.lang == "python":
                _run_python(block, index, tmp_path, env)
            else:
                for line in shell_lines(block.code):
                    shell.run(line, block.line)
        store = tmp_path / "conveyor.db"  # the tour's App("sqlite:///conveyor.db"), relative to the directory
        assert store.exists()
        app = App(f"sqlite:///{store}")

        # "prints its store on stderr": every command says which store and why
        header = f"store: sqlite:///{store} (from App(url) in code)"
        stats = next(done for line, done in shell.outputs.items() if line.startswith("conveyor stats"))
        assert header in stats.stderr

        # the CLI's jobs: myapp.add ran on the worker; myapp.send_email got the task's own options
        added, emailed = shell.enqueued
        assert _wait(lambda: app.job(added).status is Status.SUCCEEDED, "the worker runs myapp.add")
        assert app.job(added).result == 3
        email = app.job(emailed)
        assert (email.queue, email.max_retries, email.priority) == ("emails", 5, Priority.HIGH)
        # cancelled, then retried with --reset: due now, so the worker ran it, and it asked for its retry
        _wait(lambda: app.job(emailed).retries == 1, "the worker runs the retried send_email")
        email = app.job(emailed)
        assert (email.status, email.attempts, email.error and email.error.message) == (
            Status.SCHEDULED, 1, "mail server busy",
        )  # fmt: skip
        # the tour's crunch job, cancelled and retried by app.retry, ran on the worker too
        crunched = app.jobs(task="myapp.crunch")
        assert [job.status for job in crunched] == [Status.SUCCEEDED] and crunched[0].result == 100
        app.close()

        assert shell.stop_workers() == [0] * len(shell.workers), "SIGTERM stops a worker gracefully, exit code 0"
        log = (tmp_path / "worker-0.log").read_text()
        assert f"store sqlite:///{store}" in log  # "a worker logs its store when it starts"
        assert "myapp.add, myapp.crunch, myapp.send_email" in log  # ... and its tasks
    finally:
        for worker in shell.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


# every file the docs name exists ------------------------------------------------------------------

DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"`(?P<path>(?:conveyor|tests|docs|benchmarks)/[\w./-]*)(?:::[\w\[\]-]*)?`")


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_file_a_doc_names_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for match in LINK.finditer(text):
        target = match["target"]
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (doc.parent / target).exists():
            missing.append(target)
    for match in PATH.finditer(text):
        path = match["path"]
        if "NNNN" in path or "*" in path:
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"
