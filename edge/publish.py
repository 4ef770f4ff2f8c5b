"""MQTT v5 publisher: sends the outbox at QoS 1 and deletes vouchers only when the cloud's ack covers them.

paho-mqtt's socket I/O runs on the event loop (:mod:`valuegate.mqttio`) and its
callbacks queue events that the session handles in order; only the
blocking connect runs on a worker thread, so nothing here blocks the
polling tasks. Each connection uses a fresh paho client: what was in flight on a
dropped connection is republished from the spool's outbox, the single
place that decides what still has to go. What one connection publishes
and how it handles the cloud's messages is in :mod:`.publish_session`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from valuegate.adapters.backoff import Backoff
from valuegate.mqttio import LoopBridge

from . import outbox
from .config import EdgeConfig, TlsConfig
from .metrics import AgentMetrics, LogLimiter
from .publish_messages import ACK_SCHEMA, NOT_AUTHORIZED, RECORDS_REQUEST_SCHEMA, RESEND_SCHEMA, STATUS_SCHEMA, ClientEvent, iso_now, split_records
from .publish_session import SessionState
from .rejection_notice import RecentRejection
from .resend_watch import ResendWatch
from .spool import SpoolThread

__all__ = ("Publisher", "SESSION_TAKEN_OVER", "ACK_SCHEMA", "RECORDS_REQUEST_SCHEMA", "RESEND_SCHEMA", "STATUS_SCHEMA", "split_records")

SESSION_TAKEN_OVER = 0x8E
# A connection shorter than this leaves the reconnect delay growing, and connect lines this close together are logged once a minute.
_STABLE_SESSION_S = 10.0
# The publish kinds of a session, by the topic level they go to.
_TOPIC_LEVEL = {"voucher": "vouchers", "telemetry": "telemetry", "status": "status"}
_CONNACK_TIMEOUT_S = 30.0
_TICK_S = 1.0
_READ_PACKETS = 32
_WILL_DELAY_S = 5

log = structlog.get_logger("valuegate.edge.publish")

# Hints for the CONNACK reason codes of MQTT 5.0 (section 3.2.2.2) that a configuration can cause.
_REFUSED = {
    0x84: " (unsupported protocol version): the broker must speak MQTT 5.0",
    0x85: " (client identifier not valid): check mqtt.client_id",
    0x86: " (bad user name or password): check mqtt.username and the variable that mqtt.password_env names",
    0x87: " (not authorized): check mqtt.username, the password variable and the broker's access rules for this gateway",
    0x8A: " (banned): ask the broker's administrator",
}


class ConnectFailed(Exception):
    """The broker rejected CONNECT or sent no CONNACK; the message names the reason code or the socket error."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class Publisher:
    """Keeps one MQTT session to the broker and drains the outbox through it."""

    def __init__(
        self,
        config: EdgeConfig,
        spool: SpoolThread,
        metrics: AgentMetrics,
        *,
        instance: str,
        telemetry_key: Callable[[], Ed25519PrivateKey],
        status_extra: Callable[[], dict[str, Any]] = dict,
        time_zones: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.telemetry_key = telemetry_key
        """Return the private key that signs telemetry messages: the gateway key in force."""
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
        self._events: collections.deque[ClientEvent] = collections.deque()
        self._log = log.bind(gateway=config.gateway, client_id=config.client_id)
        self.limit = LogLimiter()
        # Kept across connections, so that a request repeated after a reconnect still counts.
        self.resend_watch = ResendWatch()
        self.cloud_rejection = RecentRejection()
        self._backoff = Backoff(config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s)
        self.connections = 0
        self._connected_at: float | None = None
        """Monotonic time the current connection got its CONNACK, or None before that."""
        self._last_connected_at: float | None = None
        self._current: SessionState | None = None
        self._bridge: LoopBridge | None = None
        self._announce = False

    # -- called by the agent -----------------------------------------------

    def notify(self) -> None:
        """Tell the publisher that new vouchers or telemetry records are in the spool."""
        if self._current is not None:
            self._current.read_to_end = self._current.records_read_to_end = False
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
            self._connected_at = None
            try:
                await self._session()
                # A broker that closes each connection at once (one that denies the gateway's topics, say) gets the growing delay.
                if self._connected_at is not None and time.monotonic() - self._connected_at >= _STABLE_SESSION_S:
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
        will = json.dumps({"schema": STATUS_SCHEMA, "state": "offline", "instance": self.instance, "ts": iso_now()})
        will_properties = Properties(PacketTypes.WILLMESSAGE)
        # A connection that takes the session over within the delay suppresses the will (MQTT 5.0, 3.1.3.2.2),
        # so the retained status still names the instance that was online and a second agent can see it.
        will_properties.WillDelayInterval = _WILL_DELAY_S
        client.will_set(self.config.topic("status"), will, qos=1, retain=True, properties=will_properties)

        def queue(event: ClientEvent) -> None:
            self._events.append(event)
            self._wake.set()

        def put(event: ClientEvent) -> None:
            # Callbacks run on the loop's thread, except a failure inside the connect call on the worker thread.
            if threading.get_ident() == loop_thread:
                queue(event)
            else:
                loop.call_soon_threadsafe(queue, event)

        def on_connect(_c: Any, _u: Any, flags: Any, reason: Any, properties: Any) -> None:
            put(ClientEvent("connack", code=_reason_value(reason), session_present=flags.session_present, properties=properties))

        def on_disconnect(_c: Any, _u: Any, _flags: Any, reason: Any, _properties: Any) -> None:
            put(ClientEvent("disconnect", code=_reason_value(reason)))

        def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _properties: Any) -> None:
            # PUBACKs arrive on the loop's thread (see mqttio) and are settled at once, without a queued event each.
            session = self._current
            if session is None or session.client is not client:
                return
            code = _reason_value(reason)
            if code == NOT_AUTHORIZED:
                self._log_publish_denied(session, mid)
            if session.on_puback(mid, code):
                self._wake.set()

        def on_message(_c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
            # A well-formed ack only moves the session's ack point; the session wakes for the first one and for one covering every voucher sent.
            session = self._current
            if session is not None and session.client is client and message.topic == session.topics["ack"] and threading.get_ident() == loop_thread:
                wake = session.take_ack(bytes(message.payload))
                if wake is not None:
                    if wake:
                        self._wake.set()
                    return
            put(ClientEvent("message", topic=message.topic, payload=bytes(message.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        # Up to 32 packets per readable event: PUBACKs and acks arrive in bursts, and one selector pass per packet cost more than paho's own work.
        self._bridge = LoopBridge(client, loop, read_packets=_READ_PACKETS)
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
        status = {"schema": STATUS_SCHEMA, "state": "offline", "instance": self.instance, "ts": iso_now()}
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
            hint = _tls_hint(self.config.mqtt.tls) if self.config.mqtt.tls is not None else ""
            raise ConnectFailed(f"connection closed before CONNACK (reason code {connack.code:#04x}){hint}", code=connack.code)
        if connack.code >= 0x80:
            hint = _REFUSED.get(connack.code, "")
            raise ConnectFailed(f"broker refused the connection with reason code {connack.code:#04x}{hint}", code=connack.code)

        session = SessionState(self, client, connack)
        self._current = session
        self.connected = True
        self.connections += 1
        self.metrics.mqtt_connected.set(1)
        self._log_connected(session, connack.session_present)
        await session.start()
        last_tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                await session.settle()
                await session.fill()
                event = await self._next_event(session.wait_s(_TICK_S if session.online else 0.05))
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
            session.stop_reading()
            await session.settle(final=True)

    async def _next_event(self, timeout_s: float, *, until: float | None = None) -> ClientEvent | None:
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

    def _log_connected(self, session: SessionState, session_present: bool) -> None:
        """Log the connection, at most once a minute while each connection comes within ``_STABLE_SESSION_S`` of the one before."""
        now = time.monotonic()
        unstable = self._last_connected_at is not None and now - self._last_connected_at < _STABLE_SESSION_S
        self._last_connected_at = self._connected_at = now
        if not unstable:
            self.limit.reset("mqtt_connected")
        if (held := self.limit("mqtt_connected")) is None:
            return
        self._log.info(
            "mqtt_connected",
            host=self.config.mqtt.host,
            port=self.config.mqtt.port,
            session_present=session_present,
            max_packet_size=session.max_packet,
            window=session.window,
            connections=self.connections,
            repeats_not_logged=held,
        )

    def _log_publish_denied(self, session: SessionState, mid: int) -> None:
        """Log a publish that the broker's access rules denied, at most once a minute: the broker drops it, so the cloud never learns of it.

        A message the session does not track (the offline status at stop) has no known topic and is left to the session's count.
        """
        kind = session.inflight.get(mid, ("unknown", None))[0]
        if kind not in _TOPIC_LEVEL:
            return
        topic = session.topics[_TOPIC_LEVEL[kind]]
        if (held := self.limit("mqtt_publish_denied")) is None:
            return
        config = self.config
        username = config.mqtt.username
        user = f"user {username!r}" if username is not None else "this client (no mqtt.username)"
        detail = (
            f"the broker's access rules (ACL) do not allow {user} to publish on {topic}, so the broker drops these messages; "
            f"check the broker's ACL for this user. With the pattern ACL valuegate/v1/%u/..., the user must be "
            f"{config.tenant}/{config.site}/{config.gateway}: mqtt.username, or the client certificate's common name "
            "when the broker sets use_identity_as_username"
        )
        self._log.error("mqtt_publish_denied", topic=topic, username=username, reason_code=f"{NOT_AUTHORIZED:#04x}", detail=detail, repeats_not_logged=held)

    def _on_disconnect(self, code: int) -> None:
        if code == SESSION_TAKEN_OVER:
            self.alarm("session taken over (reason code 0x8E)")
            return
        if (held := self.limit("mqtt_disconnected")) is not None:
            self._log.warning("mqtt_disconnected", reason_code=f"{code:#04x}", repeats_not_logged=held)


def _tls_hint(tls: TlsConfig) -> str:
    """Return the hint for a TLS connection the broker closed before CONNACK, which it does when it rejects the client certificate."""
    if tls.cert_file is None:
        return "; the broker may require a client certificate: set mqtt.tls.cert_file and key_file"
    return (
        "; the broker may have rejected the client certificate: check mqtt.tls.cert_file and key_file, "
        "and that the broker's cafile contains the CA that issued the certificate"
    )


def _reason_value(reason: Any) -> int:
    """Return the numeric MQTT reason code of a paho ReasonCode, error code or None."""
    if reason is None:
        return 0
    value = getattr(reason, "value", reason)
    return int(value)
