"""One source per machine id: a second gateway's records of an owned machine are rejected, its vouchers not reproduced, until a move."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db, store
from valuegate.cloud.admin import Admin
from valuegate.cloud.ingest import IngestWorker, _Message
from valuegate.cloud.reproduce import reproduce_claims
from valuegate.edge.protocol.telemetry_proof import signature_of

from .conftest import Gateway, minute_records, register, store_direct
from .test_ingest_batch import worker  # noqa: F401 - the worker without a broker, as a fixture

pytestmark = [pytest.mark.postgres]

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


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
    payload = gateway.telemetry(records)
    return _Message(gateway.topic("telemetry"), payload, 0, 0, signature=signature_of(gateway.telemetry_properties(payload)))


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
    assert reason.startswith("records of machine 'm1' from gateway 'gw-a2' were not stored, because gateway 'gw-a1' is its source at their minutes")
    assert reason.endswith("`valuegate cloud admin machine-move acme m1 gw-a2 --from <first minute>`")
    owners = await query(cloud_dsn, "SELECT machine_id, gateway_id FROM machine_owners ORDER BY 1")
    assert owners == [("m1", "gw-a1"), ("m9", "gw-a2")]

    # The twin takes m1 over from minute 30 on: minutes 10..19 still belong to gw-a1, so the twin's copies stay refused.
    switch = START + dt.timedelta(minutes=30)
    async with Admin(cloud_dsn, actor="user:ops") as admin:
        moved = await admin.move_machine("acme", "m1", "gw-a2", since=switch)
        with pytest.raises(store.NotFound, match="gateway 'gw-g1' belongs to another tenant, not to 'acme'"):
            await admin.move_machine("acme", "m1", "gw-g1")
        with pytest.raises(store.NotFound, match="gateway 'gw-zz' is not registered"):
            await admin.move_machine("acme", "m1", "gw-zz")
    assert (moved["from_gateway"], moved["to_gateway"], moved["since"], moved["known"]) == ("gw-a1", "gw-a2", switch.isoformat(), True)
    audit = await query(cloud_dsn, "SELECT actor, action, object_id, detail ->> 'to_gateway' FROM audit_log WHERE action = 'machine.move'")
    assert audit == [("user:ops", "machine.move", "m1", "gw-a2")]

    # The old box's backlog (minutes 20..29, before the switch) is stored, and its minutes after the switch are rejected.
    # The twin's minutes from the switch on are stored.
    await worker.process([telemetry(acme, ("m1", 20, 15)), telemetry(twin, ("m1", 30, 10))])
    rows = await query(cloud_dsn, "SELECT gateway_id, min(minute), max(minute), count(*) FROM telemetry WHERE machine_id = 'm1' GROUP BY 1 ORDER BY 1")
    assert rows == [
        ("gw-a1", START, START + dt.timedelta(minutes=29), 20),
        ("gw-a2", switch, switch + dt.timedelta(minutes=9), 10),
    ]
    codes = await query(cloud_dsn, "SELECT gateway_id, code FROM rejections ORDER BY id")
    assert codes == [("gw-a2", "machine_owned"), ("gw-a1", "machine_owned")]


async def test_voucher_of_other_gateway_not_reproduced(two_tenants: tuple[Gateway, Gateway], twin: Gateway, worker: IngestWorker, cloud_dsn: str) -> None:
    acme, _ = two_tenants
    day = dt.date(2026, 3, 1)
    start = dt.datetime(2026, 2, 28, 16, tzinfo=dt.UTC)  # plant day 2026-03-01 in Asia/Shanghai
    end = start + dt.timedelta(days=1)
    records = minute_records("m1", start, 30)
    payload = acme.telemetry(records)
    await worker.process([_Message(acme.topic("telemetry"), payload, 0, 0, signature=signature_of(acme.telemetry_properties(payload)))])

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=db.UTC_OPTIONS) as conn:
        theirs = await reproduce_claims(conn, twin.claims(1, None, day=day, records=records), start, end)
        own = await reproduce_claims(conn, acme.claims(1, None, day=day, records=records), start, end)
    assert theirs.reproduced is False
    assert theirs.detail == (
        "machine 'm1' is measured by gateway 'gw-a1', not by this voucher's gateway 'gw-a2', so the stored records are not the ones it commits to"
    )
    assert "measured by" not in own.detail

    # A stored verdict that ownership decided is opened again by a move, for the next pass to decide.
    await store_direct(cloud_dsn, [twin.next_voucher(day=day, records=records)], topic_of=twin)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=db.UTC_OPTIONS) as conn:
        await conn.execute("UPDATE voucher_chain SET reproduced = false, reproduce_detail = %s", (theirs.detail,))
        await conn.commit()
    async with Admin(cloud_dsn) as admin:
        moved = await admin.move_machine("acme", "m1", "gw-a2", since=start)
    assert moved["verdicts_reopened"] == 1
    assert await query(cloud_dsn, "SELECT reproduced FROM voucher_chain") == [(None,)]
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=db.UTC_OPTIONS) as conn:
        again = await reproduce_claims(conn, twin.claims(1, None, day=day, records=records), start, end)
    assert "measured by" not in again.detail
