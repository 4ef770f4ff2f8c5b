"""Webhook delivery: HMAC-SHA256 signatures a receiver can check, retries with backoff, no retry on a final 4xx."""

from __future__ import annotations

import hashlib
import hmac
import random

from tests.renewal.receiver import LOOPBACK, receiver
from valuegate.cloud.renewal.webhook import RetryPolicy, deliver

SECRET = "s3cret-for-tests-only"
FAST = RetryPolicy(attempts=4, base_delay_s=0.02, max_delay_s=0.05, timeout_s=5)


def check_signature(request: dict) -> bool:
    """Verify as a receiver would: HMAC over 'timestamp.body' with the shared secret."""
    timestamp = request["headers"]["x-valuegate-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request["headers"]["x-valuegate-signature"])


async def test_retries_until_delivered():
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([503, 500, 200]) as (url, received):
        ok = await deliver(url, SECRET, b"PK\x03\x04 package", headers={"X-Valuegate-Package": "7"}, record=record, policy=FAST, allowed_networks=LOOPBACK, rng=random.Random(1))
    assert ok is True
    assert [a.status_code for a in attempts] == [503, 500, 200]
    assert [a.delivered for a in attempts] == [False, False, True]
    assert len(received) == 3
    assert all(check_signature(r) for r in received)
    assert received[0]["body"] == b"PK\x03\x04 package"
    assert received[0]["headers"]["x-valuegate-package"] == "7"


async def test_wrong_secret_fails_check():
    with receiver([200]) as (url, received):
        await deliver(url, "another-secret-value", b"body", headers={}, record=_ignore, policy=FAST, allowed_networks=LOOPBACK)
    assert not check_signature(received[0])


async def test_final_client_error_stops():
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([400]) as (url, received):
        assert await deliver(url, SECRET, b"x", headers={}, record=record, policy=FAST, allowed_networks=LOOPBACK) is False
    assert len(received) == 1
    assert attempts[0].status_code == 400


async def test_unreachable_receiver_uses_every_attempt():
    attempts = []

    async def record(attempt):
        attempts.append(attempt)

    with receiver([200]) as (url, _):
        pass
    # The receiver is closed, so every connection is refused.
    assert await deliver(url, SECRET, b"x", headers={}, record=record, policy=FAST, allowed_networks=LOOPBACK) is False
    assert [a.attempt for a in attempts] == [1, 2, 3, 4]
    assert all(a.status_code is None and "ConnectError" in a.error for a in attempts)


async def _ignore(_attempt):
    return None
