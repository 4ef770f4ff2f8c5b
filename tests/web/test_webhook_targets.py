"""Webhook URLs whose host is, or resolves to, a loopback, link-local or private address are rejected under the default settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.web.site import Site, running_site
from tests.web.test_form_validation import message, snapshot
from tests.web.test_webhook_url import post_url, stored_url

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def site(postgres_server) -> Iterator[Site]:
    """The app with the default webhook_allowed_networks, which allows public addresses only."""
    with running_site(postgres_server, {"VALUEGATE_CLOUD_WEBHOOK_ALLOWED_NETWORKS": ""}) as running:
        yield running


# Each URL, the address named in the message and its kind. The addresses are only checked; nothing is sent to them.
REJECTED = {
    "http://127.0.0.1:9/hook": ("127.0.0.1", "a loopback address"),
    "http://[::1]:9/hook": ("::1", "a loopback address"),
    "http://169.254.169.254/latest/meta-data": ("169.254.169.254", "a link-local address"),
    "https://10.1.2.3/hook": ("10.1.2.3", "a private network address"),
    "https://192.168.0.10/hook": ("192.168.0.10", "a private network address"),
    "http://0.0.0.0:8000/hook": ("0.0.0.0", "an unspecified address"),
}
SETTING_EN = "Webhooks go only to public addresses unless the operator lists the network in the cloud setting webhook_allowed_networks."


@pytest.mark.parametrize("url", sorted(REJECTED))
def test_special_address_rejected(site, login, url: str) -> None:
    admin = login("adm1")
    before = snapshot(site.dsn)
    response = post_url(admin, url, "en")
    assert response.status_code == 400
    address, kind = REJECTED[url]
    assert message(response.text) == f"Invalid input: Webhook URL “{url}” points to {address}, which is {kind}. {SETTING_EN}"
    assert snapshot(site.dsn) == before
    assert stored_url(site.dsn) is None


def test_name_resolving_to_loopback_rejected(site, login) -> None:
    """localhost resolves from the hosts file, so the check sends no DNS query."""
    admin = login("adm1")
    response = post_url(admin, "http://localhost:9/hook", "zh-CN")
    assert response.status_code == 400
    text = message(response.text)
    assert text.startswith("输入无效：推送地址（URL）“http://localhost:9/hook”中的主机名 localhost 解析为 ")
    assert "这是环回地址。推送只发往公网地址，除非运维人员在云端设置 webhook_allowed_networks 中列出该网段。" in text
    assert stored_url(site.dsn) is None
