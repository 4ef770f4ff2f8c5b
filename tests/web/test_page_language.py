"""Pages in the reader's language: translated day reasons, quiet no-production days, both mean gains, anchor titles, HTML 404s, lang kept on redirects."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import httpx
import msgspec
import pytest

from tests.factories import make_claims
from tests.settlement.seed import connect, ingest, save_contract
from tests.verify.bundles import oee_contract
from tests.web.renewal_check import finished_check
from tests.web.test_pages import csrf
from valuegate.edge.kernels import kpis, totals_from_columns
from valuegate.edge.methodology import day_sufficiency
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import Sufficiency

pytestmark = pytest.mark.postgres

MINUTE_MS = 60_000
WEEKEND = (dt.date(2024, 5, 27), dt.date(2024, 5, 28))
OFFLINE_DAY = dt.date(2024, 5, 29)


def empty_day(seq: int, prev: str, day: dt.date, *, planned_stop: int, offline: int) -> v.Claims:
    """Claims of a day without planned busy time, carrying the reasons the real methodology gives for it."""
    state_ms = [0, 0, planned_stop * MINUTE_MS, 0, 0, offline * MINUTE_MS]
    check = day_sufficiency(kpis(totals_from_columns(state_ms)), Sufficiency(), metric="oee_points")
    claims = make_claims(
        seq=seq, prev=prev, plant_date=day, point=0.0, low=0.0, high=0.0, value=None, planned_busy_min=0.0, run_min=0.0,
        unplanned_downtime_min=0.0, availability=None, effectiveness=None, quality=None, oee=None, running_day=False,
    )  # fmt: skip
    return msgspec.structs.replace(claims, sufficiency=v.Sufficiency(ok=False, reasons=list(check.reasons), covered_min=check.covered_min))


async def save_lower_bound_contract(dsn: str) -> None:
    async with await connect(dsn) as conn, conn.transaction():
        await save_contract(conn, oee_contract(id="C-2", settlement="lower_bound"))


@pytest.fixture(scope="module", autouse=True)
def empty_days(site) -> None:
    """Two days with nothing scheduled (all planned stop) and one day the gateway was offline, after the site's 21 vouchers.

    Then contract C-2, billed on lower bounds, with two days: point 3.0 and 1.0, lower bound 2.0 and 0.0.
    """
    documents = []
    prev = v.voucher_hash(site.last_voucher)
    for seq, (day, planned_stop, offline) in enumerate([(WEEKEND[0], 1440, 0), (WEEKEND[1], 1440, 0), (OFFLINE_DAY, 0, 1440)], start=22):
        documents.append(v.build_voucher(empty_day(seq, prev, day, planned_stop=planned_stop, offline=offline), site.key))
        prev = v.voucher_hash(documents[-1])
    for seq, (day, point) in enumerate([(dt.date(2024, 6, 3), 3.0), (dt.date(2024, 6, 4), 1.0)], start=25):
        claims = make_claims(seq=seq, prev=prev, contract="C-2", plant_date=day, point=point, low=point - 1.0, high=point + 1.0)
        documents.append(v.build_voucher(claims, site.key))
        prev = v.voucher_hash(documents[-1])
    asyncio.run(save_lower_bound_contract(site.dsn))
    asyncio.run(ingest(site.dsn, documents))


def without_tooltips(html: str) -> str:
    return re.sub(r' title="[^"]*"', "", html)


def test_chinese_findings_translate_reasons(login) -> None:
    html = login("csm1").get("/contracts/C-1?lang=zh-CN").text
    findings = html.split('<ul class="findings">', 1)[1].split("</ul>", 1)[0]
    offline = [line for line in findings.split("</li>") if "2024年5月29日" in line]
    assert len(offline) == 1
    assert "2024年5月29日：数据不足，当日不计价（计划生产时间 0.0 分钟，低于最低要求 30 分钟；计划生产及离线时间中有 100.0% 没有数据，超过上限 20.0%；" in offline[0]
    assert "OEE（百分点）无法计算：可用率、性能效率和合格率无法计算）。" in offline[0]
    # The original English sentences stay available as the tooltip.
    assert 'title="planned busy time 0.0 min is below the minimum of 30 min; no data for 100.0% of planned busy and offline time' in offline[0]
    assert "is below the minimum" not in without_tooltips(findings)


def test_no_production_days_listed_apart(login) -> None:
    html = login("csm1").get("/contracts/C-1?lang=zh-CN").text
    findings = html.split('<ul class="findings">', 1)[1].split("</ul>", 1)[0]
    assert "2024年5月27日" not in findings
    assert "2024年5月28日" not in findings
    quiet = html.split('<details class="no-production muted">', 1)[1].split("</details>", 1)[0]
    assert "无计划生产：2 天（计划生产时间为零，当日不计价，不属于数据质量问题）" in quiet
    assert "<p>2024年5月27日 – 2024年5月28日</p>" in quiet
    # The gain chart leaves them out too, but keeps the offline day as an insufficient point.
    assert 'data-date="2024-05-27"' not in html
    assert 'data-date="2024-05-29"' in html

    english = login("csm1").get("/contracts/C-1?lang=en").text
    assert "No production scheduled: 2 days" in english
    assert "2024-05-27 – 2024-05-28" in english


def test_both_mean_gains_labelled(login) -> None:
    html = login("csm1").get("/contracts/C-1?lang=en").text
    # 20 counted days of point 1.5 and lower bound 1.0; the contract bills point estimates.
    assert 'Mean gain per running day (point estimate)<b class="realized">1.50</b>' in html
    assert '<span class="muted">(the figure billed)</span>' in html
    # Bracketed, the note does not run into the target state beside it.
    assert '<span class="muted">（本合同按此计价）</span>' in login("csm1").get("/contracts/C-1?lang=zh-CN").text
    assert 'Mean gain per running day (lower bound of the interval)<b class="realized-lower_bound">1.00</b>' in html
    chinese = login("csm1").get("/contracts/C-1?lang=zh-CN").text
    assert "平均每运行日增益（点估计）" in chinese
    assert "平均每运行日增益（置信区间下限）" in chinese


@pytest.mark.parametrize(("lang", "target", "gain"), [
    ("en", '<b class="target">1.2</b> <span class="unit">OEE points per running day</span>', '<b class="realized">1.50</b> <span class="unit">OEE points</span>'),
    ("zh-CN", '<b class="target">1.2</b> <span class="unit">OEE 点/运行日</span>', '<b class="realized">1.50</b> <span class="unit">OEE 点</span>'),
])
def test_target_and_gain_carry_their_units(login, lang: str, target: str, gain: str) -> None:
    """The target and the gain are per running day in the billed quantity, unlike the metric's own unit that the baseline has."""
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    assert target in html
    assert gain in html
    assert ("percentage points)" if lang == "en" else "百分点）") in html


