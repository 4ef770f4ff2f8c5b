"""One MQTT connection of the edge publisher: in-flight messages, publishing cursors and the gateway's status.

The session hands paho vouchers read ahead from the outbox and telemetry
records, settles PUBACKs, and announces the gateway on its status topic.
How it applies the cloud's acks and handles resend and records requests is
in :mod:`.publish_control`. The messages themselves are in
:mod:`.publish_messages`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import outbox
from .protocol.records import TELEMETRY_SCHEMA
from .protocol.telemetry_proof import PROPERTY_BYTES, sign_telemetry
from .publish_control import ControlMessages
from .publish_messages import NOT_AUTHORIZED, STATUS_SCHEMA, ClientEvent, iso_now, known_instances, remember_instance, split_records

if TYPE_CHECKING:
    from .publish import Publisher

__all__ = ("SessionState",)

# Fixed header, packet id, topic length and property bytes of a PUBLISH, rounded up.
_PUBLISH_OVERHEAD = 64
# How long a new connection waits for the retained status before it announces itself.
_STATUS_WAIT_S = 1.0
# Free window slots that wake the session when vouchers read ahead wait (waking per PUBACK costs more than it gains).
_AHEAD_REFILL_ROOM = 8


class SessionState(ControlMessages):
    """In-flight messages and publishing cursors of one connection."""

    def __init__(self, publisher: Publisher, client: mqtt.Client, connack: ClientEvent) -> None:
        self.p = publisher
        self.client = client
        config = publisher.config
        props = connack.properties
        self.max_packet = getattr(props, "MaximumPacketSize", None)
        self.window = min(config.publish.window, getattr(props, "ReceiveMaximum", config.publish.window))
        # paho keeps at most publish.window messages on the wire (set before connecting) and sends the next queued
        # one as each PUBACK arrives, without a pass through the session. The session hands it a second window
        # ahead, unless the broker's Receive Maximum is below publish.window. Then paho gets no more than the broker allows.
        self.capacity = 2 * self.window if self.window == config.publish.window else self.window
        # Messages handed to paho and not yet acknowledged by the broker: those on the wire and those paho holds.
        self.inflight: dict[int, tuple[str, Any]] = {}
        self.published_records: list[tuple[int, str]] = []
        self.stored_through = 0
        # Monotonic time by which a received ack is applied to the outbox (None while none waits).
        self.ack_due: float | None = None
        # The ack being committed to the outbox in the background, if any (see :meth:`settle`).
        self.applying: asyncio.Task[None] | None = None
        self.voucher_cursor = publisher.acked_through + 1
        # Vouchers read from the outbox but not yet published, in sequence from voucher_cursor.
        self.ahead: collections.deque[outbox.OutboxEntry] = collections.deque()
        # The background read of the next vouchers (see :meth:`_read_ahead`), what it raised, and whether the last read reached the outbox's end.
        self.reading: asyncio.Task[None] | None = None
        self.read_error: Exception | None = None
        self.read_to_end = False
        self.records_read_to_end = False
        self.telemetry_cursor: tuple[int, str] | None = None
        self.blocked_seq: int | None = None
        self.online = False
        self.status_deadline = time.monotonic() + _STATUS_WAIT_S
        self.last_progress = time.monotonic()
        self.topics = {kind: config.topic(kind) for kind in ("telemetry", "vouchers", "status", "ack", "resend")}

    async def start(self) -> None:
        """Subscribe, then wait briefly for the retained status before announcing this instance (see :meth:`_check_status`)."""
        self.client.subscribe([(self.topics["ack"], 1), (self.topics["resend"], 1), (self.topics["status"], 1)])
        self.status_deadline = time.monotonic() + _STATUS_WAIT_S
        self.online = False

    async def _go_online(self) -> None:
        self.online = True
        # Recorded before the announcement, so that a crash right after it cannot look like another agent.
        await self.p.spool.call(remember_instance, self.p.instance)
        status = {"schema": STATUS_SCHEMA, "state": "online", "instance": self.p.instance, "ts": iso_now(), **self.p.status_extra()}
        self._publish("status", None, self.topics["status"], json.dumps(status).encode(), retain=True)

    async def _check_status(self, message: Any) -> None:
        """Raise the conflict alarm when the status topic shows another instance of this gateway online.

        The retained status names the last instance that announced itself.
        When that is neither this process nor an earlier run on this spool
        (which a crash may leave marked online), a second agent with the same
        gateway id is running, and this one stays off the broker.
        """
        if not isinstance(message, dict) or message.get("schema") != STATUS_SCHEMA:
            return
        other = message.get("instance")
        if message.get("state") == "online" and isinstance(other, str) and other != self.p.instance:
            known = await self.p.spool.call(known_instances)
            if other not in known:
                self.p.alarm(f"status topic shows instance {other} online")
                return
        if not self.online:
            await self._go_online()

    def _publish(self, kind: str, key: Any, topic: str, payload: bytes, *, retain: bool = False, properties: Properties | None = None) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.inflight[info.mid] = (kind, key)
        return True

    def _room(self) -> int:
        """Return how many more messages paho may be handed (see ``capacity``)."""
        return self.capacity - len(self.inflight)

    async def fill(self) -> None:
        """Hand paho telemetry, then vouchers, until it has ``capacity`` messages or nothing is left, then read ahead."""
        if not self.online:
            if time.monotonic() < self.status_deadline:
                return
            await self._go_online()
        if self.p._announce:
            self.p._announce = False
            await self._go_online()
        if self.read_error is not None:
            error, self.read_error = self.read_error, None
            raise error
        # A telemetry query waits until a quarter of the window is free.
        if self._room() >= self._refill_room() or not self.inflight:
            await self._fill_telemetry()
        while self._room() > 0:
            if not self.ahead:
                if self.inflight or self.reading is not None or self.read_to_end:
                    break  # the read under way, or the next wake-up, brings more
                await self._read_from(self.voucher_cursor)
                if not self.ahead:
                    break
            entry = self.ahead[0]
            if self._too_large(entry):
                return
            if not self._publish("voucher", entry.seq, self.topics["vouchers"], entry.payload):
                return
            self.ahead.popleft()
            self.voucher_cursor = entry.seq + 1
        self._read_ahead()

    def _read_ahead(self) -> None:
        """Read the next vouchers from the outbox in the background while fewer than a window of them wait.

        The read runs on the spool's read connection, so an ack being
        committed on the write thread does not hold it up, and it is under
        way before the window empties.
        """
        if self.reading is None and not self.read_to_end and len(self.ahead) < self.window:
            start = self.ahead[-1].seq + 1 if self.ahead else self.voucher_cursor
            self.reading = asyncio.create_task(self._read_from(start), name="valuegate-read-ahead")

    async def _read_from(self, start: int) -> None:
        try:
            entries = await self.p.spool.read(outbox.pending, start, self.window)
        except Exception as exc:  # noqa: BLE001 - raised by the next fill, in the session's own task
            self.read_error = exc
            self.p._wake.set()
            return
        finally:
            if self.reading is asyncio.current_task():
                self.reading = None
        self.read_to_end = len(entries) < self.window
        # Kept only when the cursor has not moved meanwhile (an ack or a resend request moves it).
        if entries and start == (self.ahead[-1].seq + 1 if self.ahead else self.voucher_cursor):
            self.ahead.extend(entries)
            self.p._wake.set()

    def stop_reading(self) -> None:
        """Cancel the read under way, at the end of the connection."""
        if self.reading is not None:
            self.reading.cancel()
            self.reading = None

    def _move_cursor(self, seq: int) -> None:
        """Point the voucher cursor at ``seq``, keeping only read-ahead vouchers that still follow it."""
        while self.ahead and self.ahead[0].seq < seq:
            self.ahead.popleft()
        if self.ahead and self.ahead[0].seq != seq:
            self.ahead.clear()
        self.voucher_cursor = seq
        self.read_to_end = False

    def _too_large(self, entry: outbox.OutboxEntry) -> bool:
        """Hold back a voucher the broker would reject for its size; it stays in the outbox, and so do the ones after it."""
        limit = self.max_packet
        if limit is None or len(entry.payload) + len(self.topics["vouchers"]) + _PUBLISH_OVERHEAD <= limit:
            return False
        if self.blocked_seq != entry.seq:
            self.blocked_seq = entry.seq
            self.p.metrics.publish_rejected.inc()
            self.p._log.error(
                "voucher_too_large",
                seq=entry.seq,
                bytes=len(entry.payload),
                max_packet_size=limit,
                detail="raise the broker's maximum packet size; the voucher and every later one wait in the outbox",
            )
        return True

    async def _fill_telemetry(self) -> None:
        config = self.p.config
        # After a read that found fewer records than a batch, the next waits for new records (see Publisher.notify) or the next tick.
        if self.records_read_to_end or sum(kind == "telemetry" for kind, _ in self.inflight.values()) >= max(1, self.window // 2):
            return
        rows = await self.p.spool.read(outbox.unpublished_records, self.telemetry_cursor, config.publish.telemetry_batch_records)
        self.records_read_to_end = len(rows) < config.publish.telemetry_batch_records
        if not rows:
            return
        self.telemetry_cursor = (rows[-1][0], rows[-1][1])
        self._publish_records(rows)

    def _publish_records(self, rows: list[tuple[int, str, str]]) -> None:
        config = self.p.config
        head = {
            "schema": TELEMETRY_SCHEMA,
            "tenant": config.tenant,
            "site": config.site,
            "gateway": config.gateway,
            "time_zones": self.p.time_zones,
        }
        prefix = json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"records":['
        limit = (self.max_packet or 256 * 1024 * 1024) - _PUBLISH_OVERHEAD - PROPERTY_BYTES - len(self.topics["telemetry"].encode())
        keyed = {record.encode(): (minute_ms, machine) for minute_ms, machine, record in rows}
        for group in split_records(prefix, list(keyed), limit):
            payload = prefix + b",".join(group) + b"]}"
            keys = [keyed[record] for record in group]
            # Signed with the gateway's current key, so that no other client on the broker can store records in its name.
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = sign_telemetry(self.p.telemetry_key(), self.topics["telemetry"], payload)
            if self._publish("telemetry", keys, self.topics["telemetry"], payload, properties=properties):
                self.p.metrics.telemetry_batches.inc()

    def on_puback(self, mid: int, code: int) -> bool:
        """Free the message's window slot; telemetry records it carried are marked published by :meth:`settle`.

        Returns whether the session should wake: the window is empty, or has room for a refill (see :meth:`fill`).
        """
        kind, key = self.inflight.pop(mid, ("unknown", None))
        if code >= 0x80:
            self.p.metrics.publish_rejected.inc()
            # A denied topic is logged by the publisher as mqtt_publish_denied, with the topic and user name.
            if code != NOT_AUTHORIZED and (held := self.p.limit("mqtt_publish_rejected")) is not None:
                self.p._log.warning("mqtt_publish_rejected", kind=kind, reason_code=f"{code:#04x}", repeats_not_logged=held)
        elif kind == "telemetry":
            self.published_records += key
        return not self.inflight or self._room() >= (_AHEAD_REFILL_ROOM if self.ahead else self._refill_room())

    def _refill_room(self) -> int:
        return max(1, self.window // 4)

    async def tick(self) -> None:
        """Republish vouchers when the cloud's ack has not advanced for ``ack_timeout_s``, and retry telemetry."""
        # Read the outbox and the records again at least once a second, whatever wakes the session.
        self.read_to_end = self.records_read_to_end = False
        if not any(kind == "telemetry" for kind, _ in self.inflight.values()):
            self.telemetry_cursor = None
        # Requests older than the watch's window expire here, too, when none arrives.
        self._show_repeated()
        waiting = self.voucher_cursor > self.p.acked_through + 1
        in_flight = any(kind == "voucher" for kind, _ in self.inflight.values())
        if waiting and not in_flight and time.monotonic() - self.last_progress > self.p.config.publish.ack_timeout_s:
            self.p.metrics.publish_retries.inc()
            if (held := self.p.limit("vouchers_republished")) is not None:
                self.p._log.warning("vouchers_republished", from_seq=self.p.acked_through + 1, reason="ack_timeout", repeats_not_logged=held)
            self._move_cursor(self.p.acked_through + 1)
            self.last_progress = time.monotonic()
