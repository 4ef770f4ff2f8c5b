"""Renewal talking points about downtime: reasons named in words, one largest reduction, and claims only from verified voucher days."""

from __future__ import annotations

import datetime as dt
import json
import io
import zipfile
from decimal import Decimal

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import minute_records, voucher_chain
from tests.settlement.seed import connect, ingest, ingest_telemetry, seed
from tests.verify.bundles import oee_contract
from valuegate.cloud.renewal import service
from valuegate.cloud.settlement import store
from valuegate.cloud.renewal.package import PackageInputs, Reduction, talking_points
from valuegate.cloud.renewal.triggers import Firing

FIRED = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def reduction_points(reductions: list[Reduction], language: str) -> list[str]:
    """Return the talking points after the value line for the given reductions (no anchors or machines)."""
    inputs = PackageInputs(
        contract=oee_contract(), firing=Firing("days_before_end:30", "days_before_end", {"days": 30}), fired_at=FIRED, total=Decimal("0.00"),
        voucher_count=0, anchors=[], reductions=reductions, machines=[], bundle=b"",
    )
    return talking_points(inputs, language)[1:]


REDUCTIONS = [Reduction("102", 1.0, 0.7), Reduction("103", 1.24, 0.64), Reduction("unassigned", 0.9, 0.4), Reduction("jam", 0.2, 0.3)]


@pytest.mark.parametrize(("language", "expected"), [
    ("en", [
        "Largest downtime reduction: reason 103, from 1.24 to 0.64 minutes per planned busy hour.",
        "Next largest downtime reductions: stops without a reason code, from 0.90 to 0.40 minutes per planned busy hour; "
        "reason 102, from 1.00 to 0.70 minutes per planned busy hour.",
    ]),
    ("zh-CN", [
        "停机下降最多的原因：原因 103，每计划生产小时由 1.24 分钟降至 0.64 分钟。",
        "其次是：未记录原因的停机，每计划生产小时由 0.90 分钟降至 0.40 分钟；原因 102，每计划生产小时由 1.00 分钟降至 0.70 分钟。",
    ]),
])
def test_reductions_named_once_in_words(language: str, expected: list[str]) -> None:
    assert reduction_points(REDUCTIONS, language) == expected


@pytest.mark.parametrize(("language", "expected"), [
    ("en", ["Largest downtime reduction: jam, from 0.20 to 0.10 minutes per planned busy hour."]),
    ("zh-CN", ["停机下降最多的原因：jam，每计划生产小时由 0.20 分钟降至 0.10 分钟。"]),
])
def test_named_reason_code_kept(language: str, expected: list[str]) -> None:
    assert reduction_points([Reduction("jam", 0.2, 0.1)], language) == expected


def stop_minutes(machine: str, day: dt.date, stop_ms: int, reason: str):
    start = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    return [msgspec.structs.replace(r, reasons={reason: stop_ms}) for r in minute_records(machine, start, 60, running_ms=60_000 - stop_ms, stop_ms=stop_ms)]


async def package_points(database: str, vouchers: int, *, exclude: dt.date | None = None, records: list | None = None, language: str = "en") -> list[str]:
    """Build a package of contract C-1 with ``vouchers`` verified vouchers (6 May onwards); return its talking points in ``language``, then its summary HTML.

    Baseline: 20 s of reason 103 per minute on 2 April and 12 s of reason 102 on 3 April, one busy hour each.
    Reporting: 5 s of reason 103 per minute on 7 May, which the second voucher covers, and 30 s of reason 102
    on 20 May, which no voucher covers.
    """
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(triggers=[{"kind": "days_before_end", "days": 250}], anchor={"scope": ["m-1"]}), key)
    if vouchers:
        await ingest(database, voucher_chain(key, vouchers))
    if records is None:
        records = stop_minutes("m-1", dt.date(2024, 4, 2), 20_000, "103") + stop_minutes("m-1", dt.date(2024, 5, 7), 5_000, "103")
        records += stop_minutes("m-1", dt.date(2024, 4, 3), 12_000, "102") + stop_minutes("m-1", dt.date(2024, 5, 20), 30_000, "102")
    await ingest_telemetry(database, records)
    async with await connect(database) as conn:
        if exclude is not None:
            async with conn.transaction():
                await store.add_adjustment(conn, "acme", "C-1", anchor_id=None, first_date=exclude, last_date=exclude, reason="line rebuild", actor="test")
        (package,) = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), pdf=False)
        stored = await service.get_package(conn, "acme", package["id"])
    archive = zipfile.ZipFile(io.BytesIO(bytes(stored["archive"])))
    return [*json.loads(archive.read("talking-points.json"))[language], archive.read(f"summary.{language}.html").decode()]


@pytest.mark.postgres
async def test_reductions_only_from_voucher_days(database) -> None:
    *points, _ = await package_points(database, 5)
    # Baseline, 2 busy hours: 20 min of 103 and 12 min of 102, so 10.00 and 6.00 per hour. Reporting: only 7 May,
    # 1 busy hour with 5 min of 103. With 20 May counted too, 102 would have risen to 15.00 and 103 fallen to 2.50.
    reductions = [p for p in points if "downtime reduction" in p]
    assert reductions == [
        "Largest downtime reduction: reason 102, from 6.00 to 0.00 minutes per planned busy hour.",
        "Next largest downtime reduction: reason 103, from 10.00 to 5.00 minutes per planned busy hour.",
    ]


