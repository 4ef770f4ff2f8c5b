"""Webhook URLs on the contracts page: blank or invalid host names are rejected by name, scheme case is accepted, and what is stored can be sent."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.web.test_form_validation import csrf, message, snapshot

pytestmark = pytest.mark.postgres

SECRET = "s3cret-0123456789abcdef"
EXAMPLE = "https://crm.example.com/hooks/renewal"


def post_url(client: httpx.Client, url: str, language: str) -> httpx.Response:
    token = csrf(client.get("/contracts").text)
    return client.post(f"/settings/webhook?lang={language}", data={"_csrf_token": token, "url": url, "secret": SECRET})


def stored_url(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT url FROM webhook_endpoints WHERE tenant_id = 'acme'").fetchone()
    return row[0] if row else None


@pytest.fixture
def admin(site, login) -> httpx.Client:
    """An administrator's client, after a valid webhook was saved, so that a rejected post has a row to leave alone."""
    client = login("adm1")
    assert post_url(client, "http://127.0.0.1:9/hook", "en").status_code == 303
    return client


# A host of spaces only: an ASCII space, an ideographic space (U+3000) and a no-break space (U+00A0).
BLANK_HOSTS = ["http:// /x", "http://\u3000/x", "http://\u00a0/x", "https://  :8080/x"]


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("url", BLANK_HOSTS)
def test_blank_host_rejected(site, admin, url: str, language: str) -> None:
    before = snapshot(site.dsn)
    response = post_url(admin, url, language)
    assert response.status_code == 400
    if language == "zh-CN":
        assert message(response.text) == f"输入无效：推送地址（URL）“{url}”缺少主机名，请填写完整的网址，例如 {EXAMPLE}。"
    else:
        assert message(response.text) == f"Invalid input: Webhook URL “{url}” has no host name; enter the full address, for example {EXAMPLE}."
    assert snapshot(site.dsn) == before
    assert stored_url(site.dsn) == "http://127.0.0.1:9/hook"


# Each URL whose host IDNA 2008 cannot encode, with the host as urlsplit reports it (in lower case).
INVALID_HOSTS = {
    "http://exa mple.com/x": "exa mple.com",
    "http://exa\u200bmple.com/x": "exa\u200bmple.com",
    "http://xn--/x": "xn--",
    "http://-crm-.example.com/x": "-crm-.example.com",
    "http://crm..example.com/x": "crm..example.com",
    "http://crm_1-.example.com/x": "crm_1-.example.com",
    "http://crm_1..example.com/x": "crm_1..example.com",
    "http://%20/x": "%20",
    "https://ＣＲＭ.example.com/x": "ｃｒｍ.example.com",
}


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("url", sorted(INVALID_HOSTS))
def test_invalid_host_rejected(site, admin, url: str, language: str) -> None:
    host = INVALID_HOSTS[url]
    before = snapshot(site.dsn)
    response = post_url(admin, url, language)
    assert response.status_code == 400
    if language == "zh-CN":
        assert message(response.text) == (
            f"输入无效：推送地址（URL）“{url}”中的主机名“{host}”无效。主机名只能由字母、数字、连字符、下划线和点组成（也可以是 IP 地址或中文等国际化域名），"
            f"请填写完整的网址，例如 {EXAMPLE}。"
        )
    else:
        assert message(response.text) == (
            f"Invalid input: Webhook URL “{url}” has the invalid host name “{host}”. A host name consists of letters, digits, hyphens, underscores and dots, or is "
            f"an IP address or an internationalized domain name; enter the full address, for example {EXAMPLE}."
        )
    assert snapshot(site.dsn) == before


