"""The PostgreSQL store's connections: URL and pool settings, the check and the session settings
of pooled connections, and the two sessions kept outside the pools, one to LISTEN and one to lead.

Those two are sessions of their own because what they hold lives with the session: the LISTEN
registration, and the leader's advisory lock (which the server releases when the session ends,
handing leadership over when a leader dies).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import StoreError, StoreUnavailable
from .postgres_sql import queries

log = logging.getLogger("conveyor.postgres")

Connection = psycopg.Connection[tuple[Any, ...]]
IDLE_SLICE = 0.05  #: seconds a second thread of one process sleeps while another one listens
POOL_PARAMS = {"pool_min": 1, "pool_max": 10, "pool_timeout": 10.0}


def split_url(url: str) -> tuple[str, dict[str, float]]:
    """Separate conveyor's pool settings from the libpq URL; raises StoreError on a bad one."""
    parts = urlsplit(url)
    settings: dict[str, float] = dict(POOL_PARAMS)
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in POOL_PARAMS:
            try:
                settings[name] = float(value)
            except ValueError:
                raise StoreError(f"bad {name}={value!r} in the store URL: give a number") from None
        else:
            rest.append((name, value))
    if settings["pool_max"] < 1 or settings["pool_min"] < 0 or settings["pool_min"] > settings["pool_max"]:
        raise StoreError(f"bad pool size in the store URL: need 0 <= pool_min <= pool_max, pool_max >= 1 ({url})")
    return urlunsplit(parts._replace(query=urlencode(rest))), settings


def check_on_checkout(conn: Connection) -> None:
    """Pool check: a pooled connection whose socket has something to read while idle was most
    likely closed by the server (a restart, an admin kill); verify it with a round trip so the
    pool replaces it instead of handing it out. Costs one ``select`` when all is well."""
    if conn.closed:
        raise psycopg.OperationalError("connection closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


def worker_session(conn: Connection) -> None:
    """Configure a worker-pool session (see ``worker_session`` in queries.sql)."""
    conn.execute(queries()["worker_session"].encode())  # two statements, no parameters


class _Session:
    """A connection of its own, opened on demand by ``connect``, guarded by ``_lock``."""

    def __init__(self, connect: Callable[[], Connection], where: str) -> None:
        self._connect = connect
        self._where = where
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()


class Listener(_Session):
    """The process's LISTEN connection: waits until a notification names a wanted queue."""

    def wait(self, wanted: set[str], deadline: float) -> None:
        """Block until a notification for ``wanted`` or ``deadline`` (time.monotonic()). Never
        raises: with the database away it sleeps to the deadline and listens again next time.
        One thread listens at a time; another one calling meanwhile sleeps a short slice."""
        if not self._lock.acquire(blocking=False):
            time.sleep(max(0.0, min(IDLE_SLICE, deadline - time.monotonic())))
            return
        try:
            self._wait(wanted, deadline)
        finally:
            self._lock.release()

    def _wait(self, wanted: set[str], deadline: float) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
                self._conn.execute(queries()["listen"])
            listener = self._conn
            while (remaining := deadline - time.monotonic()) > 0:
                for note in listener.notifies(timeout=remaining, stop_after=1):
                    if note.payload in wanted:
                        return
        except psycopg.Error as exc:
            log.warning("LISTEN on PostgreSQL at %s failed (%s); polling until it is back", self._where, exc)
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Close the connection (a new one is opened on the next wait)."""
        self._close_conn()


class LeaderLock(_Session):
    """The leader lock: a session advisory lock on a connection of its own."""

    def __init__(self, connect: Callable[[], Connection], where: str) -> None:
        super().__init__(connect, where)
        self._holds = False
        self._owner: str | None = None  #: which worker of this process leads
        self._until = 0.0

    def acquire(self, key: int, worker_id: str, ttl: float, now: float) -> bool:
        """Take or keep the lock for ``worker_id``; True while it holds it.

        Each call also sets the session's ``idle_session_timeout`` to ``ttl``, so a leader that
        stops renewing (hung, partitioned, stopped) loses the lock to the server within ttl, as
        one that dies does at once. Within one process, the lock passes between workers like
        the SQLite lock row: to another worker only once the holder's ttl has run out.
        Raises StoreUnavailable when the server cannot be reached (leadership is then lost)."""
        q = queries()
        with self._lock:
            if self._owner not in (None, worker_id) and now <= self._until:
                return False
            for attempt in (1, 2):  # a second try on a fresh connection if the old one died
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn, self._holds = self._connect(), False
                    if not self._holds:
                        row = self._conn.execute(q["leader_try_lock"], {"key": key}).fetchone()
                        self._holds = bool(row and row[0])
                    if self._holds:
                        self._conn.execute(q["leader_keepalive"], {"ms": str(max(1, int(ttl * 1000)))})
                    break
                except psycopg.Error as exc:
                    if self._holds:
                        log.warning("leader connection to PostgreSQL at %s lost: %s", self._where, exc)
                    self._drop()
                    if attempt == 2:
                        raise StoreUnavailable(f"PostgreSQL at {self._where} unreachable (leader lock): {exc}") from exc
            if not self._holds:
                self._owner = None
                return False
            self._owner, self._until = worker_id, now + ttl
            return True

    def release(self) -> None:
        """Give the lock up: closing the session releases it on the server."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._holds, self._owner = False, None
        self._close_conn()
