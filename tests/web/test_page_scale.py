"""Contract pages at scale: statements per page, anchor summary, voucher paging and the machine table's period.

The app runs in this process on a connection pool whose cursors record every statement, so a test can count
what one page request sends to PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.factories import minute_records, voucher_chain
from tests.settlement.seed import connect, ingest, ingest_telemetry, save_contract, seed
from valuegate.cloud import auth
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.web import contract_views
from valuegate.cloud.web.queries import Downtime, Span, downtime_by_reason, downtime_by_span
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import parse_contract

pytestmark = pytest.mark.postgres

REPORTING_FIRST = dt.date(2024, 5, 1)
REPORTING_LAST = dt.date(2024, 5, 31)
JAM_DAY = dt.date(2024, 5, 7)
# Anchors per contract: two and six are charted on the contract page, twelve are above CHARTED_ANCHORS_MAX.
CONTRACTS = {"C-2": 2, "C-6": 6, "C-12": 12}


def _contract(contract_id: str, anchors: int) -> Any:
    return parse_contract({
        "schema": "valuegate/contract/v1", "id": contract_id, "tenant": "acme", "customer": "ACME Bottling",
        "start": "2024-04-01", "end": REPORTING_LAST.isoformat(),
        "anchors": [
            {
                "id": f"a-{i}", "scope": [f"m-{i}"], "metric": "oee_points",
                "baseline": {"first_date": "2024-04-01", "last_date": "2024-04-14", "min_days": 10},
                "reporting": {"first_date": REPORTING_FIRST.isoformat(), "last_date": REPORTING_LAST.isoformat()},
                "price": {"per": "oee_point_day", "amount": "2000"}, "target": 1.2, "title": {"en": f"Line {i} OEE", "zh-CN": f"{i} 号线 OEE"},
            }
            for i in range(1, anchors + 1)
        ],
    })  # fmt: skip


def _stops(machine: str, day: dt.date, stop_ms: int, reason: str | None, minutes: int = 20) -> list[Any]:
    start = dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    records = minute_records(machine, start, minutes, running_ms=60_000 - stop_ms, stop_ms=stop_ms)
    return [msgspec.structs.replace(r, reasons={reason: stop_ms} if reason else {}) for r in records]


class _CountingCursor(psycopg.AsyncCursor[Any]):
    """A cursor that appends every statement it executes to the list its pool's test reads."""

    statements: list[str] = []

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        _CountingCursor.statements.append(str(query) if not isinstance(query, bytes) else query.decode())
        return await super().execute(query, params, **kwargs)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(False)
    conn.cursor_factory = _CountingCursor


@dataclass
class Scale:
    client: AsyncTestClient[Any]
    headers: dict[str, str]
    dsn: str

    async def statements_of(self, path: str) -> tuple[int, list[str]]:
        """Return the status of GET ``path`` and the statements the app ran for it, leaving out the token check.

        The token check is left out because it also records when the token was last used, at most once a minute.
        """
        _CountingCursor.statements.clear()
        response = await self.client.get(path, headers=self.headers)
        return response.status_code, [s for s in _CountingCursor.statements if "api_tokens" not in s]

    async def get(self, path: str) -> Any:
        return await self.client.get(path, headers=self.headers)


