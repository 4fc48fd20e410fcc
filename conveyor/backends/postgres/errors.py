"""Which PostgreSQL errors are permanent (a wrong password, database or URL: fail at once with the
server's own words) and which are an outage (retry until the server is back)."""

from __future__ import annotations

import re

import psycopg

#: SQLSTATE classes and codes that no retry can fix: bad credentials, a missing database, a bad
#: parameter. Class 08 (connection exception), 53 (resources), 57P0x (shutting down, starting up)
#: are an outage and are retried.
PERMANENT_SQLSTATES = ("28", "3D000", "42501", "22023", "42704")

#: A failed connect carries no SQLSTATE in libpq, only the server's (or libpq's) message: these
#: phrases are the permanent ones. Anything else (refused, timed out, starting up) is an outage.
_PERMANENT_CONNECT = re.compile(
    r"does not exist"  # database "x" / role "x" does not exist
    r"|authentication failed"  # password / peer / ident authentication failed
    r"|no pg_hba\.conf entry"
    r"|no password supplied|password is required"
    r"|not permitted to log in"
    r"|permission denied for database"
    r"|invalid \w+ value|invalid connection option|invalid URI|invalid sslmode|missing \"=\""
    r"|server does not support SSL",
    re.IGNORECASE,
)


def is_permanent(exc: BaseException) -> bool:
    """True when retrying ``exc`` cannot help: the URL, credentials or database name are wrong."""
    if isinstance(exc, psycopg.ProgrammingError) and getattr(exc, "sqlstate", None) is None:
        return True  # libpq refused the connection string itself (invalid URI, unknown option)
    if not isinstance(exc, psycopg.Error):
        return False
    if exc.sqlstate:
        return exc.sqlstate.startswith(PERMANENT_SQLSTATES)
    return isinstance(exc, psycopg.OperationalError) and bool(_PERMANENT_CONNECT.search(str(exc)))


def server_message(exc: BaseException) -> str:
    """The server's own words, without libpq's "connection failed: connection to server at ... failed:"
    preamble: e.g. 'FATAL:  database "nope" does not exist' becomes 'database "nope" does not exist'."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^connection (failed|is bad): ", "", text)
    text = re.sub(r"^connection to server at .*? failed: ", "", text)
    return re.sub(r"^FATAL: +", "", text) or type(exc).__name__
