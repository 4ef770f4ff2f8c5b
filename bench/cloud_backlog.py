"""Cloud benchmark at a year's scale: an idle ingest pass, telemetry storage with machine_day upkeep, the pending scan.

Run: .venv/bin/python bench/cloud_backlog.py [--telemetry-rows N] [--pending N] [--repeat N]

Each figure is printed with a reference measured in the same run and database:
- idle pass: the aggregate over all telemetry that each pass of the earlier
  ingest ran to refresh the machine_day view (its REFRESH ... CONCURRENTLY
  also compared the result with the old view, so it took longer);
- telemetry storage: the same store_batches call with the machine_day triggers disabled;
- pending scan: the single SELECT with which the earlier pass picked its vouchers.
The script starts its own PostgreSQL on a loopback port and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db
from valuegate.cloud.admin import Admin
from valuegate.cloud.chain import load_gateways
from valuegate.cloud.ingest_gauges import DatabaseGauges
from valuegate.cloud.reproduce import _CLAIMS_SQL, _pick, reproduce_pending
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord, TelemetryBatch
from valuegate.services import PostgresServer

from bench_db import fresh_database, machine_line

import msgspec

TENANT, SITE, GATEWAY = "bench", "plant", "gw-bench"

# The pick of the earlier pass: one join over all pending rows, sorted, with the document in the select list.
_EARLIER_PICK = (
    "SELECT c.voucher_id, v.document -> 'credentialSubject', v.period_start, v.period_end, v.site_id,"
    " c.stored_at < now() - make_interval(secs => 30), c.stored_at < now() - make_interval(secs => 21600) FROM voucher_chain c"
    " JOIN vouchers v ON v.voucher_id = c.voucher_id AND v.period_start = c.period_start"
    " WHERE c.reproduced IS NULL AND (c.reproduced_at IS NULL OR c.reproduced_at < now() - interval '10 seconds')"
    " ORDER BY c.reproduced_at NULLS FIRST, c.stored_at LIMIT 200"
)
_FULL_AGGREGATE = (
    "SELECT count(*) FROM (SELECT tenant_id, machine_id, plant_date, date_trunc('day', minute), sum(running_ms), sum(idle_ms),"
    " sum(planned_stop_ms), sum(unplanned_stop_ms), sum(changeover_ms), sum(offline_ms), sum(produced), sum(reject), sum(stops), count(*)"
    " FROM telemetry GROUP BY 1, 2, 3, 4) AS days"
)
# 20 machines, one row per minute from 2025-01-01, as generate_series rows.
_SEED_TELEMETRY = """
INSERT INTO telemetry (tenant_id, machine_id, minute, plant_date, site_id, gateway_id, running_ms, idle_ms, planned_stop_ms,
                       unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms)
SELECT %(tenant)s, 'seed-m' || (i %% 20), t, (t AT TIME ZONE 'Asia/Shanghai')::date, %(site)s, %(gateway)s,
       50000, 10000, 0, 0, 0, 0, 12, 0, 0, '{}'::jsonb, 0
FROM generate_series(0, %(rows)s - 1) AS i,
     LATERAL (SELECT '2025-01-01'::timestamptz + (i / 20) * interval '1 minute' AS t) AS m
"""
# Record-less pending vouchers, each with a 6 KB document so that PostgreSQL keeps it in TOAST as the real ones are.
_SEED_PENDING = """
INSERT INTO voucher_chain (gateway_id, seq, voucher_id, tenant_id, contract_id, anchor_id, hash, prev, period_start, stored_at,
                           reproduce_detail, reproduced_at)
SELECT %(gateway)s, i, %(gateway)s || ':' || i, %(tenant)s, 'c-bench', 'a' || (i %% 5), md5(i::text), NULL,
       '2025-01-01 16:00Z'::timestamptz + (i / 5) * interval '1 day', now() - interval '2 hours',
       'waiting for records: 0 of 1440 stored', now() - interval '1 minute'
FROM generate_series(1, %(pending)s) AS i;
INSERT INTO vouchers (voucher_id, tenant_id, site_id, gateway_id, seq, contract_id, anchor_id, period_start, period_end, plant_date,
                      metric, quantity, delta_point, delta_low, delta_high, running_day, sufficient, evidence_root, evidence_records,
                      issued_at, issuer, document)
SELECT c.voucher_id, c.tenant_id, %(site)s, c.gateway_id, c.seq, c.contract_id, c.anchor_id, c.period_start, c.period_start + interval '1 day',
       (c.period_start AT TIME ZONE 'Asia/Shanghai')::date, 'oee_points', 'oee_points', 1, 0, 2, true, true, 'sha256:00', 1440,
       c.period_start + interval '1 day', 'did:key:bench',
       json_build_object('credentialSubject', json_build_object('pad', (SELECT string_agg(md5(c.seq::text || j::text), '') FROM generate_series(1, 200) AS j)))
