"""The contract page's re-computation findings after a real reproduction pass: one line per gateway and cause, raw details kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import re
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from valuegate.cloud.admin import Admin
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.reproduce import reproduce_pending

pytestmark = pytest.mark.postgres

EVIDENCE_ZH = (
    "网关 gw-1 的凭证 gw-1:2：云端存储的分钟记录与网关签发时的记录不同（证据摘要不一致）；处于这种状态的凭证不计价。"
    "请工程师将网关 gw-1 本地保存的这些日期的记录与云端存储的遥测逐条对比。"
)
EVIDENCE_EN = (
    "Gateway gw-1, voucher gw-1:2: the minute records stored in the cloud differ from those the gateway signed (the evidence digests differ); "
    "vouchers in this state bill nothing. Have an engineer compare, record by record, what gateway gw-1 keeps for these days with the telemetry "
    "stored in the cloud."
)
WAITING_ZH = (
    "网关 gw-1 的 20 张凭证（gw-1:1、gw-1:3–21）：尚未复算，因为凭证所依据的分钟记录还没有全部到达云端。云端会请网关重发缺少的记录；"
    "如果此提示一直存在，请检查网关 gw-1 是否在线并已连接 MQTT 消息服务器。复算之前，处于这种状态的凭证按已核验计价。"
)
WAITING_EN = (
    "Gateway gw-1, 20 vouchers (gw-1:1, gw-1:3–21): not re-computed yet, because not all committed minute records have reached the cloud. The cloud "
    "asks the gateway to resend the missing records; if this finding stays, check that gateway gw-1 is online and connected to the MQTT broker. Until "
    "re-computed, vouchers in this state bill as verified."
)
OWNED_ZH = (
    "网关 gw-1 的 21 张凭证（gw-1:1–21）：复算时，设备 m-1 的遥测由网关 gw-2 上报，而不是网关 gw-1，因此存储的遥测无法复算网关 gw-1 签发的内容；"
    "处于这种状态的凭证不计价。如果两个网关测量的是不同的设备，请在其中一个网关的标签映射中修改设备编号；如果网关 gw-1 取代了网关 gw-2，"
    "请运行 valuegate cloud admin machine-move acme m-1 gw-1 --from 开始时间，其中“开始时间”为网关 gw-1 开始测量的时刻"
    "（带时区，例如 2026-01-01T08:00:00+08:00），云端随后会重新复算这些凭证。"
)
OWNED_EN = (
    "Gateway gw-1, 21 vouchers (gw-1:1–21): when re-computed, machine m-1 was measured by gateway gw-2, not by gateway gw-1, so the stored telemetry "
    "cannot reproduce what gateway gw-1 signed; vouchers in this state bill nothing. If the gateways measure different machines, rename the machine "
    "in one gateway's tag map. If gateway gw-1 replaced gateway gw-2, run valuegate cloud admin machine-move acme m-1 gw-1 --from START, where START "
    "is the instant gateway gw-1 started measuring, with its offset (for example 2026-01-01T08:00:00+08:00); the cloud then re-computes these vouchers."
)


def run(coroutine):
    # A thread of its own, as in the site fixture, so that no running event loop gets in the way.
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


async def reproduce(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        await reproduce_pending(conn)


# Before the first voucher's plant day, so that a move covers every voucher of the site.
MOVED_FROM = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


async def move(dsn: str, machine: str, gateway: str) -> None:
    async with Admin(dsn, actor="test") as admin:
        await admin.move_machine("acme", machine, gateway, since=MOVED_FROM)


async def add_gateway(dsn: str, gateway: str) -> None:
    async with Admin(dsn, actor="test") as admin:
        await admin.create_gateway("acme", "plant-1", gateway)


@pytest.fixture
def fresh(site):
    """Clear every verdict and give machine m-1 back to gw-1, so that each test starts from vouchers never re-computed."""
    run(move(site.dsn, "m-1", "gw-1"))
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute("UPDATE voucher_chain SET reproduced = NULL, reproduce_detail = NULL, reproduced_at = NULL")
    return site


def findings(page: str) -> list[str]:
    """Return the text of each finding of the page, without its details toggle, unescaped."""
    items = re.findall(r'<li class="finding"[^>]*>(.*?)(?:<details|</li>)', page, re.S)
    return [html.unescape(item).strip() for item in items]


def gateway_findings(page: str) -> list[str]:
    return [text for text in findings(page) if text.startswith(("网关 gw-1 的", "Gateway gw-1,"))]


def details_of(page: str, text: str) -> str:
    """Return the details toggle of the finding whose text starts with ``text``, unescaped."""
    start = html.unescape(page).index(text)
    rest = html.unescape(page)[start:]
    return rest[rest.index("<details"):rest.index("</details>")]


def voucher_row(page: str, voucher: str) -> str:
    return page.split(f'<tr data-voucher="{voucher}">', 1)[1].split("</tr>", 1)[0]


def test_real_reproduction_one_line_per_cause(fresh, login) -> None:
    run(reproduce(fresh.dsn))
    with psycopg.connect(fresh.dsn) as conn:
        [evidence_detail] = conn.execute("SELECT reproduce_detail FROM voucher_chain WHERE voucher_id = 'gw-1:2'").fetchone()
        waiting = conn.execute("SELECT count(*) FROM voucher_chain WHERE reproduced IS NULL AND reproduce_detail LIKE 'waiting for records:%'").fetchone()
    assert evidence_detail.startswith("evidence digest of the 30 stored records is ")
    assert waiting == (20,)

    client = login("csm1")
    chinese = client.get("/contracts/C-1").text
    english = client.get("/contracts/C-1?lang=en").text
    assert gateway_findings(chinese) == [EVIDENCE_ZH, WAITING_ZH]
    assert gateway_findings(english) == [EVIDENCE_EN, WAITING_EN]

    # Engineers find the raw details in the finding's toggle and in the voucher table's tooltip.
    toggle = details_of(english, EVIDENCE_EN)
    assert "<summary>Vouchers and raw re-computation details</summary>" in toggle
    assert f"<code>{evidence_detail}</code>" in toggle
    assert "gw-1:1, gw-1:3–21" in details_of(english, WAITING_EN)
    assert "<code>waiting for records: 0 of 3 stored</code>" in details_of(english, WAITING_EN)
    assert f'title="{evidence_detail}"' in html.unescape(voucher_row(english, "gw-1:2"))
    assert "凭证列表与原始复算详情" in chinese
    assert "evidence digest of the 30 stored records" not in "".join(findings(chinese))

    # Only the disagreeing voucher stops billing; the pending ones bill as verified: 19 days x 1.5 points x 2,000 CNY.
    assert 'id="realized-total">CNY 57,000.00<' in english


def test_machine_measured_by_other_gateway(fresh, login) -> None:
    # A second gateway of the tenant measures m-1 from before the vouchers' days, as if it had been moved there by mistake.
    run(add_gateway(fresh.dsn, "gw-2"))
    run(move(fresh.dsn, "m-1", "gw-2"))
    run(reproduce(fresh.dsn))
    with psycopg.connect(fresh.dsn) as conn:
        details = conn.execute("SELECT DISTINCT reproduced, reproduce_detail FROM voucher_chain").fetchall()
    assert details == [(False, "machine 'm-1' is measured by gateway 'gw-2', not by this voucher's gateway 'gw-1', so the stored records are not the ones it commits to")]

    client = login("csm1")
    assert gateway_findings(client.get("/contracts/C-1").text) == [OWNED_ZH]
    english = client.get("/contracts/C-1?lang=en").text
    assert gateway_findings(english) == [OWNED_EN]
    assert 'id="realized-total">CNY 0.00<' in english


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN", "价值锚点 retired-anchor（当前合同版本中没有该锚点）：网关 gw-1 的凭证 gw-1:5：云端按存储的遥测复算的结果与网关签发的不一致；"
                  "处于这种状态的凭证不计价。复算详情：oee 0.70 differs from 0.735"),
        ("en", "Value anchor retired-anchor (not in the current contract revision): Gateway gw-1, voucher gw-1:5: the cloud's re-computation from "
               "stored telemetry disagrees with what the gateway signed; vouchers in this state bill nothing. Re-computation detail: oee 0.70 differs from 0.735"),
    ],
)
def test_voucher_of_anchor_not_in_contract(fresh, login, language: str, expected: str) -> None:
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        conn.execute("UPDATE vouchers SET anchor_id = 'retired-anchor' WHERE voucher_id = 'gw-1:5'")
        conn.execute("UPDATE voucher_chain SET reproduced = false, reproduce_detail = 'oee 0.70 differs from 0.735' WHERE voucher_id = 'gw-1:5'")
    try:
        page = login("csm1").get(f"/contracts/C-1?lang={language}").text
    finally:
        with psycopg.connect(fresh.dsn, autocommit=True) as conn:
            conn.execute("UPDATE vouchers SET anchor_id = 'line-oee' WHERE voucher_id = 'gw-1:5'")
    assert [text for text in findings(page) if "gw-1:5" in text] == [expected]