@pytest.fixture
async def scale(database) -> AsyncIterator[Scale]:
    """Contracts C-2, C-6 and C-12 of tenant acme, each with vouchers of its first anchors and telemetry of every machine."""
    key = Ed25519PrivateKey.generate()
    contracts = {contract_id: _contract(contract_id, count) for contract_id, count in CONTRACTS.items()}
    await seed(database, contracts["C-2"], key)
    async with await connect(database) as conn, conn.transaction():
        await save_contract(conn, contracts["C-6"])
        await save_contract(conn, contracts["C-12"])
        user = await auth.create_user(conn, "acme", "csm1", None, ["csm"])
        _, token = await auth.issue_token(conn, "acme", user["id"], "test", actor="test")

    # One gateway chain: 3 vouchers of C-2 a-1, then 10 of C-6 (a-1, a-2), then 4 of C-12 a-1.
    chain: list[dict[str, Any]] = []
    for contract_id, anchor, count in (("C-2", "a-1", 3), ("C-6", "a-1", 5), ("C-6", "a-2", 5), ("C-12", "a-1", 4)):
        prev = v.voucher_hash(chain[-1]) if chain else None
        chain += voucher_chain(key, count, first_seq=len(chain) + 1, prev=prev, contract=contract_id, anchor=anchor)
    await ingest(database, chain)

    records = []
    for i in range(1, 13):
        records += _stops(f"m-{i}", JAM_DAY, 10_000 + 1_000 * i, "jam")
        records += _stops(f"m-{i}", JAM_DAY + dt.timedelta(days=1), 4_000, None, minutes=5)
    # The day after the reporting period: the machine table must not count it.
    records += _stops("m-1", REPORTING_LAST, 6_000, "starved", minutes=10)
    records += _stops("m-1", REPORTING_LAST + dt.timedelta(days=1), 30_000, "starved", minutes=60)
    await ingest_telemetry(database, records)

    pool = AsyncConnectionPool(database, min_size=1, max_size=4, kwargs={"options": UTC_OPTIONS}, configure=_configure, open=False)
    await pool.open(wait=True)
    try:
        app = create_app(CloudSettings(dsn=database, cookie_secure=True), pool=pool)
        async with AsyncTestClient(app, base_url="https://testserver.local") as client:
            yield Scale(client, {"Authorization": f"Bearer {token}"}, database)
    finally:
        await pool.close()


def _telemetry_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if re.search(r"\b(FROM|JOIN) telemetry\b", s)]


def _reason_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if re.search(r"\b(FROM|JOIN) machine_reason_day\b", s)]


async def test_contract_page_statements_bounded(scale):
    counts = {}
    for contract_id in CONTRACTS:
        status, statements = await scale.statements_of(f"/contracts/{contract_id}?lang=en")
        assert status == 200, contract_id
        counts[contract_id] = len(statements)
        # The Pareto reads the machine-day sums of the reason codes, never the minute records.
        assert _telemetry_statements(statements) == [], contract_id
        reasons = _reason_statements(statements)
        if CONTRACTS[contract_id] <= contract_views.CHARTED_ANCHORS_MAX:
            assert len(reasons) == 1, (contract_id, reasons)
        else:
            assert reasons == [], contract_id

    assert counts["C-6"] == counts["C-2"]
    assert counts["C-12"] <= counts["C-2"]


async def test_anchor_and_machine_pages_bounded(scale):
    status, statements = await scale.statements_of("/contracts/C-12/anchors/a-1?lang=en")
    assert status == 200
    assert _telemetry_statements(statements) == []
    assert len(_reason_statements(statements)) == 1
    _, contract_statements = await scale.statements_of("/contracts/C-12?lang=en")
    assert len(statements) <= len(contract_statements) + 2

    status, statements = await scale.statements_of("/contracts/C-2/machines/m-1?lang=en")
    assert status == 200
    assert _telemetry_statements(statements) == []
    assert len(_reason_statements(statements)) == 1


async def _downtime_from_minutes(conn: psycopg.AsyncConnection[Any], span: Span) -> Downtime:
    """Return a span's downtime summed from the minute records, as the pages read it before the machine-day sums of reason codes."""
    params = ("acme", span.machines, span.first, span.last)
    cur = await conn.execute(
        "SELECT r.key, sum(r.value::bigint) FROM telemetry t, jsonb_each_text(t.reasons) r"
        " WHERE t.tenant_id = %s AND t.machine_id = ANY(%s) AND t.plant_date BETWEEN %s AND %s GROUP BY r.key",
        params,
    )
    by_reason = {code: int(ms) for code, ms in await cur.fetchall()}
    cur = await conn.execute(
        "SELECT coalesce(sum(running_ms + idle_ms + unplanned_stop_ms + changeover_ms), 0), coalesce(sum(unplanned_stop_ms), 0)"
        " FROM telemetry WHERE tenant_id = %s AND machine_id = ANY(%s) AND plant_date BETWEEN %s AND %s",
        params,
    )
    busy_ms, down_ms = await cur.fetchone()
    unassigned_ms = max(int(down_ms) - sum(by_reason.values()), 0)
    return Downtime({code: ms / 60_000 for code, ms in by_reason.items()}, unassigned_ms / 60_000, int(busy_ms) / 60_000)


