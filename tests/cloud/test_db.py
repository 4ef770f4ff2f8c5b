"""Migrations, session time zone, the TimescaleDB path (when installed), settings and the cloud command line."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from valuegate.cli import app as root_app
from valuegate.cloud import db
from valuegate.cloud.settings import ConfigError, load_settings
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.services import PostgresServer

from .conftest import Gateway, contract_yaml, store_direct


def test_migrations_pick_variant_in_order() -> None:
    plain = db.list_migrations(timescaledb=False)
    timescale = db.list_migrations(timescaledb=True)
    assert [m.version for m in plain] == sorted(m.version for m in plain)
    assert [m.version for m in plain] == [m.version for m in timescale]
    rollups = {m.version: m for m in timescale}["0004_rollups"]
    assert rollups.filename == "0004_rollups.timescaledb.sql"
    assert not rollups.transactional
    assert {m.version: m for m in plain}["0004_rollups"].filename == "0004_rollups.plain.sql"


@pytest.mark.postgres
def test_migrate_records_versions_once(database: str) -> None:
    applied = db.migrate(database)
    assert applied[:4] == ["0001_registry", "0002_chain", "0003_timeseries", "0004_rollups"]
    assert db.migrate(database) == []
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT version, variant FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == applied
    assert dict(rows)["0004_rollups"] == "plain"


@pytest.mark.postgres
async def test_pool_sessions_run_in_utc(cloud_dsn: str) -> None:
    pool = await db.open_pool(cloud_dsn, min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            zone = await (await conn.execute("SHOW TimeZone")).fetchone()
            text = await (await conn.execute("SELECT '2026-03-01 08:00:00+08'::timestamptz::text")).fetchone()
    finally:
        await pool.close()
    assert zone == ("UTC",)
    assert text == ("2026-03-01 00:00:00+00",)


@pytest.mark.postgres
def test_timescaledb_path(postgres_server: PostgresServer, cloud_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    if not postgres_server.timescaledb:
        with capsys.disabled():
            print("\nSKIPPED: TimescaleDB extension not installed; hypertables, continuous aggregate and compressed-chunk inserts untested here")
        pytest.skip("TimescaleDB extension not installed; the plain-PostgreSQL path ran instead")
    with psycopg.connect(cloud_dsn, autocommit=True) as conn:
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()}
        assert {"telemetry", "vouchers"} <= hypertables
        assert db.apply_policies(cloud_dsn, compress_after_days=7, telemetry_retention_days=400)
        jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs").fetchall()}
        assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= jobs

    # A late voucher whose chunk is already compressed is stored like any other.
    gateway = Gateway("acme", "plant1", "gw-ts", Ed25519PrivateKey.generate())
    from .conftest import register

    asyncio.run(register(cloud_dsn, "acme", "plant1", "gw-ts", gateway.key))
    first, second = gateway.next_voucher(day=dt.date(2026, 1, 10)), gateway.next_voucher(day=dt.date(2026, 1, 11))
    asyncio.run(store_direct(cloud_dsn, [first], topic_of=gateway))
    with psycopg.connect(cloud_dsn, autocommit=True) as conn:
        conn.execute("SELECT compress_chunk(c, if_not_compressed => TRUE) FROM show_chunks('vouchers') c")
    result = asyncio.run(store_direct(cloud_dsn, [second], topic_of=gateway))
    assert result.stored == ["gw-ts:2"]
    with psycopg.connect(cloud_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM vouchers").fetchone() == (2,)


def test_settings_sources(tmp_path: Any) -> None:
    path = tmp_path / "cloud.yaml"
    path.write_text("port: 9000\nclock_skew_s: 60\n", encoding="utf-8")
    settings = load_settings(path, environ={"VALUEGATE_CLOUD_PORT": "9100", "VALUEGATE_CLOUD_DSN": "postgresql://u:secret@h/db"})
    assert (settings.port, settings.clock_skew_s) == (9100, 60)
    assert "secret" not in repr(settings)
    with pytest.raises(ConfigError, match="clock_skew_s"):
        load_settings(None, environ={"VALUEGATE_CLOUD_CLOCK_SKEW_S": "-5"})
    with pytest.raises(ConfigError, match="VALUEGATE_CLOUD_PORTT"):
        load_settings(None, environ={"VALUEGATE_CLOUD_PORTT": "1"})


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("environ", "file_text", "expected"),
    [
        ({"VALUEGATE_CLOUD_DISPLAY_TIME_ZONE": "Asia/Shangai"}, None,
         "environment variable VALUEGATE_CLOUD_DISPLAY_TIME_ZONE: display_time_zone 'Asia/Shangai' is not an IANA time zone"),
        ({"VALUEGATE_CLOUD_PORT": "abc"}, None, "environment variable VALUEGATE_CLOUD_PORT: Expected `int`, got `str` - at `$.port`"),
        ({}, "port: 70000\n", "cloud.yaml: setting port = 70000 is out of range; allowed 0..65535"),
    ],
    ids=["env-zone", "env-type", "file-range"],
)
def test_settings_error_names_its_source(tmp_path: Any, environ: dict[str, str], file_text: str | None, expected: str) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "cloud.yaml"
        path.write_text(file_text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ)
    assert str(caught.value).replace(str(tmp_path) + "/", "").startswith(expected)


def test_cli_migrate_and_admin(database: str, tmp_path: Any) -> None:
    runner = CliRunner()
    assert "applied" in runner.invoke(root_app, ["cloud", "migrate", "--dsn", database]).output
    key = public_key_multibase(Ed25519PrivateKey.generate().public_key())
    contract = tmp_path / "contract.yaml"
    contract.write_text(contract_yaml(), encoding="utf-8")
    steps = [
        ["tenant-create", "acme", "ACME"],
        ["site-create", "acme", "plant1", "--time-zone", "Asia/Shanghai"],
        ["gateway-create", "acme", "plant1", "gw-a1"],
        ["key-add", "acme", "gw-a1", key, "--valid-from", "2026-01-01T00:00:00+08:00"],
        ["contract-upload", "acme", str(contract)],
        ["user-create", "acme", "finance1", "--role", "finance", "--role", "auditor"],
    ]
    for step in steps:
        result = runner.invoke(root_app, ["cloud", "admin", *step, "--dsn", database])
        assert result.exit_code == 0, (step, result.output)
    token = runner.invoke(root_app, ["cloud", "admin", "token-issue", "acme", "finance1", "--dsn", database]).output.strip()
    assert token.startswith("vgt_")
    duplicate = runner.invoke(root_app, ["cloud", "admin", "tenant-create", "acme", "Again", "--dsn", database])
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    naive = runner.invoke(root_app, ["cloud", "admin", "key-add", "acme", "gw-a1", key, "--valid-from", "2026-01-01T00:00:00", "--dsn", database])
    assert naive.exit_code == 2
    moved = runner.invoke(root_app, ["cloud", "admin", "machine-move", "acme", "filler-01", "gw-a1", "--dsn", database])
    assert moved.exit_code == 0, moved.output
    assert moved.stdout.startswith("machine filler-01 of acme: telemetry from ")
    assert moved.stdout.strip().endswith("accepted from gateway gw-a1 (was none); 0 voucher verdict(s) reopened")
    assert "no gateway has sent telemetry of machine filler-01 yet" in moved.stderr
    unknown = runner.invoke(root_app, ["cloud", "admin", "machine-move", "acme", "filler-01", "gw-zz", "--from", "2026-01-01T00:00:00Z", "--dsn", database])
    assert unknown.exit_code == 1
    assert "gateway 'gw-zz' is not registered" in unknown.output
    naive_move = runner.invoke(root_app, ["cloud", "admin", "machine-move", "acme", "filler-01", "gw-a1", "--from", "2026-01-01T00:00:00", "--dsn", database])
    assert naive_move.exit_code == 2
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT roles FROM users WHERE username = 'finance1'").fetchone() == (["auditor", "finance"],)
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY id").fetchall()]
    assert actions[:6] == ["tenant.create", "site.create", "gateway.create", "key.register", "contract.upload", "user.create"]
