"""Required form fields left out, left empty or sent twice: the error page names the field by its label in the page's language."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import psycopg
import pytest

from tests.web.site import PASSWORD
from valuegate.cloud.auth import SESSION_COOKIE

pytestmark = pytest.mark.postgres

ADJUSTMENT = {"anchor_id": "line-oee", "first_date": "2024-06-03", "last_date": "2024-06-04", "reason": "一号线改造 line rebuild"}
RUN = {"period_first": "2024-05-01", "period_last": "2024-05-10"}
WEBHOOK = {"url": "https://crm.example.test/hooks/renewal", "secret": "s3cret-0123456789abcdef"}

# Each form: the user who may post it, its address, and a complete valid body.
FORMS = {
    "login": (None, "/login", {"username": "csm1", "password": PASSWORD}),
    "adjustment": ("csm1", "/contracts/C-1/adjustments", ADJUSTMENT),
    "run": ("fin1", "/contracts/C-1/runs", RUN),
    "webhook": ("adm1", "/settings/webhook", WEBHOOK),
}

# Each required field: its form, its label in zh-CN and in English, and what to enter, in zh-CN and in English.
DATE_ZH, DATE_EN = "请在日历中选择日期，或按 YYYY-MM-DD 格式填写", "pick a date in the calendar, or enter it as YYYY-MM-DD"
FIELDS = {
    "username": ("login", "用户名", "User name", "请填写用户名", "enter your user name"),
    "password": ("login", "密码", "Password", "请填写密码", "enter your password"),
    "first_date": ("adjustment", "开始日期", "First date", DATE_ZH, DATE_EN),
    "last_date": ("adjustment", "结束日期", "Last date", DATE_ZH, DATE_EN),
    "reason": ("adjustment", "原因", "Reason", "请用不超过 500 个字符说明发生了什么变化（例如产线改造）",
               "describe what changed in at most 500 characters, for example a line rebuild"),
    "period_first": ("run", "结算期开始", "Billing period from", DATE_ZH, DATE_EN),
    "period_last": ("run", "结算期结束", "Billing period to", DATE_ZH, DATE_EN),
    "url": ("webhook", "推送地址（URL）", "Webhook URL", "请填写以 http:// 或 https:// 开头的网址", "enter an address that starts with http:// or https://"),
    "secret": ("webhook", "签名密钥（至少 16 个字符）", "Signing secret (16 characters or more)", "请填写至少 16 个字符的随机密钥",
               "enter a random secret of 16 characters or more"),
}

# Tables the four forms write; a rejected post must leave every row as it was.
TABLES = ("invoice_runs", "invoice_lines", "invoice_documents", "nonroutine_adjustments", "webhook_endpoints", "sessions", "audit_log")


def csrf(page: str) -> str:
    return re.search(r'name="_csrf_token" value="([^"]+)"', page).group(1)


def message(page: str) -> str:
    """Return the text of the error page's message, unescaped."""
    found = re.search(r'<p class="error"[^>]*>(.*?)</p>', page, re.S)
    assert found, page
    return html.unescape(found.group(1)).strip()


def snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}


def expected_messages(field: str, language: str) -> dict[str, str]:
    """Return the exact message of each way to get ``field`` wrong, written out here apart from the catalogs."""
    _, label_zh, label_en, hint_zh, hint_en = FIELDS[field]
    if language == "zh-CN":
        missing = f"输入无效：未填写“{label_zh}”，{hint_zh}。"
        return {"absent": missing, "empty": missing, "repeated": f"输入无效：“{label_zh}”应为文本，但提交的是多个值，{hint_zh}。"}
    missing = f"Invalid input: {label_en} is not filled in; {hint_en}."
    return {"absent": missing, "empty": missing, "repeated": f"Invalid input: {label_en} has several values where text is expected; {hint_en}."}


def bodies(form: str, field: str, token: str | None) -> dict[str, list[tuple[str, str]]]:
    """Return the form's valid body with ``field`` absent, empty and sent twice, as (name, value) pairs."""
    _, _, valid = FORMS[form]
    pairs = [(name, value) for name, value in valid.items() if name != field]
    if token is not None:
        pairs.append(("_csrf_token", token))
    return {"absent": pairs, "empty": [*pairs, (field, "")], "repeated": [*pairs, (field, valid[field]), (field, valid[field])]}


