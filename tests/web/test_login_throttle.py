"""Failed log-ins against the running service: 401 five times, then 429 with Retry-After on the API and a message on the login page."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.site import PASSWORD

pytestmark = pytest.mark.postgres


def client(site, address: str = "127.0.0.1") -> httpx.Client:
    """Return a client whose connections leave from ``address`` (any 127.x.y.z is this host)."""
    return httpx.Client(base_url=site.url, timeout=30, follow_redirects=False, transport=httpx.HTTPTransport(local_address=address))


def api_login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    return http.post("/api/v1/session", json={"username": username, "password": password})


def test_api_rejects_sixth_attempt(site) -> None:
    with client(site) as http:
        assert [api_login(http, "adm1", "wrong password").status_code for _ in range(5)] == [401] * 5
        rejected = api_login(http, "adm1", PASSWORD)
        assert rejected.status_code == 429
        assert rejected.headers["content-type"] == "application/problem+json"
        assert rejected.json()["code"] == "too_many_requests"
        assert 295 <= int(rejected.headers["retry-after"]) <= 300
        assert "try again in" in rejected.json()["detail"]
        # Another user from the same address, and the same user from another address, are not held back.
        assert api_login(http, "aud1", PASSWORD).status_code == 201
    with client(site, "127.0.0.2") as elsewhere:
        assert api_login(elsewhere, "adm1", PASSWORD).status_code == 201


def test_success_resets_the_count(site) -> None:
    with client(site) as http:
        assert [api_login(http, "csm1", "wrong password").status_code for _ in range(4)] == [401] * 4
        assert api_login(http, "csm1", PASSWORD).status_code == 201
        # Without the new session's cookie: a session request that changes state would need its CSRF token.
        http.cookies.clear()
        assert [api_login(http, "csm1", "wrong password").status_code for _ in range(5)] == [401] * 5
        assert api_login(http, "csm1", "wrong password").status_code == 429


@pytest.mark.parametrize(
    ("language", "text"),
    [("zh-CN", "该用户名登录失败次数过多，已暂时锁定，请 5 分钟后再试。"), ("en", "Too many failed log-ins for this user name; try again in 5 min.")],
)
def test_login_page_shows_wait(site, language: str, text: str) -> None:
    username = f"nobody-{language}"
    with client(site) as http:
        form = {"username": username, "password": "wrong password", "next": "/contracts"}
        statuses = [http.post(f"/login?lang={language}", data=form).status_code for _ in range(5)]
        assert statuses == [401] * 5
        rejected = http.post(f"/login?lang={language}", data=form)
        assert rejected.status_code == 429
        assert 295 <= int(rejected.headers["retry-after"]) <= 300
        messages = re.findall(r'<p class="error" role="alert">(.*?)</p>', rejected.text)
        assert messages == [text]
        # The form keeps the user name for the next try.
        assert f'value="{username}"' in rejected.text
