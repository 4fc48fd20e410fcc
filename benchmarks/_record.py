"""The benchmark's task bodies and their timestamps, identical for conveyor and every peer.

Three bodies (``BODIES``): ``noop`` does nothing; ``redis`` does one Redis ``INCR`` (one real
network round trip, redis-py's blocking client); ``redis-async`` does the same ``INCR`` with
redis-py's asyncio client. Each worker process opens its Redis client once, lazily, on its
first job (as a user's task module would), on ``$BENCH_REDIS_URL`` (db 14 by default, which the
driver flushes before each drain and reads back to check one ``INCR`` per job).

Each body appends one line per job, ``tag start end`` (Unix seconds, ``time.time()``), to its
process's own file under ``$BENCH_TS_DIR``: one ``os.write`` to an ``O_APPEND`` descriptor, so
threads of one process never interleave a line. ``start`` is taken before the round trip,
``end`` after it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

BODIES = ("noop", "redis", "redis-async")
REDIS_URL = "redis://127.0.0.1:6379/14"  #: default for $BENCH_REDIS_URL: a db index of the benchmark's own
COUNTER = "bench:incr"  #: the key every round-trip body increments
#: connections per client: redis-py's default pool size, in its blocking pool, which waits for a free
#: connection where the default pool raises "Too many connections" (pgqueuer runs more jobs at once)
POOL_SIZE = 100

_lock = threading.Lock()
_fd: int | None = None
_pid: int | None = None
_client: Any = None  #: this process's blocking Redis client
_client_pid: int | None = None
_async_clients: dict[tuple[int, int], Any] = {}  #: (pid, id(loop)) -> asyncio Redis client: one per event loop


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


def _write(tag: int, start: float) -> None:
    os.write(_descriptor(), f"{tag} {start!r} {time.time()!r}\n".encode())


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", REDIS_URL)


def _redis() -> Any:
    """This process's blocking client (a thread-safe pool), made on first use; a forked child makes its own."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _lock:
            if _client is None or _client_pid != pid:
                import redis

                pool = redis.BlockingConnectionPool.from_url(redis_url(), max_connections=POOL_SIZE, timeout=None)
                _client = redis.Redis(connection_pool=pool)
                _client_pid = pid
    return _client


def _redis_async() -> Any:
    """This process's asyncio client for the running loop (an asyncio client belongs to one loop)."""
    key = (os.getpid(), id(asyncio.get_running_loop()))
    client = _async_clients.get(key)
    if client is None:
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(redis_url(), max_connections=POOL_SIZE, timeout=None)
        client = _async_clients[key] = redis.asyncio.Redis(connection_pool=pool)
    return client


def noop(tag: int) -> None:
    """The no-op body: do nothing but record when it started and ended."""
    _write(tag, time.time())


def redis_incr(tag: int) -> None:
    """The sync round-trip body: one ``INCR`` on the blocking client, between the two timestamps."""
    start = time.time()
    _redis().incr(COUNTER)
    _write(tag, start)


async def redis_incr_async(tag: int) -> None:
    """The async round-trip body: one ``INCR`` awaited on the asyncio client, between the two timestamps."""
    start = time.time()
    await _redis_async().incr(COUNTER)
    _write(tag, start)


# driver side ------------------------------------------------------------------------------
def _checked_client(url: str) -> Any:
    from urllib.parse import urlsplit

    import redis

    if (urlsplit(url).path.strip("/") or "0") == "0":
        raise SystemExit(f"refusing to use Redis db 0 for the benchmark ({url}): give a dedicated db index, e.g. /14")
    return redis.Redis.from_url(url)


def flush_redis(url: str) -> None:
    """``FLUSHDB`` on ``url`` (never db 0)."""
    client = _checked_client(url)
    try:
        client.flushdb()
    finally:
        client.close()


def counter(url: str) -> int:
    """The round-trip bodies' ``INCR`` count on ``url`` (0 when the key is absent)."""
    client = _checked_client(url)
    try:
        return int(client.get(COUNTER) or 0)
    finally:
        client.close()


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
