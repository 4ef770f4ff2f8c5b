"""Rejection notices: why the cloud refused one of this gateway's messages, as its ack reports it.

The cloud's ack may carry a ``rejected`` object (kind, code, voucher id,
reason) for a voucher or telemetry message it did not store. Each ingest
worker sends one at most once a minute per kind and code. Without it, an agent whose key the cloud does not
know yet sees only acks that never move. The agent logs the notice, counts it
per code and shows the latest one on its health endpoint for ``window_s``.
The latest notice is also stored in the spool's ``meta`` table, so that an agent
restarted within the window shows it again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from .spool import Spool

__all__ = ("RejectionNotice", "RecentRejection", "parse_notice", "load_notice", "save_notice")

log = structlog.get_logger("valuegate.edge.publish")

# The spool's meta key of the latest notice: JSON with the notice's fields and ``received_s`` (Unix time).
_META_KEY = "cloud_rejection"

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
    """The latest notice and its arrival time; the health endpoint reads it from another thread.

    The arrival time is wall-clock time (``time.time`` by default), so that a stored notice ages out across restarts.
    """

    def __init__(self, *, window_s: float = 600.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._latest: tuple[RejectionNotice, float] | None = None
        self._unsaved = False
        self._lock = threading.Lock()

    def note(self, notice: RejectionNotice) -> None:
        with self._lock:
            self._latest = (notice, self._clock())
            self._unsaved = True

    def take_unsaved(self) -> str | None:
        """Return the latest notice as the JSON text to store when it changed since the last call, else None."""
        with self._lock:
            if not self._unsaved or self._latest is None:
                return None
            self._unsaved = False
            notice, received_s = self._latest
        return json.dumps({**asdict(notice), "received_s": received_s})

    def restore(self, text: str) -> None:
        """Keep a notice that :meth:`take_unsaved` returned before a restart, unless one arrived since.

        Text that is not such a notice is logged and ignored. So is a notice stamped more than
        ``window_s`` in the future, which means the clock was set back, because it would otherwise show for that long.
        """
        if not text:
            return
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        notice = parse_notice({"rejected": data})
        received_s = data.get("received_s") if isinstance(data, dict) else None
        if notice is None or not isinstance(received_s, int | float) or isinstance(received_s, bool):
            log.warning("cloud_rejection_unreadable", meta_key=_META_KEY, reason="the stored notice is not JSON with a valid kind, code and received_s, so the health report starts without it")
            return
        if received_s - self._clock() > self.window_s:
            return
        with self._lock:
            if self._latest is None:
                self._latest = (notice, float(received_s))

    def current(self) -> dict[str, Any] | None:
        """Return the latest notice with its ``received_at`` (UTC, ISO 8601) while within the window, else None."""
        with self._lock:
            latest = self._latest
        if latest is None or self._clock() - latest[1] > self.window_s:
            return None
        return {**asdict(latest[0]), "received_at": dt.datetime.fromtimestamp(latest[1], dt.UTC).isoformat(timespec="seconds")}


def load_notice(spool: Spool) -> str:
    """Return the stored notice text, or an empty string when none was stored. Call it on the spool's thread."""
    return spool.meta(_META_KEY)


def save_notice(spool: Spool, text: str) -> None:
    """Store the notice text from :meth:`RecentRejection.take_unsaved`. Call it on the spool's thread."""
    # NORMAL: a power cut may lose the newest notice, which costs only the health report's view of it.
    with spool.transaction(sync="NORMAL"):
        spool.set_meta(_META_KEY, text)
