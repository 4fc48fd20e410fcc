"""What only the PostgreSQL store has: migrations (an upgrade from schema 1 among them), the
claim's index plan, connection settings, its insert statements' parameters."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from click.testing import CliRunner

from conveyor.backends import open_backend
from conveyor.cli import main
from conveyor.errors import StoreError

psycopg = pytest.importorskip("psycopg")

from conftest import throwaway_database  # noqa: E402

from conveyor.backends.base import Outcome, OutcomeKind  # noqa: E402
from conveyor.backends.columns import INSERT_COLUMNS  # noqa: E402
from conveyor.backends.postgres import PostgresBackend, migrations, queries  # noqa: E402
from conveyor.job import Status  # noqa: E402

from .jobdata import new  # noqa: E402
from .threads import at_once  # noqa: E402

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
    # the last line is the answer (the CLI may print a header naming the store first)
    assert first.output.strip().splitlines()[-1] == "applied " + ", ".join(name for _, name, _ in migrations())
    again = runner.invoke(main, ["migrate", "--url", empty_database], catch_exceptions=False)
    assert again.output.strip().splitlines()[-1] == "schema is up to date"
    store = PostgresBackend(empty_database, migrate=False)
    store.setup(migrate=False)  # the schema is current: no StoreError
    assert store.schema_version() == migrations()[-1][0]
    store.close()


def test_migrate_is_idempotent_and_safe_from_many_processes_at_once(empty_database: str) -> None:
    stores = [PostgresBackend(empty_database) for _ in range(6)]
    applied: list[list[str]] = []

    def migrate(store: PostgresBackend) -> None:
        applied.append(store.migrate())

    assert at_once([partial(migrate, s) for s in stores]) == []
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


def _apply_schema_1(url: str) -> None:
    """What the previous release's ``conveyor migrate`` left: migration 0001 and its record."""
    version, name, sql = migrations()[0]
    assert version == 1
    q = queries()
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(q["create_migrations_table"])
        conn.execute(sql.encode())
        conn.execute(q["record_migration"], {"version": version, "name": name})


