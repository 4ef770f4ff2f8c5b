"""Input errors of the invoice-run and adjustment forms, shown in the page's language with ids and dates kept as given."""

from __future__ import annotations

import datetime as dt
import html
import re

import httpx
import psycopg
import pytest

from tests.web.site import PASSWORD
from tests.web.test_form_validation import snapshot
from valuegate.cloud.store import Invalid

pytestmark = pytest.mark.postgres

ADJUSTMENT = {"anchor_id": "line-oee", "first_date": "2024-06-03", "last_date": "2024-06-04", "reason": "一号线改造 line rebuild"}
RUN = {"period_first": "2024-05-01", "period_last": "2024-05-10"}

# Each case: the form, what it posts, and the message of each language (after "输入无效：" / "Invalid input: ").
CASES = {
    "overlap": (
        "runs", {"period_first": "2024-05-05", "period_last": "2024-05-15"},
        "结算期 2024-05-05 至 2024-05-15 与已开具的发票 {invoice}（2024-05-01 至 2024-05-10）重叠，请选择不与已开具发票重叠的结算期。",
        "The billing period 2024-05-05 to 2024-05-15 overlaps invoice {invoice} (2024-05-01 to 2024-05-10); choose a period that does not overlap an issued invoice.",
    ),
    "reversed_run": (
        "runs", {"period_first": "2024-06-30", "period_last": "2024-06-01"},
        "结算期的结束日 2024-06-01 早于开始日 2024-06-30，请确保开始日不晚于结束日。",
        "The billing period ends 2024-06-01 before it starts 2024-06-30; give a first date on or before the last.",
    ),
    "invalid_date": (
        "runs", {"period_first": "2024-02-30", "period_last": "2024-06-01"},
        "结算期开始填写的“2024-02-30”不是有效日期，请按 YYYY-MM-DD 格式填写。",
        "Billing period from “2024-02-30” is not a date; use YYYY-MM-DD.",
    ),
    "wholly_outside": (
        "runs", {"period_first": "2025-02-01", "period_last": "2025-02-28"},
        "结算期 2025-02-01 至 2025-02-28 不在合同 C-1 的合同期（2024-04-01 至 2024-12-31）内，请选择合同期内的日期。",
        "The billing period 2025-02-01 to 2025-02-28 lies outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "partly_outside": (
        "runs", {"period_first": "2024-12-01", "period_last": "2025-01-31"},
        "结算期 2024-12-01 至 2025-01-31 超出了合同 C-1 的合同期（2024-04-01 至 2024-12-31），请选择合同期内的日期。",
        "The billing period 2024-12-01 to 2025-01-31 reaches outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "unknown_anchor": (
        "adjustments", {**ADJUSTMENT, "anchor_id": "nope"},
        "合同 C-1 中没有价值锚点 nope，请从以下锚点中选择：line-oee。",
        "Contract C-1 has no value anchor nope; choose one of line-oee.",
    ),
    "reversed_adjustment": (
        "adjustments", {**ADJUSTMENT, "first_date": "2024-06-04", "last_date": "2024-06-03"},
        "调整的结束日 2024-06-03 早于开始日 2024-06-04，请确保开始日不晚于结束日。",
        "The adjustment ends 2024-06-03 before it starts 2024-06-04; give a first date on or before the last.",
    ),
    "missing_reason": (
        "adjustments", {**ADJUSTMENT, "reason": "  "},
        "非常规调整必须填写原因，请说明发生了什么变化（例如产线改造）。",
        "A non-routine adjustment needs a reason; describe what changed (for example a line rebuild).",
    ),
    "adjustment_year_one": (
        "adjustments", {**ADJUSTMENT, "first_date": "0001-01-01", "last_date": "0001-01-01"},
        "调整期 0001-01-01 至 0001-01-01 不在合同 C-1 的合同期（2024-04-01 至 2024-12-31）内，请选择合同期内的日期。",
        "The adjustment 0001-01-01 to 0001-01-01 lies outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_year_9999": (
        "adjustments", {**ADJUSTMENT, "first_date": "9999-12-31", "last_date": "9999-12-31"},
        "调整期 9999-12-31 至 9999-12-31 不在合同 C-1 的合同期（2024-04-01 至 2024-12-31）内，请选择合同期内的日期。",
        "The adjustment 9999-12-31 to 9999-12-31 lies outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_every_date": (
        "adjustments", {**ADJUSTMENT, "first_date": "0001-01-01", "last_date": "9999-12-31"},
        "调整期 0001-01-01 至 9999-12-31 超出了合同 C-1 的合同期（2024-04-01 至 2024-12-31），请选择合同期内的日期。",
        "The adjustment 0001-01-01 to 9999-12-31 reaches outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_centuries": (
        "adjustments", {**ADJUSTMENT, "first_date": "1900-01-01", "last_date": "2999-12-31"},
        "调整期 1900-01-01 至 2999-12-31 超出了合同 C-1 的合同期（2024-04-01 至 2024-12-31），请选择合同期内的日期。",
        "The adjustment 1900-01-01 to 2999-12-31 reaches outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_day_before_term": (
        "adjustments", {**ADJUSTMENT, "first_date": "2024-03-31", "last_date": "2024-04-02"},
        "调整期 2024-03-31 至 2024-04-02 超出了合同 C-1 的合同期（2024-04-01 至 2024-12-31），请选择合同期内的日期。",
        "The adjustment 2024-03-31 to 2024-04-02 reaches outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_day_after_term": (
        "adjustments", {**ADJUSTMENT, "first_date": "2024-12-30", "last_date": "2025-01-01"},
        "调整期 2024-12-30 至 2025-01-01 超出了合同 C-1 的合同期（2024-04-01 至 2024-12-31），请选择合同期内的日期。",
        "The adjustment 2024-12-30 to 2025-01-01 reaches outside the term of contract C-1 (2024-04-01 to 2024-12-31); choose dates within the term.",
    ),
    "adjustment_date": (
        "adjustments", {**ADJUSTMENT, "last_date": "2024-6-4"},
        "结束日期填写的“2024-6-4”不是有效日期，请按 YYYY-MM-DD 格式填写。",
        "Last date “2024-6-4” is not a date; use YYYY-MM-DD.",
    ),
}


def csrf(page: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)


def message(page: str) -> str:
    """Return the text of the error page's message, unescaped."""
    found = re.search(r'<p class="error"[^>]*>(.*?)</p>', page, re.S)
    assert found, page
    return html.unescape(found.group(1)).strip()


@pytest.fixture(scope="module")
def issued_invoice(site) -> str:
    """Run and approve 1-10 May, so that a later period can overlap an issued invoice; return its number."""
    with httpx.Client(base_url=site.url, timeout=30) as finance:
        finance.post("/login", data={"username": "fin1", "password": PASSWORD})
        made = finance.post("/contracts/C-1/runs", data={"_csrf_token": csrf(finance.get("/contracts/C-1").text), **RUN}, follow_redirects=False)
        assert made.status_code == 303, made.text
        run = finance.get(made.headers["location"] + "?lang=en").text
        approved = finance.post(f"{made.headers['location']}/approve", data={"_csrf_token": csrf(run)}, follow_redirects=False)
        assert approved.status_code == 303
        return re.search(r"INV-[0-9A-Z-]+", run).group(0)


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_form_error_speaks_page_language(site, login, issued_invoice, case: str, language: str) -> None:
    form, data, chinese, english = CASES[case]
    client = login("fin1" if form == "runs" else "csm1")
    token = csrf(client.get(f"/contracts/C-1?lang={language}").text)
    before = snapshot(site.dsn)
    response = client.post(f"/contracts/C-1/{form}", data={"_csrf_token": token, **data})
    assert response.status_code == 400
    expected = (chinese if language == "zh-CN" else english).format(invoice=issued_invoice)
    prefix = "输入无效：" if language == "zh-CN" else "Invalid input: "
    assert message(response.text) == prefix + expected
    assert snapshot(site.dsn) == before


def test_adjustment_on_term_bounds_is_stored(site, login) -> None:
    """The first and the last day of the term are inside it, so an adjustment over the whole term is stored."""
    client = login("csm1")
    token = csrf(client.get("/contracts/C-1").text)
    data = {**ADJUSTMENT, "first_date": "2024-04-01", "last_date": "2024-12-31", "reason": "term bounds"}
    response = client.post("/contracts/C-1/adjustments", data={"_csrf_token": token, **data})
    assert response.status_code == 303, response.text
    with psycopg.connect(site.dsn) as conn:
        stored = conn.execute("SELECT first_date, last_date FROM nonroutine_adjustments WHERE reason = 'term bounds'").fetchall()
    assert stored == [(dt.date(2024, 4, 1), dt.date(2024, 12, 31))]


def test_error_without_catalog_text_keeps_its_english_message() -> None:
    """An error the catalog has no text for (or that carries no values) still shows what was wrong, in English."""
    from valuegate.cloud.web.pages import error_text

    plain = Invalid("webhook URL 'ftp://x' must start with http:// or https://", code="invalid_url")
    assert error_text("zh-CN", plain) == "输入无效：webhook URL 'ftp://x' must start with http:// or https://"
    unknown = Invalid("something new went wrong", code="not_in_the_catalog")
    unknown.params = {"value": "x"}
    assert error_text("en", unknown) == "Invalid input: something new went wrong"
