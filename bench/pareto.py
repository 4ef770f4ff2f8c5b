"""Downtime Pareto at a year's scale: the reason-code sums per machine-day against the grouped read of the minute records.

Run: .venv/bin/python bench/pareto.py [--machines N] [--days N] [--repeat N]

Each figure is printed with a reference measured in the same run and database:
- Pareto of all anchors and of one anchor: ``downtime_by_span``, which reads machine_reason_day and machine_day.
  The reference is the statements the pages ran before machine_reason_day existed, which grouped the reason codes
  of every minute record. The script also checks that both return the same milliseconds per reason code.
- telemetry storage: ``store_batches`` of one machine-day with every trigger, against the same call with the
  machine_reason_day triggers disabled.
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

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.cloud import db
from valuegate.cloud.admin import Admin
from valuegate.cloud.chain import load_gateways
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.cloud.web.queries import Span, downtime_by_span
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord, TelemetryBatch
from valuegate.services import PostgresServer

from bench_db import fresh_database, machine_line

TENANT, SITE, GATEWAY = "bench", "plant", "gw-bench"
FIRST_DAY = dt.date(2025, 1, 1)
REASONS = ("jam", "starved", "blocked", "tool", "E12", "E40")

# One row per machine and minute from FIRST_DAY 00:00 in Asia/Shanghai. One minute in ten has a 20 s unplanned stop,
# six in seven of those with one of REASONS and the seventh without a code.
_SEED_TELEMETRY = """
INSERT INTO telemetry (tenant_id, machine_id, minute, plant_date, site_id, gateway_id, running_ms, idle_ms, planned_stop_ms,
                       unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms)
SELECT %(tenant)s, 'm' || m, t, (t AT TIME ZONE 'Asia/Shanghai')::date, %(site)s, %(gateway)s,
       CASE WHEN stopped THEN 40000 ELSE 60000 END, 0, 0, CASE WHEN stopped THEN 20000 ELSE 0 END, 0, 0, 12, 0,
       CASE WHEN stopped THEN 1 ELSE 0 END,
       CASE WHEN stopped AND k %% 7 <> 3 THEN jsonb_build_object((%(reasons)s::text[])[1 + (k / 10 + m) %% 6], 20000) ELSE '{}'::jsonb END, 0
FROM generate_series(0, %(machines)s - 1) AS m,
     generate_series(0, %(minutes)s - 1) AS k,
     LATERAL (SELECT (%(first)s::date::timestamp AT TIME ZONE 'Asia/Shanghai') + k * interval '1 minute' AS t,
                     (k + 3 * m) %% 10 = 0 AS stopped) AS s
