"""The PostgreSQL store's SQL, read from the package's ``.sql`` files: named statements and migrations."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _sql_dir() -> Any:
    return resources.files(__package__).joinpath("sql", "postgres")


@cache
def queries() -> dict[str, str]:
    """The named statements of ``queries.sql``, read once: ``-- name: X`` opens block X."""
    text = _sql_dir().joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    return {
        name: "\n".join(line for line in body.strip().splitlines() if not line.startswith("--"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


@cache
def migrations() -> list[tuple[int, str, str]]:
    """The schema migrations as (version, file name, SQL), oldest first: ``NNNN_what.sql``."""
    found = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d+)_\w+\.sql", entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text()))
    return sorted(found)
