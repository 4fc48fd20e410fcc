"""schemathesis against the live server's own ``/openapi.json``, with a system token: every
operation is called with data generated from the document (valid and invalid, boundary values,
and chains of calls that follow the document's links), and every answer must be no 5xx, of a
documented status and content type, conforming to its schema; invalid data must be refused with a
4xx, and an operation must refuse a request without the token.

Bounded: a few examples per operation (a few hundred requests in all, well under a minute).
Left out: the event stream (it never ends), and revoking tokens or removing users (the run's own
system token or user would go; tests/web/test_api_accounts.py covers them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from conveyor.accounts import Permission
from conveyor.operations import WorkerInfo

from .conftest import WebServer, serve

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
          "response_schema_conformance", "negative_data_rejection", "ignored_auth", "use_after_free",
          "ensure_resource_availability")  # fmt: skip
EXAMPLES = 4  #: generated examples per operation and phase
#: A system user no generated name will hit (a generated POST /api/users of its name would demote it).
USERS = {"system": (f"st-root-{uuid.uuid4().hex[:12]}", (Permission.SYSTEM,))}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server of its own (the run changes many things), with a row of each kind to find."""
    root = tmp_path_factory.mktemp("schemathesis")
    with serve(f"sqlite:///{root / 'store.db'}", root, users=USERS) as server:
        app, owner = server.app, USERS["system"][0]
        for _ in range(3):
            app.enqueue("add", [1, 2], owner=owner)
        app.enqueue("fail", owner=owner)
        app.run_until_empty()
        record = app.schedule("hourly", app.tasks["add"].s(1, 2), every=3600)
        app.backend.put_schedule(msgspec.structs.replace(record, owner=owner), app.clock())
        app.start_service("ticker", name="ticker-1", every=1.0)
        now = app.clock()
        app.backend.register_worker(WorkerInfo(id="w-1", host="h", pid=1, queues=["default"], concurrency=1,
                                               version="t", started_at=now, last_seen=now), now)  # fmt: skip
        yield server


def test_the_api_conforms_to_its_openapi_document(fuzzed_server: WebServer, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st is not None, "schemathesis is not installed: pip install -e '.[dev]'"
    command = [
        st, "run", f"{fuzzed_server.url}/openapi.json",
        "--header", f"Authorization: Bearer {fuzzed_server.tokens['system']}",
        "--checks", ",".join(CHECKS),
        "--phases", "coverage,fuzzing,stateful",
        "--max-examples", str(EXAMPLES),
        "--seed", "14",
        "--workers", "1",
        "--request-timeout", "10",
        "--exclude-path", "/api/events/stream",
        "--exclude-path", "/api/tokens/{id}",
        "--exclude-path", "/api/users/{name}",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-dir", str(tmp_path),
        "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"schemathesis found problems (exit {done.returncode}):\n{done.stdout[-20000:]}\n{done.stderr}\n"
                    f"--- the server's log ---\n{fuzzed_server.output()[-5000:]}")  # fmt: skip
    assert "passed" in done.stdout
