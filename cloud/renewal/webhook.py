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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from .targets import HostUnresolved, Network, TargetRejected, mask_url, resolve_target

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
    """The URL with its user info and query values masked (see :func:`~.targets.mask_url`)."""
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


async def _pinned_request(url: httpx.URL, allowed: Sequence[Network]) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """Return the URL, extra headers and request extensions that make one attempt connect to the checked address of ``url``'s host.

    The URL's host is replaced by the address, while the ``Host`` header and,
    for https, the TLS server name (SNI, also used to verify the certificate)
    keep the host name. Raises :class:`TargetRejected` or :class:`HostUnresolved`.
    """
    host = url.raw_host.decode("ascii")
    address = await resolve_target(host, url.port or (443 if url.scheme == "https" else 80), allowed)
    if address is None or str(address) == host:
        return url, {}, {}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return url.copy_with(host=str(address)), {"Host": url.netloc.decode("ascii")}, extensions


async def deliver(
    url: str,
    secret: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    record: Callable[[Attempt], Awaitable[None]],
    policy: RetryPolicy = RetryPolicy(),
    allowed_networks: Sequence[Network] = (),
    rng: random.Random | None = None,
) -> bool:
    """POST ``body`` to ``url`` until a 2xx response, a final 4xx, or the attempts run out; record every attempt.

    Each attempt resolves the host again and connects only to an address that
    is public or in ``allowed_networks``. A rejected address ends the delivery
    at once, while a host that does not resolve is retried. Redirects are not
    followed, and a 3xx response ends the delivery. Each attempt is signed
    afresh with its own timestamp. Delays use full jitter: a uniform draw
    between 0 and ``min(max_delay, base * 2**n)``. Logs and records show the
    URL masked, so its credentials appear only in the request itself.
    """
    rng = rng or random.Random()
    masked_url = mask_url(url)
    target = httpx.URL(url)
    # NOTE: with HTTP(S)_PROXY set in the environment, httpx sends the request through that proxy. The check then covers
    # only the address given to the proxy, and the proxy decides where it connects.
    async with httpx.AsyncClient(timeout=policy.timeout_s, follow_redirects=False) as client:
        for number in range(1, policy.attempts + 1):
            timestamp = int(time.time())
            signed = {**headers, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}
            started = time.time()
            status_code: int | None = None
            error: str | None = None
            try:
                request_url, host_header, extensions = await _pinned_request(target, allowed_networks)
                response = await client.post(request_url, content=body, headers={**signed, **host_header}, extensions=extensions)
                status_code = response.status_code
            except TargetRejected as exc:
                await record(Attempt(number, masked_url, None, str(exc), False, started, int((time.time() - started) * 1000)))
                log.error("webhook_target_rejected", url=masked_url, attempt=number, address=str(exc.address), reason=exc.reason)
                return False
            except HostUnresolved as exc:
                error = str(exc)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            delivered = status_code is not None and 200 <= status_code < 300
            await record(Attempt(number, masked_url, status_code, error, delivered, started, int((time.time() - started) * 1000)))
            if delivered:
                log.info("webhook_delivered", url=masked_url, attempt=number, status=status_code)
                return True
            if status_code is not None and not _retryable(status_code):
                log.warning("webhook_rejected", url=masked_url, attempt=number, status=status_code)
                return False
            if number < policy.attempts:
                delay = rng.uniform(0, min(policy.max_delay_s, policy.base_delay_s * 2 ** (number - 1)))
                log.warning("webhook_retry", url=masked_url, attempt=number, status=status_code, error=error, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
    log.error("webhook_failed", url=masked_url, attempts=policy.attempts)
    return False