def test_lower_bound_contract_leads_with_it(login) -> None:
    html = login("csm1").get("/contracts/C-2?lang=en").text
    # The billed figure is the mean of the lower bounds (2.0 + 0.0) / 2; the point estimates average (3.0 + 1.0) / 2.
    assert 'Mean gain per running day (lower bound of the interval)<b class="realized">1.00</b>' in html
    assert 'Mean gain per running day (point estimate)<b class="realized-point">2.00</b>' in html
    assert html.index("(the figure billed)") < html.index("(point estimate)")


def test_renewal_rows_name_anchor_title(login) -> None:
    csm = login("csm1")
    assert csm.post("/contracts/C-1/renewal-check", data={"_csrf_token": csrf(csm.get("/contracts/C-1").text)}).status_code == 303
    assert finished_check(csm, "C-1") == "done"
    chinese = csm.get("/contracts/C-1?lang=zh-CN").text
    assert "价值锚点“一号线 OEE”已达成目标" in chinese
    assert "价值锚点“line-oee”" not in chinese
    english = csm.get("/contracts/C-1?lang=en").text
    assert "Value anchor Line 1 OEE met its target" in english

    package_id = re.search(r'<td>Value anchor Line 1 OEE met its target</td>.*?href="/packages/(\d+)"', english, re.DOTALL).group(1)
    assert "Value anchor Line 1 OEE met its target" in csm.get(f"/packages/{package_id}?lang=en").text
    summary = csm.get(f"/packages/{package_id}/summary.html?language=en").text
    # Header words sit in no-wrap spans; without the tags the header reads as one phrase.
    assert "<th>Mean gain per running day (point estimate)</th>" in re.sub(r"<(?!/?th\b)[^>]*>", "", summary)
    assert "mean gain 1.50 OEE points per running day (point estimate)" in summary


@pytest.mark.parametrize("path", ["/runs", "/audit", "/contracts/C-1/nothing/here"])
def test_unknown_page_is_html(site, login, path: str) -> None:
    anonymous = httpx.get(f"{site.url}{path}")
    assert anonymous.status_code == 404
    assert anonymous.headers["content-type"].startswith("text/html")
    assert "未找到该页面。" in anonymous.text
    english = login("csm1").get(f"{path}?lang=en")
    assert english.status_code == 404
    assert english.headers["content-type"].startswith("text/html")
    assert "Page not found." in english.text


