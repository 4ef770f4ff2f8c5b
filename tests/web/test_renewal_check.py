"""The renewal check runs in the background: the click returns at once, the check's page shows its step, one check per contract."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time

import psycopg
import pytest

from tests.factories import make_claims
from tests.settlement.seed import connect, ingest, save_contract
from tests.verify.bundles import oee_contract
from tests.web.renewal_check import check_state, finished_check
from tests.web.test_form_validation import csrf
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


def _post_check(client, contract_id: str):
    return client.post(f"/contracts/{contract_id}/renewal-check", data={"_csrf_token": csrf(client.get(f"/contracts/{contract_id}").text)})


def _wait_for_page(client, path: str, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (page := client.get(path).text):
        assert time.monotonic() < deadline, f"{text!r} not on {path} after {timeout_s} s:\n{page}"
        time.sleep(0.2)
    return page


def test_check_returns_before_packages(site, login):
    csm = login("csm1")
    path = "/contracts/C-1/renewal-check"
    with psycopg.connect(site.dsn) as blocker:
        # SHARE mode lets the check read renewal_packages but blocks its INSERT, so the check stops at its store step.
        blocker.execute("LOCK TABLE renewal_packages IN SHARE MODE")
        response = _post_check(csm, "C-1")
        assert response.status_code == 303
        assert response.headers["location"] == f"{path}?done=renewal.check_started"
        assert "The renewal check has started" in csm.get(f"{path}?done=renewal.check_started&lang=en").text

        # Two triggers fire, target met and 30 days before the end, so the check has 1 + 2 x 4 steps.
        page = _wait_for_page(csm, f"{path}?lang=en", "Step 5 of 9: storing the package")
        assert "The check is running." in page
        assert "started by csm1 at " in page
        running = csm.get(path)
        assert running.headers["refresh"] == "3; url=/contracts/C-1/renewal-check"
        assert "第 5 步（共 9 步）：保存续约准备包" in csm.get(f"{path}?lang=zh-CN").text
        with psycopg.connect(site.dsn) as conn:
            (started_at,) = conn.execute("SELECT started_at FROM renewal_checks WHERE contract_id = 'C-1'").fetchone()

        # A second click while the check runs starts nothing and shows the running check.
        again = _post_check(csm, "C-1")
        assert again.status_code == 303
        assert again.headers["location"] == f"{path}?done=renewal.check_running"
        assert "already running, so no second one was started" in csm.get(f"{again.headers['location']}&lang=en").text
        with psycopg.connect(site.dsn) as conn:
            assert conn.execute("SELECT started_at FROM renewal_checks WHERE contract_id = 'C-1'").fetchone() == (started_at,)
        assert check_state(csm, "C-1") == "running"

    assert finished_check(csm, "C-1") == "done"
    with psycopg.connect(site.dsn) as conn:
        packages = [row[0] for row in conn.execute("SELECT id FROM renewal_packages WHERE contract_id = 'C-1' ORDER BY id")]
        audits = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'renewal.package'").fetchone()[0]
    assert len(packages) == 2
    assert audits == 2
    page = csm.get(f"{path}?lang=en")
    assert "refresh" not in page.headers
    assert "The check has finished." in page.text
    assert [int(found) for found in re.findall(r'href="/packages/(\d+)"', page.text)] == packages

    # A check after that builds nothing new.
    assert _post_check(csm, "C-1").status_code == 303
    assert finished_check(csm, "C-1") == "done"
    assert "Every trigger that has fired already has its package" in csm.get(f"{path}?lang=en").text


def test_check_page_needs_known_contract(site, login):
    csm = login("csm1")
    assert csm.get("/contracts/no-such/renewal-check").status_code == 404
    assert _post_check(csm, "C-1").status_code == 303
    token = csrf(csm.get("/contracts/C-1").text)
    assert csm.post("/contracts/no-such/renewal-check", data={"_csrf_token": token}).status_code == 404
    # Another tenant's contract does not exist for this user.
    assert login("globex-csm").get("/contracts/C-1/renewal-check").status_code == 404
    finished_check(csm, "C-1")


def test_no_package_without_vouchers(site, login):
    contract = oee_contract(id="C-0", triggers=[{"kind": "days_before_end", "days": 30}])

    async def add_contract() -> None:
        async with await connect(site.dsn) as conn:
            await save_contract(conn, contract)

    asyncio.run(add_contract())
    csm = login("csm1")
    path = "/contracts/C-0/renewal-check"
    assert _post_check(csm, "C-0").status_code == 303
    assert finished_check(csm, "C-0") == "done"
    with psycopg.connect(site.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM renewal_packages WHERE contract_id = 'C-0'").fetchone() == (0,)
    english = csm.get(f"{path}?lang=en").text
    assert "Triggers waiting for verified vouchers" in english
    assert "<li>30 days before the contract ends</li>" in english
    chinese = csm.get(f"{path}?lang=zh-CN").text
    assert "等待已核验凭证的触发条件" in chinese
    assert "<li>合同到期前 30 天</li>" in chinese

    # The first verified voucher arrives: the next check builds the package from it.
    claims = make_claims(seq=22, prev=v.voucher_hash(site.last_voucher), contract="C-0", plant_date=dt.date(2024, 5, 27))
    asyncio.run(ingest(site.dsn, [v.build_voucher(claims, site.key)]))
    assert _post_check(csm, "C-0").status_code == 303
    assert finished_check(csm, "C-0") == "done"
    page = csm.get(f"{path}?lang=en").text
    assert "Triggers waiting for verified vouchers" not in page
    (package_id,) = [int(found) for found in re.findall(r'href="/packages/(\d+)"', page)]
    package = csm.get(f"/packages/{package_id}?lang=en").text
    assert "from 1 verified vouchers" in package
