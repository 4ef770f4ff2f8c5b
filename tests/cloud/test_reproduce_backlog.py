"""Reproduction with a backlog of vouchers whose records never come, and the gauges counted from the database."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import contracts, metrics
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud import ingest_gauges
from valuegate.cloud.ingest_gauges import DatabaseGauges
from valuegate.cloud.reproduce import reproduce_pending
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v

from .conftest import Gateway, contract_yaml, register, store_direct
from .test_reproduce import computed_claims, day_records, store_records

pytestmark = pytest.mark.postgres

BACKLOG = 250  # more than one pass takes (limit 200)


async def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def execute(dsn: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        await conn.execute(sql)


async def one_pass(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        await reproduce_pending(conn, records_wait_s=0)


async def backlog_gateway(dsn: str) -> Gateway:
    """A second gateway of tenant acme whose vouchers commit to records it never sends."""
    gateway = Gateway("acme", "plant1", "gw-a9", Ed25519PrivateKey.generate(), machines=("m9",))
    await register(dsn, gateway.tenant, gateway.site, gateway.gateway, gateway.key)
    return gateway


async def upload_contract(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())


async def backlog_and_claims(dsn: str, acme: Gateway) -> tuple[Gateway, list[dt.date], Any, list[Any]]:
    """Return the backlog gateway, the baseline dates, and the claims and records of one reporting day of acme, with the contract uploaded."""
    waiting = await backlog_gateway(dsn)
    base = [dt.date(2026, 1, 5)]
    claims, records = computed_claims(acme, dt.date(2026, 3, 1), base)
    await upload_contract(dsn)
    return waiting, base, claims, records


async def test_complete_voucher_passes_backlog(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """Records stored first, then a backlog, then their voucher: the first pass reproduces it."""
    acme, _ = two_tenants
    waiting, base, claims, records = await backlog_and_claims(cloud_dsn, acme)
    await store_records(cloud_dsn, records + day_records(base[0], 9))
    await store_direct(cloud_dsn, [waiting.next_voucher() for _ in range(BACKLOG)], topic_of=waiting)
    await store_direct(cloud_dsn, [v.build_voucher(claims, acme.key)], topic_of=acme)

    await one_pass(cloud_dsn)
    [(reproduced, detail)] = await query(cloud_dsn, "SELECT reproduced, reproduce_detail FROM voucher_chain WHERE gateway_id = 'gw-a1'")
    assert reproduced is True, detail
    [(tried,)] = await query(cloud_dsn, "SELECT count(*) FROM voucher_chain WHERE gateway_id = 'gw-a9' AND reproduced_at IS NOT NULL")
    assert tried == 199  # the rest of the pass went to the backlog, oldest first
    assert await query(cloud_dsn, "SELECT gateway_id, plant_date FROM telemetry_arrivals ORDER BY 2") == [("gw-a1", dt.date(2026, 1, 5))]


async def test_late_records_pass_backlog(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    """A voucher tried before its records came goes ahead of a backlog never tried once they arrive."""
    acme, _ = two_tenants
    waiting, base, claims, records = await backlog_and_claims(cloud_dsn, acme)
    await store_direct(cloud_dsn, [v.build_voucher(claims, acme.key)], topic_of=acme)
    await one_pass(cloud_dsn)
    [(detail,)] = await query(cloud_dsn, "SELECT reproduce_detail FROM voucher_chain WHERE gateway_id = 'gw-a1'")
    assert detail.startswith("waiting for records: 0 of 1440")

    await store_direct(cloud_dsn, [waiting.next_voucher() for _ in range(BACKLOG)], topic_of=waiting)
    # Past the 10-second pause between attempts; the backlog has never been tried, so it sorts first without arrivals.
    await execute(cloud_dsn, "UPDATE voucher_chain SET reproduced_at = now() - interval '1 minute' WHERE gateway_id = 'gw-a1'")
    await store_records(cloud_dsn, day_records(base[0], 9))
    await store_records(cloud_dsn, records)
    await one_pass(cloud_dsn)
    [(reproduced, detail)] = await query(cloud_dsn, "SELECT reproduced, reproduce_detail FROM voucher_chain WHERE gateway_id = 'gw-a1'")
    assert reproduced is True, detail
    # The mark of the reporting day was used; the baseline day's matched no voucher and stays until it ages out.
    assert await query(cloud_dsn, "SELECT plant_date FROM telemetry_arrivals") == [(dt.date(2026, 1, 5),)]


async def test_waiting_gauge_counts_whole_backlog(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    acme, _ = two_tenants
    waiting = await backlog_gateway(cloud_dsn)
    await store_direct(cloud_dsn, [waiting.next_voucher() for _ in range(BACKLOG)], topic_of=waiting)
    await store_direct(cloud_dsn, [acme.next_voucher()], topic_of=acme)
    gauges = DatabaseGauges(records_wait_s=0, interval_s=3600)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        assert await gauges.update(conn)
    assert metrics.VOUCHERS_PENDING._value.get() == BACKLOG + 1
    assert metrics.WAITING_FOR_RECORDS._value.get() == 0  # none tried yet

    await one_pass(cloud_dsn)
    await one_pass(cloud_dsn)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        assert not await gauges.update(conn)  # within interval_s of the last count
        gauges.interval_s = 0
        assert await gauges.update(conn)
    assert metrics.VOUCHERS_PENDING._value.get() == BACKLOG + 1
    assert metrics.WAITING_FOR_RECORDS._value.get() == BACKLOG + 1


async def test_gauges_counted_again_soon_after_a_verdict(cloud_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that gave vouchers a verdict moves the counts: they are taken again after seconds, not after interval_s."""
    now = [1_000.0]
    monkeypatch.setattr(ingest_gauges.time, "monotonic", lambda: now[0])
    gauges = DatabaseGauges(records_wait_s=0, interval_s=3600)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        assert await gauges.update(conn)
        now[0] += 1.0
        assert not await gauges.update(conn, changed=True)  # too soon after the last count
        now[0] += ingest_gauges.GAUGE_AFTER_CHANGE_S
        assert await gauges.update(conn)  # the verdict of the earlier pass is still owed a count
        now[0] += ingest_gauges.GAUGE_AFTER_CHANGE_S * 2
        assert not await gauges.update(conn)  # nothing changed since: interval_s applies again


async def test_gap_gauge_after_restart(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], mosquitto: Any) -> None:
    """A gap stored before the worker started, by a gateway that sends nothing since, shows in the gauge."""
    acme, globex = two_tenants
    first, second, third = (acme.next_voucher() for _ in range(3))
    await store_direct(cloud_dsn, [first, third], topic_of=acme)
    await store_direct(cloud_dsn, [globex.next_voucher()], topic_of=globex)
    metrics.CHAIN_GAPS.set(0)  # as in a process that has just started
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="gauges", reproduce_interval_s=0.1)

    async def gauge_after_start(previous: float) -> float:
        async with IngestWorker(settings) as worker:
            deadline = asyncio.get_running_loop().time() + 5
            while metrics.CHAIN_GAPS._value.get() == previous and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert worker.processed == 0
        return float(metrics.CHAIN_GAPS._value.get())

    assert await gauge_after_start(0) == 1
    await store_direct(cloud_dsn, [second], topic_of=acme)
    assert await gauge_after_start(1) == 0
