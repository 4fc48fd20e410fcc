"""A SQL store's statements and migrations, read from its dialect's ``.sql`` files.

``conveyor/backends/<dialect>/queries.sql`` holds named statements (``-- name: X`` opens block
X; comment lines are dropped; column placeholders are expanded by ``columns.expand``; a block
that says ``-- a fragment:`` is a piece of SQL that other statements include as ``{its_name}``,
written once), and
``<dialect>/migrations/NNNN_what.sql`` the numbered schema migrations. Both are read once.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from . import columns

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_FRAGMENT = "-- a fragment:"
_MIGRATION = re.compile(r"(\d+)_\w+\.sql")

#: Dialects whose driver returns JSON columns decoded unless they are cast to text.
_JSON_AS_TEXT = {"postgres": True, "sqlite": False}


def _dialect_dir(dialect: str) -> Traversable:
    if dialect not in _JSON_AS_TEXT:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    return resources.files(__package__).joinpath(dialect)


@cache
def queries(dialect: str) -> dict[str, str]:
    """The named statements of ``<dialect>/queries.sql``, comment lines dropped, placeholders expanded."""
    text = _dialect_dir(dialect).joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    named: dict[str, str] = {}
    fragments: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named or name in fragments:
            raise ValueError(f"{dialect}/queries.sql: statement {name!r} defined twice")
        sql = _include(fragments, "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ))  # fmt: skip
        (fragments if _FRAGMENT in body else named)[name] = sql
    return {name: columns.expand(sql, json_as_text=_JSON_AS_TEXT[dialect]) for name, sql in named.items()}


def _include(fragments: dict[str, str], sql: str) -> str:
    """``sql`` with each ``{fragment}`` replaced by its text (a fragment may include those defined
    above it in the file)."""
    for fragment, text in fragments.items():
        sql = sql.replace("{" + fragment + "}", text)
    return sql


@cache
def only_in_dialect(dialect: str) -> frozenset[str]:
    """Names of the statements of ``dialect`` that say they exist only there
    (``-- only in this dialect: <why>`` in their block): the others must exist in every dialect."""
    text = _dialect_dir(dialect).joinpath("queries.sql").read_text()
    parts = _NAME.split(text)
    return frozenset(
        name for name, body in zip(parts[1::2], parts[2::2], strict=True) if "-- only in this dialect:" in body
    )


@cache
def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """The schema migrations of ``dialect`` as (version, file name, SQL), oldest first."""
    found = []
    for entry in _dialect_dir(dialect).joinpath("migrations").iterdir():
        match = _MIGRATION.fullmatch(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text()))
    return sorted(found)
