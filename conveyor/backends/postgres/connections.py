"""The PostgreSQL store's connections: URL and pool settings, the check and the session settings
of pooled connections, and the LISTEN session kept outside the pools."""

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

from ...errors import StoreError, StoreUnavailable
from ..sql_files import queries
from .errors import is_permanent, server_message

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


def connect_failure(conninfo: str, timeout: float = 3.0) -> psycopg.Error | None:
    """Why a connection cannot be opened right now (one direct attempt, outside any pool), or None
    if it can. The pool only reports "no connection within N s"; this asks the server."""
    try:
        psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, round(timeout))).close()
    except psycopg.Error as exc:
        return exc
    return None


def permanent_error(exc: BaseException, where: str) -> StoreError | None:
    """A StoreError with the server's own message if ``exc`` is permanent (see errors.py), else None."""
    if not is_permanent(exc):
        return None
    return StoreError(f"PostgreSQL at {where}: {server_message(exc)}")


def fail_fast(conninfo: str, where: str, *, outage: bool = False) -> None:
    """Raise StoreError at once when the URL, credentials or database are wrong, instead of letting
    the pool retry them as an outage; an outage (or success) returns and is left to the pool.
    ``outage``: an outage raises StoreUnavailable at once too (a one-shot command or a health
    probe answers in seconds instead of waiting out the pool's retries)."""
    failure = connect_failure(conninfo)
    if failure is None:
        return
    error = permanent_error(failure, where)
    if error is not None:
        raise error from failure
    if outage:
        raise StoreUnavailable(f"PostgreSQL at {where} unreachable: {server_message(failure)}") from failure


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
    conn.execute(queries("postgres")["worker_session"].encode())  # three statements, no parameters


class Listener:
    """A LISTEN connection of the process, opened on demand: waits until a notification on its
    channel names a wanted payload. A session of its own because the LISTEN registration lives
    with the session. ``listen``: the statement (in queries.sql) that subscribes it: ``listen``
    (jobs become claimable, payload: the queue) or ``listen_events`` (events were written or
    numbered)."""

    def __init__(self, connect: Callable[[], Connection], where: str, listen: str = "listen") -> None:
        self._connect = connect
        self._where = where
        self._listen = listen
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        #: time.monotonic() of the last notification heard, or of the LISTEN that began this session
        self.heard_at = 0.0

    def subscribe(self) -> None:
        """Open the connection and LISTEN now, if not yet, so that a notification sent from now on
        is kept for the next ``wait`` (a caller checks for news after this, then waits). Never
        raises; skipped while another thread uses the connection (it is subscribed then)."""
        if self._lock.acquire(blocking=False):
            try:
                self._listening()
            except psycopg.Error as exc:
                log.warning("LISTEN on PostgreSQL at %s failed (%s); polling until it is back", self._where, exc)
                self.close()
            finally:
                self._lock.release()

    def wait(self, wanted: set[str] | None, deadline: float) -> None:
        """Block until a notification for ``wanted`` (None: any) or ``deadline`` (time.monotonic()).
        Never raises: with the database away it sleeps to the deadline and listens again next time.
        One thread listens at a time; another one calling meanwhile sleeps a short slice."""
        if not self._lock.acquire(blocking=False):
            time.sleep(max(0.0, min(IDLE_SLICE, deadline - time.monotonic())))
            return
        try:
            self._wait(wanted, deadline)
        finally:
            self._lock.release()

    def _listening(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.execute(queries("postgres")[self._listen])
            self.heard_at = time.monotonic()  # what was sent before is not heard: count it as news
        return self._conn

    def _wait(self, wanted: set[str] | None, deadline: float) -> None:
        try:
            listener = self._listening()
            while (remaining := deadline - time.monotonic()) > 0:
                for note in listener.notifies(timeout=remaining, stop_after=1):
                    self.heard_at = time.monotonic()
                    if wanted is None or note.payload in wanted:
                        return
        except psycopg.Error as exc:
            log.warning("LISTEN on PostgreSQL at %s failed (%s); polling until it is back", self._where, exc)
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Close the connection (a new one is opened on the next wait)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()
