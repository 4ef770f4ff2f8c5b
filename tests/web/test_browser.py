"""The web UI in headless Chromium: a CSM reads a contract in both languages; finance runs, approves and exports an invoice."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.web.site import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(base_url=site.url, accept_downloads=True)
    # Every request stays on the service under test; anything else would fail the test.
    outside: list[str] = []
    context.on("request", lambda request: None if request.url.startswith(site.url) else outside.append(request.url))
    tab = context.new_page()
    yield tab
    context.close()
    assert outside == []


def log_in(page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login")
    page.wait_for_url("**/contracts")


def test_csm_reads_contract_in_both_languages(page):
    log_in(page, "csm1")
    assert page.locator("h1").inner_text() == "合同列表"
    page.click("a.open-contract")
    page.wait_for_url("**/contracts/C-1")

    chart = page.locator("figure.gain-chart svg")
    assert chart.count() == 1
    assert chart.locator("g.day").count() == 21
    assert chart.locator("circle.insufficient").count() == 1
    assert page.locator("figure.pareto-chart svg g.reason").count() == 2
    rows = page.locator("#vouchers tbody tr")
    assert rows.count() == 21
    assert rows.first.locator(".state").inner_text() == "已核验"
    assert page.locator("h2", has_text="价值凭证").count() == 1

    page.click("a[data-lang=en]")
    page.wait_for_load_state()
    assert page.locator("h2", has_text="Value vouchers").count() == 1
    assert page.locator("#vouchers tbody tr").first.locator(".state").inner_text() == "verified"
    # The choice sticks: a fresh navigation stays in English.
    page.goto("/contracts")
    assert page.locator("h1").inner_text() == "Contracts"
    page.click("a[data-lang=zh-CN]")
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "合同列表"


def test_csm_sees_no_finance_actions(page, site):
    log_in(page, "csm1")
    page.goto("/contracts/C-1")
    assert page.locator("#run-form").count() == 0
    assert page.locator("#settlement").count() == 0
    response = page.goto("/runs/1")
    assert response.status == 403


def test_finance_runs_approves_and_exports(page):
    log_in(page, "fin1")
    page.goto("/contracts/C-1?lang=en")
    page.fill("input[name=period_first]", "2024-05-01")
    page.fill("input[name=period_last]", "2024-05-31")
    page.click("#run-invoice")
    page.wait_for_url("**/runs/*")
    assert "Draft" in page.locator("#run-status").inner_text()
    # 20 running days x 1.5 OEE points x 2,000 CNY
    assert page.locator(".document-total").inner_text() == "CNY 60,000.00"

    page.click("#approve-run")
    page.wait_for_load_state()
    assert "Approved by fin1 at " in page.locator("#run-status").inner_text()
    assert page.locator("#approve-run").count() == 0

    with page.expect_download() as download_info:
        page.click("#csv-en")
    data = open(download_info.value.path(), "rb").read().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(data)))
    lines = [r for r in rows if r["Record"] == "line"]
    (total,) = [r for r in rows if r["Record"] == "total"]
    assert sum(Decimal(r["Amount"]) for r in lines) == Decimal("60000.00")
    assert total["Amount"] == "60000.00"
    assert total["Note"] == "issued"
    assert lines[0]["Voucher ids"].split() == [f"gw-1:{n}" for n in range(1, 21)]
