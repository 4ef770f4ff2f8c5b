"""Test harness: real Mosquitto and PostgreSQL servers on free loopback ports, stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from valuegate.services import MosquittoServer, PostgresServer, ServiceError, find_postgres_bin, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
CONFORMANCE = Path(__file__).resolve().parent / "conformance"


def _timescaledb_note() -> str:
    try:
        from valuegate.services import _timescaledb_installed

        installed = _timescaledb_installed(find_postgres_bin())
    except ServiceError as exc:
        return f"PostgreSQL: not found ({exc})"
    if installed:
        return "TimescaleDB: extension installed; the hypertable path runs"
    return "TimescaleDB: extension NOT installed; the hypertable path is SKIPPED, the plain-PostgreSQL path runs"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_timescaledb_note()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(_timescaledb_note())


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def mosquitto() -> Iterator[MosquittoServer]:
    """A fresh Mosquitto broker for one test."""
    with MosquittoServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; yields its connection string."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def numba_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NUMBA_CACHE_DIR shared by the agent processes of one test session, so that only the first one compiles the kernels.

    Without it the agent caches under its own state folder, and every test's first start spends seconds compiling.
    """
    return tmp_path_factory.mktemp("numba-cache")


@pytest.fixture(scope="session")
def node_peers() -> Path:
    """The folder of the Node.js peer packages; fails with the set-up command when they are missing."""
    if shutil.which("node") is None:
        pytest.fail("node is not installed; run ./run setup")
    if not (PEERS / "node_modules").is_dir():
        pytest.fail("Node.js peer packages are missing; run ./run setup (npm ci in tests/peers)")
    return PEERS


class NodeProcess:
    """A Node.js script started by a test and stopped by its PID."""

    def __init__(self, script: Path, args: list[str], *, port: int | None = None, cwd: Path = PEERS) -> None:
        env = {**os.environ, "NODE_PATH": str(PEERS / "node_modules")}
        self.process = subprocess.Popen(
            ["node", str(script), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.port = port
        if port is not None:
            try:
                wait_for_port(port, timeout_s=30, process=self.process, what=script.name)  # type: ignore[arg-type]
            except ServiceError:
                self.stop()
                raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
        return output


@pytest.fixture
def start_node(node_peers: Path) -> Iterator[object]:
    """Start Node.js peer scripts; every one still running is stopped by PID after the test."""
    started: list[NodeProcess] = []

    def start(script: str | Path, *args: str, port: int | None = None) -> NodeProcess:
        path = Path(script)
        if not path.is_absolute():
            path = PEERS / path
        process = NodeProcess(path, list(args), port=port)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
