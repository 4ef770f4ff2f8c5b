"""Withdrawing a non-routine adjustment on the contract page; a double submit stores one adjustment. The module has a service of its own."""

from __future__ import annotations

import html
import re

import psycopg
import pytest

from tests.web.test_form_validation import message
from tests.web.test_pages import csrf

pytestmark = pytest.mark.postgres
FORM = {"anchor_id": "line-oee", "first_date": "2024-05-08", "last_date": "2024-05-08", "reason": "line rebuild"}


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, withdrawn_by, withdraw_reason FROM nonroutine_adjustments ORDER BY id").fetchall()


def row_of(page: str, adjustment_id: int) -> str:
    start = page.index(f'<tr id="nra-{adjustment_id}"')
    return page[start : page.index("</tr>", start)]


def test_double_submit_then_withdraw(site, login) -> None:
    csm, auditor = login("csm1"), login("aud1")
    token = csrf(csm.get("/contracts/C-1").text)
    for _ in range(2):  # a double click sends the same form twice
        assert csm.post("/contracts/C-1/adjustments", data={"_csrf_token": token, **FORM}).status_code == 303
    ((adjustment_id, _, _),) = rows(site.dsn)

    page = csm.get("/contracts/C-1?lang=en").text
    assert f'action="/contracts/C-1/adjustments/{adjustment_id}/withdraw"' in row_of(page, adjustment_id)
    assert "withdraw-form" not in auditor.get("/contracts/C-1?lang=en").text
    denied = auditor.post(f"/contracts/C-1/adjustments/{adjustment_id}/withdraw", data={"_csrf_token": csrf(auditor.get("/contracts/C-1").text), "withdraw_reason": "x"})
    assert denied.status_code == 403

    blank = csm.post(f"/contracts/C-1/adjustments/{adjustment_id}/withdraw?lang=en", data={"_csrf_token": token, "withdraw_reason": "   "})
    assert blank.status_code == 400
    assert message(blank.text) == (
        "Invalid input: Withdrawing a non-routine adjustment needs a reason; say what was wrong with it (for example a wrong date range)."
    )
    assert rows(site.dsn) == [(adjustment_id, None, None)]
    too_long = csm.post(f"/contracts/C-1/adjustments/{adjustment_id}/withdraw?lang=en", data={"_csrf_token": token, "withdraw_reason": "x" * 501})
    assert too_long.status_code == 400
    assert message(too_long.text) == (
        "Invalid input: Why withdraw is not valid; say in at most 500 characters what was wrong with the adjustment, for example a wrong date range."
    )

    done = csm.post(f"/contracts/C-1/adjustments/{adjustment_id}/withdraw", data={"_csrf_token": token, "withdraw_reason": "wrong line"})
    assert (done.status_code, done.headers["location"]) == (303, "/contracts/C-1?done=adjustment.withdrawn#adjustments")
    assert rows(site.dsn) == [(adjustment_id, "user:csm1", "wrong line")]
    shown = csm.get(done.headers["location"]).text  # in English, chosen above with ?lang=en
    row = html.unescape(re.sub(r"\s+", " ", row_of(shown, adjustment_id)))
    assert 'class="withdrawn"' in row
    assert re.search(r"<td>Withdrawn by csm1, \d{4}-\d\d-\d\d \d\d:\d\d UTC\+8: wrong line</td>", row), row
    assert "withdraw-form" not in row
    assert "The non-routine adjustment is withdrawn. The next invoice run bills its days again." in shown
    chinese = html.unescape(row_of(csm.get("/contracts/C-1?lang=zh-CN").text, adjustment_id))
    assert re.search(r"<td>已由 csm1 于 \d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d（UTC\+8）撤销：wrong line</td>", chinese), chinese

    # The same adjustment may be recorded again once the earlier one is withdrawn.
    assert csm.post("/contracts/C-1/adjustments", data={"_csrf_token": token, **FORM}).status_code == 303
    assert [withdrawn for _, withdrawn, _ in rows(site.dsn)] == ["user:csm1", None]
