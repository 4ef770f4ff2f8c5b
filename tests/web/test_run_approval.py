"""Approving invoice runs on the web: a stale draft, a draft overlapping an issued invoice, and approvals at the same moment."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.web.test_form_validation import message
from tests.web.test_pages import csrf

pytestmark = pytest.mark.postgres


def start_run(client: httpx.Client, first: str, last: str) -> int:
    token = csrf(client.get("/contracts/C-1").text)
    response = client.post("/contracts/C-1/runs", data={"_csrf_token": token, "period_first": first, "period_last": last})
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def seen(page: str) -> str:
    """Return the digest of the draft that a run page shows, which its approve form sends."""
    found = re.search(r'name="seen" value="(sha256:[0-9a-f]{64})"', page)
    assert found, "the run page has no approve form"
    return found.group(1)


def approve(client: httpx.Client, run_id: int, language: str = "zh-CN") -> httpx.Response:
    """Open the run page and send its approve form, as a browser does."""
    page = client.get(f"/runs/{run_id}").text
    return client.post(f"/runs/{run_id}/approve?lang={language}", data={"_csrf_token": csrf(page), "seen": seen(page)})


def invoice_of(dsn: str, run_id: int) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT invoice_number FROM invoice_runs WHERE id = %s", (run_id,)).fetchone()[0]


def test_approval_conflicts_are_pages(site, login) -> None:
    """A stale draft and a draft overlapping an issued invoice get a 409 page in the user's language; nothing is issued."""
    finance, csm = login("fin1"), login("csm1")
    stale = start_run(finance, "2024-05-01", "2024-05-31")
    token = csrf(csm.get("/contracts/C-1").text)
    form = {"_csrf_token": token, "anchor_id": "line-oee", "first_date": "2024-05-08", "last_date": "2024-05-08", "reason": "sensor swap"}
    assert csm.post("/contracts/C-1/adjustments", data=form).status_code == 303

    refused = approve(finance, stale)
    assert refused.status_code == 409
    assert message(refused.text) == (
        f"未完成：发票批次 {stale}（{invoice_of(site.dsn, stale)}）已过时：计算之后，凭证、非常规调整或其他批次开具的票据改变了它的结果。"
        "请重新对该结算期运行结算，审核新的草稿后再审批。"
    )

    current = start_run(finance, "2024-05-01", "2024-05-31")
    inner = start_run(finance, "2024-05-10", "2024-05-20")  # drafts may overlap; only issued invoices may not
    assert approve(finance, current).status_code == 303
    overlapping = approve(finance, inner, "en")
    assert overlapping.status_code == 409
    issued = invoice_of(site.dsn, current)
    assert message(overlapping.text) == (
        f"Not done: The billing period 2024-05-10 to 2024-05-20 overlaps invoice {issued} (2024-05-01 to 2024-05-31), issued since this draft "
        "was computed, so the draft can no longer be approved. Discard it with “Discard draft” on its run page."
    )
    with psycopg.connect(site.dsn) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM invoice_runs WHERE id = ANY(%s)", ([stale, current, inner],)).fetchall())
    assert statuses == {stale: "draft", current: "approved", inner: "draft"}


