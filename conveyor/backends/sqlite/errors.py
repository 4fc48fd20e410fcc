"""sqlite3's errors as conveyor's: what may pass (a lock held elsewhere, a full disk, an I/O
error) is StoreUnavailable, which a worker retries with back-off; the rest is StoreError."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import StoreError, StoreUnavailable

#: Primary result codes of a failure that may pass: another process holds the lock, the disk is
#: full (space may be freed), the disk or its lock protocol failed, memory ran short.
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_TRANSIENT = _LOCKED | {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOMEM}
#: The same, by message, for errors raised without a result code.
_TRANSIENT_TEXT = ("database is locked", "database table is locked", "disk is full", "disk i/o error")


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def translate(exc: sqlite3.Error, path: str, what: str, busy_timeout: float) -> StoreError:
    """The conveyor error for ``exc``, raised while the store at ``path`` did ``what``."""
    code = _primary_code(exc)
    text = str(exc).lower()
    if code in _LOCKED or (code is None and "locked" in text):
        return StoreUnavailable(
            f"SQLite store {path} is locked by another process (maybe stopped or hung): could not {what}"
            f" within {busy_timeout:g} s ({exc})"
        )
    if code in _TRANSIENT or (code is None and any(part in text for part in _TRANSIENT_TEXT)):
        return StoreUnavailable(f"SQLite store {path} cannot {what} right now: {exc}")
    return StoreError(f"SQLite store {path} refused to {what}: {exc}")


@contextmanager
def translated(path: str, what: str, busy_timeout: float) -> Iterator[None]:
    """Raise conveyor's error for any sqlite3 error in the block (its cause kept as __cause__)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path, what, busy_timeout) from exc
