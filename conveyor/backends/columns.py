"""The one column registry of a job row: every SQL store builds its column lists and its row
mapping from ``JOB_COLUMNS``, so adding a field to ``Job`` is one edit here plus a migration.

A SQL file names a column list by placeholder, expanded when the file is loaded
(``expand``): ``{job_columns}`` is every column of a whole job in ``row_to_job``'s order
(JSON columns read back as text where the dialect needs it), ``{job_columns:j}`` the same
qualified by table alias ``j``, ``{insert_columns}`` the columns an enqueue writes and
``{insert_values}`` one positional ``?`` for each of them (sqlite3's style; ``insert_row``'s tuple),
``{insert_params}`` one named ``%(column)s`` for each (psycopg's style, JSON ones cast to json;
``insert_params``' dict).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from .. import codec
from ..job import Job, JobError, NewJob, Status

Kind = Literal["text", "int", "real", "json", "bool"]


class Column(NamedTuple):
    """One column of ``conveyor_jobs``: its name (the ``Job`` field of that name), its kind,
    whether an enqueue writes it (from the ``NewJob`` field of that name, or ``now``), and whether
    a plain job's enqueue writes it (``plain``: the others take their defaults, see ``is_plain``)."""

    name: str
    kind: Kind
    inserted: bool = False
    plain: bool = False


#: Every column of a whole job, in the order a SELECT returns them.
JOB_COLUMNS: tuple[Column, ...] = (
    Column("id", "text", True, plain=True),
    Column("task", "text", True, plain=True),
    Column("queue", "text", True, plain=True),
    Column("priority", "int", True, plain=True),
    Column("args", "json", True, plain=True),
    Column("kwargs", "json", True, plain=True),
    Column("status", "text", True),
    Column("created_at", "real", True, plain=True),
    Column("scheduled_at", "real", True, plain=True),
    Column("started_at", "real"),
    Column("finished_at", "real"),
    Column("attempts", "int"),
    Column("retries", "int"),
    Column("max_retries", "int", True, plain=True),
    Column("rescues", "int"),
    Column("timeout", "real", True, plain=True),
    Column("result", "json"),
    Column("error", "json"),
    Column("exit_code", "int"),
    Column("progress", "real"),
    Column("progress_message", "text"),
    Column("worker_id", "text"),
    Column("token", "text"),
    Column("lease_expires_at", "real"),
    Column("key", "text", True, plain=True),
    Column("result_ttl", "real", True, plain=True),
    Column("expires_at", "real"),
    Column("stage", "int", True),
    Column("stages", "json", True),
    Column("results", "json", True),
    Column("owner", "text", True),
    Column("notify", "bool", True),
    Column("pipeline", "json", True),
    Column("deadline", "real", True),
    Column("wait_until", "real", True),
    Column("waiting_for", "text", True),
    Column("inbox", "json"),
    Column("stage_log", "json", True),
    Column("scheduled_by", "text", True),
    Column("tick_at", "real", True),
    Column("trace", "json", True),
)

#: JSON columns where None is SQL NULL (not JSON null): a plain job has no stages nor pipeline, nor a
#: trace context unless a span was active when it was enqueued (conveyor.tracing).
NULLABLE_JSON = frozenset({"stages", "pipeline", "inbox", "trace"})

#: The columns an enqueue writes, in ``insert_row``'s order.
INSERT_COLUMNS: tuple[Column, ...] = tuple(c for c in JOB_COLUMNS if c.inserted)
#: The columns the enqueue of a plain job writes (``insert_plain_row``'s order): a task call with no
#: stages, owner or schedule, queued. Every other inserted column then holds its default, and each
#: parameter not bound saves SQLite's executemany a bind per row (25 columns cost a bulk enqueue
#: three times what these 12 do, measured).
PLAIN_INSERT_COLUMNS: tuple[Column, ...] = tuple(c for c in INSERT_COLUMNS if c.plain)


def select_list(json_as_text: bool, alias: str = "") -> str:
    """The SELECT list of a whole job: ``a.x, a.y::text, ...`` (``json_as_text`` for PostgreSQL)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(
        f"{prefix}{c.name}::text" if json_as_text and c.kind == "json" else f"{prefix}{c.name}" for c in JOB_COLUMNS
    )


_PLACEHOLDER = re.compile(
    r"\{(job_columns|insert_columns|insert_values|insert_params|plain_insert_columns|plain_insert_values)(?::(\w+))?\}"
)


def expand(sql: str, json_as_text: bool) -> str:
    """Replace the column-list placeholders of a SQL file's statement (see the module doc)."""

    def one(match: re.Match[str]) -> str:
        if match[1] == "insert_columns":
            return ", ".join(c.name for c in INSERT_COLUMNS)
        if match[1] == "insert_values":
            return ", ".join("?" for _ in INSERT_COLUMNS)
        if match[1] == "plain_insert_columns":
            return ", ".join(c.name for c in PLAIN_INSERT_COLUMNS)
        if match[1] == "plain_insert_values":
            return ", ".join("?" for _ in PLAIN_INSERT_COLUMNS)
        if match[1] == "insert_params":
            return ", ".join(f"%({c.name})s::json" if c.kind == "json" else f"%({c.name})s" for c in INSERT_COLUMNS)
        return select_list(json_as_text, match[2] or "")

    return _PLACEHOLDER.sub(one, sql)