def test_only_pages_shown_remember_language(site, login) -> None:
    csm = login("csm1")
    missing = csm.get("/contracts/C-1/nothing/here?lang=en")
    assert missing.status_code == 404
    assert "Page not found." in missing.text
    assert "vg_lang" not in missing.headers.get("set-cookie", "")
    assert '<html lang="zh-CN"' in csm.get("/contracts").text
    shown = csm.get("/contracts?lang=en")
    assert "vg_lang=en" in shown.headers["set-cookie"]
    assert '<html lang="en"' in csm.get("/contracts").text


def test_api_and_method_errors_keep_their_kind(site) -> None:
    api = httpx.get(f"{site.url}/api/v1/no-such-resource")
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    assert api.json()["code"] == "not_found"
    logout = httpx.get(f"{site.url}/logout?lang=en")
    assert logout.status_code == 405
    assert logout.headers["content-type"].startswith("text/html")
    assert "This address does not accept this kind of request." in logout.text


def test_redirects_keep_language(site, login) -> None:
    root = httpx.get(f"{site.url}/?lang=en")
    assert root.status_code == 303
    assert root.headers["location"] == "/login?lang=en"
    assert "<h1>Log in</h1>" in httpx.get(f"{site.url}/login?lang=en").text
    protected = httpx.get(f"{site.url}/contracts/C-1?lang=en")
    assert protected.headers["location"] == "/login?next=%2Fcontracts%2FC-1%3Flang%3Den&lang=en"
    assert login("csm1").get("/?lang=en").headers["location"] == "/contracts?lang=en"
    assert httpx.get(f"{site.url}/?lang=fr").headers["location"] == "/login"


def _language_links(html: str) -> dict[str, str]:
    return {code: href for href, code in re.findall(r'<a href="([^"]+)" lang="[^"]+" data-lang="([^"]+)"', html)}


# Each case: the Referer header the browser sends with the form, and the page the language links must lead to.
REFERRERS = {
    "contract_page": ("{url}/contracts/C-1?done=adjustment.saved", "/contracts/C-1"),
    "none": (None, "/contracts/C-1"),
    "other_site": ("https://example.invalid/contracts/C-2", "/contracts/C-1"),
}


@pytest.mark.parametrize("case", sorted(REFERRERS))
@pytest.mark.parametrize(("lang", "other", "message"), [("zh-CN", "en", "超出了合同 C-1 的合同期"), ("en", "zh-CN", "reaches outside the term of contract C-1")])
def test_post_error_language_links(site, login, case, lang, other, message) -> None:
    referrer, target = REFERRERS[case]
    finance = login("fin1")
    token = csrf(finance.get(f"/contracts/C-1?lang={lang}").text)
    headers = {"Referer": referrer.format(url=site.url)} if referrer else {}
    # The term starts on 2024-04-01, so the cloud rejects this run with a 400 page.
    response = finance.post("/contracts/C-1/runs", data={"_csrf_token": token, "period_first": "2024-03-01", "period_last": "2024-04-30"}, headers=headers)
    assert response.status_code == 400
    assert message in response.text
    link = _language_links(response.text)[other]
    assert link == f"{target}?lang={other}"
    assert finance.get(link).status_code == 200
    # A link leads back to the form's page, with the hint that the browser's Back keeps the entries.
    back = "返回表单：用浏览器的“后退”按钮返回，可保留已填写的内容。" if lang == "zh-CN" else "Back to the form: your browser&#39;s Back button keeps what you entered."
    assert f'<a href="{target}" id="back-to-form">{back}</a>' in response.text


@pytest.mark.parametrize(
    ("lang", "without_records", "latest_check"),
    [
        ("en", "Without minute records (smaller and ready in seconds", "Latest renewal check: progress, and triggers waiting"),
        ("zh-CN", "不含分钟记录（更小，几秒即可下载", "最近一次续约检查：进度，以及等待已验证凭证的触发条件"),
    ],
)
def test_contract_page_links_bundle_without_records_and_check(login, lang: str, without_records: str, latest_check: str) -> None:
    html = login("aud1").get(f"/contracts/C-1?lang={lang}").text
    link = html.split('id="bundle-without-records">', 1)
    assert 'href="/contracts/C-1/bundle.zip?records=false"' in link[0].rsplit("<a ", 1)[1]
    assert link[1].startswith(without_records)
    check = html.split('id="renewal-check-page">', 1)
    assert 'href="/contracts/C-1/renewal-check"' in check[0].rsplit("<a ", 1)[1]
    assert check[1].startswith(latest_check)
