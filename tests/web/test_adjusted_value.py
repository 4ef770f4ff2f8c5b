"""Realized value after a non-routine adjustment: the contract page and the value endpoint bill what an invoice run bills."""

from __future__ import annotations

from decimal import Decimal

import httpx
import psycopg
import pytest

from tests.web.site import PASSWORD
from tests.web.test_pages import csrf

pytestmark = pytest.mark.postgres

# Voucher gw-1:3 covers 2024-05-08, the only day the adjustment takes out.
ADJUSTMENT = {"anchor_id": "line-oee", "first_date": "2024-05-08", "last_date": "2024-05-08", "reason": "一号线改造 line rebuild"}


@pytest.fixture(scope="module")
def adjusted(site):
    """Record the adjustment through the web form as the CSM, and return its id."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        assert client.post("/login", data={"username": "csm1", "password": PASSWORD, "next": "/contracts"}).status_code == 303
        token = csrf(client.get("/contracts/C-1").text)
        response = client.post("/contracts/C-1/adjustments", data={"_csrf_token": token, **ADJUSTMENT})
        assert response.status_code == 303, response.text
    with psycopg.connect(site.dsn) as conn:
        (adjustment_id,) = conn.execute("SELECT id FROM nonroutine_adjustments WHERE contract_id = 'C-1'").fetchone()
    return adjustment_id


def test_value_leaves_out_excluded_day(adjusted, login):
    value = login("csm1").get("/api/v1/contracts/C-1/value").json()
    (anchor,) = value["anchors"]
    # 20 days of 1.5 points, less 2024-05-08: 19 running days, 28.5 points, 28.5 x 2,000 CNY.
    assert anchor["running_days"] == 19
    assert Decimal(str(anchor["points_gained"])) == Decimal("28.5")
    assert Decimal(str(anchor["amount"])) == Decimal("57000.00")
    assert Decimal(str(value["total"])) == Decimal("57000.00")
    assert anchor["excluded"] == [{"voucher": "gw-1:3", "adjustment": adjusted}]


def test_value_equals_invoice_total(site, adjusted, login):
    client = login("fin1")
    token = csrf(client.get("/contracts/C-1").text)
    response = client.post("/contracts/C-1/runs", data={"_csrf_token": token, "period_first": "2024-05-01", "period_last": "2024-05-31"})
    assert response.status_code == 303, response.text
    run_id = int(response.headers["location"].rsplit("/", 1)[1])
    run_page = client.get(f"/runs/{run_id}?lang=en").text
    assert "gw-1:3" in run_page
    value = client.get("/api/v1/contracts/C-1/value").json()
    with psycopg.connect(site.dsn) as conn:
        total = conn.execute("SELECT d.total FROM invoice_documents d JOIN invoice_runs r ON r.invoice_number = d.number WHERE r.id = %s",
                             (run_id,)).fetchone()[0]
    assert total == Decimal("57000.00")
    assert Decimal(str(value["total"])) == total


@pytest.mark.parametrize(("lang", "excluded", "days"), [
    ("zh-CN", "gw-1:3：因非常规调整 NRA-{id} 不计价。", "计入天数"),
    ("en", "gw-1:3: does not bill because of non-routine adjustment NRA-{id}.", "Days counted"),
])
def test_contract_page_counts_billed_days(adjusted, login, lang, excluded, days):
    page = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    assert 'id="realized-total">' in page
    total = page.split('id="realized-total">', 1)[1].split("<", 1)[0]
    assert total.endswith("57,000.00"), total
    anchor = page.split('id="anchor-line-oee"', 1)[1].split("</section>", 1)[0]
    assert f"{days}<b>19</b>" in anchor
    amount = anchor.split('<b class="amount">', 1)[1].split("</b>", 1)[0]
    assert amount.endswith("57,000.00"), amount
    assert excluded.format(id=adjusted) in anchor
