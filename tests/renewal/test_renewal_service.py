"""Renewal packages from a real database: triggers fire once, the package contains a verifiable bundle, delivery is signed and retried."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import zipfile

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import minute_records, voucher_chain
from tests.renewal.receiver import LOOPBACK, receiver
from tests.settlement.seed import connect, ingest, ingest_telemetry, seed
from tests.verify.bundles import oee_contract
from valuegate.cloud.renewal import service
from valuegate.cloud.renewal.webhook import RetryPolicy
from valuegate.verify import verify_bundle

pytestmark = pytest.mark.postgres

SECRET = "renewal-webhook-secret-1"
TRIGGERS = [{"kind": "target_met"}, {"kind": "value_over", "amount": "10000"}, {"kind": "days_before_end", "days": 90}]


def jam_minutes(machine: str, day: dt.date, stop_ms: int, reason: str = "jam"):
    start = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    return [msgspec.structs.replace(r, reasons={reason: stop_ms}) for r in minute_records(machine, start, 60, running_ms=60_000 - stop_ms, stop_ms=stop_ms)]


@pytest.fixture
async def contract_db(database):
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(triggers=TRIGGERS, anchor={"scope": ["m-1", "m-2"]}), key)
    await ingest(database, voucher_chain(key, 5))
    # Baseline: 20 s of jams per minute on m-1; reporting: 5 s on m-1 and 30 s of starvation on m-2.
    records = jam_minutes("m-1", dt.date(2024, 4, 2), 20_000) + jam_minutes("m-1", dt.date(2024, 5, 7), 5_000)
    records += jam_minutes("m-2", dt.date(2024, 5, 7), 30_000, "starved")
    await ingest_telemetry(database, records)
    return database


async def test_packages_build_once_per_firing(contract_db, tmp_path):
    async with await connect(contract_db) as conn:
        created = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), actor="user:csm")
        assert [p["trigger_key"] for p in created] == ["target_met:line-oee", "value_over:10000"]
        assert await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 2)) == []
        later = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 10, 2), pdf=False)
        assert [p["trigger_key"] for p in later] == ["days_before_end:90"]
        package = await service.get_package(conn, "acme", created[0]["id"])
        cur = await conn.execute("SELECT count(*) FROM audit_log WHERE action = 'renewal.package'")
        assert (await cur.fetchone())[0] == 3

    archive = zipfile.ZipFile(io.BytesIO(bytes(package["archive"])))
    assert sorted(archive.namelist()) == [
        "GUIDE.en.md", "GUIDE.zh-CN.md", "bundle.zip", "package.json",
        "summary.en.html", "summary.en.pdf", "summary.zh-CN.html", "summary.zh-CN.pdf", "talking-points.json",
    ]
    assert archive.read("summary.zh-CN.pdf").startswith(b"%PDF-")
    (tmp_path / "bundle.zip").write_bytes(archive.read("bundle.zip"))
    report = verify_bundle(tmp_path / "bundle.zip")
    # The fixture's vouchers are synthetic. Each commits to three minutes that were never stored, so with the
    # records of the talking points in the package's bundle every voucher fails on its evidence, and only on it.
    for verdict in report.verdicts:
        assert verdict.ok or verdict.reasons[0].startswith("evidence: the bundle"), (verdict.subject, verdict.reasons)
    assert [v.subject for v in report.vouchers if not v.ok] == [f"gw-1:{n}" for n in range(1, 6)]
    assert "evidence: the bundle's 60 records of m-1 in 2024-05-07T00:00:00Z..2024-05-08T00:00:00Z give root " in report.vouchers[1].reasons[0]
    assert len(report.vouchers) == 5

    points = json.loads(archive.read("talking-points.json"))
    zh, en = points["zh-CN"], points["en"]
    # 5 days x 1.5 points x 2,000 CNY
    assert zh[0] == "合同期内累计已实现价值 ¥15,000.00，来自 5 张已核验凭证。"
    assert en[1] == "Value anchor Line 1 OEE: mean gain 1.50 OEE points per running day (point estimate), meeting its target of 1.2."
    assert zh[1] == "价值锚点“一号线 OEE”：平均每个运行日的增益为 1.50（OEE 点，点估计），已达到承诺目标 1.2。"
    # jam: 20 of 60 s per minute in the baseline is 20 min per busy hour; 5 s over 2 machines' busy hours is 2.5.
    assert en[2] == "Largest downtime reduction: jam, from 20.00 to 2.50 minutes per planned busy hour."
    assert en[3] == "Best machine: m-1 (availability 91.7%)."
    assert en[4] == "Machine that needs the most attention: m-2 (availability 50.0%)."
    html = archive.read("summary.zh-CN.html").decode()
    assert "<svg" in html
    # The offline check section names the guide that the package itself carries.
    assert "步骤见同一包中的 GUIDE.zh-CN.md。" in html
    assert "GUIDE.zh-CN.md" in archive.namelist()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")


async def test_delivery_is_signed_retried_and_recorded(contract_db):
    async with await connect(contract_db) as conn:
        (package, _) = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), pdf=False)
        assert await service.deliver_package(contract_db, "acme", package["id"]) is None
        with receiver([503, 502, 200]) as (url, received):
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
            policy = RetryPolicy(attempts=5, base_delay_s=0.02, max_delay_s=0.05, timeout_s=5)
            assert await service.deliver_package(contract_db, "acme", package["id"], policy=policy, allowed_networks=LOOPBACK) is True
        cur = await conn.execute("SELECT attempt, status_code, delivered FROM webhook_deliveries WHERE package_id = %s ORDER BY attempt", (package["id"],))
        assert await cur.fetchall() == [(1, 503, False), (2, 502, False), (3, 200, True)]
        stored = await service.get_package(conn, "acme", package["id"])
        listed = {p["id"]: p for p in await service.list_packages(conn, "acme", "C-1")}
        assert listed[package["id"]]["delivered"] is True
        assert listed[package["id"]]["attempts"] == 3
        cur = await conn.execute("SELECT detail::text FROM audit_log WHERE action = 'webhook.set'")
        assert SECRET not in (await cur.fetchone())[0]

    last = received[-1]
    assert last["body"] == bytes(stored["archive"])
    timestamp = last["headers"]["x-valuegate-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + last["body"], hashlib.sha256).hexdigest()
    assert last["headers"]["x-valuegate-signature"] == expected
    assert last["headers"]["x-valuegate-archive-sha256"] == "sha256:" + hashlib.sha256(last["body"]).hexdigest()


async def test_periodic_check_builds_and_delivers(contract_db):
    from valuegate.cloud.db import open_pool
    from valuegate.cloud.renewal.loop import check_all

    pool = await open_pool(contract_db, min_size=1, max_size=2, name="renewal-test")
    try:
        with receiver([200]) as (url, received):
            async with await connect(contract_db) as conn:
                await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
            first = await check_all(pool, contract_db, today=dt.date(2024, 6, 1), allowed_networks=LOOPBACK)
            again = await check_all(pool, contract_db, today=dt.date(2024, 6, 1), allowed_networks=LOOPBACK)
    finally:
        await pool.close()
    assert len(first) == 2
    assert again == []
    assert sorted(int(r["headers"]["x-valuegate-package"]) for r in received) == sorted(first)
