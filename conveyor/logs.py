"""Logging set-up for workers and the supervisor's children: a level checked up front, and a text
or JSON format (one object per line, the record's extras as fields, for log shippers)."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def parse_level(value: str | int) -> int:
    """A level name (any case) or number as logging's int; ValueError names the valid ones."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    name = str(value).strip().upper()
    if name in LEVELS:
        return int(getattr(logging, name))
    raise ValueError(f"unknown log level {value!r}: use one of {', '.join(level.lower() for level in LEVELS)}")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, process, the
    record's extras (job_id, task, duration, ...), and the traceback as ``exc_info`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                data[name] = value
        if record.exc_info:
            data["exc_info"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send conveyor's (and the task's) logs to ``stream`` (stderr) at ``level``, as ``fmt`` "text"
    or "json". Replaces handlers set before, so a forked child can call it again safely."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
