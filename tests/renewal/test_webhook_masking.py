"""Credentials in a webhook URL reach only the receiver: the API, the package page, the audit log and the log lines show them masked."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from tests.renewal.receiver import receiver
from tests.renewal.test_redelivery import _bearer, api, attempts  # noqa: F401 - api is a fixture
from tests.renewal.test_renewal_service import SECRET
from tests.settlement.seed import connect
from valuegate.cloud.renewal import service

pytestmark = pytest.mark.postgres


async def test_query_secret_masked_everywhere(api) -> None:
    client, package_id, dsn = api
    csm, auditor = await _bearer(dsn, "csm1"), await _bearer(dsn, "aud1")
    with receiver([200]) as (url, received), structlog.testing.capture_logs() as logs:
        async with await connect(dsn) as conn:
            await service.set_endpoint(conn, "acme", url + "?token=QUERYSECRET456", SECRET, actor="user:admin")
        assert (await client.post(f"/api/v1/packages/{package_id}/deliver", headers=csm)).status_code == 202
        for _ in range(100):
            if await attempts(dsn, package_id):
                break
            await asyncio.sleep(0.05)
    assert [r["path"] for r in received] == ["/hooks/renewal?token=QUERYSECRET456"]

    detail = (await client.get(f"/api/v1/packages/{package_id}", headers=auditor)).json()
    assert [d["url"] for d in detail["deliveries"]] == [url + "?token=***"]
    page = (await client.get(f"/packages/{package_id}", headers=auditor)).text
    assert url + "?token=***" in page
    audit = (await client.get("/api/v1/audit", headers=auditor)).text
    assert url + "?token=***" in audit
    for shown in (str(detail), page, audit, repr(logs)):
        assert "QUERYSECRET456" not in shown
