"""Webhook targets: special-purpose addresses are rejected unless allowed, deliveries connect to the checked address, URLs are masked."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import structlog

from tests.renewal.receiver import LOOPBACK, receiver
from tests.renewal.test_webhook import FAST, SECRET, check_signature
from valuegate.cloud.renewal.targets import ALLOWED_NETWORKS_SETTING, TargetRejected, mask_url, parse_networks, rejection_reason, resolve_target
from valuegate.cloud.renewal.webhook import deliver

# Each address is only parsed and classified; no test sends anything to it.
REJECTED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "240.0.0.1": "reserved",
    "100.64.0.1": "non-public",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::": "loopback",
    "64:ff9b::a00:1": "private",
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", sorted(REJECTED))
def test_special_address_rejected(address: str) -> None:
    assert rejection_reason(ipaddress.ip_address(address), ()) == REJECTED[address]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_address_allowed(address: str) -> None:
    assert rejection_reason(ipaddress.ip_address(address), ()) is None


def test_allowed_network_admits_its_addresses() -> None:
    allowed = parse_networks(["10.20.0.0/16", "fd00::/8"])
    assert rejection_reason(ipaddress.ip_address("10.20.1.2"), allowed) is None
    assert rejection_reason(ipaddress.ip_address("::ffff:10.20.1.2"), allowed) is None
    assert rejection_reason(ipaddress.ip_address("fd12::1"), allowed) is None
    assert rejection_reason(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert rejection_reason(ipaddress.ip_address("127.0.0.1"), allowed) == "loopback"


def test_invalid_network_names_value() -> None:
    with pytest.raises(ValueError, match="'10.0.0.1/8' is not a network in CIDR notation"):
        parse_networks(["10.0.0.1/8"])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.7"])
async def test_literal_rejected_by_default(host: str) -> None:
    with pytest.raises(TargetRejected) as caught:
        await resolve_target(host, 80, ())
    assert str(caught.value).startswith(f"webhook host {host!r} is ")
    assert ALLOWED_NETWORKS_SETTING in str(caught.value)


async def test_name_resolving_to_loopback_rejected() -> None:
    """localhost comes from the hosts file, so this sends no DNS query."""
    with pytest.raises(TargetRejected) as caught:
        await resolve_target("localhost", 80, ())
    assert caught.value.address.is_loopback
    assert f"webhook host 'localhost' resolves to {caught.value.address}, which is a loopback address" in str(caught.value)
    assert ALLOWED_NETWORKS_SETTING in str(caught.value)


async def test_every_network_allowed_skips_resolution() -> None:
    assert await resolve_target("no-such-host.invalid", 443, parse_networks(["0.0.0.0/0", "::/0"])) is None


async def test_default_delivery_sends_nothing_to_loopback() -> None:
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([200]) as (url, received):
        assert await deliver(url, SECRET, b"x", headers={}, record=record, policy=FAST) is False
    assert received == []
    # A rejected address is final: one attempt, not one per retry.
    assert len(attempts) == 1
    assert attempts[0].status_code is None
    assert "127.0.0.1" in attempts[0].error
    assert ALLOWED_NETWORKS_SETTING in attempts[0].error


async def test_name_delivery_connects_to_checked_address() -> None:
    """The request goes to the address checked for localhost, and the Host header keeps the name."""
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([200]) as (url, received):
        port = url.split(":")[2].split("/")[0]
        named = url.replace("127.0.0.1", "localhost")
        assert await deliver(named, SECRET, b"body", headers={}, record=record, policy=FAST, allowed_networks=LOOPBACK) is True
    assert len(received) == 1
    assert received[0]["headers"]["host"] == f"localhost:{port}"
    assert check_signature(received[0])
    assert attempts[0].url == named


async def test_redirect_not_followed() -> None:
    with receiver([302]) as (url, received):
        assert await deliver(url, SECRET, b"x", headers={}, record=_ignore, policy=FAST, allowed_networks=LOOPBACK) is False
    assert len(received) == 1


async def test_query_values_masked_outside_request() -> None:
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([503, 200]) as (url, received), structlog.testing.capture_logs() as logs:
        secret_url = url + "?token=QUERYSECRET456&site=a"
        assert await deliver(secret_url, SECRET, b"x", headers={}, record=record, policy=FAST, allowed_networks=LOOPBACK) is True
    # The receiver gets the real query, while the attempts and the log lines show it masked.
    assert [r["path"] for r in received] == ["/hooks/renewal?token=QUERYSECRET456&site=a"] * 2
    assert [a.url for a in attempts] == [url + "?token=***&site=***"] * 2
    assert {event["event"] for event in logs} >= {"webhook_retry", "webhook_delivered"}
    assert "QUERYSECRET456" not in repr(logs)


MASKED = {
    "https://crm.example.com/hooks": "https://crm.example.com/hooks",
    "https://hookuser:HOOKPASS123@crm.example.com/x": "https://***@crm.example.com/x",
    "http://user@127.0.0.1:8080/x?token=abc": "http://***@127.0.0.1:8080/x?token=***",
    "https://crm.example.com/x?token=abc&site=7&bare": "https://crm.example.com/x?token=***&site=***&***",
    "https://crm.example.com/x?a=1&&b=": "https://crm.example.com/x?a=***&&b=***",
    "https://crm.example.com/x#key=abc": "https://crm.example.com/x#***",
    "https://a:b@[::1]:9/x?k=v#f": "https://***@[::1]:9/x?k=***#***",
    "https://crm.example.com/x?": "https://crm.example.com/x",
}


@pytest.mark.parametrize("url", sorted(MASKED))
def test_mask_url(url: str) -> None:
    assert mask_url(url) == MASKED[url]
    assert mask_url(MASKED[url]) == MASKED[url]


MIGRATION = Path(__file__).parents[2] / "cloud" / "migrations" / "0055_mask_webhook_urls.sql"


@pytest.mark.postgres
async def test_migration_masks_like_python(database) -> None:
    """The migration masks URLs stored before masking on write, the same way as mask_url; running it twice changes nothing more."""
    import psycopg

    from valuegate.cloud import db

    db.migrate(database)
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        for number, url in enumerate(sorted(MASKED)):
            await conn.execute(
                "INSERT INTO audit_log (tenant_id, actor, action, object_type, object_id, detail) VALUES ('acme', 'test', %s, 'x', %s, jsonb_build_object('url', %s::text))",
                ("webhook.set" if number % 2 else "renewal.redeliver", str(number), url),
            )
        await conn.execute("INSERT INTO audit_log (tenant_id, actor, action, object_type, object_id, detail) VALUES ('acme', 'test', 'other', 'x', 'o', %s)",
                           ('{"url": "https://u:p@h/x"}',))
        for _ in range(2):
            await conn.execute(MIGRATION.read_text(encoding="utf-8").encode())
        cur = await conn.execute("SELECT object_id, detail->>'url' FROM audit_log WHERE action <> 'other'")
        stored = dict(await cur.fetchall())
        cur = await conn.execute("SELECT detail->>'url' FROM audit_log WHERE action = 'other'")
        other = (await cur.fetchone())[0]
    assert stored == {str(number): MASKED[url] for number, url in enumerate(sorted(MASKED))}
    assert other == "https://u:p@h/x"


async def _ignore(_attempt):
    return None
