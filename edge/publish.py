"""MQTT v5 publisher: sends the outbox at QoS 1 and deletes vouchers only when the cloud's ack covers them.

paho-mqtt's socket I/O runs on the event loop (:mod:`valuegate.mqttio`) and its
callbacks queue events that the session handles in order; only the
blocking connect runs on a worker thread, so nothing here blocks the
polling tasks. Each connection uses a fresh paho client: what was in flight on a
dropped connection is republished from the spool's outbox, the single
place that decides what still has to go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from valuegate.adapters.backoff import Backoff
from valuegate.mqttio import LoopBridge

from . import outbox
from .config import EdgeConfig
from .metrics import AgentMetrics, LogLimiter
from .protocol.records import TELEMETRY_SCHEMA
from .spool import SpoolThread

__all__ = ("Publisher", "SESSION_TAKEN_OVER", "ACK_SCHEMA", "RECORDS_REQUEST_SCHEMA", "RESEND_SCHEMA", "STATUS_SCHEMA", "split_records")

ACK_SCHEMA = "valuegate/ack/v1"
RESEND_SCHEMA = "valuegate/resend/v1"
# The cloud's request for the records of machines over a time span (a baseline period), on the resend topic.
RECORDS_REQUEST_SCHEMA = "valuegate/records-request/v1"
# The longest span and the most machines one records request may name; larger requests are ignored and counted.
_RECORDS_REQUEST_MAX_MS = 62 * 86_400_000
_RECORDS_REQUEST_MAX_MACHINES = 64
STATUS_SCHEMA = "valuegate/status/v1"
SESSION_TAKEN_OVER = 0x8E
# Fixed header, packet id, topic length and property bytes of a PUBLISH, rounded up.
_PUBLISH_OVERHEAD = 64
_CONNACK_TIMEOUT_S = 30.0
_TICK_S = 1.0
_WILL_DELAY_S = 5
# How long a new connection waits for the retained status before it announces itself.
_STATUS_WAIT_S = 1.0
# Free window slots that wake the session when vouchers read ahead wait (waking per PUBACK costs more than it gains).
_AHEAD_REFILL_ROOM = 8
# Vouchers whose evidence records one resend request republishes, at most.
_RESEND_EVIDENCE_VOUCHERS = 8

log = structlog.get_logger("valuegate.edge.publish")


class ConnectFailed(Exception):
    """The broker rejected CONNECT or sent no CONNACK; the message names the reason code or the socket error."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True)
class _Event:
    kind: str  # connack, disconnect, message
    code: int = 0
    session_present: bool = False
    properties: Any = None
    topic: str = ""
    payload: bytes = b""


