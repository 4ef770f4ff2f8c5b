"""The package page's form that delivers a renewal package again: shown to CSMs and administrators, CSRF-checked, audit-logged."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from tests.renewal.receiver import receiver
from tests.settlement.seed import connect
from tests.web.renewal_check import finished_check
from tests.web.test_form_validation import csrf
from valuegate.cloud.renewal import service

pytestmark = pytest.mark.postgres

SECRET = "renewal-webhook-secret-1"


def _set_webhook(dsn: str, url: str) -> None:
    async def run() -> None:
        async with await connect(dsn) as conn:
            await service.set_endpoint(conn, "acme", url, SECRET, actor="user:adm1")

    asyncio.run(run())


def test_deliver_again_from_package_page(site, login):
    csm = login("csm1")
    built = csm.post("/contracts/C-1/renewal-check", data={"_csrf_token": csrf(csm.get("/contracts/C-1").text)})
    assert built.status_code == 303
    assert finished_check(csm, "C-1") == "done"
    with psycopg.connect(site.dsn) as conn:
        (package_id,) = conn.execute("SELECT min(id) FROM renewal_packages WHERE tenant_id = 'acme'").fetchone()

    page = csm.get(f"/packages/{package_id}?lang=en").text
    # Built before any webhook was set, so nothing was sent yet, and the form is there.
    assert "no webhook configured" in page
    assert 'id="deliver-again"' in page
    assert 'id="deliver-again"' in login("adm1").get(f"/packages/{package_id}").text
    assert 'id="deliver-again"' not in login("fin1").get(f"/packages/{package_id}").text
    assert login("aud1").post(f"/packages/{package_id}/deliver", data={"_csrf_token": "x"}).status_code == 403
    # A form without the session's CSRF token is rejected and sends nothing.
    assert csm.post(f"/packages/{package_id}/deliver", data={}).status_code == 403

    with receiver([200]) as (url, received):
        _set_webhook(site.dsn, url)
        response = csm.post(f"/packages/{package_id}/deliver", data={"_csrf_token": csrf(page)})
        assert response.status_code == 303
        assert response.headers["location"] == f"/packages/{package_id}?done=renewal.redeliver"
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [int(r["headers"]["x-valuegate-package"]) for r in received] == [package_id]

    shown = csm.get(f"/packages/{package_id}?done=renewal.redeliver&lang=en").text
    assert "Delivery started; reload the page to see its attempts." in shown
    assert "delivered" in shown.split('id="deliver-again"')[0]
    with psycopg.connect(site.dsn) as conn:
        audits = conn.execute("SELECT actor, object_id FROM audit_log WHERE action = 'renewal.redeliver'").fetchall()
    assert audits == [("user:csm1", str(package_id))]
