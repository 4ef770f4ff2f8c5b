"""A resent rejected payload keeps one rejection row with a count (real Mosquitto and PostgreSQL, migration included)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.migration_steps import migrate_before
from valuegate.cloud import contracts, db, reports
from valuegate.cloud.app import create_app
from valuegate.cloud.chain import store_rejections
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway, contract_yaml, make_user
from .mqtt_helpers import Probe
from .test_ingest import query

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

TOPIC = "valuegate/v1/acme/plant1/gw-a1/vouchers"


@pytest.fixture
async def worker(cloud_dsn: str, mosquitto: Any) -> AsyncIterator[IngestWorker]:
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="repeats")
    async with IngestWorker(settings) as running:
        yield running


async def wait_for_receipts(dsn: str, total: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ((received,),) = await query(dsn, "SELECT coalesce(sum(received_count), 0) FROM rejections")
        if received >= total:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{received} of {total} receipts stored"
        await asyncio.sleep(0.05)


def rejection_row(payload: bytes, code: str = "future_timestamp", reason: str = "issued in the future") -> tuple[Any, ...]:
    return ("voucher", TOPIC, "acme", "gw-a1", "gw-a1:2", None, code, reason, hashlib.sha256(payload).hexdigest(), len(payload), payload)


async def test_resent_rejection_counted_once(two_tenants: tuple[Gateway, Gateway], worker: IngestWorker, probe: Probe, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn, conn.transaction():
        await contracts.upload_contract(conn, "acme", contract_yaml())
    probe.publish(acme.topic("vouchers"), msgspec.json.encode(acme.next_voucher()))
    # Signed by the gateway's key but issued years ahead: rejected on every resend, and tied to the contract.
    future = msgspec.json.encode(v.build_voucher(acme.claims(2, v.voucher_hash(acme.issued[0]), day=dt.date(2035, 1, 1)), acme.key))
    # The same voucher id under another payload, rejected for the same cause.
    other = msgspec.json.encode(v.build_voucher(acme.claims(2, v.voucher_hash(acme.issued[0]), day=dt.date(2035, 1, 2)), acme.key))
    for _ in range(3):
        probe.publish(acme.topic("vouchers"), future)
        await asyncio.sleep(0.3)
    probe.publish(acme.topic("vouchers"), other)
    await wait_for_receipts(cloud_dsn, 4)

    rows = await query(cloud_dsn, "SELECT payload_sha256, code, received_count, last_received_at > received_at FROM rejections ORDER BY received_count DESC")
    assert rows == [(hashlib.sha256(future).hexdigest(), "future_timestamp", 3, True), (hashlib.sha256(other).hexdigest(), "future_timestamp", 1, False)]
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        value = await reports.contract_value(conn, "acme", "c-2026")
    assert value["rejected"] == 1  # one voucher, however many payloads and receipts

    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True))
    async with AsyncTestClient(app, base_url="https://testserver.local") as client:
        token = await make_user(cloud_dsn, "acme", "ops", ["admin"])
        response = await client.get("/api/v1/rejections", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [(row["voucher_id"], row["received_count"]) for row in listed] == [("gw-a1:2", 1), ("gw-a1:2", 3)]  # latest receipt first
    assert listed[1]["last_received_at"] > listed[1]["received_at"]


async def test_concurrent_repeats_both_stored(cloud_dsn: str) -> None:
    """Two workers storing the same rejection at once: the second waits for the first and adds to its count."""
    payload = b'{"credentialSubject": {"voucher_id": "gw-a1:2"}}'
    async with (
        await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as first,
        await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as second,
    ):
        async with first.transaction():
            await store_rejections(first, [rejection_row(payload)])

            async def store_second() -> None:
                async with second.transaction():
                    await store_rejections(second, [rejection_row(payload), rejection_row(payload)])

            blocked = asyncio.create_task(store_second())
            await asyncio.sleep(0.5)
            assert not blocked.done()  # waiting on the first transaction's row
        await asyncio.wait_for(blocked, timeout=10)
    assert await query(cloud_dsn, "SELECT code, received_count FROM rejections") == [("future_timestamp", 3)]


async def test_other_cause_or_topic_kept_apart(cloud_dsn: str) -> None:
    payload = b'{"credentialSubject": {"voucher_id": "gw-a1:2"}}'
    other_topic = rejection_row(payload)[:1] + (TOPIC.replace("/gw-a1/", "/gw-a2/"),) + rejection_row(payload)[2:]
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn, conn.transaction():
        await store_rejections(conn, [rejection_row(payload), rejection_row(payload, "key_unknown"), other_topic])
    rows = await query(cloud_dsn, "SELECT topic, code, received_count FROM rejections ORDER BY topic, code")
    assert rows == [(TOPIC, "future_timestamp", 1), (TOPIC, "key_unknown", 1), (other_topic[1], "future_timestamp", 1)]


def test_migration_folds_stored_repeats(database: str) -> None:
    """Rows stored before one row per payload and cause are folded into the oldest, with the count, last time and newest reason."""
    migrate_before(database, "0056")
    with psycopg.connect(database, autocommit=True, options=UTC_OPTIONS) as conn:
        insert = (
            "INSERT INTO rejections (received_at, kind, topic, tenant_id, gateway_id, voucher_id, code, reason, payload_sha256, payload_size)"
            " VALUES (%s, 'voucher', %s, 'acme', 'gw-a1', 'gw-a1:2', %s, %s, %s, 10)"
        )
        start = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.UTC)
        for minute in range(5):
            conn.execute(insert, (start + dt.timedelta(minutes=minute), TOPIC, "key_not_valid", f"reason {minute}", "a" * 64))
        conn.execute(insert, (start, TOPIC, "key_unknown", "unknown", "a" * 64))
        conn.execute(insert, (start, TOPIC, "key_not_valid", "other payload", "b" * 64))

    assert db.migrate(database)[0] == "0056_rejection_repeats"
    with psycopg.connect(database, options=UTC_OPTIONS) as conn:
        rows = conn.execute(
            "SELECT code, payload_sha256, received_count, received_at, last_received_at, reason FROM rejections ORDER BY code, payload_sha256"
        ).fetchall()
    assert rows == [
        ("key_not_valid", "a" * 64, 5, start, start + dt.timedelta(minutes=4), "reason 4"),
        ("key_not_valid", "b" * 64, 1, start, start, "other payload"),
        ("key_unknown", "a" * 64, 1, start, start, "unknown"),
    ]