def split_records(prefix: bytes, records: list[bytes], limit: int) -> list[list[bytes]]:
    """Split JSON records into groups whose batch payload (``prefix`` + records + closing) fits in ``limit`` bytes."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = len(prefix) + 2
    for record in records:
        extra = len(record) + (1 if current else 0)
        if current and size + extra > limit:
            groups.append(current)
            current, size = [], len(prefix) + 2
            extra = len(record)
        if len(prefix) + 2 + len(record) > limit:
            msg = f"one telemetry record of {len(record)} bytes exceeds the broker's maximum packet size ({limit} bytes of payload)"
            raise ValueError(msg)
        current.append(record)
        size += extra
    if current:
        groups.append(current)
    return groups


class Publisher:
    """Keeps one MQTT session to the broker and drains the outbox through it."""

    def __init__(
        self,
        config: EdgeConfig,
        spool: SpoolThread,
        metrics: AgentMetrics,
        *,
        instance: str,
        status_extra: Callable[[], dict[str, Any]] = dict,
        time_zones: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.time_zones = dict(time_zones or {})
        self.spool = spool
        self.metrics = metrics
        self.instance = instance
        self.status_extra = status_extra
        self.connected = False
        self.taken_over = False
        self.conflict = ""
        self.acked_through = 0
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._events: collections.deque[_Event] = collections.deque()
        self._log = log.bind(gateway=config.gateway, client_id=config.client_id)
        self.limit = LogLimiter()
        self._backoff = Backoff(config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s)
        self.connections = 0
        self._current: _SessionState | None = None
        self._bridge: LoopBridge | None = None
        self._announce = False

    # -- called by the agent -----------------------------------------------

    def notify(self) -> None:
        """Tell the publisher that new vouchers or telemetry records are in the spool."""
        self._wake.set()

    def announce(self) -> None:
        """Publish the retained online status again, for example with a new key and its rotation statement."""
        self._announce = True
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def alarm(self, reason: str) -> None:
        """Record that another agent uses this gateway id; the session ends and reconnects only after ``takeover_retry_s``."""
        self.taken_over = True
        self.conflict = reason
        self.metrics.mqtt_session_taken_over.inc()

    def inflight(self) -> int:
        """Return the messages of the current connection still waiting for their PUBACK."""
        return len(self._current.inflight) if self._current is not None else 0

    def sent_through(self) -> int:
        """Return the highest voucher sequence handed to the current connection."""
        return self._current.voucher_cursor - 1 if self._current is not None else self.acked_through

    async def run(self) -> None:
        """Connect, publish and reconnect until :meth:`stop`."""
        head = await self.spool.call(outbox.chain_head)
        self.acked_through = head.acked_through
        while not self._stopping.is_set():
            delay = self._backoff.next_delay()
            try:
                await self._session()
                self._backoff.reset()
            except ConnectFailed as exc:
                self.metrics.mqtt_connect_failures.inc()
                if (held := self.limit("mqtt_connect_failed")) is not None:
                    self._log.warning("mqtt_connect_failed", reason=str(exc), code=exc.code, retry_in_s=round(delay, 2), repeats_not_logged=held)
            if self.taken_over:
                delay = self.config.mqtt.takeover_retry_s
                self._log.error(
                    "gateway_id_conflict",
                    detail="another agent publishes as this gateway; check that only one agent runs per gateway id",
                    reason=self.conflict,
                    retry_in_s=delay,
                )
            if not self._stopping.is_set():
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout keeps a cancel that arrives as the wait ends (Python 3.11's wait_for can drop it).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # -- one connection --------------------------------------------------------

    def _client(self) -> mqtt.Client:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        mqtt_config = self.config.mqtt
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(self.config.publish.window)
        client.max_queued_messages_set(0)
        if mqtt_config.username is not None:
            client.username_pw_set(mqtt_config.username, self.config.password())
        if mqtt_config.tls is not None:
            tls = mqtt_config.tls
            client.tls_set(
                ca_certs=str(self.config.resolve(tls.ca_file)) if tls.ca_file else None,
                certfile=str(self.config.resolve(tls.cert_file)) if tls.cert_file else None,
                keyfile=str(self.config.resolve(tls.key_file)) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        will = json.dumps({"schema": STATUS_SCHEMA, "state": "offline", "instance": self.instance, "ts": _iso_now()})
        will_properties = Properties(PacketTypes.WILLMESSAGE)
        # A connection that takes the session over within the delay suppresses the will (MQTT 5.0, 3.1.3.2.2),
        # so the retained status still names the instance that was online and a second agent can see it.
        will_properties.WillDelayInterval = _WILL_DELAY_S
        client.will_set(self.config.topic("status"), will, qos=1, retain=True, properties=will_properties)

        def queue(event: _Event) -> None:
            self._events.append(event)
            self._wake.set()

        def put(event: _Event) -> None:
            # Callbacks run on the loop's thread, except a failure inside the connect call on the worker thread.
            if threading.get_ident() == loop_thread:
                queue(event)
            else:
                loop.call_soon_threadsafe(queue, event)

        def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, properties: Any) -> None:
            put(_Event("connack", code=_reason_value(reason), session_present=flags.session_present, properties=properties))

        def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _properties: Any) -> None:
            put(_Event("disconnect", code=_reason_value(reason)))

        def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _properties: Any) -> None:
            # PUBACKs arrive on the loop's thread (see mqttio) and are settled at once, without a queued event each.
            session = self._current
            if session is not None and session.client is client and session.on_puback(mid, _reason_value(reason)):
                self._wake.set()

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            put(_Event("message", topic=message.topic, payload=bytes(message.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        self._bridge = LoopBridge(client, loop)
        return client

    async def _session(self) -> None:
        self._events.clear()
        mqtt_config = self.config.mqtt
        try:
            client = self._client()
        except OSError as exc:  # ssl.SSLError included: a TLS file removed or replaced since the configuration was checked
            tls = mqtt_config.tls
            names = [name for name in (tls.ca_file, tls.cert_file, tls.key_file) if name] if tls is not None else []
            files = ", ".join(str(self.config.resolve(name)) for name in names)
            raise ConnectFailed(f"cannot load the MQTT TLS files {files}: {exc}; check mqtt.tls in the edge configuration") from exc
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = mqtt_config.session_expiry_s
        try:
            await asyncio.to_thread(client.connect, mqtt_config.host, mqtt_config.port, mqtt_config.keepalive_s, clean_start=False, properties=properties)
        except (OSError, ssl.SSLError, ValueError) as exc:
            await self._bridge.close(0)
            raise ConnectFailed(f"cannot reach {mqtt_config.host}:{mqtt_config.port}: {exc}") from exc
        bridge = self._bridge
        try:
            await self._serve(client)
        finally:
            if self.connected and self._stopping.is_set():
                await self._say_goodbye(client)
            self.connected = False
            self.metrics.mqtt_connected.set(0)
            client.disconnect()
            await bridge.close(1.0)

    async def _say_goodbye(self, client: mqtt.Client) -> None:
        """Publish the retained offline status, since a clean disconnect does not send the will."""
        status = {"schema": STATUS_SCHEMA, "state": "offline", "instance": self.instance, "ts": _iso_now()}
        info = client.publish(self.config.topic("status"), json.dumps(status), qos=1, retain=True)
        deadline = time.monotonic() + 1.0
        while info.rc == mqtt.MQTT_ERR_SUCCESS and not info.is_published() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _serve(self, client: mqtt.Client) -> None:
        connack = await self._next_event(_CONNACK_TIMEOUT_S, until=time.monotonic() + _CONNACK_TIMEOUT_S)
        if connack is None and self._stopping.is_set():
            return
        if connack is None:
            raise ConnectFailed(f"no CONNACK within {_CONNACK_TIMEOUT_S:.0f} s")
        if connack.kind != "connack":
            raise ConnectFailed(f"connection closed before CONNACK (reason code {connack.code:#04x})", code=connack.code)
        if connack.code >= 0x80:
            raise ConnectFailed(f"broker refused the connection with reason code {connack.code:#04x}", code=connack.code)

        session = _SessionState(self, client, connack)
        self._current = session
        self.connected = True
        self.connections += 1
        self.metrics.mqtt_connected.set(1)
        self._log.info(
            "mqtt_connected",
            host=self.config.mqtt.host,
            port=self.config.mqtt.port,
            session_present=connack.session_present,
            max_packet_size=session.max_packet,
            window=session.window,
        )
        await session.start()
        last_tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                await session.settle()
                await session.fill()
                event = await self._next_event(_TICK_S if session.online else 0.05)
                if time.monotonic() - last_tick >= _TICK_S:
                    last_tick = time.monotonic()
                    self._bridge.misc()
                    await session.tick()
                # Handle every queued event before the next settle, so that a burst of acks costs one spool commit.
                while event is not None:
                    if event.kind == "disconnect":
                        self._on_disconnect(event.code)
                        return
                    await session.handle(event)
                    if self.taken_over:
                        return
                    event = self._events.popleft() if self._events else None
        finally:
            await session.settle()

    async def _next_event(self, timeout_s: float, *, until: float | None = None) -> _Event | None:
        """Return the next queued event, or None once woken without one (see :meth:`notify`) or after ``timeout_s``.

        With ``until``, wake-ups without an event are waited through until that monotonic time, unless :meth:`stop` was called.
        """
        while True:
            if self._events:
                return self._events.popleft()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s if until is None else max(0.0, until - time.monotonic())):
                        await self._wake.wait()
            self._wake.clear()
            if self._events:
                return self._events.popleft()
            if until is None or time.monotonic() >= until or self._stopping.is_set():
                return None

    def _on_disconnect(self, code: int) -> None:
        if code == SESSION_TAKEN_OVER:
            self.alarm("session taken over (reason code 0x8E)")
            return
        if (held := self.limit("mqtt_disconnected")) is not None:
            self._log.warning("mqtt_disconnected", reason_code=f"{code:#04x}", repeats_not_logged=held)


class _SessionState:
    """In-flight messages and publishing cursors of one connection."""

    def __init__(self, publisher: Publisher, client: mqtt.Client, connack: _Event) -> None:
        self.p = publisher
        self.client = client
        config = publisher.config
        props = connack.properties
        self.max_packet = getattr(props, "MaximumPacketSize", None)
        self.window = min(config.publish.window, getattr(props, "ReceiveMaximum", config.publish.window))
        self.inflight: dict[int, tuple[str, Any]] = {}
        self.published_records: list[tuple[int, str]] = []
        self.stored_through = 0
        self.voucher_cursor = publisher.acked_through + 1
        # Vouchers read from the outbox but not yet published, in sequence from voucher_cursor.
        self.ahead: collections.deque[outbox.OutboxEntry] = collections.deque()
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
        await self.p.spool.call(_remember_instance, self.p.instance)
        status = {"schema": STATUS_SCHEMA, "state": "online", "instance": self.p.instance, "ts": _iso_now(), **self.p.status_extra()}
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
            known = await self.p.spool.call(_known_instances)
            if other not in known:
                self.p.alarm(f"status topic shows instance {other} online")
                return
        if not self.online:
            await self._go_online()

    def _publish(self, kind: str, key: Any, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.inflight[info.mid] = (kind, key)
        return True

    def _room(self) -> int:
        return self.window - len(self.inflight)

    async def fill(self) -> None:
        """Publish telemetry, then vouchers, until the window is full or nothing is left."""
        if not self.online:
            if time.monotonic() < self.status_deadline:
                return
            await self._go_online()
        if self.p._announce:
            self.p._announce = False
            await self._go_online()
        # A spool query waits until a quarter of the window is free; vouchers already read ahead go at once.
        if self._room() >= self._refill_room() or not self.inflight:
            await self._fill_telemetry()
        while self._room() > 0:
            if not self.ahead:
                if self.inflight and self._room() < self._refill_room():
                    return
                entries = await self.p.spool.call(outbox.pending, self.voucher_cursor, self.window)
                if not entries:
                    return
                self.ahead.extend(entries)
            entry = self.ahead[0]
            if self._too_large(entry):
                return
            if not self._publish("voucher", entry.seq, self.topics["vouchers"], entry.payload):
                return
            self.ahead.popleft()
            self.voucher_cursor = entry.seq + 1

    def _move_cursor(self, seq: int) -> None:
        """Point the voucher cursor at ``seq``, keeping only read-ahead vouchers that still follow it."""
        while self.ahead and self.ahead[0].seq < seq:
            self.ahead.popleft()
        if self.ahead and self.ahead[0].seq != seq:
            self.ahead.clear()
        self.voucher_cursor = seq

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
        if sum(kind == "telemetry" for kind, _ in self.inflight.values()) >= max(1, self.window // 2):
            return
        rows = await self.p.spool.call(outbox.unpublished_records, self.telemetry_cursor, config.publish.telemetry_batch_records)
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
        limit = (self.max_packet or 256 * 1024 * 1024) - _PUBLISH_OVERHEAD - len(self.topics["telemetry"].encode())
        keyed = {record.encode(): (minute_ms, machine) for minute_ms, machine, record in rows}
        for group in split_records(prefix, list(keyed), limit):
            payload = prefix + b",".join(group) + b"]}"
            keys = [keyed[record] for record in group]
            if self._publish("telemetry", keys, self.topics["telemetry"], payload):
                self.p.metrics.telemetry_batches.inc()

    async def handle(self, event: _Event) -> None:
        if event.kind == "message":
            await self._on_message(event.topic, event.payload)

    def on_puback(self, mid: int, code: int) -> bool:
        """Free the message's window slot; telemetry records it carried are marked published by :meth:`settle`.

        Returns whether the session should wake: the window is empty, or has room for a refill (see :meth:`fill`).
        """
        kind, key = self.inflight.pop(mid, ("unknown", None))
        if code >= 0x80:
            self.p.metrics.publish_rejected.inc()
            if (held := self.p.limit("mqtt_publish_rejected")) is not None:
                self.p._log.warning("mqtt_publish_rejected", kind=kind, reason_code=f"{code:#04x}", repeats_not_logged=held)
        elif kind == "telemetry":
            self.published_records += key
        return not self.inflight or self._room() >= (_AHEAD_REFILL_ROOM if self.ahead else self._refill_room())

    def _refill_room(self) -> int:
        return max(1, self.window // 4)

    async def settle(self) -> None:
        """Apply the highest cloud ack received since the last call, and mark the telemetry the broker acknowledged as published."""
        if self.stored_through > self.p.acked_through:
            through, self.stored_through = self.stored_through, 0
            await self._apply_ack(through)
        if not self.published_records:
            return
        keys, self.published_records = self.published_records, []
        await self.p.spool.call(outbox.mark_published, keys, _now_ms())
        self.p.metrics.telemetry_records.inc(len(keys))

    async def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            self.p.metrics.bad_control_messages.inc()
            if (held := self.p.limit("control_message_invalid")) is not None:
                self.p._log.warning("control_message_invalid", topic=topic, reason="not JSON", repeats_not_logged=held)
            return
        if topic == self.topics["status"]:
            await self._check_status(message)
        elif topic == self.topics["ack"] and _field(message, ACK_SCHEMA, "stored_through") is not None:
            # Acks are cumulative: only the highest one received before the next settle is applied.
            self.stored_through = max(self.stored_through, int(message["stored_through"]))
        elif topic == self.topics["resend"] and _field(message, RESEND_SCHEMA, "from_seq") is not None:
            await self._on_resend(int(message["from_seq"]))
        elif topic == self.topics["resend"] and (span := _records_span(message)) is not None:
            await self._on_records_request(*span)
        else:
            self.p.metrics.bad_control_messages.inc()
            schema = message.get("schema") if isinstance(message, dict) else None
            if (held := self.p.limit("control_message_invalid")) is not None:
                self.p._log.warning("control_message_invalid", topic=topic, schema=schema, reason="unknown schema or missing field", repeats_not_logged=held)

    async def _apply_ack(self, stored_through: int) -> None:
        through, removed = await self.p.spool.call(outbox.ack, stored_through)
        if through > self.p.acked_through:
            self.p.acked_through = through
            self.last_progress = time.monotonic()
            self.p.metrics.acked_through.set(through)
            self.p._log.info("vouchers_acknowledged", stored_through=through, removed=removed)
        self._move_cursor(max(self.voucher_cursor, through + 1))

    async def _on_resend(self, from_seq: int) -> None:
        start = max(from_seq, self.p.acked_through + 1)
        self.p.metrics.publish_retries.inc()
        self.p._log.info("resend_requested", from_seq=from_seq, resending_from=start)
        # The cloud requests a resend when it lacks a voucher or the records it commits to, so send both.
        # A request below the ack point asks for records only: those of acknowledged vouchers stay for the
        # telemetry retention. Records go for the first few vouchers only: a later gap brings a later request.
        seq = from_seq
        while seq < min(self.voucher_cursor, from_seq + _RESEND_EVIDENCE_VOUCHERS):
            span = await self.p.spool.call(outbox.voucher_span, seq)
            rows = await self.p.spool.call(outbox.records_for, *span) if span is not None else []
            if rows:
                self._publish_records(rows)
            elif span is None and seq <= self.p.acked_through and (held := self.p.limit("evidence_unavailable")) is not None:
                # A scope still known with no rows is a day without records (the line stood still), not a loss.
                self.p._log.warning(
                    "evidence_unavailable", seq=seq, reason="the voucher's scope and records were pruned after the telemetry retention", repeats_not_logged=held
                )
            seq += 1
        self._move_cursor(min(self.voucher_cursor, start))

    async def _on_records_request(self, machines: list[str], start_ms: int, end_ms: int) -> None:
        rows = await self.p.spool.call(outbox.records_for, machines, start_ms, end_ms)
        self.p._log.info("records_request_answered", machines=machines, start_ms=start_ms, end_ms=end_ms, records=len(rows))
        if rows:
            self._publish_records(rows)

    async def tick(self) -> None:
        """Republish vouchers when the cloud's ack has not advanced for ``ack_timeout_s``, and retry telemetry."""
        if not any(kind == "telemetry" for kind, _ in self.inflight.values()):
            self.telemetry_cursor = None
        waiting = self.voucher_cursor > self.p.acked_through + 1
        in_flight = any(kind == "voucher" for kind, _ in self.inflight.values())
        if waiting and not in_flight and time.monotonic() - self.last_progress > self.p.config.publish.ack_timeout_s:
            self.p.metrics.publish_retries.inc()
            if (held := self.p.limit("vouchers_republished")) is not None:
                self.p._log.warning("vouchers_republished", from_seq=self.p.acked_through + 1, reason="ack_timeout", repeats_not_logged=held)
            self._move_cursor(self.p.acked_through + 1)
            self.last_progress = time.monotonic()


