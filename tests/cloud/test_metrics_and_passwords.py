"""Prometheus counters of `valuegate cloud ingest` and of the API after a known sequence, and Argon2id password hashes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from valuegate.cloud import auth
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v
from valuegate.services import free_port, wait_for_port

from .conftest import Gateway
from .mqtt_helpers import Probe
from .test_ingest import CASES, encode

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

PASSWORD = "correct-horse-battery"
# Reasons sent below besides the ones of CASES: a voucher on another tenant's topic, and another voucher at a stored sequence.
EXTRA_REASONS = ("topic_mismatch", "fork")


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of a text exposition, keyed by sample name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return samples_of(response.read().decode("utf-8"))


def rejections(samples: dict) -> dict[tuple[str, str], float]:
    found = {}
    for (name, labels), value in samples.items():
        if name == "valuegate_ingest_rejections_total":
            found[(dict(labels)["kind"], dict(labels)["code"])] = value
    return found


def ingest_command(dsn: str, mqtt_port: int, metrics_port: int) -> tuple[list[str], dict[str, str]]:
    """Return the `valuegate cloud ingest` command line and its environment, free of the caller's cloud settings."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("VALUEGATE_CLOUD_")}
    environment |= {"VALUEGATE_CLOUD_MQTT_PORT": str(mqtt_port), "VALUEGATE_CLOUD_SHARE_GROUP": f"metrics{uuid.uuid4().hex[:6]}"}
    command = [sys.executable, "-c", "from valuegate.cli import main; main()", "cloud", "ingest", "--dsn", dsn, "--metrics-port", str(metrics_port)]
    return command, environment


@pytest.fixture
def ingest_process(cloud_dsn: str, mosquitto: Any, tmp_path: Path) -> Iterator[str]:
    """Run `valuegate cloud ingest` with its Prometheus endpoint on a free port; yield the endpoint's URL."""
    port = free_port()
    command, environment = ingest_command(cloud_dsn, mosquitto.port, port)
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, env=environment, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, timeout_s=30, process=process, what="the ingest metrics endpoint")
            deadline = time.monotonic() + 30
            while "ingest worker(s) running" not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "ingest worker(s) running" in log_path.read_text(), log_path.read_text()
            yield f"http://127.0.0.1:{port}/metrics"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


async def test_ingest_counters_after_known_sequence(two_tenants: tuple[Gateway, Gateway], ingest_process: str, mosquitto: Any, cloud_dsn: str) -> None:
    acme, globex = two_tenants
    probe = Probe(mosquitto.port)
    try:
        # Three vouchers of acme stored, then the first one again: a duplicate.
        first, second, third = (acme.next_voucher() for _ in range(3))
        for document in (first, second, third):
            probe.publish(acme.topic("vouchers"), encode(document))
        await probe.wait_for(lambda topic, body: topic == acme.topic("ack") and body["stored_through"] == 3, timeout=30)
        probe.publish(acme.topic("vouchers"), encode(first))

        # One rejection per reason. Globex has stored nothing, so each of its vouchers fails on its own fault only.
        for make in CASES.values():
            probe.publish(globex.topic("vouchers"), make(globex))
        probe.publish(globex.topic("vouchers"), encode(v.build_voucher(acme.claims(4, v.voucher_hash(third)), acme.key)))
        probe.publish(acme.topic("vouchers"), encode(v.build_voucher(acme.claims(1, None, point=7.0), acme.key)))

        expected = {("voucher", code): 1.0 for code in (*CASES, *EXTRA_REASONS)}
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(ingest_process)
            done = samples.get(("valuegate_vouchers_duplicate_total", ())) == 1.0 and sum(rejections(samples).values()) >= len(expected)
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        probe.close()

    assert samples[("valuegate_vouchers_stored_total", ())] == 3.0
    assert samples[("valuegate_vouchers_duplicate_total", ())] == 1.0
    assert rejections(samples) == expected
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        rows = await (await conn.execute("SELECT code, count(*) FROM rejections GROUP BY code")).fetchall()
    assert dict(rows) == {code: 1 for code in (*CASES, *EXTRA_REASONS)}


def test_taken_metrics_port_stops_ingest(cloud_dsn: str, mosquitto: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command, environment = ingest_command(cloud_dsn, mosquitto.port, port)
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "or 0 to turn metrics off" in result.stderr


async def test_api_counts_requests_by_route_and_status(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    app = create_app(CloudSettings(dsn=cloud_dsn))
    health = ("valuegate_http_requests_total", (("method", "GET"), ("route", "/api/v1/health"), ("status", "200")))
    unauthorized = ("valuegate_http_requests_total", (("method", "GET"), ("route", "/api/v1/sites"), ("status", "401")))
    async with AsyncTestClient(app) as client:

        async def counts() -> tuple[float, float]:
            response = await client.get("/metrics")
            assert response.status_code == 200
            samples = samples_of(response.text)
            return samples.get(health, 0.0), samples.get(unauthorized, 0.0)

        # The counters belong to this test process, which other tests share, so the test compares before and after.
        before = await counts()
        for _ in range(2):
            assert (await client.get("/api/v1/health")).status_code == 200
        assert (await client.get("/api/v1/sites")).status_code == 401
        after = await counts()
    assert (after[0] - before[0], after[1] - before[1]) == (2.0, 1.0)


async def test_password_stored_as_argon2id(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        await auth.create_user(conn, "acme", "fin-wang", PASSWORD, ["finance"])
        (stored,) = await (await conn.execute("SELECT password_hash FROM users WHERE username = 'fin-wang'")).fetchone()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    with pytest.raises(VerifyMismatchError):
        PasswordHasher().verify(stored, PASSWORD + "x")

    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=False))
    async with AsyncTestClient(app) as client:
        assert (await client.post("/api/v1/session", json={"username": "fin-wang", "password": PASSWORD + "x"})).status_code == 401
        response = await client.post("/api/v1/session", json={"username": "fin-wang", "password": PASSWORD})
        assert response.status_code == 201, response.text
        assert response.json()["roles"] == ["finance"]
