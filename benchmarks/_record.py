"""Timestamps written by the benchmark's no-op task, identical for conveyor and huey.

Each worker process appends one line per job, ``tag start end`` (Unix seconds,
``time.time()``), to its own file under ``$BENCH_TS_DIR``: one ``os.write`` to
an ``O_APPEND`` descriptor, so threads of one process never interleave a line.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_fd: int | None = None
_pid: int | None = None


def _descriptor() -> int:
    global _fd, _pid
    pid = os.getpid()
    if _fd is None or _pid != pid:  # a forked child must not share its parent's file
        with _lock:
            if _fd is None or _pid != pid:
                directory = os.environ["BENCH_TS_DIR"]
                _fd = os.open(os.path.join(directory, f"{pid}.ts"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                _pid = pid
    return _fd


def noop(tag: int) -> None:
    """The benchmark's task body: do nothing but record when it started and ended."""
    start = time.time()
    fd = _descriptor()
    os.write(fd, f"{tag} {start!r} {time.time()!r}\n".encode())


def read(directory: str | Path) -> list[tuple[int, float, float]]:
    """Every complete line written under ``directory``: (tag, start, end)."""
    rows: list[tuple[int, float, float]] = []
    for path in Path(directory).glob("*.ts"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return rows


def count(directory: str | Path) -> int:
    """How many complete lines have been written under ``directory`` (cheap enough to poll)."""
    total = 0
    for path in Path(directory).glob("*.ts"):
        total += path.read_bytes().count(b"\n")
    return total