def _known_instances(spool: Any) -> list[str]:
    text = spool.meta("instances")
    return json.loads(text) if text else []


def _remember_instance(spool: Any, instance: str) -> None:
    """Keep the last few instance ids that announced themselves from this spool."""
    known = [item for item in _known_instances(spool) if item != instance][-9:]
    with spool.transaction(sync="NORMAL"):
        spool.set_meta("instances", json.dumps([*known, instance]))


def _reason_value(reason: Any) -> int:
    """Return the numeric MQTT reason code of a paho ReasonCode, error code or None."""
    if reason is None:
        return 0
    value = getattr(reason, "value", reason)
    return int(value)


def _field(message: Any, schema: str, name: str) -> int | None:
    if not isinstance(message, dict) or message.get("schema") != schema:
        return None
    value = message.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _records_span(message: Any) -> tuple[list[str], int, int] | None:
    """Return the machines and ``[start_ms, end_ms)`` of a valid records request, else None."""
    if not isinstance(message, dict) or message.get("schema") != RECORDS_REQUEST_SCHEMA:
        return None
    machines, start, end = message.get("machines"), message.get("start"), message.get("end")
    if not isinstance(machines, list) or not 0 < len(machines) <= _RECORDS_REQUEST_MAX_MACHINES or not all(isinstance(m, str) for m in machines):
        return None
    try:
        start_ms, end_ms = (int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000) for value in (start, end))
    except (AttributeError, TypeError, ValueError):
        return None
    if not 0 < end_ms - start_ms <= _RECORDS_REQUEST_MAX_MS:
        return None
    return machines, start_ms, end_ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
