"""A draft computed again after the approver opened it is not approved unseen.

The run page's approve form sends the digest of the draft it shows. Here
a CSM excludes a day and a second finance session runs the period again,
which recomputes the same draft, while the first session still has the
older page open. The module has a service of its own, so the period is free.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.web.test_form_validation import message
from tests.web.test_pages import csrf
from tests.web.test_run_approval import approve, invoice_of, seen, start_run

pytestmark = pytest.mark.postgres


def test_draft_run_again_after_opening_refused(site, login) -> None:
    opener, rerunner, csm = login("fin1"), login("fin1"), login("csm1")
    run_id = start_run(opener, "2024-05-01", "2024-05-31")
    opened = opener.get(f"/runs/{run_id}").text
    token = csrf(csm.get("/contracts/C-1").text)
    form = {"_csrf_token": token, "anchor_id": "line-oee", "first_date": "2024-05-08", "last_date": "2024-05-08", "reason": "line rebuild"}
    assert csm.post("/contracts/C-1/adjustments", data=form).status_code == 303
    assert start_run(rerunner, "2024-05-01", "2024-05-31") == run_id  # the same draft, computed again

    refused = opener.post(f"/runs/{run_id}/approve?lang=en", data={"_csrf_token": csrf(opened), "seen": seen(opened)})
    assert refused.status_code == 409
    assert message(refused.text) == (
        f"Not done: Invoice run {run_id} ({invoice_of(site.dsn, run_id)}) was computed again after you opened it and now shows other documents. "
        "Open the run page again (reload it, not Back) to review the current draft, then approve it."
    )
    with psycopg.connect(site.dsn) as conn:
        assert conn.execute("SELECT status FROM invoice_runs WHERE id = %s", (run_id,)).fetchone() == ("draft",)
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'invoice.approve'").fetchone() == (0,)

    reloaded = opener.get(f"/runs/{run_id}").text
    assert seen(reloaded) != seen(opened)
    assert approve(opener, run_id).status_code == 303
    with psycopg.connect(site.dsn) as conn:
        assert conn.execute("SELECT status, approved_by FROM invoice_runs WHERE id = %s", (run_id,)).fetchone() == ("approved", "user:fin1")


def test_unchanged_rerun_keeps_the_page_valid(site, login) -> None:
    """Running a period again with the same inputs leaves the draft as it was, so the open page still approves it."""
    finance = login("fin1")
    run_id = start_run(finance, "2024-06-01", "2024-06-30")
    opened = finance.get(f"/runs/{run_id}").text
    assert start_run(finance, "2024-06-01", "2024-06-30") == run_id
    approved = finance.post(f"/runs/{run_id}/approve", data={"_csrf_token": csrf(opened), "seen": seen(opened)})
    assert approved.status_code == 303


def test_api_client_sends_seen_as_json(site, login) -> None:
    """An API token may send the digest as JSON too; one that no longer matches is refused, the current one approves."""
    import asyncio

    import httpx

    from valuegate.cloud.admin import Admin

    async def issue() -> str:
        async with Admin(site.dsn) as admin:
            return await admin.issue_token("acme", "fin1", "erp")

    finance = login("fin1")
    run_id = start_run(finance, "2024-07-01", "2024-07-31")
    current = seen(finance.get(f"/runs/{run_id}").text)
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {asyncio.run(issue())}"}, timeout=30, follow_redirects=False) as erp:
        stale = erp.post(f"/runs/{run_id}/approve?lang=en", json={"seen": "sha256:" + "0" * 64})
        assert stale.status_code == 409
        assert "was computed again after you opened it" in message(stale.text)
        assert erp.post(f"/runs/{run_id}/approve", json={"seen": current}).status_code == 303
