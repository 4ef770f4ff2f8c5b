"""Vouchers that bill nothing on the contract page: rejections grouped by gateway and code, a chain gap on its anchor's card, the chart.

Vouchers 22-24 of gw-1 are signed at an instant before the gateway key's validity, so the cloud rejects them again
on every resend. Vouchers 25 and 26 are stored, but wait behind the gap the rejections leave after sequence 21.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import xml.etree.ElementTree as ET

import pytest

from tests.factories import make_claims
from tests.settlement.seed import KEY_VALID_FROM, connect, ingest
from tests.web import test_browser
from valuegate.cloud.chain import load_gateways, rejection_hints, store_rejections
from valuegate.cloud.verify import Topic, check_voucher
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres

# The Chromium test's fixtures: one browser per module, and a tab that fails the test on any request to another host.
browser = test_browser.browser
page = test_browser.page

TOPIC = "valuegate/v1/acme/plant-1/gw-1/vouchers"
SVG = "{http://www.w3.org/2000/svg}"
# Issue instants before the validity of the key the site registers for gw-1.
TOO_EARLY = (KEY_VALID_FROM - dt.timedelta(days=31)).isoformat()
TOO_EARLY_AGAIN = (KEY_VALID_FROM - dt.timedelta(days=30)).isoformat()
REJECTED_DAYS = {22: dt.date(2024, 5, 27), 23: dt.date(2024, 5, 28), 24: dt.date(2024, 5, 29)}
GAP_DAYS = {25: dt.date(2024, 5, 30), 26: dt.date(2024, 5, 31)}


async def _reject(dsn: str, documents: list[dict], *, times: int) -> set[str]:
    """Check each voucher as the ingest workers do and store its rejection ``times`` times, as repeated resends would."""
    topic = Topic("acme", "plant-1", "gw-1", "vouchers")
    now = dt.datetime.now(dt.UTC)
    codes = set()
    for _ in range(times):
        async with await connect(dsn) as conn, conn.transaction():
            gateways = await load_gateways(conn, {"gw-1"})
            rows = []
            for document in documents:
                payload = json.dumps(document).encode("utf-8")
                with pytest.raises(v.VoucherError) as caught:
                    check_voucher(payload, topic, gateways, now=now, clock_skew=dt.timedelta(minutes=5))
                voucher_id, contract = rejection_hints(payload, topic, gateways, now=now)
                rows.append(("voucher", TOPIC, "acme", "gw-1", voucher_id, contract, caught.value.code, str(caught.value),
                             hashlib.sha256(payload).hexdigest(), len(payload), payload))  # fmt: skip
                codes.add(caught.value.code)
            await store_rejections(conn, rows)
    return codes


@pytest.fixture(scope="module")
def stuck(site):
    """Vouchers 22-24 rejected three times each (23 also under a second payload), 25-26 stored behind the gap."""
    prev = v.voucher_hash(site.last_voucher)
    early = []
    for seq, day in REJECTED_DAYS.items():
        document = v.build_voucher(make_claims(seq=seq, prev=prev, plant_date=day, point=2.0, low=1.5, high=2.5, issued_at=TOO_EARLY), site.key)
        prev = v.voucher_hash(document)
        early.append(document)
    # The same voucher id under another payload, as a gateway that signed it again would send.
    again = v.build_voucher(make_claims(seq=23, prev=v.voucher_hash(early[0]), plant_date=REJECTED_DAYS[23], issued_at=TOO_EARLY_AGAIN), site.key)
    assert asyncio.run(_reject(site.dsn, [*early, again], times=3)) == {"key_not_valid"}

    later = []
    for seq, day in GAP_DAYS.items():
        document = v.build_voucher(make_claims(seq=seq, prev=prev, plant_date=day, point=3.0, low=2.0, high=4.0), site.key)
        prev = v.voucher_hash(document)
        later.append(document)
    assert asyncio.run(ingest(site.dsn, later)) == ["gw-1:25", "gw-1:26"]
    return site


def _section(html: str, marker: str) -> str:
    return html.split(marker, 1)[1].split("</section>", 1)[0]


def _contract_findings(html: str) -> list[str]:
    """Return the items of the contract's own findings section, the one after the anchor cards."""
    after_anchors = html.rsplit('<section class="card anchor"', 1)[1].split("</section>", 1)[1]
    section = after_anchors.split("</section>", 1)[0]
    return [item.split("</li>", 1)[0] for item in section.split('<li class="finding"')[1:]]


