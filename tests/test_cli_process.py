"""The ``conveyor`` command as a user runs it: a real process (``python -m conveyor``), a real
terminal width, a real worker with JSON logs, and a real PostgreSQL server refusing a wrong URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import POSTGRES_ADMIN_URL, with_database

from conveyor import App, Status


def conveyor(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor ARGS`` in ``cwd``; no $CONVEYOR_URL/$CONVEYOR_APP unless given."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    return subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=cwd, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_jobs_never_cuts_an_id_at_80_columns(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'conveyor.db'}")
    ids = [app.enqueue("reports.monthly_revenue_by_region_and_currency", queue="reports-eu-west").id for _ in range(3)]
    ids.append(app.enqueue("t", id="a-caller-chosen-id-that-is-rather-long-0123456789").id)
    result = conveyor("jobs", env={"COLUMNS": "80"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    for job_id in ids:
        assert job_id in result.stdout, result.stdout
    assert "…" not in result.stdout


def test_a_bad_app_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text("from conveyor import App\napp = App()\n")
    for path, said in (("shop:ap", "module shop has no attribute ap"), ("nowhere_xyz:app", "cannot import")):
        result = conveyor("worker", path, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()] and said in result.stderr


@pytest.mark.parametrize("processes", ["0", "2"])
def test_worker_logs_json_lines_with_the_store_the_tasks_and_each_outcome(tmp_path: Path, processes: str) -> None:
    (tmp_path / "shop.py").write_text(
        textwrap.dedent("""
        from conveyor import App

        app = App("sqlite:///in_code.db")

        @app.task(name="shop.add")
        def add(a, b):
            return a + b
    """)
    )
    store = tmp_path / "flag.db"
    job_id = App(f"sqlite:///{store}").enqueue("shop.add", [2, 3]).id
    clean = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "CONVEYOR_APP")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "shop", "--url", "sqlite:///flag.db", "--log-format", "json",
         "--poll", "0.1", "-p", processes],
        cwd=tmp_path, env=clean, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while App(f"sqlite:///{store}").job(job_id).status is not Status.SUCCEEDED:
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not run the job"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    said = " | ".join(r["message"] for r in records)
    assert f"store sqlite:///{store} (from --url); tasks: shop.add" in said
    warning = next(r for r in records if r["level"] == "WARNING" and "in_code.db" in r["message"])
    assert "flag.db" in warning["message"]  # --url overrides a different URL given in code: said aloud
    outcome = next(r for r in records if r.get("job_id") == job_id)
    assert (outcome["logger"], outcome["level"], outcome["task"]) == ("conveyor.jobs", "INFO", "shop.add")
    assert isinstance(outcome["duration"], float)


@pytest.fixture(scope="module")
def postgres_server() -> str:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL NOT TESTED: {exc}")
    return POSTGRES_ADMIN_URL


@pytest.mark.parametrize("command", [["jobs"], ["enqueue", "t.x"], ["worker", "shop"]])
def test_a_wrong_database_name_fails_at_once_with_the_servers_message(
    postgres_server: str, tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "shop.py").write_text("from conveyor import App\napp = App()\n")
    name = f"no_such_db_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = conveyor(*command, "--url", with_database(postgres_server, name), cwd=tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert f'database "{name}" does not exist' in result.stderr
    assert "unreachable" not in result.stderr and "Traceback" not in result.stderr
    assert took < 5, f"took {took:.1f} s: retried as if the server were away"  # a sanity bound, not a benchmark


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda url: url.replace("postgres@", "no_such_role_xyz@"), 'role "no_such_role_xyz" does not exist'),
        (lambda url: url + "?sslmode=sometimes", 'invalid sslmode value: "sometimes"'),
        (lambda url: url + "?bogus_param=1", 'invalid URI query parameter: "bogus_param"'),
    ],
)
def test_wrong_credentials_or_parameters_fail_at_once(postgres_server: str, tmp_path: Path, change, said) -> None:
    result = conveyor("stats", "--url", change(postgres_server), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert said in result.stderr and "unreachable" not in result.stderr


def test_an_outage_is_still_an_outage(tmp_path: Path) -> None:
    """No server listening: not a permanent error (a worker retries it); the message says unreachable."""
    from conveyor.backends.postgres.connections import connect_failure
    from conveyor.backends.postgres.errors import is_permanent

    pytest.importorskip("psycopg")
    failure = connect_failure("postgresql://postgres@127.0.0.1:1/test", timeout=1)
    assert failure is not None and not is_permanent(failure)


def test_short_ids_and_json_on_postgresql(postgres_server: str, tmp_path: Path) -> None:
    from conftest import throwaway_database

    with throwaway_database("conveyor_cli") as url:
        app = App(url)
        for job_id in ("pg-aaa1", "pg-aaa2", "pg-bbb3"):
            app.enqueue("t.x", id=job_id)
        app.close()
        shown = conveyor("job", "pg-b", "--json", "--url", url, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["id"] == "pg-bbb3"
        ambiguous = conveyor("cancel", "pg-a", "--url", url, cwd=tmp_path)
        assert ambiguous.returncode == 1 and "id prefix 'pg-a' is ambiguous" in ambiguous.stderr
        listed = json.loads(conveyor("jobs", "--json", "--url", url, cwd=tmp_path).stdout)
        assert [job["id"] for job in listed] == ["pg-bbb3", "pg-aaa2", "pg-aaa1"]
