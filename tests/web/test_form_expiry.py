"""A post without the session's CSRF token gets its own message, apart from the one about roles, and changes nothing.

A log-out post with such a token keeps the session, because another site could have sent it, and gets a page with a
log-out form that works. A log-out post without a valid session ends nothing and goes to the log-in page.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.site import PASSWORD
from tests.web.test_form_validation import csrf, message, snapshot
from valuegate.cloud.auth import SESSION_COOKIE

pytestmark = pytest.mark.postgres

EXPIRED = {"zh-CN": "此表单已过期，请重新加载页面后再提交。", "en": "This form has expired; reload the page and submit again."}
FORBIDDEN = {"zh-CN": "您的角色无权执行此操作。", "en": "Your role may not do this."}

# Each form a session posts: the user allowed to, the address, and a valid body without the token.
FORMS = {
    "adjustment": ("csm1", "/contracts/C-1/adjustments", {"anchor_id": "line-oee", "first_date": "2024-06-03", "last_date": "2024-06-04", "reason": "x"}),
    "run": ("fin1", "/contracts/C-1/runs", {"period_first": "2024-05-01", "period_last": "2024-05-10"}),
    "webhook": ("adm1", "/settings/webhook", {"url": "https://crm.example.test/hooks", "secret": "s3cret-0123456789abcdef"}),
    "renewal_check": ("csm1", "/contracts/C-1/renewal-check", {}),
}

LOGOUT_EXPIRED = {
    "zh-CN": "退出登录的请求来自已过期的页面，您仍处于登录状态。如需退出，请点击下面的“退出登录”按钮。",
    "en": "The log-out request came from an expired page, so you are still logged in. To log out, press Log out below.",
}


def stale_token(site, user: str) -> str:
    """Return the CSRF token of a session that has since been logged out, as a page left open in a tab still contains it."""
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        assert client.post("/login", data={"username": user, "password": PASSWORD}).status_code == 303
        token = csrf(client.get("/contracts/C-1").text)
        assert client.post("/logout", data={"_csrf_token": token}).status_code == 303
    return token


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_post_without_valid_token(site, login, form: str, language: str) -> None:
    user, path, body = FORMS[form]
    client = login(user)
    tokens = {"absent": None, "wrong": "not-the-session-token", "empty": "", "stale": stale_token(site, user)}
    before = snapshot(site.dsn)
    for case, token in tokens.items():
        data = body if token is None else {"_csrf_token": token, **body}
        response = client.post(f"{path}?lang={language}", data=data)
        assert response.status_code == 403, case
        assert message(response.text) == EXPIRED[language], case
    assert snapshot(site.dsn) == before
    # The session still works: the rejected posts did not log the user out.
    assert client.get("/contracts").status_code == 200


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("case", ["absent", "wrong", "empty", "stale"])
def test_logout_with_invalid_token_offers_form(site, login, case: str, language: str) -> None:
    client = login("csm1")
    token = {"absent": None, "wrong": "not-the-session-token", "empty": "", "stale": stale_token(site, "csm1")}[case]
    before = snapshot(site.dsn)
    response = client.post(f"/logout?lang={language}", data={} if token is None else {"_csrf_token": token})
    assert response.status_code == 403
    assert message(response.text) == LOGOUT_EXPIRED[language]
    assert snapshot(site.dsn) == before
    assert client.get("/contracts").status_code == 200

    # The page's own form carries the session's current token, and posting it logs the user out.
    form = re.search(r'<form method="post" action="/logout" id="logout-again">(.*?)</form>', response.text, re.S)
    assert form, response.text
    fresh = re.search(r'name="_csrf_token" value="([^"]+)"', form.group(1)).group(1)
    logged_out = client.post("/logout", data={"_csrf_token": fresh})
    assert logged_out.status_code == 303
    assert logged_out.headers["location"] == "/login"
    assert len(snapshot(site.dsn)["sessions"]) == len(before["sessions"]) - 1
    assert client.get("/contracts").status_code == 303


def test_logout_without_session_goes_to_login(site) -> None:
    """A session that already ended has no token to check, so its stale log-out form just leads to the log-in page."""
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        assert client.post("/login", data={"username": "csm1", "password": PASSWORD}).status_code == 303
        token = csrf(client.get("/contracts/C-1").text)
        assert client.post("/logout", data={"_csrf_token": token}).status_code == 303
        before = snapshot(site.dsn)
        # The browser still sends the old cookie, as a tab left open before the log-out would.
        client.cookies.set(SESSION_COOKIE, "ended-session-id")
        for data in ({"_csrf_token": token}, {}):
            response = client.post("/logout", data=data)
            assert response.status_code == 303
            assert response.headers["location"] == "/login"
    assert snapshot(site.dsn) == before


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_role_message_unchanged(site, login, language: str) -> None:
    """A valid token from a user whose role may not post the form keeps the role message."""
    client = login("csm1")
    token = csrf(client.get("/contracts/C-1").text)
    before = snapshot(site.dsn)
    response = client.post(f"/contracts/C-1/runs?lang={language}", data={"_csrf_token": token, **FORMS["run"][2]})
    assert response.status_code == 403
    assert message(response.text) == FORBIDDEN[language]
    assert snapshot(site.dsn) == before


def test_api_keeps_problem_code(site) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        assert client.post("/api/v1/session", json={"username": "adm1", "password": PASSWORD}).status_code == 201
        response = client.post("/api/v1/sites", json={"id": "s-9", "time_zone": "Asia/Shanghai"}, headers={"x-csrf-token": "wrong"})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "csrf_failed"