async def test_grouped_downtime_matches_per_anchor(scale):
    spans = [Span(f"a-{i}", [f"m-{i}"], REPORTING_FIRST, REPORTING_LAST) for i in range(1, 13)]
    spans += [Span("both", ["m-1", "m-2"], JAM_DAY, JAM_DAY + dt.timedelta(days=1)), Span("none", ["m-99"], REPORTING_FIRST, REPORTING_LAST)]
    async with await connect(scale.dsn) as conn:
        grouped = await downtime_by_span(conn, "acme", spans)
        for span in spans:
            single = await downtime_by_reason(conn, "acme", span.machines, span.first, span.last)
            minutes = await _downtime_from_minutes(conn, span)
            assert grouped[span.key].by_reason == pytest.approx(single.by_reason), span.key
            assert grouped[span.key].unassigned == pytest.approx(single.unassigned), span.key
            assert grouped[span.key].planned_busy == pytest.approx(single.planned_busy), span.key
            assert grouped[span.key].by_reason == pytest.approx(minutes.by_reason), span.key
            assert grouped[span.key].unassigned == pytest.approx(minutes.unassigned), span.key
            assert grouped[span.key].planned_busy == pytest.approx(minutes.planned_busy), span.key

    # Every span keeps its own reasons: m-1 jammed 11 s a minute for 20 minutes and was starved on the last reporting day.
    assert grouped["a-1"].by_reason == pytest.approx({"jam": 20 * 11_000 / 60_000, "starved": 10 * 6_000 / 60_000})
    assert grouped["a-1"].unassigned == pytest.approx(5 * 4_000 / 60_000)
    assert grouped["none"].by_reason == {}
    assert grouped["none"].planned_busy == 0


async def test_summary_table_links_anchor_pages(scale):
    html = (await scale.get("/contracts/C-12?lang=en")).text
    assert "<svg" not in html
    assert "This contract has 12 value anchors" in html
    rows = re.findall(r'<tr id="anchor-(a-\d+)" data-anchor', html)
    assert rows == [f"a-{i}" for i in range(1, 13)]
    assert 'href="/contracts/C-12/anchors/a-7"' in html

    anchor = (await scale.get("/contracts/C-12/anchors/a-1?lang=en")).text
    assert anchor.count('class="chart"') == 2
    assert 'data-reason="jam"' in anchor
    assert "Line 1 OEE" in anchor
    chinese = (await scale.get("/contracts/C-12/anchors/a-1?lang=zh-CN")).text
    assert "返回合同" in chinese
    assert "1 号线 OEE" in chinese
    assert (await scale.get("/contracts/C-12/anchors/a-99")).status_code == 404

    charted = (await scale.get("/contracts/C-6?lang=en")).text
    assert charted.count('class="chart"') == 2 * 6
    assert "anchor-summary" not in charted


async def test_voucher_table_pages(scale, monkeypatch):
    monkeypatch.setattr(contract_views, "VOUCHER_PAGE_SIZE", 4)
    first = (await scale.get("/contracts/C-6?lang=en")).text
    assert "Vouchers 1–4 of 10." in first
    assert "Page 1 of 3" in first
    assert 'href="?vouchers=2#vouchers" rel="next"' in first
    assert len(re.findall(r'<tr data-voucher="gw-1:', first)) == 4

    last = (await scale.get("/contracts/C-6?vouchers=3&lang=en")).text
    assert "Vouchers 9–10 of 10." in last
    assert 'href="?vouchers=2#vouchers" rel="prev"' in last
    assert 'rel="next"' not in last
    assert len(re.findall(r'<tr data-voucher="gw-1:', last)) == 2

    chinese = (await scale.get("/contracts/C-6?vouchers=2&lang=zh-CN")).text
    assert "第 5–8 张凭证，共 10 张。" in chinese
    assert "第 2 页，共 3 页" in chinese
    past = (await scale.get("/contracts/C-6?vouchers=9&lang=en")).text
    assert "Page 9 is past the last voucher; the contract has 10 vouchers." in past
    assert "Page 9 of 3" not in past
    assert 'href="?vouchers=3#vouchers" rel="prev">Last page of vouchers</a>' in past

    for bad in ("0", "x", "-1", "²", "٣"):
        response = await scale.get(f"/contracts/C-6?vouchers={bad}&lang=en")
        assert response.status_code == 400, bad
        assert f"“{bad}” is not a page number" in response.text

    far = (await scale.get("/contracts/C-6?vouchers=999999999999999&lang=en")).text
    assert "Page 999,999,999,999,999 is past the last voucher; the contract has 10 vouchers." in far
    huge = await scale.get("/contracts/C-6?vouchers=99999999999999999999&lang=en")
    assert huge.status_code == 400
    assert "“99999999999999999999” is larger than any page number" in huge.text
    chinese_huge = await scale.get("/contracts/C-6?vouchers=99999999999999999999&lang=zh-CN")
    assert "超出了所有页码" in chinese_huge.text


