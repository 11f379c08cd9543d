"""A PostgreSQL server of one test's own, which the test may stop and start again.

The shared test server (``SPLITSEARCH_TEST_POSTGRES_URL``) cannot be stopped without breaking
every other test, so a test about outages, restarts or connection counts starts its own: a
fresh cluster made with ``initdb`` in a temporary directory, served by ``pg_ctl`` on a free port
of 127.0.0.1, removed afterwards.  PostgreSQL refuses to run as root, so when the tests run as
root the server runs as the ``postgres`` user (through ``runuser``).  The fixture skips, with
the reason, where ``initdb`` or ``pg_ctl`` is missing.

Use the fixture (``from private_postgres import private_postgres``) or the context manager
:func:`private_server`::

    def test_outage(private_postgres):
        url = private_postgres.create_database("outage")
        ...
        private_postgres.stop()
        private_postgres.start()
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

# The user a root test process runs the server as (PostgreSQL refuses root).
SERVER_USER = "postgres"


@dataclass
class PrivateServer:
    """A running (or stopped) PostgreSQL cluster in ``directory``, listening on ``port`` of 127.0.0.1."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_server_user("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        """Stop the server the way an administrator or a fail-over does: open connections are cut."""
        _as_server_user("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def connections(self, database: str) -> int:
        """How many client connections ``database`` has now (pg_stat_activity; asked from ``postgres``, so
        this query's own connection counts only if ``database`` is ``postgres``)."""
        engine = create_engine(self.url(), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                                          {"name": database}).scalar_one()
        finally:
            engine.dispose()

    def log_tail(self, characters: int = 3000) -> str:
        """The end of the server's log, for an assertion message."""
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


def missing_binaries() -> str | None:
    """Why a private server cannot be made here, or None."""
    missing = [name for name in ("initdb", "pg_ctl") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not on the PATH: the PostgreSQL server binaries are needed"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists(SERVER_USER)):
        return f"running as root needs runuser and a {SERVER_USER!r} user to run the server as"
    return None


@contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A new PostgreSQL cluster, started; stopped and deleted on exit."""
    directory = Path(tempfile.mkdtemp(prefix="splitsearch-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, SERVER_USER, SERVER_USER)
    server = PrivateServer(directory, _free_port())
    try:
        _as_server_user("initdb", "-D", str(server.data), "--auth=trust", "--no-sync", "-U", SERVER_USER)
        server.start()
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A PostgreSQL server of the test's own (see the module's docstring); skipped where it cannot be made."""
    reason = missing_binaries()
    if reason:
        pytest.skip(reason)
    with private_server() as server:
        yield server


def _as_server_user(*command: str) -> None:
    prefix = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:1])} failed ({result.returncode}): {result.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
