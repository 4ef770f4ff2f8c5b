"""One source per machine id: a second gateway's records of an owned machine are rejected, its vouchers not reproduced, until a move."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db, store
from valuegate.cloud.admin import Admin
from valuegate.cloud.ingest import IngestWorker, _Message
from valuegate.cloud.reproduce import reproduce_claims
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, minute_records, register

pytestmark = [pytest.mark.postgres]

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
async def worker(cloud_dsn: str) -> AsyncIterator[IngestWorker]:
    pool = await db.open_pool(cloud_dsn, min_size=1, max_size=2)
    try:
        yield IngestWorker(CloudSettings(dsn=cloud_dsn), pool=pool)
    finally:
        await pool.close()


@pytest.fixture
def twin(two_tenants: tuple[Gateway, Gateway], cloud_dsn: str) -> Gateway:
    """A second gateway of tenant acme, at the same site, whose tag map also names machine m1."""
    gateway = Gateway("acme", "plant1", "gw-a2", Ed25519PrivateKey.generate())
    asyncio.run(register(cloud_dsn, gateway.tenant, gateway.site, gateway.gateway, gateway.key))
    return gateway


async def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as conn:
        return await (await conn.execute(sql, params)).fetchall()


def telemetry(gateway: Gateway, *parts: tuple[str, int, int]) -> _Message:
    """A telemetry message with, per (machine, first minute offset, count), that many records."""
    records = [record for machine, offset, count in parts for record in minute_records(machine, START + dt.timedelta(minutes=offset), count)]
    return _Message(gateway.topic("telemetry"), gateway.telemetry(records), 0, 0)


async def test_second_gateway_records_rejected_until_moved(
    two_tenants: tuple[Gateway, Gateway], twin: Gateway, worker: IngestWorker, cloud_dsn: str
) -> None:
    acme, _ = two_tenants
    await worker.process([telemetry(acme, ("m1", 0, 10))])
    # Minutes 10..19 of m1 from the twin are refused; its own machine m9 in the same message is stored.
    await worker.process([telemetry(twin, ("m1", 10, 10), ("m9", 0, 5))])

    rows = await query(cloud_dsn, "SELECT machine_id, gateway_id, count(*) FROM telemetry GROUP BY 1, 2 ORDER BY 1")
    assert rows == [("m1", "gw-a1", 10), ("m9", "gw-a2", 5)]
    rejections = await query(cloud_dsn, "SELECT kind, code, gateway_id, reason FROM rejections")
    assert len(rejections) == 1
    kind, code, gateway_id, reason = rejections[0]
    assert (kind, code, gateway_id) == ("telemetry", "machine_owned", "gw-a2")
    assert "machine 'm1' (owned by gateway 'gw-a1') from gateway 'gw-a2' were not stored" in reason
    assert "`valuegate cloud admin machine-move acme MACHINE gw-a2`" in reason
    owners = await query(cloud_dsn, "SELECT machine_id, gateway_id FROM machine_owners ORDER BY 1")
    assert owners == [("m1", "gw-a1"), ("m9", "gw-a2")]

    async with Admin(cloud_dsn, actor="user:ops") as admin:
        moved = await admin.move_machine("acme", "m1", "gw-a2")
        assert moved == {"machine": "m1", "from_gateway": "gw-a1", "to_gateway": "gw-a2"}
        with pytest.raises(store.NotFound, match="gateway 'gw-g1' is not registered under tenant 'acme'"):
            await admin.move_machine("acme", "m1", "gw-g1")  # another tenant's gateway
    audit = await query(cloud_dsn, "SELECT actor, action, object_id, detail FROM audit_log WHERE action = 'machine.move'")
    assert audit == [("user:ops", "machine.move", "m1", moved)]

    # After the move the twin is the source, and the first gateway's new minutes are refused instead.
    await worker.process([telemetry(twin, ("m1", 10, 10)), telemetry(acme, ("m1", 20, 3))])
    rows = await query(cloud_dsn, "SELECT machine_id, gateway_id, count(*) FROM telemetry WHERE machine_id = 'm1' GROUP BY 1, 2 ORDER BY 2")
    assert rows == [("m1", "gw-a1", 10), ("m1", "gw-a2", 10)]
    codes = await query(cloud_dsn, "SELECT gateway_id, code FROM rejections ORDER BY id")
    assert codes == [("gw-a2", "machine_owned"), ("gw-a1", "machine_owned")]


async def test_voucher_of_other_gateway_not_reproduced(two_tenants: tuple[Gateway, Gateway], twin: Gateway, worker: IngestWorker, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    day = dt.date(2026, 3, 1)
    start = dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC)  # plant day 2026-03-01 in Asia/Shanghai
    records = minute_records("m1", start, 30)
    await worker.process([_Message(acme.topic("telemetry"), acme.telemetry(records), 0, 0)])

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=db.UTC_OPTIONS) as conn:
        theirs = await reproduce_claims(conn, twin.claims(1, None, day=day, records=records), start, start + dt.timedelta(days=1))
        own = await reproduce_claims(conn, acme.claims(1, None, day=day, records=records), start, start + dt.timedelta(days=1))
    assert theirs.reproduced is False
    assert theirs.detail == (
        "machine 'm1' is measured by gateway 'gw-a1', not by this voucher's gateway 'gw-a2', so the stored records are not the ones it commits to"
    )
    assert "measured by" not in own.detail
