"""Ingest replies to gateways (cumulative acks, resend requests, rejection notices) and rate-limited rejection warnings.

An ack names the highest contiguous stored sequence of a gateway, so the
highest one per gateway is all that must go out. Acks of batches stored
while the worker was disconnected are held and sent after the reconnect.
A gap first waits ``resend_grace_s``: with several workers, a voucher
often arrives before its predecessor, which another worker is storing,
and the gap closes by itself. A gap that lasts longer gets a resend
request, at most once per ``resend_interval_s``. The worker's housekeeping
checks waiting gaps too, in case no further voucher of that gateway arrives.

A message rejected on a registered gateway's own topic also goes back to
that gateway, as a ``rejected`` field of its next ack, at most once per
gateway, kind and code per ``notice_interval_s``. The engineer at the edge
box then reads in the agent's log why the cloud stores nothing.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import structlog

from . import metrics
from .chain import ChainPosition
from .verify import Topic

__all__ = ("GatewayReplies", "RejectionLog")

log = structlog.get_logger("valuegate.cloud.ingest")


class GatewayReplies:
    """Acks and resend requests of one ingest worker."""

    def __init__(self, resend_interval_s: float, resend_grace_s: float = 0.0, notice_interval_s: float = 60.0) -> None:
        self.resend_interval_s = resend_interval_s
        self.resend_grace_s = resend_grace_s
        self.notice_interval_s = notice_interval_s
        self._noticed: dict[tuple[str, str, str], float] = {}
        # Per gateway, the topic and highest stored_through of acks that could not be sent while disconnected.
        self.unsent: dict[str, tuple[Topic, int]] = {}
        self._last_resend: dict[tuple[str, int], float] = {}
        # Per gateway, a gap seen but not yet asked for: its topic, first missing sequence and when it was first seen.
        self.waiting_gaps: dict[str, tuple[Topic, int, float]] = {}

    def hold(self, topics: dict[str, Topic], positions: dict[str, ChainPosition]) -> None:
        """Keep the acks of ``positions`` until a connection is back."""
        for gateway_id, position in positions.items():
            held = self.unsent.get(gateway_id)
            if held is None or held[1] < position.stored_through:
                self.unsent[gateway_id] = (topics[gateway_id], position.stored_through)

    def notice_due(self, gateway_id: str, kind: str, code: str) -> bool:
        """Return whether a rejection of ``kind`` and ``code`` should go back to the gateway now, and note it if so."""
        key = (gateway_id, kind, code)
        now = time.monotonic()
        if now - self._noticed.get(key, -1e9) < self.notice_interval_s:
            return False
        if len(self._noticed) > 10_000:
            self._noticed = {k: stamp for k, stamp in self._noticed.items() if now - stamp < self.notice_interval_s}
        self._noticed[key] = now
        return True

    def send(
        self, client: mqtt.Client, topics: dict[str, Topic], positions: dict[str, ChainPosition], notices: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Send held acks, then each touched gateway's ack (with its rejection notice) and, for a gap, a resend request."""
        self.send_held(client)
        notices = notices or {}
        now = time.monotonic()
        for gateway_id, position in positions.items():
            topic = topics[gateway_id]
            self.unsent.pop(gateway_id, None)
            self._send_ack(client, topic, position.stored_through, notices.get(gateway_id))
            if not position.gap:
                self.waiting_gaps.pop(gateway_id, None)
                continue
            from_seq = position.stored_through + 1
            waiting = self.waiting_gaps.get(gateway_id)
            if waiting is None or waiting[1] != from_seq:
                waiting = self.waiting_gaps[gateway_id] = (topic, from_seq, now)
            if now - waiting[2] >= self.resend_grace_s:
                self._request_resend(client, topic, position)

    def due_gaps(self) -> list[str]:
        """Return the gateways whose gap has waited ``resend_grace_s``, for the caller to check against the stored chain."""
        now = time.monotonic()
        return [gateway_id for gateway_id, (_, _, since) in self.waiting_gaps.items() if now - since >= self.resend_grace_s]

    def request_due(self, client: mqtt.Client, positions: dict[str, ChainPosition]) -> None:
        """Ask for the gaps that ``positions`` (read from the database) still show; forget those that closed."""
        for gateway_id, position in positions.items():
            waiting = self.waiting_gaps.get(gateway_id)
            if waiting is None:
                continue
            if not position.gap or position.stored_through + 1 != waiting[1]:
                self.waiting_gaps.pop(gateway_id)  # closed, or moved on to a new gap that a later batch reports
                continue
            self._request_resend(client, waiting[0], position)

    def send_held(self, client: mqtt.Client) -> None:
        """Send the acks of batches stored while the worker was not connected."""
        held, self.unsent = self.unsent, {}
        for topic, stored_through in held.values():
            self._send_ack(client, topic, stored_through)

    def _send_ack(self, client: mqtt.Client, topic: Topic, stored_through: int, rejected: dict[str, Any] | None = None) -> None:
        ack: dict[str, Any] = {"schema": "valuegate/ack/v1", "stored_through": stored_through}
        if rejected is not None:
            ack["rejected"] = rejected
            metrics.REJECTION_NOTICES.inc()
        client.publish(topic.reply("ack"), msgspec.json.encode(ack), qos=1)
        metrics.ACKS_SENT.inc()

    def _request_resend(self, client: mqtt.Client, topic: Topic, position: ChainPosition) -> None:
        from_seq = position.stored_through + 1
        key = (position.gateway_id, from_seq)
        now = time.monotonic()
        if now - self._last_resend.get(key, -1e9) < self.resend_interval_s:
            return
        self._last_resend[key] = now
        if len(self._last_resend) > 10_000:
            self._last_resend = {k: v for k, v in self._last_resend.items() if now - v < self.resend_interval_s}
        client.publish(topic.reply("resend"), msgspec.json.encode({"schema": "valuegate/resend/v1", "from_seq": from_seq, "missing": "vouchers"}), qos=1)
        metrics.RESEND_REQUESTS.inc()
        log.info("resend_requested", gateway=position.gateway_id, from_seq=from_seq, highest_seq=position.highest_seq)


class RejectionLog:
    """Logs one warning per rejection kind, code and topic per ``interval_s``, with the count held back since.

    The workers of one process share one instance (see ``valuegate.cloud.ingest``), so
    the limit applies per process, whichever worker received the message. The
    workers run on one event loop, so no lock is needed.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._logged: dict[tuple[str, str, str], float] = {}
        self._held: dict[tuple[str, str, str], int] = {}

    def __call__(self, now: float, kind: str, code: str, topic: str, voucher_id: str | None, reason: str, *, worker: str) -> None:
        key = (kind, code, topic)
        last = self._logged.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        if len(self._logged) > 10_000:
            # Many distinct topics: start over rather than let the table grow without end.
            self._logged.clear()
            self._held.clear()
        self._logged[key] = now
        held = self._held.pop(key, 0)
        log.warning("ingest_rejected", worker=worker, kind=kind, code=code, topic=topic, voucher_id=voucher_id, reason=reason, repeats_not_logged=held)
