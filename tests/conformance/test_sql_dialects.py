"""Every SQL dialect (conveyor/backends/<dialect>/queries.sql) names the same statements for the
same steps, so a step added to one store is not forgotten in the other: the only exceptions are
statements that say ``-- only in this dialect: <why>`` in their block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.backends import sql_files
from conveyor.outcome import OutcomeKind

BACKENDS = Path(sql_files.__file__).parent
DIALECTS = sorted(path.parent.name for path in BACKENDS.glob("*/queries.sql"))
#: The steps every store runs, by their canonical names (preamble of issue 7).
CANONICAL = {
    "insert", "find_unfinished_by_key", "claim", "start", "next_due", "extend_leases", "extend_worker_leases",
    "progress", "expired", "get", "list_jobs", "counts", "cancel", "requeue", "reset", "acquire_lock",
    "release_lock", "prune_expired", "prune_before", "destroy_all",
    *(f"finish_{kind.value}" for kind in OutcomeKind),
}  # fmt: skip


def shared(dialect: str) -> set[str]:
    return set(sql_files.queries(dialect)) - sql_files.only_in_dialect(dialect)


def test_both_stores_have_a_dialect_directory() -> None:
    assert {"sqlite", "postgres"} <= set(DIALECTS)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_defines_the_same_shared_statement_names(dialect: str) -> None:
    reference = shared(DIALECTS[0])
    mine = shared(dialect)
    assert mine == reference, (
        f"{dialect} vs {DIALECTS[0]}: only in {dialect}: {sorted(mine - reference)};"
        f" only in {DIALECTS[0]}: {sorted(reference - mine)} (add it to both, or mark it"
        " `-- only in this dialect: <why>`)"
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_has_every_canonical_step_and_does_not_exempt_it(dialect: str) -> None:
    assert shared(dialect) >= CANONICAL, f"{dialect} lacks {sorted(CANONICAL - shared(dialect))}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_column_placeholders_are_all_expanded(dialect: str) -> None:
    for name, sql in sql_files.queries(dialect).items():
        assert not re.search(r"\{(job_columns|insert_columns|insert_values)[^}]*\}", sql), f"{dialect}.{name}"
        assert sql.strip(), f"{dialect}.{name} is empty"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_from_one_without_gaps(dialect: str) -> None:
    versions = [version for version, _, _ in sql_files.migrations(dialect)]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) >= 2  # 0002 adds rescues
