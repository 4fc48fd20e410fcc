"""A PostgreSQL server of a test's own: initdb into a temporary directory, run on a free port,
stopped, restarted or killed at will, removed afterwards. Tests that take the server away (an
outage, a crash) use one of these, so the machine's shared server is never disturbed.

The binaries come from ``$CONVEYOR_TEST_PG_BIN`` or the newest ``/usr/lib/postgresql/*/bin``
(``pg_ctl`` on PATH as a last resort). PostgreSQL refuses to run as root: as root the server runs
as the ``postgres`` OS user (through ``runuser``), with its data directory owned by that user.

    with postgres_instance() as server:   # skips the test if no PostgreSQL binaries exist
        url = server.url                   # postgresql://postgres@127.0.0.1:<port>/postgres
        server.restart()                   # or stop() / start() / stop("immediate"), a crash
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

#: The OS user the server runs as when the tests run as root.
SERVER_USER = "postgres"


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: $CONVEYOR_TEST_PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    given = os.environ.get("CONVEYOR_TEST_PG_BIN")
    if given:
        return Path(given)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for candidate in versions:
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def free_port() -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class PostgresInstance:
    """One server: its data directory, port and log. ``url`` reaches its ``postgres`` database
    as superuser ``postgres`` with trust authentication (local connections only)."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_server_user = os.geteuid() == 0

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        """Create the cluster, listening on 127.0.0.1:port only, its socket in its own directory."""
        if self._as_server_user:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "100",
            "logging_collector": "off",
        }
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# conveyor tests\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean), ``immediate`` (a crash: recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again: every connection is cut."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-m", mode, "-w", "-t", "60", "restart")

    def running(self) -> bool:
        """True while the server's postmaster runs."""
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, cwd=self.root, capture_output=True, timeout=30).returncode == 0

    def log(self) -> str:
        """The server's log so far (for a failing test's message)."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@contextlib.contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    """A fresh server, started; stopped and deleted afterwards. Skips the test when there are no
    PostgreSQL binaries (or, as root, no ``postgres`` OS user to run them as)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): set CONVEYOR_TEST_PG_BIN")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no {SERVER_USER!r} OS user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    server = PostgresInstance(bin_dir, root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            if server.running():
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