@pytest.mark.parametrize(("language", "expected"), [
    ("zh-CN", f"输入无效：推送地址（URL）“http://999.1.1.1/hook”不是有效的网址，请填写完整的网址，例如 {EXAMPLE}。"),
    ("en", f"Invalid input: Webhook URL “http://999.1.1.1/hook” is not a valid address; enter the full address, for example {EXAMPLE}."),
])
def test_dotted_host_that_is_no_address_rejected(site, admin, language: str, expected: str) -> None:
    """httpx reads four dot-separated numbers as an IPv4 address and fails on 999, so the form rejects the URL too."""
    before = snapshot(site.dsn)
    response = post_url(admin, "http://999.1.1.1/hook", language)
    assert response.status_code == 400
    assert message(response.text) == expected
    assert snapshot(site.dsn) == before


# Each accepted URL and the URL stored: the scheme in lower case, everything else as given.
ACCEPTED = {
    "HTTPS://crm.example.com/h": "https://crm.example.com/h",
    "Http://127.0.0.1:9/Hook": "http://127.0.0.1:9/Hook",
    "https://CRM.Example.com/x": "https://CRM.Example.com/x",
    "https://bücher.example/x": "https://bücher.example/x",
    "https://客户.example.cn/hooks": "https://客户.example.cn/hooks",
    "http://[::1]:8080/x": "http://[::1]:8080/x",
    "https://crm.example.com./x": "https://crm.example.com./x",
    "http://crm_1.example.com/x": "http://crm_1.example.com/x",
    "http://hook_svc:8080/renewal": "http://hook_svc:8080/renewal",
}


@pytest.mark.parametrize("url", sorted(ACCEPTED))
def test_accepted_url_stored_and_sendable(site, admin, url: str) -> None:
    response = post_url(admin, url, "zh-CN")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/contracts?done=webhook.saved"
    stored = stored_url(site.dsn)
    assert stored == ACCEPTED[url]
    # The delivery builds its request with httpx, so the stored URL must parse there.
    request = httpx.Request("POST", stored)
    assert request.url.scheme == ACCEPTED[url].split(":", 1)[0]


def test_admin_contracts_title_is_plain(admin) -> None:
    """The webhook form is part of the page, never of its <title>."""
    page = admin.get("/contracts").text
    title = page[page.index("<title>") + len("<title>"):page.index("</title>")]
    assert title == "合同列表 · valuegate"
    assert page.count('id="webhook"') == 1


def test_query_values_masked_on_page_and_kept(site, admin) -> None:
    """The contracts page shows the query values as ***; saving that masked URL again, with a new secret, keeps the stored values."""
    secret_url = "https://crm.example.com/hooks?token=QUERYSECRET456&site=7"
    assert post_url(admin, secret_url, "en").status_code == 303
    page = admin.get("/contracts").text
    assert "QUERYSECRET456" not in page
    assert 'value="https://crm.example.com/hooks?token=***&amp;site=***"' in page
    assert post_url(admin, "https://crm.example.com/hooks?token=***&site=***", "en").status_code == 303
    assert stored_url(site.dsn) == secret_url
    # A URL the administrator changed is stored as given.
    assert post_url(admin, "https://crm.example.com/hooks?token=NEW", "en").status_code == 303
    assert stored_url(site.dsn) == "https://crm.example.com/hooks?token=NEW"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_url_credentials_rejected_and_masked(site, admin, language: str) -> None:
    before = snapshot(site.dsn)
    response = post_url(admin, "https://hookuser:HOOKPASS123@crm.example.com/x?token=QUERYSECRET456", language)
    assert response.status_code == 400
    assert "HOOKPASS123" not in response.text
    assert "QUERYSECRET456" not in response.text
    masked = "https://***@crm.example.com/x?token=***"
    if language == "zh-CN":
        assert message(response.text) == f"输入无效：推送地址（URL）“{masked}”中包含用户名或密码，请从网址中删除。每次推送都由签名密钥验证身份。"
    else:
        assert message(response.text) == (f"Invalid input: Webhook URL “{masked}” contains a user name or password. Remove them from the address, "
                                          "because the signing secret authenticates each delivery.")
    assert snapshot(site.dsn) == before
