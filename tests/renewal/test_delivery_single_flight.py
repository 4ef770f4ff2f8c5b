"""One delivery loop per renewal package: concurrent "Deliver again" requests over the API or the web form start it once."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from tests.renewal.receiver import LOOPBACK, LOOPBACK_NETWORKS, receiver
from tests.renewal.test_redelivery import FAST, attempts, built_package, redelivery_audits
from tests.renewal.test_renewal_service import SECRET
from tests.settlement.seed import connect
from valuegate.cli import app as root_app
from valuegate.cloud import auth
from valuegate.cloud.app import OPENAPI_PATH, ApiServer
from valuegate.cloud.renewal import service
from valuegate.cloud.renewal.delivery import delivery_lock_key
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.store import Conflict

pytestmark = pytest.mark.postgres

PASSWORD = "correct-horse-battery"


async def until_delivered(dsn: str, package_id: int, count: int) -> None:
    """Wait until ``count`` attempts of the package have been delivered; fail after 20 s."""
    for _ in range(400):
        if sum(1 for row in await attempts(dsn, package_id) if row[2]) >= count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"package {package_id} was not delivered {count} times within 20 s: {await attempts(dsn, package_id)}")


async def served_package(dsn: str, url: str) -> tuple[int, dict[str, str]]:
    """Build a package, set the webhook to ``url``, add user csm1 and return the package id and csm1's bearer header."""
    package_id = await built_package(dsn)
    async with await connect(dsn) as conn:
        await service.set_endpoint(conn, "acme", url, SECRET, actor="user:admin")
        user = await auth.create_user(conn, "acme", "csm1", PASSWORD, ["csm"])
        _, token = await auth.issue_token(conn, "acme", user["id"], "test", actor="test")
    return package_id, {"Authorization": f"Bearer {token}"}


async def test_concurrent_api_requests_deliver_once(database):
    gate = threading.Event()
    with receiver([503, 200], gate=gate) as (url, received):
        package_id, csm = await served_package(database, url)
        async with ApiServer(CloudSettings(dsn=database, webhook_allowed_networks=LOOPBACK_NETWORKS, port=0, pool_max=4)) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            path = f"/api/v1/packages/{package_id}/deliver"
            try:
                responses = await asyncio.gather(*(client.post(path, headers=csm) for _ in range(3)))
            finally:
                # Open the gate before any failure stops the server, which waits for the delivery loops.
                gate.set()
            # The receiver keeps the first attempt waiting, so the loop of the accepted request is still running for the other two.
            assert sorted(r.status_code for r in responses) == [202, 409, 409]
            for conflict in (r for r in responses if r.status_code == 409):
                body = conflict.json()
                assert body["code"] == "delivery_in_progress"
                assert f"renewal package {package_id}" in body["detail"]
                assert conflict.headers["content-type"].startswith("application/problem+json")
            await until_delivered(database, package_id, 1)

            # Once the loop has ended, a new request starts a new loop that numbers its attempts on.
            again = await client.post(path, headers=csm)
            assert again.status_code == 202
            await until_delivered(database, package_id, 2)

    assert await attempts(database, package_id) == [(1, 503, False), (2, 200, True), (3, 200, True)]
    assert [r["headers"]["x-valuegate-package"] for r in received] == [str(package_id)] * 3
    # Only the accepted requests are in the audit log.
    assert await redelivery_audits(database) == [("user:csm1", str(package_id), url)] * 2


def _csrf(page: str) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest.mark.parametrize(("language", "running"), [("zh-CN", "该续约准备包正在发送"), ("en", "is already being delivered")])
async def test_double_click_delivers_once(database, language, running):
    gate = threading.Event()
    with receiver([200], gate=gate) as (url, received):
        package_id, _ = await served_package(database, url)
        settings = CloudSettings(dsn=database, webhook_allowed_networks=LOOPBACK_NETWORKS, port=0, pool_max=4, cookie_secure=False)
        async with ApiServer(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            login = await client.post("/login", data={"username": "csm1", "password": PASSWORD, "next": "/contracts"})
            assert login.status_code == 303, login.text
            form = {"_csrf_token": _csrf((await client.get(f"/packages/{package_id}?lang={language}")).text)}
            try:
                clicks = await asyncio.gather(*(client.post(f"/packages/{package_id}/deliver?lang={language}", data=form) for _ in range(2)))
            finally:
                gate.set()
            assert [r.status_code for r in clicks] == [303, 303]
            targets = sorted(r.headers["location"] for r in clicks)
            assert targets == [f"/packages/{package_id}?done=renewal.delivery_running", f"/packages/{package_id}?done=renewal.redeliver"]
            shown = await client.get(f"{targets[0]}&lang={language}")
            assert running in shown.text
            await until_delivered(database, package_id, 1)

    assert await attempts(database, package_id) == [(1, 200, True)]
    assert len(received) == 1


async def test_running_delivery_rejects_another(database):
    gate = threading.Event()
    with receiver([200], gate=gate) as (url, received):
        package_id, _ = await served_package(database, url)
        first = asyncio.create_task(service.deliver_package(database, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK))
        for _ in range(200):
            if received or first.done():
                break
            await asyncio.sleep(0.05)
        # The first loop waits for the receiver's response; a second may not start beside it.
        assert len(received) == 1
        with pytest.raises(Conflict, match="already being delivered") as caught:
            await service.deliver_package(database, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK)
        assert caught.value.code == "delivery_in_progress"
        gate.set()
        assert await first is True
        # The lock went with the loop's end.
        assert await service.deliver_package(database, "acme", package_id, policy=FAST, allowed_networks=LOOPBACK) is True
    assert await attempts(database, package_id) == [(1, 200, True), (2, 200, True)]
    assert len(received) == 2


async def test_conflict_problem_documented(database):
    """The OpenAPI document lists the 409 of the delivery route."""
    async with ApiServer(CloudSettings(dsn=database, port=0, pool_max=2)) as server, httpx.AsyncClient(base_url=server.url) as client:
        document: dict[str, Any] = (await client.get(OPENAPI_PATH)).json()
    responses = document["paths"]["/api/v1/packages/{package_id}/deliver"]["post"]["responses"]
    assert "409" in responses


def test_cli_refuses_while_delivery_runs(database, monkeypatch):
    monkeypatch.setenv("VALUEGATE_CLOUD_WEBHOOK_ALLOWED_NETWORKS", ",".join(LOOPBACK_NETWORKS))
    with receiver([200]) as (url, received):
        package_id, _ = asyncio.run(served_package(database, url))
        # A delivery loop of another process, as it appears in PostgreSQL: a session holding the package's advisory lock.
        with psycopg.connect(database, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (delivery_lock_key(package_id),))
            busy = CliRunner().invoke(root_app, ["cloud", "admin", "package-deliver", "acme", str(package_id), "--dsn", database])
        done = CliRunner().invoke(root_app, ["cloud", "admin", "package-deliver", "acme", str(package_id), "--dsn", database])
    assert busy.exit_code == 1
    assert f"renewal package {package_id} is already being delivered" in busy.output
    assert done.exit_code == 0, done.output
    assert len(received) == 1
    # The refused run left no audit record.
    assert asyncio.run(redelivery_audits(database)) == [("cli", str(package_id), url)]
