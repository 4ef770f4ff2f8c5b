"""Signed webhook delivery of renewal packages: HMAC-SHA256 over timestamp and body, jittered exponential retries.

The receiver recomputes ``HMAC-SHA256(secret, timestamp + "." + body)`` and
compares it with the hex value after ``sha256=`` in ``X-Valuegate-Signature``;
the timestamp (Unix seconds, ``X-Valuegate-Timestamp``) lets it reject replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
import structlog

__all__ = ("SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Attempt", "RetryPolicy", "sign", "deliver")

SIGNATURE_HEADER = "X-Valuegate-Signature"
TIMESTAMP_HEADER = "X-Valuegate-Timestamp"

log = structlog.get_logger("valuegate.cloud.renewal")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a delivery is retried."""

    attempts: int = 8
    """Attempts in all, the first included."""
    base_delay_s: float = 2.0
    """Delay ceiling before the second attempt; it doubles for each later attempt (2, 4, 8 ... 128 s by default)."""
    max_delay_s: float = 300.0
    """Upper bound of any delay."""
    timeout_s: float = 15.0
    """Time allowed for one request, connection included."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt as recorded: the response status or the error, and how long it took."""

    attempt: int
    url: str
    status_code: int | None
    error: str | None
    delivered: bool
    started_at: float
    duration_ms: int


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature header value ``sha256=<hex>`` for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _retryable(status_code: int) -> bool:
    return status_code in (408, 425, 429) or status_code >= 500


async def deliver(
    url: str,
    secret: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    record: Callable[[Attempt], Awaitable[None]],
    policy: RetryPolicy = RetryPolicy(),
    rng: random.Random | None = None,
) -> bool:
    """POST ``body`` to ``url`` until a 2xx response, a final 4xx, or the attempts run out; record every attempt.

    Each attempt is signed afresh with its own timestamp. Delays use full
    jitter: a uniform draw between 0 and ``min(max_delay, base * 2**n)``.
    """
    rng = rng or random.Random()
    async with httpx.AsyncClient(timeout=policy.timeout_s, follow_redirects=False) as client:
        for number in range(1, policy.attempts + 1):
            timestamp = int(time.time())
            signed = {**headers, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}
            started = time.time()
            status_code: int | None = None
            error: str | None = None
            try:
                response = await client.post(url, content=body, headers=signed)
                status_code = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            delivered = status_code is not None and 200 <= status_code < 300
            await record(Attempt(number, url, status_code, error, delivered, started, int((time.time() - started) * 1000)))
            if delivered:
                log.info("webhook_delivered", url=url, attempt=number, status=status_code)
                return True
            if status_code is not None and not _retryable(status_code):
                log.warning("webhook_rejected", url=url, attempt=number, status=status_code)
                return False
            if number < policy.attempts:
                delay = rng.uniform(0, min(policy.max_delay_s, policy.base_delay_s * 2 ** (number - 1)))
                log.warning("webhook_retry", url=url, attempt=number, status=status_code, error=error, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
    log.error("webhook_failed", url=url, attempts=policy.attempts)
    return False