REJECTION_LINES = {
    "en": "Gateway gw-1, 3 vouchers (gw-1:22–24) rejected: its signing key was not valid when it was issued.",
    "zh-CN": "网关 gw-1 的 3 张凭证（gw-1:22–24）被拒收：签发时其签名密钥不在有效期内。",
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_rejections_one_line_per_cause(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    items = _contract_findings(html)
    assert len(items) == 1
    (item,) = items
    assert REJECTION_LINES[lang] in item
    # The English detail is shown once, in small print, not as the line's text.
    assert item.count('<small class="muted detail">key_not_valid: ') == 1
    line, details = item.split("<details", 1)
    assert line.count("lies outside key") == 1
    # The toggle lists the voucher runs and each distinct raw reason once, however often the vouchers were resent.
    assert "<p>gw-1:22–24</p>" in details
    reasons = [part.split("</code>", 1)[0] for part in details.split("<code>")[1:]]
    assert reasons
    assert len(reasons) == len(set(reasons))


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_voucher_table_lists_rejection_once(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    for seq in REJECTED_DAYS:
        rows = html.split(f'<tr data-voucher="gw-1:{seq}">')[1:]
        assert len(rows) == 1, seq


GAP_LINES = {
    "en": ("2 vouchers of this value anchor do not bill yet, because gateway gw-1 has a gap in its voucher chain: sequences 22–24 are missing"
           " (highest received 26). The cloud rejected the first missing voucher, gw-1:22, because its signing key was not valid when it was issued"),
    "zh-CN": ("此价值锚点有 2 张凭证暂不计价，因为网关 gw-1 的凭证链有缺口：序号 22–24 的凭证缺失（已收到最高序号 26）。"
              "云端拒收了缺失的第一张凭证 gw-1:22，因为签发时其签名密钥不在有效期内"),
}
GAP_ACTIONS = {"en": "valuegate cloud admin key-valid-from -c cloud.yaml acme gw-1 KEY_ID CREATED",
               "zh-CN": "请用 `valuegate cloud admin key-valid-from -c cloud.yaml acme gw-1 KEY_ID CREATED` 把密钥的有效期起点前移"}
NO_FINDINGS = {"en": "No data-quality findings.", "zh-CN": "未发现数据质量问题。"}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_gap_shows_on_anchor_card(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    card = _section(html, 'id="anchor-line-oee"')
    assert GAP_LINES[lang] in card
    assert GAP_ACTIONS[lang] in card
    assert '<small class="muted detail">key_not_valid: voucher issued at' in card
    assert "after sequence" not in card
    assert NO_FINDINGS[lang] not in card
    assert not any("22–24 are missing" in item for item in _contract_findings(html))


HEADINGS = {
    "en": ("<h3>Data-quality findings of this value anchor</h3>", "<h2>Data-quality findings for the whole contract</h2>"),
    "zh-CN": ("<h3>此价值锚点的数据质量提示</h3>", "<h2>整个合同的数据质量提示</h2>"),
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_finding_sections_have_distinct_titles(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    anchor_heading, contract_heading = HEADINGS[lang]
    assert html.count(anchor_heading) == 1
    assert html.count(contract_heading) == 1
    assert contract_heading in html.split('id="contract-findings"', 1)[1].split("</section>", 1)[0]


REPEATS = {"en": "(and 1 more differing only in their timestamps)", "zh-CN": "（另有 1 条仅时间戳不同）"}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_raw_reasons_collapse_timestamps(stuck, login, lang):
    """Voucher 23 was signed twice at different instants, so its two reasons differ only in the issue time."""
    (item,) = _contract_findings(login("csm1").get(f"/contracts/C-1?lang={lang}").text)
    details = item.split("<details", 1)[1]
    reasons = [part.split("</code>", 1)[0] for part in details.split("<code>")[1:]]
    assert len(reasons) == 1
    assert REPEATS[lang] in details


CLAIMED = {"en": ("2024-05-27", "claimed"), "zh-CN": ("2024年5月27日", "声称值")}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_rejected_rows_show_claims(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    table = html.split('id="vouchers"', 1)[1].split("</table>", 1)[0]
    row = table.split('<tr data-voucher="gw-1:22">', 1)[1].split("</tr>", 1)[0]
    day, label = CLAIMED[lang]
    assert f'{day} <small class="muted">{label}</small>' in row
    assert "line-oee" in row
    assert '<td class="num claimed">2.00</td>' in row
    assert "1.50 – 2.50" in row
    # Rejected rows follow the stored vouchers in sequence order, whatever order the rejections arrived in.
    positions = [table.index(f'<tr data-voucher="gw-1:{seq}">') for seq in REJECTED_DAYS]
    assert positions == sorted(positions)


def test_value_api_counts_rejections_per_anchor(stuck, login):
    value = login("csm1").get("/api/v1/contracts/C-1/value").json()
    (anchor,) = value["anchors"]
    assert value["rejected"] == len(REJECTED_DAYS)
    assert anchor["vouchers"]["rejected"] == len(REJECTED_DAYS)
    assert anchor["vouchers"]["gap"] == len(GAP_DAYS)


LEGENDS = {
    "en": {"billable": "Billable", "gap": "Not billed yet: chain gap", "rejected": "Not billed: rejected"},
    "zh-CN": {"billable": "可计价", "gap": "暂不计价：链缺口", "rejected": "不计价：已拒收"},
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_chart_draws_unbilled_apart(stuck, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    svg = _section(html, 'id="anchor-line-oee"').split('<figure class="gain-chart">', 1)[1].split("<figcaption", 1)[0]
    root = ET.fromstring(svg)
    days = {g.get("data-date"): g for g in root.iter(f"{SVG}g") if g.get("class") == "day"}

    for day in GAP_DAYS.values():
        marker = days[day.isoformat()].find(f"{SVG}path")
        assert marker.get("class") == "unbilled gap"
        assert marker.get("fill") == "#ffffff"
        assert LEGENDS[lang]["gap"] in days[day.isoformat()].find(f"{SVG}title").text
    for day in REJECTED_DAYS.values():
        marker = days[day.isoformat()].find(f"{SVG}path")
        assert marker.get("class") == "unbilled rejected"
        assert LEGENDS[lang]["rejected"] in days[day.isoformat()].find(f"{SVG}title").text
    billable = days["2024-05-06"].find(f"{SVG}circle")
    assert billable.get("class") == "point"

    legend = {g.get("data-kind"): g.find(f"{SVG}text").text for g in root.iter(f"{SVG}g") if g.get("class") == "legend-entry"}
    assert legend["billable"] == LEGENDS[lang]["billable"]
    assert legend["gap"] == LEGENDS[lang]["gap"]
    assert legend["rejected"] == LEGENDS[lang]["rejected"]
    assert "mismatch" not in legend


@pytest.mark.browser
@pytest.mark.parametrize(("lang", "gap_legend"), [("zh-CN", "暂不计价：链缺口"), ("en", "Not billed yet: chain gap")])
def test_chart_in_chromium(stuck, page, lang, gap_legend):
    """The stylesheet leaves the unbilled markers hollow, and the legend sits inside the chart; the page fixture fails on outside requests."""
    test_browser.log_in(page, "csm1")
    page.goto(f"/contracts/C-1?lang={lang}")
    chart = page.locator("#anchor-line-oee figure.gain-chart svg")
    fill_of = "element => getComputedStyle(element).fill"

    gaps = chart.locator("path.unbilled.gap")
    assert gaps.count() == len(GAP_DAYS)
    assert gaps.first.evaluate(fill_of) == "rgb(255, 255, 255)"
    assert chart.locator("path.unbilled.rejected").count() == len(REJECTED_DAYS)
    assert chart.locator("circle.point").first.evaluate(fill_of) != "rgb(255, 255, 255)"

    entry = chart.locator("g.legend-entry[data-kind=gap]")
    assert entry.text_content() == gap_legend
    box, frame = entry.bounding_box(), chart.bounding_box()
    assert frame["y"] <= box["y"]
    assert box["y"] + box["height"] <= frame["y"] + frame["height"]
    assert box["x"] + box["width"] <= frame["x"] + frame["width"]
