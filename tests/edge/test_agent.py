"""The whole agent in one process: fake PLC polls in, vouchers out through Mosquitto to the stand-in ingest."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.edge.agent import EdgeAgent, running
from valuegate.edge.config import Machine
from valuegate.edge.protocol.evidence import evidence_digest
from valuegate.services import MosquittoServer

from .helpers import GATEWAY, SITE, TENANT, load
from .standin import AckResponder

pytestmark = pytest.mark.mosquitto

FILLER_MAP = shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml"
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
STEP_MS = 5 * 60_000


class FakeFiller:
    """Yields one poll of the bottling filler's registers per simulated five minutes."""

    def __init__(self, device: str, days: int) -> None:
        self.device = device
        self.days = days
        self.connected = True
        self.stats: dict[str, int] = {}

    async def stream(self) -> AsyncIterator[list[Sample]]:
        since, state, changes, containers = T0, 1, 0, 0
        for step in range(self.days * 288 + 2):
            clock = T0 + step * STEP_MS
            # Stopped for 25 minutes of every second hour, with reason 17, else producing.
            wanted = 2 if (step % 24) in range(12, 17) else 1
            if wanted != state:
                state, since, changes = wanted, clock - 60_000, changes + 1
            if state == 1:
                containers = (containers + 500) % 65536
            values = {"state": state, "reason": 17 if state == 2 else 0, "state_since": since, "clock": clock, "containers": containers, "state_changes": changes}
            yield [Sample(self.device, tag, clock, "gateway", clock, value, value, "good") for tag, value in values.items()]
            await asyncio.sleep(0)
        while True:
            await asyncio.sleep(3600)


def opener(days: int):  # noqa: ANN201
    @contextlib.asynccontextmanager
    async def open_fake(device: SimpleNamespace, _tag_map: object) -> AsyncIterator[FakeFiller]:
        yield FakeFiller(device.id, days)

    return open_fake


def write_contract(folder: Path) -> Path:
    contract = {
        "schema": "valuegate/contract/v1",
        "id": "c-1",
        "tenant": TENANT,
        "customer": "Acme Juice",
        "start": "2026-01-01",
        "end": "2026-12-31",
        "anchors": [
            {
                "id": "oee-filler",
                "scope": ["filler-1"],
                "metric": "oee_points",
                "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-02", "min_days": 2},
                "reporting": {"first_date": "2026-01-03", "last_date": "2026-03-31"},
                "sufficiency": {"min_planned_busy_min": 30, "max_offline_share": 0.2},
                "uncertainty": {"resamples": 200, "block_days": 1, "seed": 5},
            }
        ],
    }
    path = folder / "contract.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(contract), encoding="utf-8")
    return path


async def test_replay_days_to_acked_vouchers(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    contract = write_contract(tmp_path)
    config = load(tmp_path, mosquitto.port, contracts=[str(contract)], metrics={"port": 0})
    keys.create_key(config.state_path / "keys")
    machine = Machine("filler-1", SimpleNamespace(id="filler-dev", tag_map=str(FILLER_MAP)), "UTC")
    cloud = AckResponder(mosquitto.port, tenant=TENANT, site=SITE, gateway=GATEWAY).start()
    try:
        async with EdgeAgent(config, open_device=opener(days=5), machines=[machine]) as agent, running(agent):
            await asyncio.wait_for(agent.drained(), timeout=60)
            assert agent.metrics.value("valuegate_vouchers_issued_total") == 3
            assert agent.metrics.value("valuegate_days_closed_total", machine="filler-1") == 5
            assert agent.metrics.value("valuegate_outbox_depth") == 0
            assert agent.health()["mqtt_connected"]
        vouchers = cloud.vouchers()
        assert [v["credentialSubject"]["period"]["plant_date"] for v in vouchers] == ["2026-01-03", "2026-01-04", "2026-01-05"]
        assert cloud.chain_problems() == []
        assert cloud.rejected == []

        # The ingest's copy of the telemetry reproduces each voucher's evidence root.
        for voucher in vouchers:
            claims = voucher["credentialSubject"]
            day = claims["period"]["plant_date"]
            rows = cloud.db.execute("SELECT body FROM records WHERE machine = 'filler-1' AND minute LIKE ? ORDER BY minute", (f"{day}T%",))
            records = [json.loads(body) for (body,) in rows]
            assert claims["evidence"]["records"] == len(records) == 1440
            assert claims["evidence"]["merkle_root"] == evidence_digest(records)[0]
            assert claims["reporting"]["running_day"] is True
            # 25 of every 120 minutes stopped: availability 95/120.
            assert claims["reporting"]["availability"] == pytest.approx(95 / 120, abs=1e-6)
    finally:
        cloud.stop()


async def test_stop_is_prompt_and_says_offline(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    config = load(tmp_path, mosquitto.port)
    keys.create_key(config.state_path / "keys")
    async with EdgeAgent(config, machines=[]) as agent:
        task = asyncio.create_task(agent.run())
        for _ in range(100):
            if agent.publisher.connected and agent.publisher._current.online:
                break
            await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        agent.stop()
        await asyncio.wait_for(task, timeout=10)
        assert asyncio.get_running_loop().time() - started < 5
    statuses = await _retained_status(mosquitto.port)
    assert statuses["state"] == "offline"
    assert statuses["instance"] == agent.instance


async def _retained_status(port: int) -> dict:
    import paho.mqtt.client as mqtt

    received: list[bytes] = []
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.on_connect = lambda c, *_: c.subscribe(f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/status", 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    return json.loads(received[0])
