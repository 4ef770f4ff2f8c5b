"""Ingest worker across a restart of a real Mosquitto: it connects again by itself and stores what follows once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import psycopg
import pytest
import structlog
from prometheus_client import REGISTRY

from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker, _Message
from valuegate.cloud.settings import CloudSettings
from valuegate.services import MosquittoServer

from .conftest import Gateway
from .mqtt_helpers import Probe

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]


async def stored_seqs(dsn: str, gateway: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        rows = await (await conn.execute("SELECT seq FROM vouchers WHERE gateway_id = %s ORDER BY seq", (gateway,))).fetchall()
    return [seq for (seq,) in rows]


async def wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def acked(gateway: Gateway, through: int) -> Any:
    # An ack may also carry a rejection notice; the position is what these tests follow.
    return lambda topic, body: topic == gateway.topic("ack") and (body["schema"], body["stored_through"]) == ("valuegate/ack/v1", through)


async def test_worker_reconnects_after_broker_restart(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    acme, _ = two_tenants
    duplicates_before = REGISTRY.get_sample_value("valuegate_vouchers_duplicate_total") or 0.0
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="restart")
    with structlog.testing.capture_logs() as logged:
        async with IngestWorker(settings) as worker:
            probe = Probe(mosquitto.port)
            try:
                for _ in range(3):
                    probe.publish(acme.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
                await probe.wait_for(acked(acme, 3))
            finally:
                probe.close()
            assert worker.connections == 1

            # The broker drops every session and subscription, so the worker must subscribe again on its own.
            await asyncio.to_thread(mosquitto.restart)
            assert await wait_until(lambda: worker.connections == 2, 15), [entry["event"] for entry in logged]

            probe = Probe(mosquitto.port)
            try:
                for _ in range(3):
                    probe.publish(acme.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
                await probe.wait_for(acked(acme, 6))
            finally:
                probe.close()

    assert await stored_seqs(cloud_dsn, acme.gateway) == [1, 2, 3, 4, 5, 6]
    duplicates = (REGISTRY.get_sample_value("valuegate_vouchers_duplicate_total") or 0.0) - duplicates_before
    assert duplicates == 0

    events = [entry for entry in logged if entry["event"] in ("mqtt_connected", "mqtt_disconnected")]
    assert [entry["event"] for entry in events][:3] == ["mqtt_connected", "mqtt_disconnected", "mqtt_connected"]
    assert [entry["connections"] for entry in events if entry["event"] == "mqtt_connected"] == [1, 2]


async def test_ack_held_while_disconnected_sent_after(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    """A batch stored while the worker has no connection gets its ack once the worker is connected again, with no new message."""
    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="held", reproduce_interval_s=0.2)
    async with IngestWorker(settings) as worker:
        probe = Probe(mosquitto.port)
        try:
            await worker._link.close()  # as a lost connection: the worker connects again by itself
            assert not worker._connected.is_set()
            topic = acme.topic("vouchers")
            await worker.process([_Message(topic, msgspec.json.encode(acme.next_voucher()), 0, 0)])
            await worker.process([_Message(topic, msgspec.json.encode(acme.next_voucher()), 0, 0)])
            await probe.wait_for(acked(acme, 2), timeout=15)
            assert worker.connections == 2
            assert [body["stored_through"] for topic, body in probe.received if topic == acme.topic("ack")] == [2]
        finally:
            probe.close()


async def test_cancel_as_message_arrives_stops_worker_loop() -> None:
    """A stop that lands in the same loop pass as a new message must end the worker's loop, not be dropped."""
    worker = IngestWorker(CloudSettings(dsn="postgresql://unused@127.0.0.1:1/unused", reproduce_interval_s=2))
    rounds = 0

    async def run() -> None:  # the shape of IngestWorker._run without the database work
        nonlocal rounds
        while True:
            await worker._next_batch()
            rounds += 1

    for _ in range(5):
        task = asyncio.create_task(run())
        await asyncio.sleep(0.05)
        worker._wake.set()  # a message arrives ...
        task.cancel()  # ... as the stop's cancel does
        done, _ = await asyncio.wait({task}, timeout=3)
        assert done == {task}, f"the loop ran on after cancel(); rounds={rounds}"
        assert task.cancelled()


async def test_baseline_records_requested_once_per_wait(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str, mosquitto: MosquittoServer) -> None:
    """A baseline period that a voucher waits for is asked of its gateway as a records request, at most once per records_wait_s."""
    import datetime as dt

    from valuegate.cloud.reproduce import BaselineSpan

    acme, _ = two_tenants
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="baseline", records_wait_s=60)
    # 45 days go out in two parts: the edge accepts at most 62 days per request, and the ingest splits at 31.
    span = BaselineSpan("acme", acme.gateway, ("m1", "m2"), dt.datetime(2025, 12, 31, 16, tzinfo=dt.UTC), dt.datetime(2026, 2, 14, 16, tzinfo=dt.UTC))
    async with IngestWorker(settings) as worker:
        probe = Probe(mosquitto.port)
        try:
            worker._requests.baselines(worker._client, [(acme.site, span)])
            worker._requests.baselines(worker._client, [(acme.site, span)])  # within records_wait_s: not sent again
            await probe.wait_for(lambda topic, body: topic == acme.topic("resend") and body["end"] == "2026-02-14T16:00:00Z")
            await asyncio.sleep(0.5)
        finally:
            probe.close()
    requests = [body for topic, body in probe.received if topic == acme.topic("resend")]
    assert requests == [
        {"schema": "valuegate/records-request/v1", "machines": ["m1", "m2"], "start": "2025-12-31T16:00:00Z", "end": "2026-01-31T16:00:00Z"},
        {"schema": "valuegate/records-request/v1", "machines": ["m1", "m2"], "start": "2026-01-31T16:00:00Z", "end": "2026-02-14T16:00:00Z"},
    ]