"""
# The sums that the triggers keep, filled once after a seed with the triggers disabled, as migrations 0009 and 0061 fill them.
_FILL_SUMS = (
    "INSERT INTO machine_day SELECT tenant_id, machine_id, plant_date, date_trunc('day', minute, 'UTC'), sum(running_ms), sum(idle_ms),"
    " sum(planned_stop_ms), sum(unplanned_stop_ms), sum(changeover_ms), sum(offline_ms), sum(produced)::bigint, sum(reject)::bigint,"
    " sum(stops), count(*) FROM telemetry GROUP BY 1, 2, 3, 4",
    "INSERT INTO machine_reason_day SELECT t.tenant_id, t.machine_id, t.plant_date, r.key, sum(r.value::bigint), count(*)"
    " FROM telemetry t, jsonb_each_text(t.reasons) r WHERE t.reasons <> '{}'::jsonb GROUP BY 1, 2, 3, 4",
)

_SPANS = "unnest(%s::text[], %s::text[], %s::date[], %s::date[]) AS s(span, machine_id, first_date, last_date)"
# The statements of downtime_by_span before machine_reason_day: reason codes and stop time from the minute records,
# planned busy time from machine_day. The minute bound lets the primary key skip minutes outside the dates.
_EARLIER_STOPS = (
    "WITH stopped AS MATERIALIZED ("
    f" SELECT s.span, t.unplanned_stop_ms, t.reasons FROM {_SPANS} JOIN telemetry t ON t.tenant_id = %s AND t.machine_id = s.machine_id"
    " AND t.minute >= (s.first_date - 1)::timestamp AT TIME ZONE 'UTC' AND t.minute < (s.last_date + 2)::timestamp AT TIME ZONE 'UTC'"
    " AND t.plant_date BETWEEN s.first_date AND s.last_date WHERE t.unplanned_stop_ms > 0 OR t.reasons <> '{}'::jsonb)"
    " SELECT span, NULL AS reason, sum(unplanned_stop_ms) AS ms FROM stopped GROUP BY span"
    " UNION ALL SELECT span, r.key AS reason, sum(r.value::bigint) AS ms FROM stopped, jsonb_each_text(stopped.reasons) r GROUP BY span, r.key"
)
_EARLIER_BUSY = (
    f"SELECT s.span, sum(running_ms + idle_ms + unplanned_stop_ms + changeover_ms) FROM {_SPANS} JOIN machine_day d"
    " ON d.tenant_id = %s AND d.machine_id = s.machine_id AND d.plant_date BETWEEN s.first_date AND s.last_date GROUP BY s.span"
)


async def timed(action: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Run ``action`` ``repeat`` times after one untimed run and return the median wall time in seconds."""
    await action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def span_columns(spans: list[Span]) -> list[list[Any]]:
    flat = [(span.key, machine, span.first, span.last) for span in spans for machine in span.machines]
    return [list(column) for column in zip(*flat, strict=True)]


async def earlier_downtime(conn: psycopg.AsyncConnection[Any], spans: list[Span]) -> dict[str, dict[str | None, int]]:
    """Return per span the milliseconds per reason code, and under None all unplanned stop time, read as before machine_reason_day."""
    columns = span_columns(spans)
    result: dict[str, dict[str | None, int]] = {span.key: {None: 0} for span in spans}
    for span, reason, ms in await (await conn.execute(_EARLIER_STOPS, (*columns, TENANT))).fetchall():
        result[span][reason] = int(ms)
    await (await conn.execute(_EARLIER_BUSY, (*columns, TENANT))).fetchall()
    return result


async def current_downtime(conn: psycopg.AsyncConnection[Any], spans: list[Span]) -> dict[str, dict[str | None, int]]:
    """Return what :func:`earlier_downtime` returns, from ``downtime_by_span``."""
    result = {}
    for key, downtime in (await downtime_by_span(conn, TENANT, spans)).items():
        ms = {code: round(minutes * 60_000) for code, minutes in downtime.by_reason.items()}
        ms[None] = sum(ms.values()) + round(downtime.unassigned * 60_000)
        result[key] = ms
    return result


