"""What only the PostgreSQL store has: migrations, the claim's index plan, connection settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from conveyor.backends import open_backend
from conveyor.cli import main
from conveyor.errors import StoreError

psycopg = pytest.importorskip("psycopg")

from conftest import throwaway_database  # noqa: E402

from conveyor.backends.postgres import PostgresBackend, migrations, queries  # noqa: E402

#: Jobs waiting when the claim's plan is checked ("fast with a million jobs waiting").
CLAIM_PLAN_ROWS = 1_000_000


@pytest.fixture
def empty_database(postgres_url: str) -> Iterator[str]:
    """A database of its own, with no schema: for migration tests."""
    with throwaway_database("conveyor_mig") as url:
        yield url


def test_the_migrate_command_applies_then_reports_up_to_date(empty_database: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["migrate", "--url", empty_database], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert first.output.split() == ["applied", *(name for _, name, _ in migrations())]
    again = runner.invoke(main, ["migrate", "--url", empty_database], catch_exceptions=False)
    assert again.output.strip() == "schema is up to date"
    store = PostgresBackend(empty_database, migrate=False)
    store.setup(migrate=False)  # the schema is current: no StoreError
    assert store.schema_version() == migrations()[-1][0]
    store.close()


def test_migrate_is_idempotent_and_safe_from_many_processes_at_once(empty_database: str) -> None:
    stores = [PostgresBackend(empty_database) for _ in range(6)]
    applied: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def migrate(store: PostgresBackend) -> None:
        barrier.wait()
        try:
            applied.append(store.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    names = [name for _, name, _ in migrations()]
    assert sorted(applied, key=len) == [[]] * (len(stores) - 1) + [names]
    assert stores[0].migrate() == []
    assert stores[0].schema_version() == migrations()[-1][0]
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT version, name FROM conveyor_migrations").fetchall() == [
            (version, name) for version, name, _ in migrations()
        ]
    for store in stores:
        store.close()


def test_without_migrate_an_empty_database_is_refused_with_the_fix(empty_database: str) -> None:
    store = open_backend(empty_database, migrate=False)
    with pytest.raises(StoreError, match="conveyor migrate"):
        store.setup(False)
    store.close()


def test_pool_settings_come_from_the_url_and_are_checked(postgres_url: str) -> None:
    store = PostgresBackend(postgres_url + "?pool_max=3&pool_min=0&pool_timeout=2&connect_timeout=4")
    assert (store.pool_min, store.pool_max, store.pool_timeout) == (0, 3, 2.0)
    assert "pool_" not in store.conninfo and "connect_timeout=4" in store.conninfo
    with pytest.raises(StoreError, match="pool"):
        PostgresBackend(postgres_url + "?pool_max=0")
    with pytest.raises(StoreError, match="pool_max"):
        PostgresBackend(postgres_url + "?pool_max=many")


def test_an_unreachable_server_is_a_clear_store_unavailable() -> None:
    from conveyor.errors import StoreUnavailable

    store = PostgresBackend("postgresql://postgres@127.0.0.1:1/none?pool_timeout=0.5&connect_timeout=1")
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1"):
        store.setup()
    store.close()


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def _assert_claim_plan_is_an_index_probe(explained: Any, limit: int) -> None:
    """An index scan of conveyor_jobs_claim reading at most ~limit rows per queue; no sequential
    scan of conveyor_jobs; a few hundred blocks touched at most."""
    plan = (explained if isinstance(explained, list) else json.loads(explained))[0]["Plan"]
    nodes = list(_plan_nodes(plan))
    scans = [n for n in nodes if n.get("Relation Name") == "conveyor_jobs" and "Scan" in n["Node Type"]]
    assert all(n["Node Type"] != "Seq Scan" for n in scans), json.dumps(plan, indent=1)
    claim_scans = [n for n in scans if n.get("Index Name") == "conveyor_jobs_claim"]
    assert claim_scans, json.dumps(plan, indent=1)
    for scan in claim_scans:  # per queue, at most `limit` rows read off the index
        assert scan["Actual Rows"] * scan["Actual Loops"] <= 2 * limit, json.dumps(scan, indent=1)
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 1000, json.dumps(plan, indent=1)


def test_the_claim_reads_a_few_index_entries_with_a_million_jobs_waiting(postgres_url: str) -> None:
    """EXPLAIN ANALYZE of the real claim statement over a million queued jobs (several queues and
    priorities, a quarter of them not due yet): an index scan of conveyor_jobs_claim that stops
    after `limit` rows, no sequential scan, no sort of the backlog."""
    store = open_backend(postgres_url)
    store.setup()
    store.destroy_all()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no wake-up per bulk row
        conn.execute(
            """
            INSERT INTO conveyor_jobs (id, task, queue, priority, args, kwargs, status, created_at, scheduled_at)
            SELECT 'bulk' || i, 'bulk.task', 'q' || (i %% 3), 1 + (i / 3) %% 4, '[]', '{}', 'queued', 0,
                   CASE WHEN i %% 5 = 0 THEN 2e9 ELSE i END
            FROM generate_series(1, %s) AS i
            """,
            (CLAIM_PLAN_ROWS,),
        )
        conn.execute("RESET session_replication_role")
        conn.execute("ANALYZE conveyor_jobs")
        params = {"queues": ["q1", "q2"], "worker_id": "w", "limit": 10, "now": 1e9, "until": 1e9 + 30}
        with conn.transaction(force_rollback=True):
            row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries()["claim"], params).fetchone()
        assert row is not None
        _assert_claim_plan_is_an_index_probe(row[0], params["limit"])
        # Workers run the claim as a prepared statement with a generic plan (the worker pool's
        # session settings): that plan, made without the parameters' values, must probe too.
        conn.execute(queries()["worker_session"].encode())
        names = ["queues", "worker_id", "limit", "now", "until"]
        positional = queries()["claim"]
        for i, name in enumerate(names, start=1):
            positional = positional.replace(f"%({name})s", f"${i}")
        conn.execute(f"PREPARE conveyor_claim (text[], text, int, float8, float8) AS {positional}".encode())
        with conn.transaction(force_rollback=True):
            explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE conveyor_claim (%s, %s, %s, %s, %s)"
            # EXECUTE inside EXPLAIN takes no bound parameters: interpolate them client-side.
            row = psycopg.ClientCursor(conn).execute(explain, [params[name] for name in names]).fetchone()
        assert row is not None
        _assert_claim_plan_is_an_index_probe(row[0], params["limit"])
        claimed = store.claim(["q1", "q2"], "w", 10, 30.0, 1e9)
        assert len(claimed) == 10 and {j.priority for j in claimed} == {4}
        assert all(j.scheduled_at <= 1e9 for j in claimed)
    store.destroy_all()
    store.close()
