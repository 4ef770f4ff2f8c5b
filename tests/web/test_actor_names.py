"""Pages, invoice PDFs and CSV exports name people by their names, never by stored actor ids. The module has a service of its own."""

from __future__ import annotations

import asyncio
import html
import io
import re

import httpx
import psycopg
import pytest
from pypdf import PdfReader

from tests.web.renewal_check import finished_check
from tests.web.site import PASSWORD
from tests.web.test_pages import csrf
from tests.web.test_run_approval import approve, start_run
from valuegate.cloud.actors import actor_label
from valuegate.cloud.admin import Admin
from valuegate.cloud.auth import hash_password

pytestmark = pytest.mark.postgres

# Login name, display name, role. The last user has no display name, so pages show the login name.
NAMED_USERS = [("fin.wang", "王芳", "finance"), ("csm.li", "Li Lei", "csm"), ("fin.erp", "", "finance")]


@pytest.fixture(scope="module")
def named(site) -> None:
    with psycopg.connect(site.dsn) as conn:
        for username, display_name, role in NAMED_USERS:
            conn.execute(
                "INSERT INTO users (tenant_id, username, display_name, password_hash, roles) VALUES ('acme', %s, %s, %s, ARRAY[%s])",
                (username, display_name, hash_password(PASSWORD), role),
            )


