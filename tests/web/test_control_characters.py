"""Control characters (a NUL byte first) in form fields and addresses: a page naming the field, problem details from the API, nothing stored."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from litestar import Router, get
from litestar.testing import create_test_client

from tests.web.site import PASSWORD
from tests.web.test_form_validation import csrf, message, snapshot
from valuegate.cloud.web.pages import html_exception_handlers

pytestmark = pytest.mark.postgres

ADJUSTMENT = "anchor_id=line-oee&first_date=2024-06-03&last_date=2024-06-04"
SECRET = "s3cret-0123456789abcdef"

# Each case: the user who posts (None: no session), the address, the URL-encoded body after the CSRF token,
# the field's label in zh-CN and in English, and the control character named.
CASES = {
    "login_username": (None, "/login", f"username=cs%00m&password={PASSWORD}", "用户名", "User name", "U+0000"),
    "login_password": (None, "/login", "username=csm1&password=correct%00horse", "密码", "Password", "U+0000"),
    "adjustment_reason": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=a%00b", "原因", "Reason", "U+0000"),
    "adjustment_escape": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=a%1Bb", "原因", "Reason", "U+001B"),
    "adjustment_newline": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=line%0A", "原因", "Reason", "U+000A"),
    "adjustment_next_line": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=a%C2%85b", "原因", "Reason", "U+0085"),
    "adjustment_c1_first": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=a%C2%80b", "原因", "Reason", "U+0080"),
    "adjustment_c1_last": ("csm1", "/contracts/C-1/adjustments", f"{ADJUSTMENT}&reason=a%C2%9Fb", "原因", "Reason", "U+009F"),
    "adjustment_date": ("csm1", "/contracts/C-1/adjustments", "first_date=2024-06-03%00&last_date=2024-06-04&reason=x", "开始日期", "First date", "U+0000"),
    "webhook_url": ("adm1", "/settings/webhook", f"url=http://127.0.0.1:9/x%00&secret={SECRET}", "推送地址（URL）", "Webhook URL", "U+0000"),
    "webhook_url_c1": ("adm1", "/settings/webhook", f"url=http://127.0.0.1:9/x%C2%9B&secret={SECRET}", "推送地址（URL）", "Webhook URL", "U+009B"),
    "webhook_secret": ("adm1", "/settings/webhook", "url=http://127.0.0.1:9/x&secret=0123456789abcdef%7F", "签名密钥（至少 16 个字符）",
                       "Signing secret (16 characters or more)", "U+007F"),
}


def post_form(client: httpx.Client, path: str, body: str) -> httpx.Response:
    """Post ``body`` as it is, so that percent-escapes such as %00 reach the server unchanged."""
    return client.post(path, content=body, headers={"content-type": "application/x-www-form-urlencoded"})


@pytest.fixture
def client_for(site, login):
    """Return a function that returns a client logged in as ``user`` (None: without a session) and its CSRF token."""
    anonymous: list[httpx.Client] = []

    def make(user: str | None) -> tuple[httpx.Client, str]:
        if user is None:
            client = httpx.Client(base_url=site.url, timeout=30, follow_redirects=False)
            anonymous.append(client)
            return client, ""
        client = login(user)
        return client, csrf(client.get("/contracts/C-1").text)

    yield make
    for client in anonymous:
        client.close()


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_control_character_names_field(site, client_for, case: str, language: str) -> None:
    user, path, body, label_zh, label_en, character = CASES[case]
    client, token = client_for(user)
    before = snapshot(site.dsn)
    response = post_form(client, f"{path}?lang={language}", f"_csrf_token={token}&{body}" if token else body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    if language == "zh-CN":
        assert message(response.text) == f"输入无效：“{label_zh}”中含有不允许的控制字符 {character}，请删除后重新填写。"
    else:
        assert message(response.text) == f"Invalid input: {label_en} contains the control character {character}, which is not allowed; delete it and enter the value again."
    assert snapshot(site.dsn) == before


def test_tab_in_reason_is_stored(site, client_for) -> None:
    """A tab is the one control character a text input may hold, because a user can paste one."""
    client, token = client_for("csm1")
    response = post_form(client, "/contracts/C-1/adjustments", f"_csrf_token={token}&{ADJUSTMENT}&reason=line%091%20rebuild")
    assert response.status_code == 303, response.text
    with psycopg.connect(site.dsn) as conn:
        reasons = [row[0] for row in conn.execute("SELECT reason FROM nonroutine_adjustments").fetchall()]
    assert "line\t1 rebuild" in reasons


def test_no_break_space_in_reason_is_stored(site, client_for) -> None:
    """U+00A0 follows the C1 range and is a printable space, so the check stops at U+009F."""
    client, token = client_for("csm1")
    response = post_form(client, "/contracts/C-1/adjustments", f"_csrf_token={token}&{ADJUSTMENT}&reason=line%C2%A02%20rebuild")
    assert response.status_code == 303, response.text
    with psycopg.connect(site.dsn) as conn:
        reasons = [row[0] for row in conn.execute("SELECT reason FROM nonroutine_adjustments").fetchall()]
    assert "line\u00a02 rebuild" in reasons


@pytest.mark.parametrize(("language", "expected"), [
    ("zh-CN", "输入无效：表单提交不完整或已被改动，请刷新页面后重新填写。"),
    ("en", "Invalid input: The form arrived incomplete or changed; reload the page and fill it in again."),
])
def test_control_character_in_hidden_field(site, client_for, language: str, expected: str) -> None:
    """The user does not type the log-in form's hidden ``next`` field, so the page asks for a reload instead of naming the field."""
    client, _ = client_for(None)
    response = post_form(client, f"/login?lang={language}", f"username=csm1&password={PASSWORD}&next=/contracts%00")
    assert response.status_code == 400
    assert message(response.text) == expected
    assert "vg_session" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize(("language", "expected"), [
    ("zh-CN", "找不到该合同、设备、发票批次或续约准备包：它可能已被删除，或链接有误。"),
    ("en", "No such contract, machine, invoice run or renewal package: it may have been removed, or the link is wrong."),
])
@pytest.mark.parametrize("path", ["/contracts/%00", "/contracts/C%00-1", "/contracts/%00/machines/m-1"])
def test_control_character_in_page_address(site, client_for, path: str, language: str, expected: str) -> None:
    client, _ = client_for("csm1")
    response = client.get(f"{path}?lang={language}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert message(response.text) == expected


def test_control_character_in_posted_address(site, client_for) -> None:
    client, token = client_for("csm1")
    before = snapshot(site.dsn)
    response = post_form(client, "/contracts/C%00-1/adjustments?lang=en", f"_csrf_token={token}&{ADJUSTMENT}&reason=x")
    assert response.status_code == 404
    assert message(response.text) == "No such contract, machine, invoice run or renewal package: it may have been removed, or the link is wrong."
    assert snapshot(site.dsn) == before


@pytest.mark.parametrize(
    ("path", "field", "source", "detail"),
    [
        ("/api/v1/contracts/%00", "contract_id", "path",
         "path parameter `contract_id` contains the control character U+0000; remove it, because no control character but the tab is allowed"),
        ("/api/v1/contracts/C-1/vouchers?anchor=line%00", "anchor", "query",
         "query parameter `anchor` contains the control character U+0000; remove it, because no control character but the tab is allowed"),
        ("/api/v1/machines/m-1%0D/kpis", "machine_id", "path",
         "path parameter `machine_id` contains the control character U+000D; remove it, because no control character but the tab is allowed"),
        ("/api/v1/contracts/C-1/vouchers?anchor=line%C2%85", "anchor", "query",
         "query parameter `anchor` contains the control character U+0085; remove it, because no control character but the tab is allowed"),
    ],
)
def test_api_parameter_control_character(site, login, path: str, field: str, source: str, detail: str) -> None:
    response = login("aud1").get(path)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["detail"] == detail
    assert [(error["field"], error["source"], error["kind"]) for error in problem["errors"]] == [(field, source, "control")]


@pytest.mark.parametrize("username", ["cs\u0000m", "csm1\n", "cs\u001bm", "cs\u0085m", "csm1\u009f"])
def test_api_body_control_character(site, username: str) -> None:
    with httpx.Client(base_url=site.url, timeout=30) as client:
        response = client.post("/api/v1/session", json={"username": username, "password": PASSWORD})
    assert response.status_code == 400
    problem = response.json()
    assert problem["detail"] == "field `username` of the request body contains a control character; remove it, because no control character but the tab is allowed"
    assert [(error["field"], error["kind"]) for error in problem["errors"]] == [("username", "control")]
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(("language", "expected"), [
    ("zh-CN", "提交的内容中有数据库无法保存的值，请检查填写的内容后重新提交。"),
    ("en", "The request contains a value the database cannot store; check what you entered and submit again."),
])
def test_database_data_error_gets_page(language: str, expected: str) -> None:
    """A value PostgreSQL rejects that no check caught still gets an error page in the page's language, not the API's problem details."""

    @get("/overflow", sync_to_thread=False)
    def overflow() -> None:
        raise psycopg.errors.NumericValueOutOfRange("integer out of range")

    router = Router(path="/", route_handlers=[overflow], exception_handlers=html_exception_handlers)
    with create_test_client(route_handlers=[router]) as client:
        response = client.get(f"/overflow?lang={language}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert message(response.text) == expected
