"""machine_reason_day on plain PostgreSQL: downtime per reason code and machine-day, kept equal to the minute records by triggers."""

from __future__ import annotations

import asyncio
import datetime as dt
from importlib import resources
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.migration_steps import migrate_before
from valuegate.cloud import db
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.web.queries import downtime_by_reason
from valuegate.edge.protocol.records import MinuteRecord

from .conftest import Gateway
from .test_machine_day import execute, plain_only, rows, store  # noqa: F401 - plain_only is a fixture

pytestmark = pytest.mark.postgres

# The grouping the downtime Pareto ran on the minute records before machine_reason_day existed.
_FROM_TELEMETRY = """
SELECT t.tenant_id, t.machine_id, t.plant_date, r.key, sum(r.value::bigint)::bigint, count(*)
FROM telemetry t, jsonb_each_text(t.reasons) r GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
_STORED = "SELECT tenant_id, machine_id, plant_date, reason, ms, minutes FROM machine_reason_day ORDER BY 1, 2, 3, 4"

# 2026-03-01 16:00 UTC is midnight in Asia/Shanghai, the plant time zone of the test gateways.
START = dt.datetime(2026, 3, 1, 15, 50, tzinfo=dt.UTC)


def record(machine: str, minute: dt.datetime, reasons: dict[str, int], *, running_ms: int = 0) -> MinuteRecord:
    """Return one minute whose unplanned stop time is the sum of its reason milliseconds."""
    stop_ms = sum(reasons.values())
    return MinuteRecord(
        machine=machine, minute=minute.strftime("%Y-%m-%dT%H:%M:00Z"), running_ms=running_ms, idle_ms=60_000 - running_ms - stop_ms,
        planned_stop_ms=0, unplanned_stop_ms=stop_ms, changeover_ms=0, offline_ms=0, produced=3, reject=0, stops=1 if stop_ms else 0,
        reasons=reasons, uncertain_ms=0,
    )  # fmt: skip


def at(minutes: int) -> dt.datetime:
    return START + dt.timedelta(minutes=minutes)


async def test_reason_day_follows_stores(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    acme, globex = two_tenants
    # Twenty minutes across the plant's midnight, with two codes in one minute, a code with 0 ms and minutes without a code.
    first = [record("m1", at(i), {"jam": 20_000, "starved": 5_000} if i % 3 == 0 else {"jam": 7_000}, running_ms=30_000) for i in range(20)]
    first += [record("m1", at(20), {"blocked": 0}, running_ms=60_000), record("m1", at(21), {}, running_ms=60_000)]
    first += [record("m2", at(i), {"jam": 1_000}, running_ms=59_000) for i in range(5)]
    assert await store(cloud_dsn, acme, first) == 27
    assert await store(cloud_dsn, globex, [record("m1", at(0), {"jam": 60_000})]) == 1
    stored = await rows(cloud_dsn, _STORED)
    assert stored == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert ("acme", "m1", dt.date(2026, 3, 2), "blocked", 0, 1) in stored
    assert len({(tenant, machine, day) for tenant, machine, day, *_ in stored}) == 4

    # A late record: a minute of the first plant date that arrives after later minutes, and one of an earlier date.
    late = [record("m1", at(-5), {"jam": 9_000}), record("m1", at(-24 * 60), {"tool": 12_000})]
    assert await store(cloud_dsn, acme, late) == 2
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)

    # A duplicate: the same minutes sent again take the staging path and add nothing.
    assert await store(cloud_dsn, acme, first[:10]) == 0
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)

    # A resend that gives a stored minute another code is not stored, so the first code stays in both.
    changed = msgspec.structs.replace(first[1], reasons={"starved": 7_000})
    assert await store(cloud_dsn, acme, [changed, record("m1", at(30), {"starved": 2_000})]) == 1
    stored = await rows(cloud_dsn, _STORED)
    assert stored == await rows(cloud_dsn, _FROM_TELEMETRY)
    jam = [row for row in stored if row[:4] == ("acme", "m1", dt.date(2026, 3, 1), "jam")]
    assert jam == [("acme", "m1", dt.date(2026, 3, 1), "jam", 6 * 7_000 + 4 * 20_000 + 9_000, 11)]


async def test_reason_day_follows_updates_and_deletes(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    acme, globex = two_tenants
    records = [record("m1", at(i), {"jam": 10_000 + i}) for i in range(20)]
    assert await store(cloud_dsn, acme, records) == 20
    assert await store(cloud_dsn, globex, records[:3]) == 3

    # An update that changes a minute's reason moves its milliseconds from one code to the other.
    await execute(cloud_dsn, "UPDATE telemetry SET reasons = '{\"starved\": 4000}' WHERE machine_id = 'm1' AND minute = '2026-03-01 15:52Z'")
    stored = await rows(cloud_dsn, _STORED)
    assert stored == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert ("acme", "m1", dt.date(2026, 3, 1), "starved", 4_000, 1) in stored
    assert ("globex", "m1", dt.date(2026, 3, 1), "starved", 4_000, 1) in stored

    # An update that moves minutes to another plant date, and one that drops every code of a date.
    await execute(cloud_dsn, "UPDATE telemetry SET plant_date = plant_date + 7 WHERE tenant_id = 'acme' AND minute >= '2026-03-01 16:05Z'")
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    await execute(cloud_dsn, "UPDATE telemetry SET reasons = '{}' WHERE tenant_id = 'acme' AND plant_date = '2026-03-09'")
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert await rows(cloud_dsn, "SELECT 1 FROM machine_reason_day WHERE plant_date = '2026-03-09'") == []

    await execute(cloud_dsn, "DELETE FROM telemetry WHERE tenant_id = 'globex'")
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    assert await rows(cloud_dsn, "SELECT 1 FROM machine_reason_day WHERE tenant_id = 'globex'") == []

    await execute(cloud_dsn, "TRUNCATE telemetry")
    assert await rows(cloud_dsn, _STORED) == []


async def test_reason_day_exact_under_concurrent_batches(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    """Batches of the same machine-day committed by parallel transactions all reach the sums."""
    acme, _ = two_tenants
    parts = [[record("m1", at(60 * part + i), {"jam": 1_000 * (part + 1), "tool": 500}) for i in range(60)] for part in range(8)]
    assert await asyncio.gather(*(store(cloud_dsn, acme, part) for part in parts)) == [60] * 8
    assert await rows(cloud_dsn, _STORED) == await rows(cloud_dsn, _FROM_TELEMETRY)
    [(jam_ms, jam_minutes)] = await rows(cloud_dsn, "SELECT sum(ms), sum(minutes) FROM machine_reason_day WHERE reason = 'jam'")
    assert jam_ms == 60 * sum(1_000 * (part + 1) for part in range(8))
    assert jam_minutes == 480


async def test_pareto_equals_minute_records(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway], plain_only: None) -> None:
    acme, _ = two_tenants
    records = [record("m1", at(i), {"jam": 20_000, "tool": 3_000} if i % 2 else {}, running_ms=30_000) for i in range(40)]
    # Five minutes whose stop has no code count as unassigned downtime.
    records += [msgspec.structs.replace(record("m2", at(i), {"jam": 15_000}), reasons={}) for i in range(5)]
    assert await store(cloud_dsn, acme, records) == 45
    first, last = dt.date(2026, 3, 1), dt.date(2026, 3, 2)

    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        downtime = await downtime_by_reason(conn, "acme", ["m1", "m2"], first, last)
        cur = await conn.execute(
            "SELECT r.key, sum(r.value::bigint) FROM telemetry t, jsonb_each_text(t.reasons) r"
            " WHERE t.tenant_id = 'acme' AND t.plant_date BETWEEN %s AND %s GROUP BY r.key",
            (first, last),
        )
        expected = {code: int(ms) / 60_000 for code, ms in await cur.fetchall()}

    assert downtime.by_reason == pytest.approx(expected)
    assert downtime.by_reason == pytest.approx({"jam": 20 * 20_000 / 60_000, "tool": 20 * 3_000 / 60_000})
    assert downtime.unassigned == pytest.approx(5 * 15_000 / 60_000)
    assert downtime.planned_busy == pytest.approx(45.0)


def test_migration_fills_reason_day(database: str, postgres_server: Any) -> None:
    """Telemetry stored before the migration is summed into the new table, and writes after it keep the sums."""
    if postgres_server.timescaledb:
        pytest.skip("machine_reason_day is a view on TimescaleDB")
    migrate_before(database, "0061")
    insert = (
        "INSERT INTO telemetry (tenant_id, machine_id, minute, plant_date, site_id, gateway_id, running_ms, idle_ms, planned_stop_ms,"
        " unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms)"
        " VALUES ('acme', %s, %s, %s, 'plant1', 'gw-a1', 0, 0, 0, %s, 0, 0, 0, 0, 1, %s, 0)"
    )
    with psycopg.connect(database, autocommit=True, options=UTC_OPTIONS) as conn:
        for i in range(6):
            reasons = Jsonb({"jam": 1_000 * i, "tool": 500} if i % 2 else {"jam": 1_000 * i})
            conn.execute(insert, ("m1", at(i), at(i).date(), 1_000 * i + 500 * (i % 2), reasons))

    assert db.migrate(database)[0] == "0061_machine_reason_day"
    with psycopg.connect(database, autocommit=True, options=UTC_OPTIONS) as conn:
        assert conn.execute(_STORED).fetchall() == [
            ("acme", "m1", dt.date(2026, 3, 1), "jam", 15_000, 6),
            ("acme", "m1", dt.date(2026, 3, 1), "tool", 1_500, 3),
        ]
        conn.execute("DELETE FROM telemetry WHERE minute < %s", (at(2),))
        assert conn.execute(_STORED).fetchall() == conn.execute(_FROM_TELEMETRY).fetchall()


def test_timescaledb_view_equals_table(cloud_dsn: str, plain_only: None) -> None:
    """The TimescaleDB variant's view, created under another name on plain PostgreSQL, returns the rows of the table."""
    folder = resources.files("valuegate.cloud") / "migrations"
    view_sql = (folder / "0061_machine_reason_day.timescaledb.sql").read_text(encoding="utf-8")
    assert "CREATE VIEW machine_reason_day AS" in view_sql
    with psycopg.connect(cloud_dsn, autocommit=True, options=UTC_OPTIONS) as conn:
        conn.execute(view_sql.replace("CREATE VIEW machine_reason_day AS", "CREATE VIEW reason_day_view AS").encode())
        insert = (
            "INSERT INTO telemetry (tenant_id, machine_id, minute, plant_date, site_id, gateway_id, running_ms, idle_ms, planned_stop_ms,"
            " unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms)"
            " SELECT 'acme', 'm' || (i %% 3), %s::timestamptz + i * interval '1 minute', (%s::timestamptz + i * interval '1 minute')::date,"
            " 'plant1', 'gw-a1', 0, 0, 0, 0, 0, 0, 0, 0, 0, jsonb_build_object('r' || (i %% 4), i * 10, 'jam', i), 0"
            " FROM generate_series(0, 2999) AS i"
        )
        conn.execute(insert, (START, START))
        view = conn.execute("SELECT * FROM reason_day_view ORDER BY 1, 2, 3, 4").fetchall()
        assert len(view) > 20
        assert view == conn.execute(_STORED).fetchall()
