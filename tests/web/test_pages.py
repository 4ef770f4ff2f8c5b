"""Web pages over HTTP against the real service: access by role and tenant, language, adjustments, exports, bundles, packages."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import time
import zipfile
from decimal import Decimal

import httpx
import psycopg
import pytest

from tests.renewal.receiver import receiver
from tests.web.site import PASSWORD
from valuegate.verify import verify_bundle

pytestmark = pytest.mark.postgres


def csrf(html: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', html).group(1)


def run_may(client: httpx.Client) -> int:
    token = csrf(client.get("/contracts/C-1").text)
    response = client.post("/contracts/C-1/runs", data={"_csrf_token": token, "period_first": "2024-05-01", "period_last": "2024-05-31"})
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def test_anonymous_goes_to_login(site):
    response = httpx.get(f"{site.url}/contracts/C-1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fcontracts%2FC-1"


def test_wrong_password_and_open_redirect(site):
    with httpx.Client(base_url=site.url) as client:
        failed = client.post("/login", data={"username": "csm1", "password": "wrong-password"})
        assert failed.status_code == 401
        assert "用户名或密码不正确" in failed.text
        ok = client.post("/login", data={"username": "csm1", "password": PASSWORD, "next": "//attacker.example/x"})
        assert ok.status_code == 303
        assert ok.headers["location"] == "/contracts"


def test_chinese_default_and_english_switch(login):
    client = login("csm1")
    default = client.get("/contracts/C-1", headers={"Accept-Language": "en-US"})
    assert "价值凭证" in default.text
    assert "已核验" in default.text
    english = client.get("/contracts/C-1?lang=en")
    assert "Value vouchers" in english.text
    assert english.cookies.get("vg_lang") == "en"
    assert "Value vouchers" in client.get("/contracts/C-1").text
    assert "价值凭证" in client.get("/contracts/C-1?lang=zh-CN").text


def test_contract_page_shows_findings_and_states(login):
    html = login("csm1").get("/contracts/C-1?lang=en").text
    assert html.count('class="state state-verified"') == 21
    assert "2024-05-26: too little data; the day bills nothing (planned_busy_below_minimum)." in html
    assert 'id="realized-total">CNY 60,000.00<' in html
    assert html.count("<svg") == 2


def test_csm_cannot_reach_finance(login):
    csm = login("csm1")
    page = csm.get("/contracts/C-1").text
    assert 'id="run-form"' not in page
    assert 'id="settlement"' not in page
    token = csrf(page)
    denied = csm.post("/contracts/C-1/runs", data={"_csrf_token": token, "period_first": "2024-05-01", "period_last": "2024-05-31"})
    assert denied.status_code == 403
    assert "无权" in denied.text

    run_id = run_may(login("fin1"))
    assert csm.get(f"/runs/{run_id}").status_code == 403
    assert csm.get(f"/runs/{run_id}/export.csv").status_code == 403
    assert csm.post(f"/runs/{run_id}/approve", data={"_csrf_token": token}).status_code == 403


def test_other_tenant_gets_404(login):
    outsider = login("globex-csm")
    assert outsider.get("/contracts/C-1").status_code == 404
    assert outsider.get("/contracts/C-1/machines/m-1").status_code == 404
    assert outsider.get("/contracts").status_code == 200
    assert "C-1" not in outsider.get("/contracts").text


def test_post_without_csrf_is_rejected(login):
    response = login("csm1").post("/contracts/C-1/adjustments", data={"first_date": "2024-05-06", "last_date": "2024-05-07", "reason": "x"})
    assert response.status_code == 403


def test_adjustment_flows_into_page_run_and_csv(site, login):
    csm = login("csm1")
    token = csrf(csm.get("/contracts/C-1").text)
    form = {"_csrf_token": token, "anchor_id": "line-oee", "first_date": "2024-05-06", "last_date": "2024-05-07", "reason": "一号线改造 line rebuild"}
    saved = csm.post("/contracts/C-1/adjustments", data=form)
    assert saved.status_code == 303
    page = csm.get("/contracts/C-1?lang=en").text
    assert "一号线改造 line rebuild" in page
    assert "gw-1:1: does not bill because of non-routine adjustment NRA-" in page
    bad = csm.post("/contracts/C-1/adjustments", data={**form, "reason": "   "})
    assert bad.status_code == 400

    finance = login("fin1")
    run_id = run_may(finance)
    run_page = finance.get(f"/runs/{run_id}?lang=en").text
    # 18 remaining days x 1.5 points x 2,000 CNY
    assert 'class="document-total">CNY 54,000.00<' in run_page
    rows = list(csv.DictReader(io.StringIO(finance.get(f"/runs/{run_id}/export.csv?language=en").content.decode("utf-8-sig"))))
    (line,) = [r for r in rows if r["Record"] == "line"]
    assert line["Excluded vouchers"] == "gw-1:1 gw-1:2"
    assert line["Amount"] == "54000.00"
    assert [r["Record"] for r in rows].count("non-routine adjustment") == 1

    with psycopg.connect(site.dsn) as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit_log WHERE action LIKE 'adjustment.%' OR action LIKE 'invoice.%' ORDER BY id")]
    assert actions.count("adjustment.create") == 1
    assert actions[-1] == "invoice.run"


def test_pdf_export_and_bundle_verify(login, tmp_path):
    finance = login("fin1")
    run_id = run_may(finance)
    token = csrf(finance.get(f"/runs/{run_id}").text)
    assert finance.post(f"/runs/{run_id}/approve", data={"_csrf_token": token}).status_code == 303
    pdf = finance.get(f"/runs/{run_id}/export.pdf?language=zh-CN")
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")

    auditor = login("aud1")
    bundle = auditor.get("/contracts/C-1/bundle.zip?records=false")
    assert bundle.status_code == 200
    assert bundle.headers["content-disposition"] == 'attachment; filename="C-1.bundle-without-records.zip"'
    (tmp_path / "bundle.zip").write_bytes(bundle.content)
    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.as_dict()
    assert len(report.vouchers) == 21
    assert report.evidence.not_checked == 21
    documents = json.loads(zipfile.ZipFile(tmp_path / "bundle.zip").read("invoices.json"))
    assert [d["kind"] for d in documents] == ["invoice"]
    assert Decimal(documents[0]["total"]) > 0

    # A records value other than true or false names the parameter and the values it takes, in the page's language.
    wrong = auditor.get("/contracts/C-1/bundle.zip?records=maybe")
    assert wrong.status_code == 400
    assert "“网址中的 records”应为是或否，但提交的是文本，带逐分钟记录的数据包请用 records=true，不带则用 records=false。" in wrong.text

    # The fixture's vouchers are synthetic. Each commits to three minutes that were never stored, so with the
    # records of the downtime chart in the bundle every voucher fails on its evidence, and so does the line billing them.
    full = auditor.get("/contracts/C-1/bundle.zip")
    assert full.headers["content-disposition"] == 'attachment; filename="C-1.bundle.zip"'
    (tmp_path / "records.zip").write_bytes(full.content)
    with_records = verify_bundle(tmp_path / "records.zip")
    assert with_records.evidence.failed == 21
    for verdict in with_records.vouchers:
        assert len(verdict.reasons) == 1, verdict.subject
        assert verdict.reasons[0].startswith("evidence: the bundle"), verdict.reasons
    assert "evidence: the bundle's 30 records of m-1 in 2024-05-07T00:00:00Z..2024-05-08T00:00:00Z give root " in str(with_records.as_dict())
    assert [v.subject for v in with_records.files if not v.ok] == []
    assert all(v.subject.startswith(documents[0]["number"]) for v in with_records.lines if not v.ok)


def test_machine_page_and_stylesheet(site, login):
    client = login("csm1")
    html = client.get("/contracts/C-1/machines/m-2?lang=en").text
    assert "Machine m-2" in html
    assert html.count('<tr><td>2024-05-0') == 2
    assert 'data-reason="starved"' in html
    # The time source reads in words; the Chinese label takes a full-width colon.
    # m-2 backs no voucher, so no time source is known; m-1's vouchers name the PLC's clock, in words on the page.
    assert "Time source: – ·" in html
    assert "Time source: the PLC&#39;s clock (plc) ·" in client.get("/contracts/C-1/machines/m-1?lang=en").text
    chinese = client.get("/contracts/C-1/machines/m-1?lang=zh-CN").text
    # The Chinese label takes a full-width colon.
    assert "时间来源：PLC 时钟（plc） ·" in chinese
    assert client.get("/contracts/C-1/machines/m-9").status_code == 404
    css = httpx.get(f"{site.url}/static/valuegate.css")
    assert css.status_code == 200
    assert "font-family" in css.text


def test_renewal_check_builds_and_delivers_package(login):
    admin = login("adm1")
    contracts = admin.get("/contracts").text
    assert 'id="webhook"' in contracts
    assert 'id="webhook"' not in login("csm1").get("/contracts").text
    with receiver([503, 200]) as (url, received):
        saved = admin.post("/settings/webhook", data={"_csrf_token": csrf(contracts), "url": url, "secret": "web-test-secret-123"})
        assert saved.status_code == 303
        csm = login("csm1")
        token = csrf(csm.get("/contracts/C-1").text)
        assert csm.post("/settings/webhook", data={"_csrf_token": token, "url": url, "secret": "x" * 20}).status_code == 403

        assert csm.post("/contracts/C-1/renewal-check", data={"_csrf_token": token}).status_code == 303
        # Two triggers fire (target met; 30 days before the end, long past): the first delivery gets a 503 and is retried.
        deadline = time.monotonic() + 20
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert len(received) == 3
    assert len({r["headers"]["x-valuegate-package"] for r in received}) == 2
    for request in received:
        timestamp = request["headers"]["x-valuegate-timestamp"]
        expected = "sha256=" + hmac.new(b"web-test-secret-123", timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["x-valuegate-signature"] == expected
        assert request["body"].startswith(b"PK")
    page = csm.get("/contracts/C-1?lang=en").text
    assert "Value anchor Line 1 OEE met its target" in page
    package_id = re.search(r'href="/packages/(\d+)"', page).group(1)
    package = csm.get(f"/packages/{package_id}?lang=en").text
    assert "Best machine: m-1" in package
    summary = csm.get(f"/packages/{package_id}/summary.html?language=zh-CN")
    assert "沟通要点" in summary.text
    assert summary.headers["content-security-policy"].startswith("default-src 'none'")
    assert csm.get(f"/packages/{package_id}/bundle.zip").content.startswith(b"PK")
    assert login("globex-csm").get(f"/packages/{package_id}").status_code == 404
    # Finance may follow the link to the latest check, but gets no button that starts one.
    finance_page = login("fin1").get("/contracts/C-1").text
    assert 'action="/contracts/C-1/renewal-check"' not in finance_page
    assert 'href="/contracts/C-1/renewal-check"' in finance_page


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, True),
        ({"Origin": "https://evil.example"}, True),
        ({"Sec-Fetch-Site": "same-origin"}, False),
        ({}, False),
    ],
    ids=["fetch-cross-site", "origin-other-host", "fetch-same-origin", "no-browser-headers"],
)
def test_login_from_other_site_refused(site, headers: dict[str, str], refused: bool) -> None:
    """Login CSRF: a browser that marks the form as sent from another site gets no session."""
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        response = client.post("/login?lang=en", data={"username": "csm1", "password": PASSWORD, "next": "/contracts"}, headers=headers)
    if refused:
        assert response.status_code == 403
        assert "The log-in form was sent from another site." in response.text
        assert "vg_session" not in response.headers.get("set-cookie", "")
    else:
        assert response.status_code == 303
        assert "vg_session=" in response.headers["set-cookie"]


def test_login_origin_of_this_host_accepted(site) -> None:
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        response = client.post("/login", data={"username": "csm1", "password": PASSWORD, "next": "/contracts"}, headers={"Origin": site.url})
    assert response.status_code == 303
