"""`valuegate cloud` against a database that is down: one-line errors, bounded start-up waits, one warning per outage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from valuegate.cli import app as root_app
from valuegate.cloud.settings import dsn_origin, hide_password
from valuegate.services import free_port

from .conftest import Gateway
from .mqtt_helpers import Probe
from .tcp_proxy import TcpProxy

SECRET = "s3cret-pw"


def closed_dsn() -> str:
    """A DSN with a password on a loopback port where nothing listens."""
    return f"postgresql://valuegate:{SECRET}@127.0.0.1:{free_port()}/valuegate"


def one_error_line(output: str, dsn: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, output
    for noise in ("Traceback", "OperationalError", "PoolTimeout"):
        assert noise not in output, output
    assert SECRET not in output
    assert f"cannot connect to PostgreSQL at {hide_password(dsn)}: " in errors[0]
    return errors[0]


def test_hide_password_in_both_dsn_forms() -> None:
    assert hide_password("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert hide_password("postgresql://u@h/db?password=pw&sslmode=require") == "postgresql://u@h/db?password=***&sslmode=require"
    assert hide_password("host=h password='p w' user=u") == "host=h password=*** user=u"
    assert hide_password("postgresql://u@h/db") == "postgresql://u@h/db"


def test_dsn_origin_names_the_source(tmp_path: Path) -> None:
    settings = tmp_path / "cloud.yaml"
    settings.write_text("dsn: postgresql://a@127.0.0.1/b\n", encoding="utf-8")
    assert dsn_origin(None, environ={}) is None
    assert dsn_origin(None, environ={"VALUEGATE_CLOUD_DSN": "postgresql://x@y/z"}) == "VALUEGATE_CLOUD_DSN"
    assert dsn_origin(settings, environ={}) == f"dsn: in {settings}"
    assert dsn_origin(settings, environ={}, dsn="postgresql://x@y/z") == "--dsn"


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["admin", "tenant-create", "acme", "ACME"],
        ["admin", "token-issue", "acme", "finance1"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_down_server_gives_one_line(args: list[str]) -> None:
    dsn = closed_dsn()
    result = CliRunner().invoke(root_app, ["cloud", *args, "--dsn", dsn], env={"VALUEGATE_CLOUD_DSN": None})
    assert result.exit_code == 1, result.output
    line = one_error_line(result.output, dsn)
    assert "Connection refused" in line
    assert line.endswith("check that the server is running and that the DSN is right (the DSN comes from --dsn)")


def test_dsn_from_environment_and_malformed_dsn() -> None:
    dsn = closed_dsn()
    result = CliRunner().invoke(root_app, ["cloud", "admin", "tenant-create", "acme", "ACME"], env={"VALUEGATE_CLOUD_DSN": dsn})
    assert result.exit_code == 1
    assert one_error_line(result.output, dsn).endswith("(the DSN comes from VALUEGATE_CLOUD_DSN)")

    malformed = CliRunner().invoke(root_app, ["cloud", "migrate", "--dsn", "valuegate-db"])
    assert malformed.exit_code == 1
    assert "write the DSN as postgresql://user@host:port/database or as key=value pairs" in one_error_line(malformed.output, "valuegate-db")


def test_no_dsn_says_the_default_was_used() -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5432)) == 0:
            pytest.skip("something listens on 127.0.0.1:5432, the default DSN's port; this test needs that port closed")
    result = CliRunner().invoke(root_app, ["cloud", "migrate"], env={"VALUEGATE_CLOUD_DSN": None})
    assert result.exit_code == 1
    line = one_error_line(result.output, "postgresql://valuegate@127.0.0.1:5432/valuegate")
    assert line.endswith(
        "no DSN was given, so the default was used; set one with --dsn, the VALUEGATE_CLOUD_DSN environment variable or dsn: in a settings file (--config)"
    )


def _cloud(*args: str, output: Any = subprocess.PIPE, **env: str) -> subprocess.Popen[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("VALUEGATE_CLOUD_")}
    command = [sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", *args]
    errors = subprocess.STDOUT if output is not subprocess.PIPE else subprocess.PIPE
    return subprocess.Popen(command, env={**environment, **env}, stdout=output, stderr=errors, text=True, start_new_session=True)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["ingest"]], ids=lambda c: c[0])
def test_serve_and_ingest_wait_then_stop(command: list[str]) -> None:
    dsn = closed_dsn()
    started = time.monotonic()
    process = _cloud(*command, "--dsn", dsn, VALUEGATE_CLOUD_STARTUP_WAIT_S="1.5", VALUEGATE_CLOUD_MQTT_PORT=str(free_port()))
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    elapsed = time.monotonic() - started
    assert process.returncode == 1, (stdout, stderr)
    # It waited for the server (the retries are logged once), then gave up within a bounded time.
    assert stderr.count("database_waiting") == 1, (stdout, stderr)
    assert 1.5 <= elapsed < 30, elapsed
    one_error_line(stdout + stderr, dsn)
    assert "Application startup failed" not in stdout + stderr


async def _wait_for_workers(process: subprocess.Popen[str], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while "ingest worker(s) running" not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "ingest worker(s) running" in log_path.read_text(), log_path.read_text()


def _stop(process: subprocess.Popen[str], how: signal.Signals) -> None:
    process.send_signal(how)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _proxied(dsn: str, port: int) -> str:
    return make_conninfo(**{**conninfo_to_dict(dsn), "port": str(port)})


@pytest.mark.postgres
@pytest.mark.mosquitto
async def test_ingest_outage_logs_once_and_recovers(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: Any, tmp_path: Path) -> None:
    acme, _ = two_tenants
    probe = Probe(mosquitto.port)
    log_path = tmp_path / "ingest.log"
    with TcpProxy(int(conninfo_to_dict(cloud_dsn)["port"])) as proxy, log_path.open("w") as log_file:
        env = {"VALUEGATE_CLOUD_MQTT_PORT": str(mosquitto.port), "VALUEGATE_CLOUD_SHARE_GROUP": f"outage{uuid.uuid4().hex[:6]}",
               "VALUEGATE_CLOUD_REPRODUCE_INTERVAL_S": "0.3", "VALUEGATE_CLOUD_INGEST_METRICS_PORT": str(free_port())}  # fmt: skip
        process = _cloud("ingest", "--dsn", _proxied(cloud_dsn, proxy.port), output=log_file, **env)
        try:
            await _wait_for_workers(process, log_path)
            probe.publish(acme.topic("vouchers"), acme.next_voucher())
            await probe.wait_for(lambda topic, body: topic == acme.topic("ack") and body["stored_through"] == 1, timeout=30)

            # PostgreSQL goes away: open connections reset, new ones refused, while a voucher arrives.
            proxy.cut()
            await asyncio.sleep(1.5)
            probe.publish(acme.topic("vouchers"), acme.next_voucher())
            await asyncio.sleep(2.5)
            proxy.restore()
            await probe.wait_for(lambda topic, body: topic == acme.topic("ack") and body["stored_through"] == 2, timeout=45)
        finally:
            _stop(process, signal.SIGINT)  # by its PID, as Ctrl-C would
            probe.close()
    output = log_path.read_text()
    assert output.count("database_unavailable") == 1, output
    assert output.count("database_available_again") == 1, output
    assert "retrying with backoff until PostgreSQL is back" in output
    # psycopg_pool's warning per attempt and the tracebacks of failed batches are folded into those two events.
    for noise in ("error connecting in", "discarding", "Traceback", "ingest_batch_failed", "reproduce_failed"):
        assert noise not in output, output
    with psycopg.connect(cloud_dsn) as conn:
        assert [row[0] for row in conn.execute("SELECT voucher_id FROM vouchers ORDER BY seq")] == ["gw-a1:1", "gw-a1:2"]


@pytest.mark.postgres
@pytest.mark.mosquitto
async def test_ingest_logs_rejections_once_and_stops(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: Any, tmp_path: Path) -> None:
    acme, _ = two_tenants
    probe = Probe(mosquitto.port)
    log_path = tmp_path / "ingest.log"
    stranger = acme.topic("vouchers").replace(f"/{acme.gateway}/", "/gw-unknown/")
    with log_path.open("w") as log_file:
        env = {"VALUEGATE_CLOUD_MQTT_PORT": str(mosquitto.port), "VALUEGATE_CLOUD_SHARE_GROUP": f"quiet{uuid.uuid4().hex[:6]}",
               "VALUEGATE_CLOUD_INGEST_METRICS_PORT": "0"}  # fmt: skip
        process = _cloud("ingest", "--dsn", cloud_dsn, output=log_file, **env)
        try:
            await _wait_for_workers(process, log_path)
            probe.publish(acme.topic("vouchers"), acme.next_voucher())
            await probe.wait_for(lambda topic, body: topic == acme.topic("ack") and body["stored_through"] == 1, timeout=30)
            for _ in range(5):
                probe.publish(stranger, acme.next_voucher())
            with psycopg.connect(cloud_dsn) as conn:
                deadline = time.monotonic() + 20
                while conn.execute("SELECT count(*) FROM rejections").fetchone()[0] < 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert conn.execute("SELECT count(*) FROM rejections").fetchone()[0] == 5
        finally:
            _stop(process, signal.SIGTERM)  # as systemd or docker stop does
            probe.close()
    output = log_path.read_text()
    assert process.returncode == 0, output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    rejected = [event for event in events if event["event"] == "ingest_rejected"]
    assert len(rejected) == 1, output  # five rejections stored, one line logged within the minute
    assert rejected[0]["code"] == "topic_mismatch"  # the claims name gw-a1, the topic another gateway
    assert rejected[0]["repeats_not_logged"] == 0
    assert [event for event in events if event["level"] == "debug"] == []
    assert [event["event"] for event in events].count("ingest_stopped") == 1
