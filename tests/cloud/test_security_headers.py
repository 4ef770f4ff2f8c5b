"""Security headers on every web page, API response and error, with HSTS only in an HTTPS deployment."""

from __future__ import annotations

import httpx
import pytest
from litestar.datastructures import MutableScopeHeaders

from valuegate.cloud.app import ApiServer, _security_headers
from valuegate.cloud.settings import CloudSettings

pytestmark = pytest.mark.postgres

COMMON = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "content-security-policy": "frame-ancestors 'none'",
}
# A web page, an API response, a 404 of no route, a bearer token that AuthMiddleware rejects, and /metrics.
REQUESTS = [
    ("/login", {}, 200),
    ("/api/v1/health", {}, 200),
    ("/no-such-page", {}, 404),
    ("/api/v1/contracts", {"Authorization": "Bearer vg_0000000000_notatoken"}, 401),
    ("/metrics", {}, 200),
]


@pytest.mark.parametrize("cookie_secure", [True, False])
async def test_every_response_has_security_headers(cloud_dsn: str, cookie_secure: bool) -> None:
    settings = CloudSettings(dsn=cloud_dsn, port=0, cookie_secure=cookie_secure)
    async with ApiServer(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for path, headers, status in REQUESTS:
            response = await client.get(path, headers=headers)
            assert response.status_code == status, path
            for name, value in COMMON.items():
                assert response.headers.get(name) == value, (path, name)
            if cookie_secure:
                assert response.headers.get("strict-transport-security") == "max-age=31536000", path
            else:
                assert "strict-transport-security" not in response.headers, path


def test_stricter_policy_kept_and_framing_added() -> None:
    """The package summary sets its own policy: it is kept, and frame-ancestors is added to it."""
    message = {"type": "http.response.start", "status": 200, "headers": [
        (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    ]}
    headers = MutableScopeHeaders.from_message(message)
    _security_headers(headers, https=False)
    assert headers.get("content-security-policy") == "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("x-content-type-options") == "nosniff"


def test_existing_frame_ancestors_kept() -> None:
    message = {"type": "http.response.start", "status": 200, "headers": [(b"content-security-policy", b"frame-ancestors 'self'")]}
    headers = MutableScopeHeaders.from_message(message)
    _security_headers(headers, https=True)
    assert headers.get("content-security-policy") == "frame-ancestors 'self'"
    assert headers.get("strict-transport-security") == "max-age=31536000"
