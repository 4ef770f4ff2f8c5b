"""Rejection notices: why the cloud refused one of this gateway's messages, as its ack reports it.

The cloud's ack may carry a ``rejected`` object (kind, code, voucher id,
reason) for a voucher or telemetry message it did not store. Each ingest
worker sends one at most once a minute per kind and code. Without it, an agent whose key the cloud does not
know yet sees only acks that never move. The agent logs the notice, counts it
per code and shows the latest one on its health endpoint for ``window_s``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ("RejectionNotice", "RecentRejection", "parse_notice")

_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class RejectionNotice:
    kind: str  # voucher or telemetry
    code: str
    voucher_id: str | None
    reason: str


def parse_notice(message: Any) -> RejectionNotice | None:
    """Return the ``rejected`` object of an ack message, or None when there is none or it is malformed."""
    notice = message.get("rejected") if isinstance(message, dict) else None
    if not isinstance(notice, dict):
        return None
    kind, code = notice.get("kind"), notice.get("code")
    if kind not in ("voucher", "telemetry") or not isinstance(code, str) or not _CODE.fullmatch(code):
        return None
    voucher_id, reason = notice.get("voucher_id"), notice.get("reason")
    return RejectionNotice(
        kind=kind, code=code, voucher_id=voucher_id if isinstance(voucher_id, str) else None, reason=reason[:_REASON_CHARS] if isinstance(reason, str) else ""
    )


class RecentRejection:
    """The latest notice and its arrival time; the health endpoint reads it from another thread."""

    def __init__(self, *, window_s: float = 600.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._latest: tuple[RejectionNotice, float] | None = None
        self._lock = threading.Lock()

    def note(self, notice: RejectionNotice) -> None:
        with self._lock:
            self._latest = (notice, self._clock())

    def current(self) -> dict[str, Any] | None:
        """Return the latest notice with its ``received_at`` (UTC, ISO 8601) while within the window, else None."""
        with self._lock:
            latest = self._latest
        if latest is None or self._clock() - latest[1] > self.window_s:
            return None
        return {**asdict(latest[0]), "received_at": dt.datetime.fromtimestamp(latest[1], dt.UTC).isoformat(timespec="seconds")}