def post_pairs(client: httpx.Client, path: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    """Post a URL-encoded form that may repeat a name, as a browser does for two inputs of the same name."""
    return client.post(path, content=str(httpx.QueryParams(pairs)), headers={"content-type": "application/x-www-form-urlencoded"})


@pytest.fixture
def anonymous(site):
    """Return a function that returns a client without a session, closed after the test."""
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        client = httpx.Client(base_url=site.url, timeout=30, follow_redirects=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def stored(site) -> None:
    """Store one adjustment, one invoice run and the webhook through the forms, so that rejected posts have data to leave alone."""
    for form in ("adjustment", "run", "webhook"):
        user, path, valid = FORMS[form]
        with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
            assert client.post("/login", data={"username": user, "password": PASSWORD}).status_code == 303
            token = csrf(client.get("/contracts/C-1").text)
            response = client.post(path, data={"_csrf_token": token, **valid})
            assert response.status_code == 303, response.text
    before = snapshot(site.dsn)
    assert len(before["nonroutine_adjustments"]) == 1
    assert len(before["invoice_runs"]) == 1
    assert [row[1] for row in before["webhook_endpoints"]] == [WEBHOOK["url"]]


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_bad_field_named_in_page_language(site, stored, login, anonymous, field: str, language: str) -> None:
    form = FIELDS[field][0]
    user, path, _ = FORMS[form]
    client = login(user) if user is not None else anonymous()
    token = csrf(client.get("/contracts/C-1").text) if user is not None else None
    before = snapshot(site.dsn)
    expected = expected_messages(field, language)

    for case, pairs in bodies(form, field, token).items():
        response = post_pairs(client, f"{path}?lang={language}", pairs)
        assert response.status_code == 400, (case, response.text)
        assert message(response.text) == expected[case], case
        assert "Validation failed" not in response.text, case
        assert "Expected `" not in response.text, case
        assert SESSION_COOKIE not in response.headers.get("set-cookie", ""), case

    assert snapshot(site.dsn) == before


@pytest.mark.parametrize(
    ("language", "data", "expected"),
    [
        ("zh-CN", {"url": "ftp://crm.example.test", "secret": WEBHOOK["secret"]},
         "输入无效：推送地址（URL）“ftp://crm.example.test”不是以 http:// 或 https:// 开头，请填写完整的网址。"),
        ("en", {"url": "ftp://crm.example.test", "secret": WEBHOOK["secret"]},
         "Invalid input: Webhook URL “ftp://crm.example.test” does not start with http:// or https://; enter the full address."),
        *[("zh-CN", {"url": url, "secret": WEBHOOK["secret"]},
           f"输入无效：推送地址（URL）“{url}”缺少主机名，请填写完整的网址，例如 https://crm.example.com/hooks/renewal。")
          for url in ("http://", "https://", "http:///hooks", "http://:8080/hooks", "https://user@/hooks")],
        *[("en", {"url": url, "secret": WEBHOOK["secret"]},
           f"Invalid input: Webhook URL “{url}” has no host name; enter the full address, for example https://crm.example.com/hooks/renewal.")
          for url in ("http://", "https://", "http:///hooks", "http://:8080/hooks", "https://user@/hooks")],
        *[("zh-CN", {"url": url, "secret": WEBHOOK["secret"]},
           f"输入无效：推送地址（URL）“{url}”不是有效的网址，请填写完整的网址，例如 https://crm.example.com/hooks/renewal。")
          for url in ("http://[::1/hooks", "http://crm.example.test:99999/hooks", "http://crm.example.test:port/hooks")],
        *[("en", {"url": url, "secret": WEBHOOK["secret"]},
           f"Invalid input: Webhook URL “{url}” is not a valid address; enter the full address, for example https://crm.example.com/hooks/renewal.")
          for url in ("http://[::1/hooks", "http://crm.example.test:99999/hooks", "http://crm.example.test:port/hooks")],
        ("zh-CN", {"url": WEBHOOK["url"], "secret": "short"}, "输入无效：签名密钥不足 16 个字符，请改用更长的随机密钥。"),
        ("en", {"url": WEBHOOK["url"], "secret": "short"},
         "Invalid input: The signing secret is shorter than 16 characters; choose a longer random one."),
    ],
)
def test_webhook_errors_in_page_language(site, stored, login, language: str, data: dict[str, str], expected: str) -> None:
    client = login("adm1")
    token = csrf(client.get("/contracts").text)
    before = snapshot(site.dsn)
    response = client.post(f"/settings/webhook?lang={language}", data={"_csrf_token": token, **data})
    assert response.status_code == 400
    assert message(response.text) == expected
    assert snapshot(site.dsn) == before


def test_hidden_field_sent_twice_asks_to_reload(site) -> None:
    """The log-in form's hidden ``next`` field is not typed by the user, so its error asks the user to reload the page."""
    pairs = [("username", "csm1"), ("password", PASSWORD), ("next", "/contracts"), ("next", "/contracts")]
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as client:
        chinese = post_pairs(client, "/login", pairs)
        english = post_pairs(client, "/login?lang=en", pairs)
    assert chinese.status_code == 400
    assert message(chinese.text) == "输入无效：表单提交不完整或已被改动，请刷新页面后重新填写。"
    assert english.status_code == 400
    assert message(english.text) == "Invalid input: The form arrived incomplete or changed; reload the page and fill it in again."


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN", "输入无效：“原因”无效，请用不超过 500 个字符说明发生了什么变化（例如产线改造）。"),
        ("en", "Invalid input: Reason is not valid; describe what changed in at most 500 characters, for example a line rebuild."),
    ],
)
def test_long_reason_rejected(site, stored, login, language: str, expected: str) -> None:
    """A reason appears in every export of the contract, so the form takes at most 500 characters, as the API does."""
    client = login("csm1")
    token = csrf(client.get("/contracts/C-1").text)
    before = snapshot(site.dsn)
    response = client.post(f"/contracts/C-1/adjustments?lang={language}", data={"_csrf_token": token, **ADJUSTMENT, "reason": "长" * 501})
    assert response.status_code == 400
    assert message(response.text) == expected
    assert snapshot(site.dsn) == before
    accepted = client.post("/contracts/C-1/adjustments", data={"_csrf_token": token, **ADJUSTMENT, "reason": "长" * 500})
    assert accepted.status_code == 303, accepted.text
