"""The ingest's rejection log and reasons: one line per process for a repeat, named worker, unknown keys shown alike."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.verify import key_text
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.telemetry_proof import sign_telemetry

from .conftest import Gateway, minute_records
from .mqtt_helpers import Probe
from .test_cli_errors import _cloud, _stop, _wait_for_workers
from .test_ingest import wait_for_rows

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]


@pytest.fixture
async def worker(cloud_dsn: str, mosquitto: Any) -> AsyncIterator[IngestWorker]:
    async with IngestWorker(CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="keytext")) as running:
        yield running


async def test_workers_share_rejection_log(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: Any, tmp_path: Path) -> None:
    """With two workers, the broker hands the rejected vouchers to both, and the process still logs one line."""
    acme, _ = two_tenants
    probe = Probe(mosquitto.port)
    log_path = tmp_path / "ingest.log"
    stranger = acme.topic("vouchers").replace(f"/{acme.gateway}/", "/gw-unknown/")
    with log_path.open("w") as log_file:
        env = {"VALUEGATE_CLOUD_MQTT_PORT": str(mosquitto.port), "VALUEGATE_CLOUD_SHARE_GROUP": f"shared{uuid.uuid4().hex[:6]}",
               "VALUEGATE_CLOUD_INGEST_METRICS_PORT": "0"}  # fmt: skip
        process = _cloud("ingest", "--dsn", cloud_dsn, "--workers", "2", output=log_file, **env)
        try:
            await _wait_for_workers(process, log_path)
            for _ in range(8):
                probe.publish(stranger, msgspec.json.encode(acme.next_voucher()))
            rows = await wait_for_rows(cloud_dsn, "SELECT 1 FROM rejections", count=8, timeout=20)
            assert len(rows) == 8
        finally:
            _stop(process, signal.SIGTERM)
            probe.close()
    output = log_path.read_text()
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    stopped = {event["worker"]: event["processed"] for event in events if event["event"] == "ingest_stopped"}
    assert len(stopped) == 2, output
    assert all(processed > 0 for processed in stopped.values()), output  # both workers received some of the vouchers
    rejected = [event for event in events if event["event"] == "ingest_rejected"]
    assert len(rejected) == 1, output
    assert rejected[0]["worker"] in stopped
    assert rejected[0]["code"] == "topic_mismatch"


async def test_unknown_key_shown_alike(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, cloud_dsn: str, mosquitto: Any) -> None:
    acme, _ = two_tenants
    stranger = Ed25519PrivateKey.generate()
    multibase = public_key_multibase(stranger.public_key())
    probe = Probe(mosquitto.port)
    try:
        probe.publish(acme.topic("vouchers"), msgspec.json.encode(v.build_voucher(acme.claims(1, None), stranger)))
        payload = acme.telemetry(minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 2))
        probe.publish(acme.topic("telemetry"), payload, sign_telemetry(stranger, acme.topic("telemetry"), payload))
        rows = await wait_for_rows(cloud_dsn, "SELECT kind, code, reason FROM rejections ORDER BY kind", count=2)
    finally:
        probe.close()
    assert [(kind, code) for kind, code, _ in rows] == [("telemetry", "key_unknown"), ("voucher", "key_unknown")]
    for kind, _, reason in rows:
        assert f"signed by key {multibase}, which is not registered for gateway 'gw-a1'; if it is the gateway's own key, register it with `valuegate cloud admin key-add -c cloud.yaml" in reason, (kind, reason)


def test_key_text_cuts_only_oversized_values() -> None:
    assert key_text("z6Mk" + "a" * 44) == "z6Mk" + "a" * 44
    assert key_text("z" * 5000) == "z" * 16 + "... (5000 characters)"
