"""A post without the session's CSRF token gets its own message, apart from the one about roles, and changes nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.web.site import PASSWORD
from tests.web.test_form_validation import csrf, message, snapshot

pytestmark = pytest.mark.postgres

EXPIRED = {"zh-CN": "此表单已过期，请重新加载页面后再提交。", "en": "This form has expired; reload the page and submit again."}
FORBIDDEN = {"zh-CN": "您的角色无权执行此操作。", "en": "Your role may not do this."}

# Each form a session posts: the user allowed to, the address, and a valid body without the token.
FORMS = {
    "adjustment": ("csm1", "/contracts/C-1/adjustments", {"anchor_id": "line-oee", "first_date": "2024-06-03", "last_date": "2024-06-04", "reason": "x"}),
    "run": ("fin1", "/contracts/C-1/runs", {"period_first": "2024-05-01", "period_last": "2024-05-10"}),
    "webhook": ("adm1", "/settings/webhook", {"url": "https://crm.example.test/hooks", "secret": "s3cret-0123456789abcdef"}),
    "renewal_check": ("csm1", "/contracts/C-1/renewal-check", {}),
    "logout": ("csm1", "/logout", {}),
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
