"""machine_day on plain PostgreSQL: a table that triggers keep equal to the telemetry sums, with no refresh by the ingest."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

from valuegate.cloud.chain import load_gateways
from valuegate.cloud.db import UTC_OPTIONS, open_pool
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.services import PostgresServer

from .conftest import Gateway, minute_records

pytestmark = pytest.mark.postgres

# The sums of the materialized view that machine_day replaced, grouped the same way.
_FROM_TELEMETRY = """
SELECT tenant_id, machine_id, plant_date, date_trunc('day', minute),
       sum(running_ms)::bigint, sum(idle_ms)::bigint, sum(planned_stop_ms)::bigint, sum(unplanned_stop_ms)::bigint,
       sum(changeover_ms)::bigint, sum(offline_ms)::bigint, sum(produced)::bigint, sum(reject)::bigint, sum(stops)::bigint, count(*)
FROM telemetry GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
_STORED = (
    "SELECT tenant_id, machine_id, plant_date, bucket, running_ms, idle_ms, planned_stop_ms, unplanned_stop_ms, changeover_ms,"
    " offline_ms, produced, reject, stops, minutes FROM machine_day ORDER BY 1, 2, 3, 4"
)


@pytest.fixture
def plain_only(postgres_server: PostgresServer) -> None:
    if postgres_server.timescaledb:
        pytest.skip("machine_day is TimescaleDB's continuous aggregate here; the table and its triggers exist on plain PostgreSQL only")


async def store(dsn: str, gateway: Gateway, records: list[MinuteRecord]) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            gateways = await load_gateways(conn, {gateway.gateway})
            return await store_batches(conn, [check_batch(gateway.telemetry(records), parse_topic(gateway.topic("telemetry")), gateways)])


async def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        return await (await conn.execute(sql)).fetchall()


async def execute(dsn: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        await conn.execute(sql)


async def test_machine_day_follows_every_write(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    acme, globex = two_tenants
    # The minutes run from 12:00 UTC past 16:00 UTC, which is midnight in Asia/Shanghai, so a UTC day spans two plant dates.
    start = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert await store(cloud_dsn, acme, minute_records("m1", start, 2000) + minute_records("m2", start, 300, produced=7)) == 2300
    assert await store(cloud_dsn, globex, minute_records("m1", start, 100, produced=3)) == 100
    stored = await rows(cloud_dsn, _STORED)
    assert stored == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert len(stored) == 7

    # A resend overlapping stored minutes takes the staging path; only its new minutes are added.
    resend = minute_records("m1", start + dt.timedelta(minutes=1900), 400, produced=9)
    assert await store(cloud_dsn, acme, resend) == 300
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    [(produced,)] = await rows(cloud_dsn, "SELECT sum(produced) FROM machine_day WHERE tenant_id = 'acme' AND machine_id = 'm1'")
    [(expected,)] = await rows(cloud_dsn, "SELECT sum(produced) FROM telemetry WHERE tenant_id = 'acme' AND machine_id = 'm1'")
    assert produced == expected

    await execute(cloud_dsn, "UPDATE telemetry SET produced = produced + 5, minute = minute + interval '3 days' WHERE machine_id = 'm2' AND minute < '2026-03-01 13:00Z'")
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)

    await execute(cloud_dsn, "DELETE FROM telemetry WHERE tenant_id = 'globex'")
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert await rows(cloud_dsn, "SELECT 1 FROM machine_day WHERE tenant_id = 'globex'") == []

    await execute(cloud_dsn, "TRUNCATE telemetry")
    assert await rows(cloud_dsn, _STORED) == []


async def test_machine_day_exact_under_concurrent_batches(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    """Batches of the same machine-day committed by parallel transactions all reach the sums."""
    acme, _ = two_tenants
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    parts = [minute_records("m1", start + dt.timedelta(minutes=60 * i), 60, produced=i + 1) for i in range(8)]
    assert await asyncio.gather(*(store(cloud_dsn, acme, part) for part in parts)) == [60] * 8
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    [(minutes, produced)] = await rows(cloud_dsn, "SELECT sum(minutes), sum(produced) FROM machine_day")
    assert minutes == 480
    assert produced == sum(r.produced for part in parts for r in part)


async def telemetry_reads(pool: Any, dsn: str) -> int:
    # Statistics reach the shared counters when a backend goes idle, at most once a second unless forced.
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.commit()
    [(reads,)] = await rows(dsn, "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'telemetry'")
    return int(reads)


async def test_idle_housekeeping_reads_no_telemetry(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], mosquitto: Any) -> None:
    """Passes without new telemetry leave the telemetry table unread, yet machine_day contains what was stored before."""
    acme, _ = two_tenants
    records = minute_records("m1", dt.datetime(2026, 3, 1, tzinfo=dt.UTC), 1440)
    assert await store(cloud_dsn, acme, records) == 1440
    settings = CloudSettings(dsn=cloud_dsn, mqtt_port=mosquitto.port, share_group="idle", reproduce_interval_s=0.1)
    # One connection, so that the flush below covers every statement the worker ran.
    pool = await open_pool(cloud_dsn, min_size=1, max_size=1)
    try:
        before = await telemetry_reads(pool, cloud_dsn)
        async with IngestWorker(settings, pool=pool) as worker:
            await asyncio.sleep(1.5)
            assert worker.processed == 0
        after = await telemetry_reads(pool, cloud_dsn)
    finally:
        await pool.close()
    assert after == before
    [(minutes, produced)] = await rows(cloud_dsn, "SELECT sum(minutes), sum(produced) FROM machine_day")
    assert minutes == 1440
    assert produced == sum(r.produced for r in records)