def day_batch(machine: str, day: dt.date) -> bytes:
    """Return one machine-day of telemetry with a coded stop in one minute of ten."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) - dt.timedelta(hours=8)
    records = []
    for i in range(1440):
        stopped = i % 10 == 0
        records.append(
            MinuteRecord(machine=machine, minute=(start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:00Z"),
                         running_ms=40_000 if stopped else 60_000, idle_ms=0, planned_stop_ms=0, unplanned_stop_ms=20_000 if stopped else 0,
                         changeover_ms=0, offline_ms=0, produced=12, reject=0, stops=1 if stopped else 0,
                         reasons={REASONS[i // 10 % 6]: 20_000} if stopped else {}, uncertain_ms=0)
        )  # fmt: skip
    return msgspec.json.encode(TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant=TENANT, site=SITE, gateway=GATEWAY, records=records))


async def seed(dsn: str, args: argparse.Namespace) -> None:
    async with Admin(dsn) as admin:
        await admin.create_tenant(TENANT, "Bench")
        await admin.create_site(TENANT, SITE, "Bench plant", "Asia/Shanghai")
        await admin.create_gateway(TENANT, SITE, GATEWAY)
        await admin.add_key(TENANT, GATEWAY, public_key_multibase(args.key.public_key()), valid_from=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    params = {"tenant": TENANT, "site": SITE, "gateway": GATEWAY, "machines": args.machines, "minutes": args.days * 1440,
              "reasons": list(REASONS), "first": FIRST_DAY}  # fmt: skip
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS, autocommit=True) as conn:
        started = time.perf_counter()
        await conn.execute("ALTER TABLE telemetry DISABLE TRIGGER USER")
        await conn.execute(_SEED_TELEMETRY, params)
        await conn.execute("ALTER TABLE telemetry ENABLE TRIGGER USER")
        for statement in _FILL_SUMS:
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")
        rows = args.machines * args.days * 1440
        print(f"seeded {rows:,} telemetry rows ({args.machines} machines, {args.days} days) and their sums in {time.perf_counter() - started:.0f} s")


async def bench(dsn: str, args: argparse.Namespace) -> None:
    await seed(dsn, args)
    last = FIRST_DAY + dt.timedelta(days=args.days - 1)
    anchors = [Span(f"a{m}", [f"m{m}"], FIRST_DAY, last) for m in range(args.machines)]
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS, autocommit=True) as conn:
        earlier, current = await earlier_downtime(conn, anchors), await current_downtime(conn, anchors)
        if earlier != current:
            differing = sorted(key for key in earlier if earlier[key] != current.get(key))
            raise SystemExit(f"the Pareto differs from the minute records for spans {differing[:5]}")
        print(f"results: same milliseconds per reason code and span for all {len(anchors)} anchors")
        for label, spans in ((f"all {len(anchors)} anchors", anchors), ("one anchor", anchors[:1])):
            new = await timed(lambda spans=spans: downtime_by_span(conn, TENANT, spans), args.repeat)
            old = await timed(lambda spans=spans: earlier_downtime(conn, spans), args.repeat)
            print(f"Pareto of {label}, {args.days} days each: {new * 1000:.1f} ms; reference from the minute records: {old * 1000:.0f} ms"
                  f" ({old / new:.0f}x)")

    topic = parse_topic(f"valuegate/v1/{TENANT}/{SITE}/{GATEWAY}/telemetry")
    days = iter(dt.date(2027, 1, 1) + dt.timedelta(days=i) for i in range(10_000))

    async def store_day() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS) as work:
            async with work.transaction():
                gateways = await load_gateways(work, {GATEWAY})
                await store_batches(work, [check_batch(day_batch("new-m1", next(days)), topic, gateways)])

    with_triggers = await timed(store_day, args.repeat * 4)
    async with await psycopg.AsyncConnection.connect(dsn, options=db.UTC_OPTIONS, autocommit=True) as conn:
        triggers = ("insert", "update", "delete", "truncate")
        for event in triggers:
            await conn.execute(f"ALTER TABLE telemetry DISABLE TRIGGER telemetry_machine_reason_day_{event}")
        without = await timed(store_day, args.repeat * 4)
        for event in triggers:
            await conn.execute(f"ALTER TABLE telemetry ENABLE TRIGGER telemetry_machine_reason_day_{event}")
    print(f"store one machine-day (1,440 rows, 144 coded stops): {with_triggers * 1000:.1f} ms; reference with the machine_reason_day"
          f" triggers disabled: {without * 1000:.1f} ms ({with_triggers / without:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=50, help="machines, one per anchor, each with telemetry of every minute")
    parser.add_argument("--days", type=int, default=365, help="days of telemetry per machine, from 2025-01-01")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure; the median is printed")
    args = parser.parse_args()
    if args.machines < 1 or args.days < 1:
        parser.error(f"--machines and --days must be at least 1, got {args.machines} and {args.days}")
    args.key = Ed25519PrivateKey.generate()
    print(machine_line())
    with PostgresServer() as pg:
        if pg.timescaledb:
            raise SystemExit("this bench measures the plain-PostgreSQL tables; on TimescaleDB machine_reason_day is a view over the minute records")
        dsn, version = fresh_database(pg)
        print(f"database: PostgreSQL {version}, plain tables")
        start = time.perf_counter()
        asyncio.run(bench(dsn, args))
        print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
