"""Code and schema versions compared: pending or unknown migrations stop `serve`, `ingest` and `migrate`, and /ready returns the reason (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from valuegate.cli import app as cli_app
from valuegate.cloud import db
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.schema_check import compare
from valuegate.cloud.settings import CloudSettings

pytestmark = pytest.mark.postgres
LATEST = db.list_migrations(timescaledb=False)[-1]


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, ["cloud", *args], env={"VALUEGATE_CLOUD_DSN": None})


def run_process(*args: str) -> tuple[int, str]:
    """Run `valuegate cloud ...` in a process of its own and return its exit status and last error line.

    serve and ingest configure logging for their whole process, so they cannot run inside the test's process.
    """
    environment = {key: value for key, value in os.environ.items() if not key.startswith("VALUEGATE_CLOUD_")}
    done = subprocess.run([sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", *args], env=environment, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return done.returncode, done.stderr.strip().splitlines()[-1]


def execute(dsn: str, sql: str, *params: Any) -> None:
    with psycopg.connect(dsn, autocommit=True, options=UTC_OPTIONS) as conn:
        conn.execute(sql, params)


async def ready(dsn: str) -> tuple[int, dict[str, Any]]:
    async with AsyncTestClient(create_app(CloudSettings(dsn=dsn))) as client:
        response = await client.get("/api/v1/ready")
    return response.status_code, response.json()


def test_compare_names_each_difference() -> None:
    known = db.list_migrations(timescaledb=False)
    done = {m.version: m.checksum for m in known[:-2]} | {known[0].version: "edited", "9999_future": "x"}
    state = compare(done, timescaledb=False)
    assert state.pending == [known[-2].version, known[-1].version]
    assert state.unknown == ["9999_future"]
    assert state.changed == [known[0].filename]
    assert not state.current
    assert compare({m.version: m.checksum for m in known}, timescaledb=False).problem() is None


async def test_migrated_database_ready(cloud_dsn: str) -> None:
    assert await ready(cloud_dsn) == (200, {"status": "ready", "migrations": len(db.list_migrations(timescaledb=False))})


async def test_pending_migration_stops_serve_and_ingest(cloud_dsn: str) -> None:
    # As if the code was upgraded and `cloud migrate` forgotten: the latest migration is not recorded as applied.
    execute(cloud_dsn, "DELETE FROM schema_migrations WHERE version = %s", LATEST.version)
    expected = f"1 database migration(s) pending, {LATEST.version} first; run `valuegate cloud migrate` with the same settings"
    status, body = await ready(cloud_dsn)
    assert (status, body["status"], body["reason"], body["pending"]) == (503, "schema_mismatch", expected, [LATEST.version])

    assert await asyncio.to_thread(run_process, "serve", "--dsn", cloud_dsn, "--port", "0") == (1, f"error: {expected}")
    assert await asyncio.to_thread(run_process, "ingest", "--dsn", cloud_dsn, "--metrics-port", "0") == (1, f"error: {expected}")


async def test_newer_schema_refused(cloud_dsn: str) -> None:
    # As if a newer version migrated the database and this one was started again (a rollback of the code).
    execute(cloud_dsn, "INSERT INTO schema_migrations (version, filename, checksum) VALUES ('9999_future', '9999_future.sql', 'x')")
    expected = ("error: the database holds migration(s) 9999_future that this version of valuegate does not know, so a newer version migrated it; "
                "run that version, or restore a backup taken before that migration")  # fmt: skip
    migrated = await asyncio.to_thread(run_cli, "migrate", "--dsn", cloud_dsn)
    assert (migrated.exit_code, migrated.stderr.strip()) == (1, expected)
    assert await asyncio.to_thread(run_process, "serve", "--dsn", cloud_dsn, "--port", "0") == (1, expected)
    status, body = await ready(cloud_dsn)
    assert (status, body["unknown"]) == (503, ["9999_future"])


async def test_changed_file_warned(cloud_dsn: str) -> None:
    execute(cloud_dsn, "UPDATE schema_migrations SET checksum = 'tampered' WHERE version = %s", LATEST.version)
    migrated = await asyncio.to_thread(run_cli, "migrate", "--dsn", cloud_dsn)
    assert migrated.exit_code == 0, migrated.output
    assert "applied 0 migration(s): none pending" in migrated.stdout
    assert f"warning: migration file(s) {LATEST.filename} differ from the text applied to this database" in migrated.stderr
    assert (await ready(cloud_dsn))[0] == 200  # reported, not refused: the schema itself is complete


def test_version_names_schema_and_code() -> None:
    """Two builds with one version number still tell apart by the latest migration and the code's folder."""
    from pathlib import Path

    import valuegate
    import valuegate.edge

    printed = CliRunner().invoke(cli_app, ["--version"]).stdout.strip()
    folder = Path(valuegate.edge.__file__).resolve().parent.parent  # the checkout, or site-packages/valuegate for a wheel
    assert printed == f"valuegate {valuegate.__version__} (schema {LATEST.version}; code in {folder})"
