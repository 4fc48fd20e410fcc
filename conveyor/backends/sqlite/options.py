"""What a SQLite store URL says: the file, and the settings its query may change (docs/sqlite.md)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from ...errors import StoreError

DEFAULT_BUSY_TIMEOUT = 5.0  #: seconds a writer waits for the write lock in all, before StoreUnavailable
#: Of that bound, at most this share is spent queueing on conveyor's own writers' flock.
FLOCK_SHARE = 0.2
FLOCK_WAIT_MAX = 1.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SQLiteOptions:
    """A store's file and settings. ``durable``: producer commits wait for fsync (the default);
    ``busy_timeout``: seconds a writer may wait for the write lock before StoreUnavailable."""

    path: str
    durable: bool = True
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT

    @property
    def flock_wait(self) -> float:
        """Seconds a writer queues on conveyor's flock before going on to SQLite's busy wait."""
        return min(FLOCK_WAIT_MAX, self.busy_timeout * FLOCK_SHARE)

    @property
    def sqlite_wait(self) -> float:
        """Seconds of SQLite's own busy timeout: the rest of the bound."""
        return self.busy_timeout - self.flock_wait

    @property
    def url(self) -> str:
        """The URL that opens this store with these settings."""
        query = {}
        if not self.durable:
            query["durable"] = "false"
        if self.busy_timeout != DEFAULT_BUSY_TIMEOUT:
            query["busy_timeout"] = f"{self.busy_timeout:g}"
        return f"sqlite:///{self.path}" + (f"?{urlencode(query)}" if query else "")


def parse_url(url: str) -> SQLiteOptions:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` (either with ``?durable=false`` and
    ``?busy_timeout=SECONDS``), or a bare path (taken whole, no query)."""
    if "://" not in url:
        return SQLiteOptions(url)
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise StoreError(f"bad SQLite URL {url!r}: write sqlite:///relative/path.db or sqlite:////abs/path.db")
    path, _, query = rest[1:].partition("?")
    durable, busy_timeout = True, DEFAULT_BUSY_TIMEOUT
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name == "durable" and value.lower() in _TRUE | _FALSE:
            durable = value.lower() in _TRUE
        elif name == "busy_timeout":
            try:
                busy_timeout = float(value)
            except ValueError:
                busy_timeout = -1.0
            if not 0 < busy_timeout < 86400:
                raise StoreError(f"bad SQLite URL {url!r}: busy_timeout must be seconds > 0, got {value!r}")
        else:
            raise StoreError(
                f"bad SQLite URL {url!r}: unknown setting {name}={value!r}"
                " (this conveyor knows durable=true|false and busy_timeout=SECONDS)"
            )
    return SQLiteOptions(path, durable, busy_timeout)