def test_simultaneous_approvals_all_redirect(site, login) -> None:
    """Four approvals of one run at once: every request gets the redirect, and the run is approved and audited once."""
    finance = login("fin1")
    run_id = start_run(finance, "2024-06-01", "2024-06-30")
    token = csrf(finance.get(f"/runs/{run_id}").text)

    def post(_: int) -> int:
        with httpx.Client(base_url=str(finance.base_url), cookies=finance.cookies, timeout=30) as client:
            return client.post(f"/runs/{run_id}/approve", data={"_csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(post, range(4)))
    assert codes == [303, 303, 303, 303]
    with psycopg.connect(site.dsn) as conn:
        audited = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'invoice.approve' AND object_id = %s", (str(run_id),)).fetchone()[0]
    assert audited == 1


def test_contract_page_lists_notes(site, login) -> None:
    """A credit note issued by a later run shows on the contract page under that run, with its own total."""
    from decimal import Decimal

    from valuegate.cloud.web.i18n import format_money

    finance, csm = login("fin1"), login("csm1")
    token = csrf(csm.get("/contracts/C-1").text)
    form = {"_csrf_token": token, "anchor_id": "line-oee", "first_date": "2024-05-09", "last_date": "2024-05-09", "reason": "trial run"}
    assert csm.post("/contracts/C-1/adjustments", data=form).status_code == 303
    july = start_run(finance, "2024-07-01", "2024-07-31")
    assert approve(finance, july).status_code == 303
    with psycopg.connect(site.dsn) as conn:
        number, total = conn.execute("SELECT number, total FROM invoice_documents WHERE run_id = %s AND kind = 'credit_note'", (july,)).fetchone()
    assert total < 0

    page = finance.get("/contracts/C-1?lang=en").text
    row = page[page.index(f">{number}</a>"):]
    row = row[: row.index("</tr>")]
    assert "Credit note" in row
    with psycopg.connect(site.dsn) as conn:
        corrected = conn.execute("SELECT corrects FROM invoice_documents WHERE number = %s", (number,)).fetchone()[0]
    assert f"Corrects {corrected}" in row
    assert format_money(Decimal(total), "CNY", "en") in row


def test_draft_discarded_approved_kept(site, login) -> None:
    """Finance deletes a draft, such as one that can no longer be approved; an approved run refuses, and each discard is audited."""
    finance, csm = login("fin1"), login("csm1")
    draft = start_run(finance, "2024-08-12", "2024-08-14")
    token = csrf(finance.get(f"/runs/{draft}").text)
    assert 'id="discard-run"' in finance.get(f"/runs/{draft}").text

    discarded = finance.post(f"/runs/{draft}/discard", data={"_csrf_token": token})
    assert discarded.status_code == 303
    assert discarded.headers["location"] == "/contracts/C-1?done=run.discarded#settlement"
    assert "发票批次草稿已删除。" in finance.get("/contracts/C-1?done=run.discarded").text
    assert finance.get(f"/runs/{draft}").status_code == 404
    with psycopg.connect(site.dsn) as conn:
        approved = conn.execute("SELECT id, invoice_number FROM invoice_runs WHERE status = 'approved' ORDER BY id LIMIT 1").fetchone()
        audited = conn.execute("SELECT detail->>'period' FROM audit_log WHERE action = 'invoice.discard' AND object_id = %s", (str(draft),)).fetchone()
    assert audited == ("2024-08-12..2024-08-14",)

    kept = finance.post(f"/runs/{approved[0]}/discard?lang=en", data={"_csrf_token": token})
    assert kept.status_code == 409
    assert message(kept.text) == (
        f"Not done: Invoice run {approved[0]} ({approved[1]}) is approved, and an issued invoice is never deleted; a later run corrects it with a note."
    )
    assert csm.post(f"/runs/{draft}/discard", data={"_csrf_token": csrf(csm.get("/contracts/C-1").text)}).status_code == 403


def test_erp_token_runs_and_exports(site) -> None:
    """With a finance user's API token and no CSRF token, a job runs, approves and exports a period through the web routes."""
    import asyncio

    from valuegate.cloud.admin import Admin

    async def issue() -> str:
        async with Admin(site.dsn) as admin:
            return await admin.issue_token("acme", "fin1", "erp-export")

    token = asyncio.run(issue())
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {token}"}, timeout=30, follow_redirects=False) as erp:
        started = erp.post("/contracts/C-1/runs", data={"period_first": "2024-09-01", "period_last": "2024-09-30"})
        assert started.status_code == 303, started.text
        run_id = int(started.headers["location"].rsplit("/", 1)[1])
        assert erp.post(f"/runs/{run_id}/approve").status_code == 303
        exported = erp.get(f"/runs/{run_id}/export.csv?lang=en")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert invoice_of(site.dsn, run_id) in exported.text

    # A wrong token gets 401, never the redirect to the log-in page that a browser gets.
    with httpx.Client(base_url=site.url, headers={"Authorization": "Bearer vgt_000000000000_wrong"}, timeout=30, follow_redirects=False) as wrong:
        refused = wrong.post(f"/runs/{run_id}/approve?lang=en")
    assert refused.status_code == 401
    assert message(refused.text) == "The API token is invalid, expired or revoked; issue a new one with valuegate cloud admin token-issue."