FROM voucher_chain c WHERE c.gateway_id = %(gateway)s;
"""


async def timed(action: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Run ``action`` ``repeat`` times and return the median wall time in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def day_batch(key: Ed25519PrivateKey, machine: str, day: dt.date) -> bytes:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(hours=8)
    records = [
        MinuteRecord(machine=machine, minute=(start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:00Z"), running_ms=60_000, idle_ms=0,
                     planned_stop_ms=0, unplanned_stop_ms=0, changeover_ms=0, offline_ms=0, produced=12, reject=0, stops=0, reasons={},
                     uncertain_ms=0)
        for i in range(1440)
    ]  # fmt: skip
    return msgspec.json.encode(TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant=TENANT, site=SITE, gateway=GATEWAY, records=records))


async def bench(dsn: str, args: argparse.Namespace) -> None:
    key = Ed25519PrivateKey.generate()
    async with Admin(dsn) as admin:
        await admin.create_tenant(TENANT, "Bench")
        await admin.create_site(TENANT, SITE, "Bench plant", "Asia/Shanghai")
        await admin.create_gateway(TENANT, SITE, GATEWAY)
        await admin.add_key(TENANT, GATEWAY, public_key_multibase(key.public_key()), valid_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    params = {"tenant": TENANT, "site": SITE, "gateway": GATEWAY, "rows": args.telemetry_rows, "pending": args.pending}
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS, autocommit=True) as conn:
        started = time.perf_counter()
        await conn.execute(_SEED_TELEMETRY, params)
        print(f"seeded {args.telemetry_rows:,} telemetry rows in {time.perf_counter() - started:.1f} s (machine_day kept by the triggers)")
        for statement in _SEED_PENDING.split(";")[:2]:
            await conn.execute(statement, params)
        await conn.execute("VACUUM ANALYZE")
        print(f"seeded {args.pending:,} pending vouchers without records")

        aggregate = await timed(lambda: conn.execute(_FULL_AGGREGATE), args.repeat)
        gauges = DatabaseGauges(records_wait_s=30, interval_s=0)

        work = await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS)

        async def idle_pass() -> None:
            await reproduce_pending(work, limit=0)
            await gauges.update(work)

        idle = await timed(idle_pass, args.repeat)
        print(f"idle pass (no voucher tried, gauges counted): {idle * 1000:.1f} ms; reference full machine-day aggregate: {aggregate * 1000:.0f} ms"
              f" ({aggregate / idle:.0f}x)")

        async def pick() -> None:
            picked, _ = await _pick(work, 200, 30, 21_600)
            cur = await work.execute(_CLAIMS_SQL, ([p.voucher_id for p in picked], [p.period_start for p in picked]))
            assert len(await cur.fetchall()) == 200
            await work.rollback()  # releases the row locks of the pick

        async def earlier_pick() -> None:
            assert len(await (await conn.execute(_EARLIER_PICK)).fetchall()) == 200

        new, old = await timed(pick, args.repeat), await timed(earlier_pick, args.repeat)
        print(f"pending scan of 200 among {args.pending:,}: {new * 1000:.1f} ms; reference earlier single query: {old * 1000:.1f} ms ({old / new:.1f}x)")
        await work.close()

    topic = parse_topic(f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/telemetry")
    days = iter(dt.date(2027, 1, 1) + dt.timedelta(days=i) for i in range(10_000))

    async def store_day() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as work:
            async with work.transaction():
                gateways = await load_gateways(work, {GATEWAY})
                await store_batches(work, [check_batch(day_batch(key, "new-m1", next(days)), topic, gateways)])

    with_triggers = await timed(store_day, args.repeat * 4)
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS, autocommit=True) as conn:
        await conn.execute("ALTER TABLE telemetry DISABLE TRIGGER USER")
        without = await timed(store_day, args.repeat * 4)
        await conn.execute("ALTER TABLE telemetry ENABLE TRIGGER USER")
    print(f"store one machine-day (1,440 rows): {with_triggers * 1000:.1f} ms; reference with the machine_day triggers disabled:"
          f" {without * 1000:.1f} ms ({with_triggers / without:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--telemetry-rows", type=int, default=2_000_000, help="telemetry rows stored before measuring")
    parser.add_argument("--pending", type=int, default=65_699, help="pending vouchers without records stored before measuring")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is printed")
    args = parser.parse_args()
    print(machine_line())
    with PostgresServer() as pg:
        dsn, version = fresh_database(pg)
        print(f"database: PostgreSQL {version}, TimescaleDB {'yes' if pg.timescaledb else 'no (plain tables)'}")
        asyncio.run(bench(dsn, args))


if __name__ == "__main__":
    main()