def test_a_schema_1_database_upgrades_in_place_and_keeps_its_jobs(empty_database: str) -> None:
    _apply_schema_1(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        # Jobs as the previous release wrote them: one waiting, one running, one finished.
        conn.execute(
            """
            INSERT INTO conveyor_jobs (id, task, queue, priority, args, kwargs, status, created_at, scheduled_at,
                                       attempts, token, worker_id, lease_expires_at, result, key)
            VALUES ('waiting', 't', 'q', 2, '[1, "two"]', '{"x": 3}', 'queued', 10, 10, 0, NULL, NULL, NULL, NULL,
                    'k1'),
                   ('running', 't', 'q', 2, '[]', '{}', 'running', 10, 10, 1, 'tok', 'w0', 40, NULL, NULL),
                   ('done', 't', 'q', 2, '[]', '{}', 'succeeded', 10, 10, 1, NULL, 'w0', NULL, '{"r": [1.5]}', NULL)
            """
        )
    store = PostgresBackend(empty_database, migrate=False)
    with pytest.raises(StoreError, match="conveyor migrate"):
        store.setup(migrate=False)  # schema 1 is not current: refused with the fix
    assert store.setup() == [name for version, name, _ in migrations() if version > 1]
    assert store.schema_version() == migrations()[-1][0]

    waiting, running, done = (store.get(job_id) for job_id in ("waiting", "running", "done"))
    assert waiting is not None and running is not None and done is not None
    assert (waiting.status, waiting.args, waiting.kwargs, waiting.key, waiting.rescues) == (
        Status.QUEUED, [1, "two"], {"x": 3}, "k1", 0,
    )  # fmt: skip
    assert (running.status, running.token, running.worker_id, running.rescues) == (Status.RUNNING, "tok", "w0", 0)
    assert (done.status, done.result) == (Status.SUCCEEDED, {"r": [1.5]})
    # The upgraded schema does what schema 2 adds: rescues are counted, locks taken.
    assert [job.id for job in store.expired(now=50, abort_margin=5, limit=10)] == ["running"]
    assert store.finish("running", "tok", Outcome(kind=OutcomeKind.RESCUED, lease_before=50), now=50)
    rescued = store.get("running")
    assert rescued is not None and (rescued.status, rescued.rescues, rescued.retries) == (Status.QUEUED, 1, 0)
    assert store.acquire_lock("leader", "w1", ttl=10, now=50)
    assert not store.acquire_lock("leader", "w2", ttl=10, now=55)
    store.close()


def test_the_insert_statements_write_every_insert_column() -> None:
    """``insert`` takes one named parameter per insert column ({insert_params}) and ``insert_copy``
    streams insert_row's values (after the seq and batch row reserve_ids gave): every column of the
    registry appears in both, in its order. (``insert`` also takes its event's kind and data, and
    whether it wakes event readers.)"""
    names = [column.name for column in INSERT_COLUMNS]
    assert set(re.findall(r"%\((\w+)\)s", queries()["insert"])) == {*names, "event_kind", "event_data", "wake"}
    copied = re.search(r"COPY conveyor_jobs \((.*)\) FROM STDIN", queries()["insert_copy"])
    assert copied is not None and [c.strip() for c in copied[1].split(",")] == ["seq", "event_rows", *names]


def test_a_bulk_enqueue_notifies_once_per_statement_and_queue_at_commit(postgres_url: str) -> None:
    """A batch is one COPY: the insert trigger runs once for it (not per row), and a listener
    hears one notification per queue of the batch, only once the caller's transaction commits."""
    store = PostgresBackend(postgres_url)
    store.setup()
    store.destroy_all()
    listener = psycopg.connect(postgres_url, autocommit=True)
    listener.execute("LISTEN conveyor_jobs")
    jobs = [new(f"n{i}", queue=("a", "b")[i % 2], due=1.0) for i in range(500)]
    with psycopg.connect(postgres_url) as conn:
        conn.execute("SET track_functions = 'all'")
        store.enqueue(jobs, now=1.0, connection=conn)
        calls = dict(
            conn.execute(
                "SELECT funcname, calls FROM pg_stat_xact_user_functions WHERE funcname LIKE 'conveyor_notify%%'"
            ).fetchall()
        )
        assert calls == {"conveyor_notify_inserted": 1}  # once for the statement; no per-row trigger ran
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # nothing before the commit
        conn.commit()
    heard = sorted(n.payload for n in listener.notifies(timeout=5, stop_after=2))
    assert heard == ["a", "b"]
    listener.close()
    claimed = store.claim(["a", "b"], "w", 1000, lease=30, now=2.0)
    assert [job.id for job in claimed] == [job.id for job in jobs]  # in the batch's order
    store.close()


def test_a_bulk_enqueue_inside_the_callers_pipeline_is_written_without_copy(postgres_url: str) -> None:
    """COPY cannot run in pipeline mode: a batch enqueued on a caller's connection inside its
    ``pipeline()`` block goes as pipelined inserts instead, and commits with the caller."""
    store = PostgresBackend(postgres_url)
    store.setup()
    store.destroy_all()
    jobs = [new(f"p{i}", due=1.0) for i in range(3)]
    with psycopg.connect(postgres_url) as conn:
        with conn.pipeline():
            store.enqueue(jobs, now=1.0, connection=conn)
        assert store.get("p0") is None  # not before the caller commits
        conn.commit()
    assert [job.id for job in store.claim(["q"], "w", 10, lease=30, now=2.0)] == ["p0", "p1", "p2"]
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
        params = {"queues": ["q1", "q2"], "worker_id": "w", "limit": 10, "now": 1e9, "until": 1e9 + 30,
                  "event_kind": "started", "event_data": "{}", "wake": False}  # fmt: skip
        with conn.transaction(force_rollback=True):
            row = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries()["claim"], params).fetchone()
        assert row is not None
        _assert_claim_plan_is_an_index_probe(row[0], params["limit"])
        # Workers run the claim as a prepared statement with a generic plan (the worker pool's
        # session settings): that plan, made without the parameters' values, must probe too.
        conn.execute(queries()["worker_session"].encode())
        names = ["queues", "worker_id", "limit", "now", "until", "event_kind", "event_data", "wake"]
        positional = queries()["claim"]
        for i, name in enumerate(names, start=1):
            positional = positional.replace(f"%({name})s", f"${i}")
        types = "text[], text, int, float8, float8, text, text, boolean"
        conn.execute(f"PREPARE conveyor_claim ({types}) AS {positional}".encode())
        with conn.transaction(force_rollback=True):
            placeholders = ", ".join(["%s"] * len(names))
            explain = f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE conveyor_claim ({placeholders})"
            # EXECUTE inside EXPLAIN takes no bound parameters: interpolate them client-side.
            row = psycopg.ClientCursor(conn).execute(explain, [params[name] for name in names]).fetchone()
        assert row is not None
        _assert_claim_plan_is_an_index_probe(row[0], params["limit"])
        claimed = store.claim(["q1", "q2"], "w", 10, 30.0, 1e9)
        assert len(claimed) == 10 and {j.priority for j in claimed} == {4}
        assert all(j.scheduled_at <= 1e9 for j in claimed)
    store.destroy_all()
    store.close()