def text_of(page: str) -> str:
    """Return the text of an HTML page with tags dropped and white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def pdf_text(pdf: bytes) -> str:
    return " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages).split())


def delete_user(dsn: str, username: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM users WHERE username = %s", (username,))


def add_adjustment(client: httpx.Client, day: str, reason: str) -> int:
    token = csrf(client.get("/contracts/C-1").text)
    form = {"_csrf_token": token, "anchor_id": "line-oee", "first_date": day, "last_date": day, "reason": reason}
    response = client.post("/contracts/C-1/adjustments", data=form)
    assert response.status_code == 303, response.text
    return int(re.findall(r'<tr id="nra-(\d+)"', client.get("/contracts/C-1").text)[-1])


def test_run_and_exports_name_people(site, login, named) -> None:
    csm, finance = login("csm.li"), login("fin.wang")
    add_adjustment(csm, "2024-05-08", "sensor swap")
    withdrawn = add_adjustment(csm, "2024-05-09", "wrong day")
    token = csrf(csm.get("/contracts/C-1").text)
    assert csm.post(f"/contracts/C-1/adjustments/{withdrawn}/withdraw", data={"_csrf_token": token, "withdraw_reason": "no rebuild"}).status_code == 303
    run_id = start_run(finance, "2024-05-01", "2024-05-31")
    assert approve(finance, run_id).status_code == 303
    with psycopg.connect(site.dsn) as conn:
        # The database, and so the audit log and the API, keep the actor ids.
        assert conn.execute("SELECT approved_by FROM invoice_runs WHERE id = %s", (run_id,)).fetchone() == ("user:fin.wang",)
        assert conn.execute("SELECT DISTINCT created_by FROM nonroutine_adjustments").fetchall() == [("user:csm.li",)]

    english = text_of(finance.get(f"/runs/{run_id}?lang=en").text)
    assert re.search(r"Approved by 王芳 at \d{4}-\d\d-\d\d \d\d:\d\d UTC\+8", english), english
    assert "sensor swap (Li Lei)" in english
    assert "Withdrawn by Li Lei, " in english
    assert "user:" not in english
    chinese = text_of(finance.get(f"/runs/{run_id}?lang=zh-CN").text)
    assert re.search(r"已由 王芳 于 \d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d（UTC\+8）审批", chinese), chinese
    assert "sensor swap（Li Lei）" in chinese
    assert "已由 Li Lei 于 " in chinese
    assert "user:" not in chinese

    pdf_en = pdf_text(finance.get(f"/runs/{run_id}/export.pdf?lang=en").content)
    assert re.search(r"Approved by 王芳 at \d{4}-\d\d-\d\d \d\d:\d\d UTC\+8", pdf_en), pdf_en
    assert "Li Lei, " in pdf_en
    assert "user:" not in pdf_en
    pdf_zh = pdf_text(finance.get(f"/runs/{run_id}/export.pdf?lang=zh-CN").content)
    assert "已由 王芳 于 " in pdf_zh
    assert "user:" not in pdf_zh

    csv_en = finance.get(f"/runs/{run_id}/export.csv?lang=en").content.decode("utf-8-sig")
    assert "Reason: sensor swap; recorded by Li Lei at " in csv_en
    assert "; withdrawn by Li Lei at " in csv_en
    assert "user:" not in csv_en
    csv_zh = finance.get(f"/runs/{run_id}/export.csv?lang=zh-CN").content.decode("utf-8-sig")
    assert "原因：sensor swap；记录人：Li Lei；" in csv_zh
    assert "；已由 Li Lei 于 " in csv_zh
    # Instants are in the display time zone with their offset, as on the pages, never raw UTC.
    assert re.search(r"recorded by Li Lei at \d{4}-\d\d-\d\d \d\d:\d\d UTC\+8\W", csv_en), csv_en
    assert re.search(r"withdrawn by Li Lei at \d{4}-\d\d-\d\d \d\d:\d\d UTC\+8: no rebuild", csv_en), csv_en
    assert "+00:00" not in csv_en
    assert re.search(r"时间：\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d（UTC\+8）", csv_zh), csv_zh
    assert re.search(r"已由 Li Lei 于 \d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d（UTC\+8）撤销：no rebuild", csv_zh), csv_zh
    assert "+00:00" not in csv_zh

    # A deleted user keeps a readable name: the login name, marked as removed.
    delete_user(site.dsn, "csm.li")
    contract_en = text_of(finance.get("/contracts/C-1?lang=en").text)
    assert "sensor swap csm.li (user removed), " in contract_en
    assert "Withdrawn by csm.li (user removed), " in contract_en
    contract_zh = text_of(finance.get("/contracts/C-1?lang=zh-CN").text)
    assert "sensor swap csm.li（已删除的用户），" in contract_zh
    csv_en = finance.get(f"/runs/{run_id}/export.csv?lang=en").content.decode("utf-8-sig")
    assert "recorded by csm.li (user removed) at " in csv_en


def test_check_page_names_who_started(site, login, named) -> None:
    csm = login("csm1")
    assert csm.post("/contracts/C-1/renewal-check", data={"_csrf_token": csrf(csm.get("/contracts/C-1").text)}).status_code == 303
    assert finished_check(csm, "C-1") == "done"
    assert re.search(r"started by csm1 at \d{4}-", text_of(csm.get("/contracts/C-1/renewal-check?lang=en").text))

    with psycopg.connect(site.dsn) as conn:
        conn.execute("UPDATE renewal_checks SET requested_by = 'system' WHERE contract_id = 'C-1'")
    assert "started by the scheduled check at " in text_of(csm.get("/contracts/C-1/renewal-check?lang=en").text)
    assert "由 定时检查 于 " in text_of(csm.get("/contracts/C-1/renewal-check?lang=zh-CN").text)

    with psycopg.connect(site.dsn) as conn:
        conn.execute("UPDATE renewal_checks SET requested_by = 'user:fin.wang' WHERE contract_id = 'C-1'")
    page = text_of(csm.get("/contracts/C-1/renewal-check?lang=en").text)
    assert "started by 王芳 at " in page
    assert "user:" not in page


def test_token_approval_names_user(site, login, named) -> None:
    """An approval made with an API token names the token's user, here by login name because the user has no display name."""

    async def issue() -> str:
        async with Admin(site.dsn) as admin:
            return await admin.issue_token("acme", "fin.erp", "erp-export")

    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {asyncio.run(issue())}"}, timeout=30) as erp:
        started = erp.post("/contracts/C-1/runs", data={"period_first": "2024-09-01", "period_last": "2024-09-30"}, follow_redirects=False)
        assert started.status_code == 303, started.text
        run_id = int(started.headers["location"].rsplit("/", 1)[1])
        assert erp.post(f"/runs/{run_id}/approve", follow_redirects=False).status_code == 303
    assert re.search(r"Approved by fin\.erp at \d{4}-", text_of(login("fin.wang").get(f"/runs/{run_id}?lang=en").text))


@pytest.mark.parametrize(
    ("actor", "name", "language", "shown"),
    [
        ("user:acme.finance", "Wang Fang", "en", "Wang Fang"),
        ("user:acme.finance", None, "en", "acme.finance (user removed)"),
        ("user:acme.finance", None, "zh-CN", "acme.finance（已删除的用户）"),
        ("token:vgt_1a2b", None, "en", "API token vgt_1a2b"),
        ("token:vgt_1a2b", None, "zh-CN", "API 令牌 vgt_1a2b"),
        ("system", None, "en", "the scheduled check"),
        ("cli", None, "en", "an administrator (command line)"),
        ("admin", None, "zh-CN", "管理员（命令行）"),
        ("demo", None, "en", "demo"),
        (None, None, "en", "–"),
    ],
)
def test_actor_label_cases(actor, name, language, shown) -> None:
    assert actor_label(actor, name, language) == shown
