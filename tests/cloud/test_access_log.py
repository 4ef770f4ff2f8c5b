"""The access log and the request counter record the status the client receives, also when AuthMiddleware rejects the request."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from valuegate.cloud import auth
from valuegate.cloud.app import ApiServer
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings

pytestmark = pytest.mark.postgres

PASSWORD = "correct-horse-battery"


def request_counts(text: str, method: str, route: str) -> dict[str, float]:
    """Return valuegate_http_requests_total of one method and route, by status."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "valuegate_http_requests_total" and sample.labels["method"] == method and sample.labels["route"] == route:
                counts[sample.labels["status"]] = sample.value
    return counts


def access_lines(logs: list[dict], method: str, path: str) -> list[int]:
    return [line["status"] for line in logs if line["event"] == "http_request" and line["method"] == method and line["path"] == path]


async def test_auth_rejections_logged_with_sent_status(cloud_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        await conn.execute("INSERT INTO tenants (id, name) VALUES ('acme', 'ACME')")
        await auth.create_user(conn, "acme", "adm-li", PASSWORD, ["admin"])
    settings = CloudSettings(dsn=cloud_dsn, port=0, cookie_secure=False)
    async with ApiServer(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        before = (await client.get("/metrics")).text
        with structlog.testing.capture_logs() as logs:
            logged_in = await client.post("/api/v1/session", json={"username": "adm-li", "password": PASSWORD})
            assert logged_in.status_code == 201, logged_in.text
            # A session write without the CSRF token, then a bearer token that names no token.
            no_csrf = await client.patch("/api/v1/tenant", json={"name": "ACME Ltd"})
            client.cookies.clear()
            bad_token = await client.get("/api/v1/contracts", headers={"Authorization": "Bearer vg_0000000000_notatoken"})
        after = (await client.get("/metrics")).text

    assert no_csrf.status_code == 403
    assert no_csrf.json()["code"] == "csrf_failed"
    assert bad_token.status_code == 401
    assert access_lines(logs, "PATCH", "/api/v1/tenant") == [403]
    assert access_lines(logs, "GET", "/api/v1/contracts") == [401]

    for method, route, status in (("PATCH", "/api/v1/tenant", "403"), ("GET", "/api/v1/contracts", "401")):
        old, new = request_counts(before, method, route), request_counts(after, method, route)
        assert new.get(status, 0.0) - old.get(status, 0.0) == 1.0, (method, route, new)
        assert new.get("500", 0.0) == old.get("500", 0.0), (method, route, new)