_STATUSES = {status.value: status for status in Status}


def _error(value: Any) -> JobError | None:
    return JobError(**value) if value else None


def _compiled(name: str, source: str, namespace: dict[str, Any]) -> Any:
    """Function ``name`` defined by ``source`` (generated code) with ``namespace`` as its globals."""
    exec(compile(source, f"<conveyor.backends.columns.{name}>", "exec"), namespace)
    return namespace[name]


def _row_reader() -> Callable[[Sequence[Any]], Job]:
    """``row_to_job``, written out for ``JOB_COLUMNS`` once at import (as ``collections.namedtuple``
    writes its classes): a claim decodes every job it returns, and a generic loop over the columns
    took three times as long as this straight-line constructor call."""
    fields = []
    for i, column in enumerate(JOB_COLUMNS):
        value = f"row[{i}]"
        if column.name == "status":
            value = f"statuses[{value}]"
        elif column.name == "error":
            value = f"error(loads({value}))"
        elif column.kind == "json":
            value = f"loads({value})"
        elif column.kind == "bool":
            value = f"bool({value})"
        elif column.kind == "real":  # SQLite's RETURNING skips the column's REAL affinity: 99.0 comes back 99
            value = f"({value} if {value}.__class__ is not int else float({value}))"
        fields.append(f"{column.name}={value}")
    source = f"def row_to_job(row):\n    return Job({', '.join(fields)})\n"
    namespace: dict[str, Any] = {"Job": Job, "statuses": _STATUSES, "error": _error, "loads": codec.loads}
    reader: Callable[[Sequence[Any]], Job] = _compiled("row_to_job", source, namespace)
    return reader


_read_row = _row_reader()


def row_to_job(row: Sequence[Any]) -> Job:
    """A job from a row of the columns of ``JOB_COLUMNS``, in that order."""
    if len(row) != len(JOB_COLUMNS):
        raise ValueError(f"a job row has {len(JOB_COLUMNS)} columns, got {len(row)}")
    return _read_row(row)


def _row_writer(columns: tuple[Column, ...] = INSERT_COLUMNS) -> Callable[[NewJob, float], tuple[Any, ...]]:
    """``insert_row`` (or ``insert_plain_row``), written out for ``columns`` once at import: a bulk
    enqueue builds a row per job, and a generic loop over the columns (a getattr and two tests per
    column) cost as much as the rest of the store's work."""
    values = []
    for column in columns:
        value = "now" if column.name == "created_at" else f"new.{column.name}"
        if column.name == "status":
            value = f"{value}.value"
        elif column.name in NULLABLE_JSON:  # None: SQL NULL, not JSON null
            value = f"(None if {value} is None else dumps({value}))"
        elif column.kind == "json":
            value = f"dumps({value})"
        values.append(value)
    source = f"def insert_row(new, now):\n    return ({', '.join(values)},)\n"
    writer: Callable[[NewJob, float], tuple[Any, ...]] = _compiled("insert_row", source, {"dumps": codec.dumps})
    return writer


def _record_maker() -> Callable[[NewJob, float], Job]:
    """``new_job_record``, written out once at import, as ``insert_row``."""
    fields = [f"{c.name}=new.{c.name}" for c in INSERT_COLUMNS if c.name != "created_at"]
    source = f"def new_job_record(new, now):\n    return Job({', '.join(fields)}, created_at=now)\n"
    maker: Callable[[NewJob, float], Job] = _compiled("new_job_record", source, {"Job": Job})
    return maker


#: The values of an INSERT of a NewJob at ``now``, in the order of ``INSERT_COLUMNS`` (JSON encoded).
insert_row: Callable[[NewJob, float], tuple[Any, ...]] = _row_writer()

#: The same for a plain job (``is_plain``), in the order of ``PLAIN_INSERT_COLUMNS``.
insert_plain_row: Callable[[NewJob, float], tuple[Any, ...]] = _row_writer(PLAIN_INSERT_COLUMNS)

_QUEUED = Status.QUEUED


def is_plain(new: NewJob) -> bool:
    """Whether every inserted column outside PLAIN_INSERT_COLUMNS holds its default for this job:
    a queued task call with no stages, owner, notification, schedule or trace context."""
    return (
        new.stages is None
        and new.status is _QUEUED
        and new.owner is None
        and new.scheduled_by is None
        and not new.notify
        and new.tick_at is None
        and new.deadline is None
        and new.pipeline is None
        and new.stage == 0
        and not new.results
        and not new.stage_log
        and new.wait_until is None
        and new.waiting_for is None
        and new.trace is None
    )


#: The record a NewJob becomes once inserted at ``now`` (no read back needed).
new_job_record: Callable[[NewJob, float], Job] = _record_maker()


_INSERT_NAMES = tuple(c.name for c in INSERT_COLUMNS)


def insert_params(new: NewJob, now: float) -> dict[str, Any]:
    """``insert_row`` as named parameters, by column name."""
    return dict(zip(_INSERT_NAMES, insert_row(new, now), strict=True))
