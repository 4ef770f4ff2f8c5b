"""MQTT ingest worker: shared subscription, verification, idempotent storage, ack and resend.

Each worker subscribes to ``$share/<group>/valuegate/v1/+/+/+/vouchers`` and
``.../telemetry``, so the broker splits messages between the workers of one
group. A worker takes what has arrived (up to ``ingest_batch`` messages),
checks it, stores it in one transaction and only then acknowledges the
MQTT messages (manual PUBACK) and publishes each touched gateway's ``ack``
and, for a gap, a ``resend``. A rejected message is stored in
``rejections`` with its reason and acknowledged, so it is not redelivered.
The same payload rejected again for the same code on the same topic
adds to its row's ``received_count`` instead of adding a row.
Named workers keep their broker session while stopped (see
``valuegate.cloud.ingest_link``), so nothing sent meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import gc
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from psycopg_pool import AsyncConnectionPool

from valuegate.edge.protocol.telemetry_proof import TelemetrySignature, signature_of
from valuegate.edge.protocol.voucher import VoucherError

from . import metrics
from .chain import ChainPosition, chain_positions, load_gateways, rejection_hints, store_rejections, store_vouchers
from .db import OutageLog, open_pool, watch_pool
from .ingest_gauges import DatabaseGauges
from .ingest_link import ClientIdLease, IngestError, IngestLink, subscriptions
from .ingest_replies import GatewayReplies, RejectionLog
from .machines import claim_machines, drop_foreign_records
from .record_requests import RecordRequests
from .reproduce import reproduce_pending
from .settings import CloudSettings
from .status import register_status_rotations
from .telemetry import CheckedBatch, TelemetryError, check_batch, check_signature, store_batches
from .verify import PendingVoucher, Topic, parse_topic, precheck_voucher

__all__ = ("IngestError", "IngestWorker", "subscriptions")

log = structlog.get_logger("valuegate.cloud.ingest")
REJECTION_LOG_INTERVAL_S = 60.0
# Shared by every worker of the process, so that `cloud ingest --workers N` logs a repeated rejection once, not N times.
_REJECTION_LOG = RejectionLog(REJECTION_LOG_INTERVAL_S)
_PAYLOAD_KEEP = 64 * 1024
# A rejection reason sent back to a gateway is cut to this length.
_NOTICE_REASON_CHARS = 500


@dataclass(slots=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    # The client that received the message: its PUBACK can go out only on that connection.
    source: mqtt.Client | None = None
    # The gateway's key and signature from the message's user properties (telemetry only).
    signature: TelemetrySignature | None = None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector for one batch. Reference counting still frees what the batch drops.

    A batch keeps hundreds of decoded documents alive until it commits, so the
    collector runs many times on the way, and each full collection walks every
    object of the process. In bench/cloud.py (500 vouchers of 10 machines) that
    took about 15% of the batch time. Decoded JSON contains no reference cycles,
    and a cycle made elsewhere meanwhile is collected after the batch.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class IngestWorker:
    """One ingest worker; use ``async with IngestWorker(settings) as worker`` and it runs until the block exits.

    ``pool`` may be shared with other workers or the API; otherwise the worker opens its own.
    paho's socket I/O and callbacks run on the event loop (see ``valuegate.mqttio``), so
    paho does not reconnect by itself: the worker connects a fresh client after a loss.
    """

    def __init__(self, settings: CloudSettings, *, pool: AsyncConnectionPool | None = None, name: str | None = None, retire: bool = False) -> None:
        self.settings = settings
        # A named worker keeps its broker session across restarts (see valuegate.cloud.ingest_link); an unnamed one does not.
        self.name = name or f"{settings.client_id_prefix}-{uuid.uuid4().hex[:8]}"
        self._link = IngestLink(settings, self.name, persistent=name is not None, on_message=self._on_message, retire=retire)
        self._busy = False
        # The connection holding the advisory lock on a named worker's client id.
        self._lease: ClientIdLease | None = None
        self._pool = pool
        self._own_pool = pool is None
        self._inbox: collections.deque[_Message] = collections.deque()
        self._rejection_log = _REJECTION_LOG
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection_task: asyncio.Task[None] | None = None
        self._replies = GatewayReplies(settings.resend_interval_s, settings.resend_grace_s, notice_interval_s=REJECTION_LOG_INTERVAL_S)
        self._requests = RecordRequests(settings.records_wait_s)
        self._last_reproduce = 0.0
        self._gauges = DatabaseGauges(records_wait_s=settings.records_wait_s)
        self._outage = OutageLog(settings.dsn, component="ingest")
        self.processed = 0

    @property
    def connections(self) -> int:
        """Connections this worker has made to the broker so far."""
        return self._link.connections

    @property
    def session_present(self) -> bool:
        """Whether the broker resumed this worker's session (and its queued messages) at the last connect."""
        return self._link.session_present

    @property
    def _client(self) -> mqtt.Client | None:
        return self._link.client

    @property
    def _connected(self) -> asyncio.Event:
        return self._link.connected

    def _on_message(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        signature = signature_of(getattr(message.properties, "UserProperty", None))
        self._inbox.append(_Message(message.topic, bytes(message.payload), message.mid, message.qos, client, signature))
        self._wake.set()

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise IngestError("the worker is not started; use it as an async context manager")
        return self._pool

    async def __aenter__(self) -> IngestWorker:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._pool is None:
            # A named worker holds one connection for the lock on its client id (see ClientIdLease).
            size = 3 if self._link.persistent else 2
            self._pool = await open_pool(self.settings.dsn, min_size=1, max_size=size, name=self.name, wait_s=self.settings.startup_wait_s)
        # Workers sharing a pool share its outage log, so an outage is logged once per pool, not once per worker.
        self._outage = watch_pool(self._pool, component="ingest")
        if self._link.persistent:
            lease = ClientIdLease(self._pool, self.name)
            await lease.claim()
            self._lease = lease
        await self._link.connect()
        self._connection_task = asyncio.create_task(self._link.stay_connected(), name=f"ingest-mqtt:{self.name}")
        self._task = asyncio.create_task(self._run(), name=f"ingest:{self.name}")
        # A worker that only looks for a session to retire stays out of the info log; retire_sessions logs what it retired.
        (log.debug if self._link.retire else log.info)("ingest_started", worker=self.name, group=self.settings.share_group)

    async def drained(self, idle_s: float = 1.0) -> None:
        """Return once no message has arrived or been in work for ``idle_s``."""
        seen = -1
        while self._inbox or self._busy or self.processed != seen:
            seen = self.processed
            await asyncio.sleep(idle_s)

    async def stop(self, *, end_session: bool = False) -> None:
        """Stop consuming, disconnect and close the pool if this worker opened it; safe to call twice.

        With ``end_session`` the broker also drops the worker's session, so it no longer takes a share of the messages.
        """
        for task in (self._task, self._connection_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._connection_task = None
        if self._client is not None:
            await self._link.close(end_session=end_session)
            stopped = log.debug if self._link.retire else log.info
            stopped("ingest_stopped", worker=self.name, processed=self.processed, session_ended=end_session or not self._link.persistent)
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await lease.release()
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _next_batch(self) -> list[_Message]:
        """Wait for messages and return up to ``ingest_batch`` of them; an empty list after ``reproduce_interval_s`` idle."""
        if not self._inbox:
            self._wake.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that arrives as the wait ends,
            # and the worker's loop would then run on after stop().
            try:
                async with asyncio.timeout(self.settings.reproduce_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                return []
        batch = []
        while self._inbox and len(batch) < self.settings.ingest_batch:
            batch.append(self._inbox.popleft())
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                await self._housekeeping()
                continue
            self._busy = True
            try:
                await self._process_with_retry(batch)
            finally:
                self._busy = False
            if time.monotonic() - self._last_reproduce > self.settings.reproduce_interval_s:
                await self._housekeeping()

    async def _process_with_retry(self, batch: list[_Message]) -> None:
        delay = 0.5
        for attempt in range(1, 6):
            try:
                await self.process(batch)
            except Exception as exc:
                # A database outage is logged once by the outage log; any other failure with its traceback each time.
                if not self._outage.failed(exc):
                    log.exception("ingest_batch_failed", worker=self.name, messages=len(batch), attempt=attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self._outage.recovered()
                return
        # Left without PUBACK: the broker redelivers after a reconnect, and the edge resends what no ack covers.
        if self._outage.active:
            log.info("ingest_batch_deferred", worker=self.name, messages=len(batch), reason="database unavailable; the edge resends what no ack covers")
        else:
            log.error("ingest_batch_dropped", worker=self.name, messages=len(batch))

    async def _housekeeping(self) -> None:
        self._last_reproduce = time.monotonic()
        await self._keep_lease()
        connected = self._client is not None and self._connected.is_set()
        if self._replies.unsent and connected:
            self._replies.send_held(self._client)
        try:
            async with self.pool.connection() as conn:
                if (due := self._replies.due_gaps()) and connected:
                    self._replies.request_due(self._client, await chain_positions(conn, due))
                result = await reproduce_pending(conn, records_wait_s=self.settings.records_wait_s, baseline_wait_s=self.settings.baseline_wait_s)
                await self._gauges.update(conn, changed=result.decided > 0)
        except Exception as exc:
            if not self._outage.failed(exc):
                log.exception("reproduce_failed", worker=self.name)
            return
        self._outage.recovered()
        if self._client is not None and self._connected.is_set():
            self._requests.vouchers(self._client, result.missing_records)
            self._requests.baselines(self._client, result.missing_baselines)

    async def _keep_lease(self) -> None:
        if self._lease is None or self._link.taken_over:
            return
        try:
            kept = await self._lease.keep()
        except Exception:
            return  # the database is unreachable: the outage log reports it, and the next pass tries again
        if not kept:
            log.error("mqtt_session_taken_over", worker=self.name, reason="another ingest worker took this client id while the database was unreachable; this worker stops")
            self._link.taken_over = True
            await self._link.close()

    async def process(self, messages: list[_Message]) -> dict[str, ChainPosition]:
        """Check and store one batch, then acknowledge it; return the chain positions of the gateways touched."""
        with _collector_paused():
            return await self._process(messages)

    async def _process(self, messages: list[_Message]) -> dict[str, ChainPosition]:
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        skew = dt.timedelta(seconds=self.settings.clock_skew_s)
        parsed = [(m, parse_topic(m.topic)) for m in messages]
        rejections: list[tuple[Any, ...]] = []
        # Per gateway, the topic and the first rejection of this batch that goes back to it in its ack.
        notices: dict[str, tuple[Topic, dict[str, Any]]] = {}

        def reject(message: _Message, topic: Topic | None, kind: str, code: str, reason: str) -> None:
            vid, contract = rejection_hints(message.payload, topic, gateways, now=now) if kind == "voucher" else (None, None)
            digest = hashlib.sha256(message.payload).hexdigest()
            rejections.append(
                (kind, message.topic, topic.tenant if topic else None, topic.gateway if topic else None, vid, contract, code, reason,
                 digest, len(message.payload), message.payload[:_PAYLOAD_KEEP])
            )  # fmt: skip
            metrics.REJECTIONS.labels(kind, code).inc()
            # Every rejection is stored and counted; the process logs one line per kind, code and topic a minute.
            self._rejection_log(started, kind, code, message.topic, vid, reason, worker=self.name)
            # The gateway hears of it in its next ack, if the topic is its own as registered; see GatewayReplies.notice_due.
            if topic is None or topic.gateway in notices:
                return
            registered = gateways.get(topic.gateway)
            own = registered is not None and (registered.tenant_id, registered.site_id) == (topic.tenant, topic.site)
            if own and self._replies.notice_due(topic.gateway, kind, code):
                notices[topic.gateway] = (topic, {"kind": kind, "code": code, "voucher_id": vid, "reason": reason[:_NOTICE_REASON_CHARS]})

        async with self.pool.connection() as conn:
            async with conn.transaction():
                # Rotations first: a voucher of the same batch may already be signed by the next key.
                for message, topic in parsed:
                    if topic is not None and topic.kind == "status":
                        await register_status_rotations(conn, topic.tenant, topic.gateway, message.payload)
                gateways = await load_gateways(conn, {t.gateway for _, t in parsed if t is not None})
                vouchers: list[tuple[_Message, PendingVoucher]] = []
                batches: list[CheckedBatch] = []
                batch_messages: list[tuple[_Message, Topic]] = []
                for message, topic in parsed:
                    if topic is not None and topic.kind == "status":
                        continue
                    kind = "telemetry" if topic is not None and topic.kind == "telemetry" else "voucher"
                    if topic is None or topic.kind not in ("vouchers", "telemetry"):
                        reject(message, topic, kind, "topic_invalid", f"topic {message.topic!r} is not valuegate/v1/<tenant>/<site>/<gateway>/<kind>")
                        continue
                    try:
                        if kind == "telemetry":
                            checked = check_batch(message.payload, topic, gateways)
                            check_signature(checked, message.topic, message.payload, message.signature, now=now)
                            batches.append(checked)
                            batch_messages.append((message, topic))
                        else:
                            vouchers.append((message, precheck_voucher(message.payload, topic, gateways, now=now, clock_skew=skew)))
                    except (VoucherError, TelemetryError) as exc:
                        reject(message, topic, kind, exc.code, str(exc))

                # Storage verifies each signature while the rows before it stream to the database.
                result = await store_vouchers(conn, [item for _, item in vouchers], gateways)
                for index, error in result.rejected.items():
                    message = vouchers[index][0]
                    reject(message, parse_topic(message.topic), "voucher", error.code, str(error))
                owners = await claim_machines(conn, batches)
                for index, reason in drop_foreign_records(batches, owners).items():
                    reject(*batch_messages[index], "telemetry", "machine_owned", reason)
                rows = await store_batches(conn, batches)
                await store_rejections(conn, rejections)
                unmoved = [gateway_id for gateway_id in notices if gateway_id not in result.positions]
                moved = await chain_positions(conn, unmoved) if unmoved else {}

        metrics.VOUCHERS_STORED.inc(len(result.stored))
        metrics.VOUCHERS_DUPLICATE.inc(len(result.duplicates))
        metrics.TELEMETRY_ROWS.inc(rows)
        positions = dict(result.positions)
        for gateway_id in notices:
            positions.setdefault(gateway_id, moved.get(gateway_id, ChainPosition(gateway_id, 0, 0)))
        self._acknowledge(messages, [item for _, item in vouchers], positions, notices)
        self.processed += len(messages)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        log.debug("ingest_batch", worker=self.name, messages=len(messages), stored=len(result.stored), telemetry_rows=rows)
        return result.positions

    def _acknowledge(
        self, messages: list[_Message], vouchers: list[PendingVoucher], positions: dict[str, ChainPosition], notices: dict[str, tuple[Topic, dict[str, Any]]]
    ) -> None:
        topics = {gateway_id: topic for gateway_id, (topic, _) in notices.items()}
        topics.update({item.claims.gateway: Topic(item.claims.tenant, item.claims.site, item.claims.gateway, "vouchers") for item in vouchers})
        client = self._client
        if client is None or not self._connected.is_set():
            self._replies.hold(topics, positions)  # sent once connected again; a notice is advice and is dropped
            return
        self._replies.send(client, topics, positions, {gateway_id: notice for gateway_id, (_, notice) in notices.items()})
        for message in messages:
            if message.qos > 0 and message.source is client:
                client.ack(message.mid, message.qos)