@pytest.mark.postgres
async def test_no_verified_voucher_waits(database) -> None:
    """Without a verified voucher the trigger waits: a package then would state CNY 0.00 from 0 vouchers for good."""
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(triggers=[{"kind": "days_before_end", "days": 250}], anchor={"scope": ["m-1"]}), key)
    await ingest_telemetry(database, stop_minutes("m-1", dt.date(2024, 5, 7), 5_000, "103"))
    waiting: list = []
    async with await connect(database) as conn:
        assert await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), pdf=False, waiting=waiting) == []
        cur = await conn.execute("SELECT count(*) FROM renewal_packages")
        assert await cur.fetchone() == (0,)
    assert [firing.key for firing in waiting] == ["days_before_end:250"]

    # The first verified voucher arrives, and the next check builds the package from it.
    await ingest(database, voucher_chain(key, 1))
    async with await connect(database) as conn:
        later: list = []
        (package,) = await service.check_renewals(conn, "acme", "C-1", today=dt.date(2024, 6, 1), pdf=False, waiting=later)
        stored = await service.get_package(conn, "acme", package["id"])
    assert later == []
    points = json.loads(zipfile.ZipFile(io.BytesIO(bytes(stored["archive"]))).read("talking-points.json"))["en"]
    assert points[0] == "CNY 3,000.00 of value realized over the contract so far, from 1 verified vouchers."


@pytest.mark.postgres
async def test_adjusted_day_backs_no_reduction(database) -> None:
    # 7 May is the only reporting day with a verified voucher and stops; an adjustment takes it out of settlement.
    *points, _ = await package_points(database, 5, exclude=dt.date(2024, 5, 7))
    # Without the adjustment the package read CNY 15,000.00 and listed reductions of reasons 102 and 103 from 7 May.
    assert points == [
        # The excluded day's voucher backs none of the value, so the count is 4 of the 5 stored.
        "CNY 12,000.00 of value realized over the contract so far, from 4 verified vouchers.",
        "Value anchor Line 1 OEE: mean gain 1.50 OEE points per running day (point estimate), meeting its target of 1.2.",
        "Availability of m-1: 70.8%.",
    ]


@pytest.mark.postgres
@pytest.mark.parametrize(("language", "point", "label", "empty"), [
    ("en", "Largest downtime reduction: stops without a reason code, from 20.00 to 5.00 minutes per planned busy hour.",
     "stops without a reason code", "No unplanned downtime recorded"),
    ("zh-CN", "停机下降最多的原因：未记录原因的停机，每计划生产小时由 20.00 分钟降至 5.00 分钟。", "未记录原因的停机", "没有非计划停机记录"),
])
async def test_stops_without_reason_code_count_as_downtime(database, language: str, point: str, label: str, empty: str) -> None:
    """A PLC without a reason tag: its stops carry no code, and the summary and talking points still count them."""
    uncoded = [msgspec.structs.replace(r, reasons={}) for r in stop_minutes("m-1", dt.date(2024, 4, 2), 20_000, "x") + stop_minutes("m-1", dt.date(2024, 5, 7), 5_000, "x")]
    *points, html = await package_points(database, 5, records=uncoded, language=language)
    # Baseline: 20 of 60 s a minute stopped over one busy hour is 20 min an hour; reporting (7 May): 5 min over one hour.
    assert point in points
    assert label in html
    assert empty not in html


@pytest.mark.parametrize(("mean_gain", "language", "expected"), [
    ("-26.37", "zh-CN", "价值锚点“灌装机非计划停机减少”：平均每个运行日的增益为 -26.37（避免的停机分钟，点估计），未达到承诺目标 15。"),
    ("-26.37", "en", "Value anchor Filler downtime: mean gain -26.37 avoided downtime minutes per running day (point estimate), short of its target of 15."),
    ("15", "en", "Value anchor Filler downtime: mean gain 15.00 avoided downtime minutes per running day (point estimate), meeting its target of 15."),
])
def test_target_point_says_whether_it_is_met(mean_gain: str, language: str, expected: str) -> None:
    from valuegate.cloud.renewal.package import AnchorSummary

    anchor = AnchorSummary(anchor="filler-downtime", title={"zh-CN": "灌装机非计划停机减少", "en": "Filler downtime"}, metric="unplanned_downtime_rate",
                           quantity="avoided_downtime_min", target=Decimal("15"), mean_gain=Decimal(mean_gain), days=46, amount=Decimal("0.00"),
                           gains=[], reasons={})
    inputs = PackageInputs(
        contract=oee_contract(), firing=Firing("days_before_end:30", "days_before_end", {"days": 30}), fired_at=FIRED, total=Decimal("0.00"),
        voucher_count=0, anchors=[anchor], reductions=[], machines=[], bundle=b"",
    )
    assert talking_points(inputs, language)[1] == expected