@pytest.mark.parametrize(
    ("language", "notice", "empty_text"),
    [("en", "Page 9 is past the last voucher; the contract has 10 vouchers.", "No vouchers yet."),
     ("zh-CN", "第 9 页已超出最后一张凭证；本合同共有 10 张凭证。", "暂无凭证。")],
)
async def test_voucher_page_past_end(scale, monkeypatch, language, notice, empty_text):
    """A page past the end shows only the notice, because the contract does have vouchers."""
    monkeypatch.setattr(contract_views, "VOUCHER_PAGE_SIZE", 4)
    past = (await scale.get(f"/contracts/C-6?vouchers=9&lang={language}")).text
    assert notice in past
    assert empty_text not in past
    assert '<tr data-voucher="gw-1:' not in past

    async with await connect(scale.dsn) as conn, conn.transaction():
        await save_contract(conn, _contract("C-0", 1))
    empty = (await scale.get(f"/contracts/C-0?lang={language}")).text
    assert empty_text in empty
    assert notice not in empty


PARETO_TIP = {"en": r'<g class="reason" data-reason="[^"]*"><title>[^<]*?: ([^ ]+) Downtime minutes \(',
              "zh-CN": r'<g class="reason" data-reason="[^"]*"><title>[^<]*?：([^ ]+) 停机分钟（'}


@pytest.mark.parametrize("language", ["en", "zh-CN"])
async def test_pareto_minutes_two_places(scale, language):
    """Pareto labels show minutes with two places on every page, also where the second place is 0."""
    for path in ("/contracts/C-2", "/contracts/C-12/anchors/a-1", "/contracts/C-2/machines/m-1"):
        page = (await scale.get(f"{path}?lang={language}")).text
        minutes = re.findall(PARETO_TIP[language], page)
        assert minutes, path
        for shown in minutes:
            assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", shown), (path, shown)
    # m-1 was starved 6 s a minute for 10 minutes: 1 minute in all, shown as 1.00.
    anchor = (await scale.get(f"/contracts/C-12/anchors/a-1?lang={language}")).text
    assert "1.00" in re.findall(PARETO_TIP[language], anchor)
    assert "3.67" in re.findall(PARETO_TIP[language], anchor)


async def test_voucher_api_total(scale):
    body = (await scale.get("/api/v1/contracts/C-6/vouchers?limit=3&offset=3")).json()
    assert (body["total"], body["limit"], body["offset"], len(body["items"])) == (10, 3, 3, 3)
    assert (await scale.get("/api/v1/contracts/C-6/vouchers?anchor=a-2&limit=1")).json()["total"] == 5
    assert (await scale.get("/api/v1/contracts/C-6/vouchers?state=verified&limit=1")).json()["total"] == 10
    assert (await scale.get("/api/v1/contracts/C-6/vouchers?state=gap")).json()["total"] == 0
    rejected = (await scale.get("/api/v1/contracts/C-6/vouchers?state=rejected")).json()
    assert (rejected["total"], rejected["items"]) == (0, [])


@pytest.mark.parametrize(
    ("language", "heading"), [("en", "Machines, reporting period 2024-05-01 – 2024-05-31"), ("zh-CN", "设备明细（报告期 2024年5月1日 – 2024年5月31日）")]
)
async def test_machine_table_bounded_to_period(scale, language, heading):
    html = (await scale.get(f"/contracts/C-2?lang={language}")).text
    assert heading in html
    row = re.search(r'<tr><td><a href="/contracts/C-2/machines/m-1">m-1</a></td>(.*?)</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    # Planned busy: 20 + 5 + 10 minutes within the period; the 60 minutes of June 1 are left out. Stops: one per minute.
    assert cells[0] == "35"
    assert cells[3] == "35"
