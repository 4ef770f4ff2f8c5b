"""Chinese pages written as Chinese readers expect: dates, instants and full-width punctuation, with English pages left as they were."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.site import PASSWORD
from tests.web.renewal_check import finished_check
from tests.web.test_pages import csrf
from tests.web.test_run_approval import approve, start_run

pytestmark = pytest.mark.postgres

# An instant on a Chinese page, in the default display zone Asia/Shanghai: 2026年12月6日 00:03（UTC+8）.
CHINESE_INSTANT = r"\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}（UTC\+8）"
ENGLISH_INSTANT = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\+8"


@pytest.fixture(scope="module")
def package_id(site) -> str:
    """Build the renewal packages of contract C-1 once and return the id of the first."""
    with httpx.Client(base_url=site.url, timeout=30) as csm:
        assert csm.post("/login", data={"username": "csm1", "password": PASSWORD}).status_code == 303
        assert csm.post("/contracts/C-1/renewal-check", data={"_csrf_token": csrf(csm.get("/contracts/C-1").text)}).status_code == 303
        assert finished_check(csm, "C-1") == "done"
        return re.search(r'href="/packages/(\d+)"', csm.get("/contracts/C-1").text).group(1)


def chart_texts(html: str) -> tuple[list[str], list[str]]:
    """Return the gain chart's tooltips and its date axis labels."""
    chart = html.split('<figure class="gain-chart">', 1)[1].split("</figure>", 1)[0]
    tips = re.findall(r'<g class="day" data-date="[^"]+"><title>([^<]*)</title>', chart)
    axis = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', chart)
    return tips, axis


def test_chart_dates_follow_page_language(login) -> None:
    csm = login("csm1")
    tips, axis = chart_texts(csm.get("/contracts/C-1?lang=zh-CN").text)
    # The site's first voucher is for 6 May 2024.
    assert tips[0].startswith("2024年5月6日")
    assert "2024年5月6日" in axis
    assert not any(re.search(r"\d{4}-\d{2}-\d{2}", text) for text in tips + axis)

    tips, axis = chart_texts(csm.get("/contracts/C-1?lang=en").text)
    assert tips[0].startswith("2024-05-06")
    assert "2024-05-06" in axis


def test_approval_time_in_chinese(login) -> None:
    finance = login("fin1")
    run_id = start_run(finance, "2024-05-01", "2024-05-31")
    assert approve(finance, run_id).status_code == 303
    chinese = finance.get(f"/runs/{run_id}?lang=zh-CN").text
    assert re.search(rf"已由 fin1 于 {CHINESE_INSTANT}审批", chinese), chinese
    english = finance.get(f"/runs/{run_id}?lang=en").text
    assert re.search(rf"Approved by fin1 at {ENGLISH_INSTANT}", english), english


def test_package_times_in_chinese(login, package_id: str) -> None:
    csm = login("csm1")
    page = csm.get(f"/packages/{package_id}?lang=zh-CN").text
    assert re.search(rf"触发时间：{CHINESE_INSTANT} ·", page), page
    summary = csm.get(f"/packages/{package_id}/summary.html?language=zh-CN").text
    assert re.search(rf"<td>{CHINESE_INSTANT}</td>", summary)
    assert re.search(rf"<p>生成于 {CHINESE_INSTANT}</p>", summary)
    english = csm.get(f"/packages/{package_id}/summary.html?language=en").text
    assert re.search(rf"<td>{ENGLISH_INSTANT}</td>", english)


def test_chinese_pages_use_full_width_punctuation(login, package_id: str) -> None:
    csm = login("csm1")
    page = csm.get("/contracts/C-1?lang=zh-CN").text
    assert '<span class="user">csm1（客户成功经理）</span>' in page
    assert re.search(r"（基线 [\d.,-]+ 百分点）", page)
    assert 'aria-label="一号线 OEE：每日增益趋势"' in page
    tips, _ = chart_texts(page)
    assert re.fullmatch(r"2024年5月6日：1\.5（95% 区间 1 – 2）", tips[0]), tips[0]
    assert re.search(r"<title>jam：[\d,.]+ 停机分钟（累计占比 \d+%）</title>", page)
    assert "下载（ZIP）" in csm.get(f"/packages/{package_id}?lang=zh-CN").text
    assert "以密钥对“时间戳.正文”计算" in login("adm1").get("/contracts?lang=zh-CN").text


def test_english_pages_keep_ascii_punctuation(login, package_id: str) -> None:
    csm = login("csm1")
    page = csm.get("/contracts/C-1?lang=en").text
    assert '<span class="user">csm1 (customer-success manager)</span>' in page
    assert re.search(r" \(Baseline [\d.,-]+ percentage points\)", page)
    assert 'aria-label="Line 1 OEE: Daily gain"' in page
    tips, _ = chart_texts(page)
    assert tips[0] == "2024-05-06: 1.5 (95% interval 1 – 2)"
    assert re.search(r"<title>jam: [\d,.]+ Downtime minutes \(Cumulative share \d+%\)</title>", page)
    assert "Download (ZIP)" in csm.get(f"/packages/{package_id}?lang=en").text


@pytest.mark.parametrize(("lang", "price", "kind"), [
    ("zh-CN", "单价：每 OEE 点·运行日 ¥2,000.00 ", "按 OEE 点·运行日计价"),
    ("en", "Unit price: CNY 2,000.00 per OEE point per running day", "per OEE point per running day"),
])
def test_unit_price_reads_naturally(login, lang: str, price: str, kind: str) -> None:
    assert price in login("csm1").get(f"/contracts/C-1?lang={lang}").text
    finance = login("fin1")
    run_id = re.search(r'href="/runs/(\d+)"', finance.get("/contracts/C-1").text).group(1)
    assert f"<td>{kind}<br>" in finance.get(f"/runs/{run_id}?lang={lang}").text


@pytest.mark.parametrize(("lang", "title"), [("zh-CN", "一号线 OEE"), ("en", "Line 1 OEE")])
def test_voucher_rows_name_anchor_title(login, lang: str, title: str) -> None:
    page = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    row = page.split('<tr data-voucher="gw-1:1">', 1)[1].split("</tr>", 1)[0]
    assert f'<td>{title}<br><small class="muted anchor-id">line-oee</small></td>' in row


@pytest.mark.parametrize(("language", "tip"), [("zh-CN", r"<title>[^<：]+：([^ ]+) 停机分钟（"), ("en", r"<title>[^<:]+: ([^ ]+) Downtime minutes \(")])
def test_summary_pareto_two_places(login, package_id: str, language: str, tip: str) -> None:
    summary = login("csm1").get(f"/packages/{package_id}/summary.html?language={language}").text
    minutes = re.findall(tip, summary)
    assert minutes, summary
    for shown in minutes:
        assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", shown), shown
