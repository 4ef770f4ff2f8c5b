"""One ingest worker's MQTT connection: handshake, shared subscription, session, keep-alive and reconnect.

A worker with a stable client id (``cloud ingest`` numbers its workers
``<client_id_prefix>-1``, ``-2`` ...) connects with a persistent session
(clean start off, ``mqtt_session_expiry_s``). The broker then keeps the
worker's subscription while it is away and queues the messages of its share
of the group, which it delivers when the worker returns, so a restart of the
ingest loses no telemetry. A worker with a throwaway id uses a session that
ends at disconnect.

A worker started to retire a session (``retire``) resumes it without
subscribing and unsubscribes at once: the broker delivers what it queued
for the session, and no new messages, so the worker can drain it and end it.

Two workers with one client id would take the session from each other in
turn, and not every broker reports it (Mosquitto 2.0.11 closes the older
connection without a reason code). So a named worker first takes a PostgreSQL advisory lock on its
client id, held on one pooled connection while it runs, and a second worker
with that id on the same database refuses to start. A broker that does send
reason 0x8E (session taken over) makes the older worker log
``mqtt_session_taken_over`` and stay disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from valuegate.mqttio import LoopBridge

from .settings import CloudSettings

__all__ = ("ClientIdLease", "IngestError", "IngestLink", "subscriptions")

log = structlog.get_logger("valuegate.cloud.ingest")
_KEEPALIVE_S = 30
_HANDSHAKE_TIMEOUT_S = 15.0
_RECONNECT_MIN_S, _RECONNECT_MAX_S = 1.0, 30.0
# Packets read per readable event at most, so a burst is drained in few passes of the loop but other tasks still run between them.
_READ_PACKETS = 100
_SESSION_TAKEN_OVER = 0x8E


class IngestError(RuntimeError):
    """The worker cannot reach the broker or the database; the message names which and where."""


def subscriptions(group: str) -> list[str]:
    return [f"$share/{group}/valuegate/v1/+/+/+/{kind}" for kind in ("vouchers", "telemetry", "status")]


def _lock_key(client_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"valuegate-ingest:" + client_id.encode()).digest()[:8], "big", signed=True)


class ClientIdLease:
    """The advisory lock on a named worker's client id, held on one pooled connection while the worker runs."""

    def __init__(self, pool: AsyncConnectionPool, client_id: str) -> None:
        self.pool = pool
        self.client_id = client_id
        self._conn: AsyncConnection | None = None

    async def claim(self) -> None:
        """Take the lock; IngestError when another worker holds it."""
        conn = await self.pool.getconn()
        try:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (_lock_key(self.client_id),))).fetchone()
            await conn.commit()
        except BaseException:
            await self.pool.putconn(conn)
            raise
        if not row or not row[0]:
            await self.pool.putconn(conn)
            raise IngestError(
                f"another ingest worker is running with MQTT client id {self.client_id!r}; two would take the broker session from each other; "
                "give each `cloud ingest` process on one broker its own client_id_prefix"
            )
        self._conn = conn

    async def keep(self) -> bool:
        """Take the lock again when its connection was lost (a database restart ends it); return False when another worker took it meanwhile.

        Raises the database error while the database cannot be reached, so the caller tries again later.
        """
        if self._conn is not None:
            try:
                await self._conn.execute("SELECT 1")
                await self._conn.commit()
                return True
            except psycopg.OperationalError:
                await self.pool.putconn(self._conn)  # the pool discards a broken connection
                self._conn = None
        try:
            await self.claim()
        except IngestError:
            return False
        log.info("ingest_client_id_reclaimed", worker=self.client_id)
        return True

    async def release(self) -> None:
        """Give up the lock and return its connection to the pool."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a broken connection has lost the lock already
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(self.client_id),))
            await conn.commit()
        await self.pool.putconn(conn)


class IngestLink:
    """The MQTT connection of one worker; ``on_message(client, message)`` runs on the event loop's thread.

    paho's socket I/O runs on the event loop (see ``valuegate.mqttio``), so
    paho does not reconnect by itself: :meth:`stay_connected` connects a fresh
    client after a loss, with jittered exponential backoff.
    """

    def __init__(
        self, settings: CloudSettings, name: str, *, persistent: bool, on_message: Callable[[mqtt.Client, mqtt.MQTTMessage], None], retire: bool = False
    ) -> None:
        self.settings = settings
        self.name = name
        self.persistent = persistent or retire
        self.retire = retire
        self._on_message = on_message
        self.client: mqtt.Client | None = None
        self._bridge: LoopBridge | None = None
        # Set while the current client is connected and subscribed.
        self.connected = asyncio.Event()
        self.connections = 0
        # Whether the broker resumed a session of this client id at the last connect.
        self.session_present = False
        self.taken_over = False

    async def connect(self) -> None:
        """Connect a fresh client and return once the broker has granted the subscriptions; IngestError names what failed."""
        loop = asyncio.get_running_loop()
        host, port, group = self.settings.mqtt_host, self.settings.mqtt_port, self.settings.share_group
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.name, protocol=mqtt.MQTTv5, manual_ack=True, reconnect_on_failure=False)
        if self.settings.mqtt_username:
            client.username_pw_set(self.settings.mqtt_username, self.settings.mqtt_password)
        # The result of the handshake: None once subscribed, else why the broker turned the client down.
        ready: asyncio.Future[str | None] = loop.create_future()

        def settle(refusal: str | None) -> None:
            if not ready.done():
                ready.set_result(refusal)

        # The bridge runs these callbacks on the loop's thread.
        def on_connect(client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
            if reason.is_failure:
                settle(f"the MQTT broker at {host}:{port} refused the connection: {reason}; check mqtt_username and mqtt_password")
                return
            self.session_present = bool(getattr(flags, "session_present", False))
            if not self.retire:
                client.subscribe([(topic, 1) for topic in subscriptions(group)])
            elif self.session_present:
                client.unsubscribe(subscriptions(group))
            else:
                up()  # no session to drain: nothing was subscribed, so nothing arrives

        def on_subscribe(_client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any) -> None:
            refused = [str(reason) for reason in reasons if reason.is_failure]
            if refused:
                settle(f"the MQTT broker at {host}:{port} refused the subscriptions {subscriptions(group)}: {', '.join(refused)}; check its ACL")
                return
            up()

        def up() -> None:
            self.connections += 1
            self.connected.set()
            (log.debug if self.retire else log.info)(
                "mqtt_connected", worker=self.name, host=host, port=port, connections=self.connections, session_present=self.session_present
            )
            settle(None)

        def on_disconnect(client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
            settle(f"the MQTT broker at {host}:{port} closed the connection during the handshake: {reason}")
            if client is self.client:
                self.connected.clear()
            if getattr(reason, "value", None) == _SESSION_TAKEN_OVER:
                self.taken_over = True
                log.error(
                    "mqtt_session_taken_over",
                    worker=self.name,
                    reason=f"another ingest worker connected with client id {self.name!r}; this worker stops; "
                    "give each `cloud ingest` process on one broker its own client_id_prefix",
                )
                return
            (log.debug if self.retire else log.info)("mqtt_disconnected", worker=self.name, reason=str(reason))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_unsubscribe = lambda *_args: up()
        client.on_disconnect = on_disconnect
        client.on_message = lambda client, _userdata, message: self._on_message(client, message)
        bridge = LoopBridge(client, loop, read_packets=_READ_PACKETS)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.mqtt_session_expiry_s if self.persistent else 0
        self.client, self._bridge = client, bridge
        try:
            await asyncio.to_thread(client.connect, host, port, keepalive=_KEEPALIVE_S, clean_start=not self.persistent, properties=properties)
        except OSError as exc:
            await self.close()
            raise IngestError(f"cannot connect to the MQTT broker at {host}:{port}: {exc}; check mqtt_host and mqtt_port") from exc
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                refusal = await ready
        except TimeoutError:
            refusal = f"the MQTT broker at {host}:{port} did not accept the connection and subscriptions within {_HANDSHAKE_TIMEOUT_S:.0f} s"
        except BaseException:
            await self.close()
            raise
        if refusal is not None:
            await self.close()
            raise IngestError(refusal)

    async def close(self, *, end_session: bool = False) -> None:
        """Close the current connection, if any; with ``end_session`` the broker drops the session and its queue too."""
        client, bridge = self.client, self._bridge
        self.client = self._bridge = None
        self.connected.clear()
        if client is None or bridge is None:
            return
        properties = None
        if end_session:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
        client.disconnect(properties=properties)
        await bridge.close(1.0)

    async def stay_connected(self) -> None:
        """Send keep-alives on the current connection; after a loss, connect again with backoff until cancelled or taken over."""
        delay_s = _RECONNECT_MIN_S
        while True:
            bridge = self._bridge
            if bridge is not None:
                while not bridge.closed.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await bridge.closed.wait()
                    bridge.misc()
                await self.close()
            if self.taken_over:
                return
            # Messages of the lost connection still in the inbox are stored, but their PUBACK cannot go out on another connection.
            # Each wait is drawn from [delay/2, delay], so that workers that lost the broker together do not return in lock step.
            await asyncio.sleep(random.uniform(delay_s / 2, delay_s))
            if self.taken_over:
                return
            try:
                await self.connect()
            except IngestError as exc:
                delay_s = min(delay_s * 2, _RECONNECT_MAX_S)
                log.warning("mqtt_connect_failed", worker=self.name, reason=str(exc), retry_within_s=delay_s)
                continue
            if self.taken_over:  # found out while this connection was being made
                await self.close()
                return
            delay_s = _RECONNECT_MIN_S
