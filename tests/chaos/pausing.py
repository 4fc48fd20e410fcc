"""SIGSTOP a worker at a moment it holds no write lock on a SQLite store.

A process stopped inside a SQLite write transaction (or holding conveyor's writers' flock) holds
up every other writer until it resumes: SQLite's documented limit, which conveyor bounds (writers
give up after ``busy_timeout`` with StoreUnavailable, tests/conformance/test_sqlite.py) but cannot
lift. The fencing scenario is about the lease, not that limit, so it pauses the worker between
writes: stop, read /proc/locks, and if the process holds a write lock, resume and try again."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest


def write_locks(pid: int) -> list[str]:
    """The lines of /proc/locks for write locks (POSIX or flock) that ``pid`` holds."""
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 3776 fe:00:1474578 0 EOF"; a waiter's line has "->" after the number
        if "->" in fields[1]:
            continue
        if len(fields) >= 5 and fields[3] == "WRITE" and fields[4] == str(pid):
            held.append(line)
    return held


def stopped(pid: int) -> bool:
    """True once ``pid`` is in the stopped state (T)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def pause_between_writes(pid: int, tries: int = 100) -> None:
    """SIGSTOP ``pid``'s process group at a moment ``pid`` holds no write lock; fail after ``tries``."""
    for _ in range(tries):
        os.killpg(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not stopped(pid):
            if time.monotonic() > deadline:
                pytest.fail(f"pid {pid} did not stop within 10 s of SIGSTOP")
            time.sleep(0.001)
        if not write_locks(pid):
            return
        os.killpg(pid, signal.SIGCONT)
        time.sleep(random.uniform(0.005, 0.05))
    pytest.fail(f"pid {pid} held a write lock at each of {tries} tries to pause it")
