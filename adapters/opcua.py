"""OPC UA client (asyncua): subscriptions with SourceTimestamp and status, security, and reconnects that rebuild everything."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from asyncua import Client, ua

from .backoff import Backoff, RetryLog, raise_if_cancelling, sleep_unless_cancelled
from .devices import OpcUaDeviceConfig
from .opcua_nodes import OperationLimits, ResolvedTag, batches, read_operation_limits, resolve_tags
from .opcua_failures import USER_REFUSED, ConnectSteps, failure_status, failure_text
from .opcua_session import BatchSubscription, OpcUaSetupError, configure_client, read_password, subscribe
from .samples import Sample
from .tagmap import OpcUaTag, TagMap
from .valuelog import BadValueLog
from .values import IMPLAUSIBLE_TIME, make_sample, now_ms, plain_value

__all__ = ("OpcUaClient", "OpcUaSetupError")

log = structlog.get_logger("valuegate.adapters.opcua")

# Status codes with which a server reports that it cannot run subscriptions at all, so mode `auto` polls instead.
_NO_SUBSCRIPTIONS = {ua.StatusCodes.BadServiceUnsupported, ua.StatusCodes.BadNotSupported, ua.StatusCodes.BadTooManySubscriptions,
                     ua.StatusCodes.BadNotImplemented}
_SERVER_STATE = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)
_LOST = object()


class OpcUaClient:
    """Reads one OPC UA server: data-change subscriptions (or periodic reads where the server cannot subscribe).

    Node ids are resolved against the server's namespace array at every
    connect, so a server that renumbers its namespaces keeps working. Any
    loss (closed socket, failed keep-alive read, Bad subscription status)
    discards the whole client, session and subscription, which are rebuilt
    from scratch after a jittered backoff. So monitored items are never
    created twice, and no service error of the old session reaches the caller.
    """

    def __init__(self, config: OpcUaDeviceConfig, tag_map: TagMap) -> None:
        self.config = config
        self.tag_map = tag_map
        self.tags: list[OpcUaTag] = tag_map.opcua_tags
        self.connected = False
        self.last_error = ""
        self.refused: dict[str, str] = {}
        self.limits = OperationLimits()
        self.mode_in_use = ""
        self.session_timeout_ms = 0
        self.keepalive_s = 0.0
        self._heard_ms = 0
        self.monitored_items = 0
        self.generation = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("notifications", "publish_batches", "values_read", "bad_values", "uncertain_values", "out_of_range", "decode_errors",
             "reconnects", "connect_failures", "keepalive_failures", "refused_tags", "timeouts", "exceptions", "implausible_times"), 0)
        self._time_tags = tag_map.time_tags()
        self._client: Client | None = None
        self._resolved: list[ResolvedTag] = []
        self._subscription: BatchSubscription | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._lost_signalled = False
        self._ever_connected = False
        self._steps = ConnectSteps()
        self._step = "connecting"
        self._password = read_password(config)
        self._log = log.bind(device=config.id, endpoint=config.endpoint)
        self.backoff = Backoff(config.reconnect_min_ms / 1000, config.reconnect_max_ms / 1000)
        self.last_status = ""
        self._retries = RetryLog(self._log, "opcua.retry_failed")
        self._values = BadValueLog(self._log, "opcua")
        self._session_fields: dict[str, Any] = {}

    async def __aenter__(self) -> OpcUaClient:
        try:
            await self._connect()
        except OpcUaSetupError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here is retried by stream() or reported by read_all()
            self._connect_failed(exc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Delete the subscription, close the session and the connection; safe to call twice."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        try:
            # gather keeps the tasks' CancelledErrors as results but raises when the caller is cancelled meanwhile.
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            client, self._client = self._client, None
            self._subscription = None
            self.connected = False
            if client is not None:
                # Unlike Python 3.11's wait_for, asyncio.timeout never drops a cancel arriving as disconnect() ends.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.config.timeout_ms / 1000):
                        await client.disconnect()
                with contextlib.suppress(Exception):
                    client.disconnect_socket()

    async def _connect(self) -> None:
        await self.close()
        self.generation += 1
        generation = self.generation
        self._lost_signalled = False
        self._queue = asyncio.Queue()
        config = self.config
        client = Client(config.endpoint, timeout=config.timeout_ms / 1000, watchdog_intervall=3600.0, auto_reconnect=False)
        client.session_timeout = config.session_timeout_ms
        # Both lists of endpoints and the session go through the same handshake, whose steps the observer names on a timeout.
        self._steps = ConnectSteps()
        client.uaclient.observer = self._steps
        self._step = "connecting" if config.security.policy == "None" else "fetching the server certificate"
        await configure_client(client, config, self._password)
        self._step = "connecting"

        async def on_lost(exc: Exception) -> None:
            if generation == self.generation:
                self._signal_lost(f"connection lost: {exc!r}")

        client.connection_lost_callback = on_lost
        try:
            await client.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            raise
        self._client = client
        try:
            await self._set_up(client)
        except BaseException:
            await self.close()
            raise
        self.connected = True
        if self._ever_connected:
            self.stats["reconnects"] += 1
        self._ever_connected = True

    async def _set_up(self, client: Client) -> None:
        # The keep-alive follows the session timeout the server granted in CreateSession, not the one requested.
        self.session_timeout_ms = int(client.session_timeout)
        self.keepalive_s = max(0.05, min(self.session_timeout_ms / 1000 / 3, 30.0))
        self._step = "reading the server's operation limits"
        self.limits = await read_operation_limits(client)
        self._step = "resolving node ids"
        self._resolved = await resolve_tags(client, self.tags, self.tag_map.namespaces, self.limits)
        self.refused = {item.tag.name: item.error for item in self._resolved if item.node_id is None}

        mode = self.config.mode
        if mode in ("auto", "subscribe"):
            self._step = "creating the subscription"
            try:
                self._subscription, self.monitored_items, refused = await subscribe(
                    client, self.config, self._resolved, self.limits, self.keepalive_s, on_data=self._on_data_change,
                    on_status=self._signal_lost, is_current=lambda generation=self.generation: generation == self.generation)
                self.refused.update(refused)
                self.mode_in_use = "subscribe"
            except ua.UaStatusCodeError as exc:
                if mode == "subscribe" or exc.code not in _NO_SUBSCRIPTIONS:
                    raise
                self._log.warning("opcua.subscriptions_unsupported", status=ua.StatusCode(exc.code).name)
                mode = "poll"
        if mode == "poll":
            self.mode_in_use = "poll"
            self._tasks.append(asyncio.create_task(self._poll_loop(), name=f"opcua-poll-{self.config.id}"))
        self._tasks.append(asyncio.create_task(self._keepalive_loop(), name=f"opcua-keepalive-{self.config.id}"))

        self.stats["refused_tags"] = len(self.refused)
        if self.refused:
            self._log.warning("opcua.tags_refused", tags=self.refused)
            received = now_ms()
            self._queue.put_nowait(
                [Sample(self.config.id, name, received, "gateway", received, None, None, "bad", reason)
                 for name, reason in self.refused.items()]
            )
        fields = self._session_fields = {"mode": self.mode_in_use, "session_timeout_ms": self.session_timeout_ms,
                                         "monitored_items": self.monitored_items, "refused": len(self.refused)}
        if not self._ever_connected:
            fields["limits"] = dataclasses.asdict(self.limits)
        if self._retries.failures:
            # Inside an outage a new session proves little, so the first data logs opcua.connected with the outage's length.
            self._log.debug("opcua.connection_opened", failures=self._retries.failures)
        else:
            self._log.info("opcua.connected", **fields)

    # ---- data ------------------------------------------------------------------------------------

    def _sample(self, tag: OpcUaTag, data_value: ua.DataValue, received: int) -> Sample:
        status = data_value.StatusCode or ua.StatusCode(ua.StatusCodes.Good)
        if data_value.SourceTimestamp is not None:
            ts_ms, source = plain_value(data_value.SourceTimestamp), "plc"
        else:
            ts_ms, source = received, "gateway"
        raw = plain_value(data_value.Value.Value) if data_value.Value is not None else None
        if status.is_bad():
            self.stats["bad_values"] += 1
            return Sample(self.config.id, tag.name, ts_ms, source, received, None, raw, "bad", status.name)
        kind = "uncertain" if status.is_uncertain() else "good"
        sample = make_sample(
            self.config.id, tag.name, ts_ms=ts_ms, time_source=source, received_ms=received, raw=raw, value=raw,
            status=kind, detail=status.name if kind == "uncertain" else "", value_range=tag.range,
            plc_time=tag.name in self._time_tags,
        )
        if sample.status == "bad":
            self.stats["bad_values"] += 1
            if sample.detail.startswith(IMPLAUSIBLE_TIME):
                self.stats["implausible_times"] += 1
            else:
                self.stats["out_of_range" if sample.detail == "out_of_range" else "decode_errors"] += 1
        else:
            self.stats["values_read"] += 1
            if kind == "uncertain":
                self.stats["uncertain_values"] += 1
        return sample

    @property
    def last_response_ms(self) -> int | None:
        """Return the gateway time (epoch ms) of the server's newest response: data, a keep-alive publish response or a keep-alive read.

        A link that goes silent without a reset is noticed only when a keep-alive fails; until then this stays at the last response.
        """
        stamps = [self._heard_ms] if self._heard_ms else []
        subscription = self._subscription
        if self.connected and subscription is not None and subscription.last_publish_at is not None:
            stamps.append(now_ms() - int((time.monotonic() - subscription.last_publish_at) * 1000))
        return max(stamps, default=None)

    def _on_data_change(self, items: Sequence[ua.MonitoredItemNotification]) -> None:
        received = now_ms()
        batch = []
        resolved = self._resolved
        for item in items:
            if 0 <= item.ClientHandle < len(resolved):
                batch.append(self._sample(resolved[item.ClientHandle].tag, item.Value, received))
        self.stats["notifications"] += len(batch)
        self.stats["publish_batches"] += 1
        self._heard_ms = received
        if batch:
            self._queue.put_nowait(batch)

    def _signal_lost(self, reason: str) -> None:
        if self._lost_signalled:
            return
        self._lost_signalled = True
        self.last_error = reason
        self._queue.put_nowait(_LOST)

    async def _read_resolved(self, client: Client) -> list[Sample]:
        present = [(position, item) for position, item in enumerate(self._resolved) if item.node_id is not None]
        samples: list[Sample] = []
        for chunk in batches(present, self.limits.max_nodes_per_read):
            params = ua.ReadParameters()
            params.MaxAge = 0
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            for _, item in chunk:
                read_value = ua.ReadValueId()
                read_value.NodeId = item.node_id
                read_value.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(read_value)
            # asyncio.timeout keeps a cancel that arrives as the read ends (Python 3.11's wait_for can drop it and the poll loop would run on).
            async with asyncio.timeout(self.config.timeout_ms / 1000):
                values = await client.uaclient.read(params)
            received = now_ms()
            samples.extend(self._sample(item.tag, value, received) for (_, item), value in zip(chunk, values, strict=True))
        return samples

    async def _poll_loop(self) -> None:
        period = self.config.poll_ms / 1000
        while True:
            client = self._client
            if client is None:
                return
            try:
                batch = await self._read_resolved(client)
            except (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError) as exc:
                self._count_failure(exc)
                self._signal_lost(f"read failed: {self._failure_text(exc, 'polling values')}")
                return
            self.stats["publish_batches"] += 1
            self._heard_ms = now_ms()
            self._queue.put_nowait(batch)
            await asyncio.sleep(period)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            client = self._client
            if client is None:
                return
            try:
                async with asyncio.timeout(self.config.timeout_ms / 1000):
                    await client.uaclient.read_attributes([_SERVER_STATE], ua.AttributeIds.Value)
            except (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError) as exc:
                self.stats["keepalive_failures"] += 1
                self._count_failure(exc)
                self._signal_lost(f"keep-alive read failed: {self._failure_text(exc, 'reading the server state')}")
                return
            self._heard_ms = now_ms()

            # The server owes a publish response (at least a keep-alive message) every keep-alive period; a
            # subscription it deleted or lost sends none, although reads on the session still succeed.
            subscription = self._subscription
            if subscription is not None and subscription.last_publish_at is not None:
                silent_s = time.monotonic() - subscription.last_publish_at
                if silent_s > max(3 * subscription.keepalive_period_s, 1.0):
                    self.stats["keepalive_failures"] += 1
                    self._signal_lost(f"no publish response for {silent_s:.1f} s")
                    return

    def _count_failure(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.TimeoutError):
            self.stats["timeouts"] += 1
        elif isinstance(exc, ua.UaStatusCodeError):
            self.stats["exceptions"] += 1

    def _connect_failed(self, exc: BaseException) -> None:
        self.stats["connect_failures"] += 1
        self._count_failure(exc)
        self.last_status = failure_status(exc)
        text = failure_text(exc, step=self._step, timeout_s=self.config.timeout_ms / 1000, timed_out=self._steps.timed_out())
        self.last_error = f"{self.last_status}: {text}"

    def _failure_text(self, exc: BaseException, step: str) -> str:
        """Describe a failed Read of the poll or keep-alive loop. Our own timeout has no message, so the text names the Read."""
        if isinstance(exc, asyncio.TimeoutError) and not str(exc):
            return failure_text(exc, step=step, timeout_s=self.config.timeout_ms / 1000, timed_out="Read request")
        return repr(exc)

    def _bad_batch(self, detail: str) -> list[Sample]:
        received = now_ms()
        return [Sample(self.config.id, tag.name, received, "gateway", received, None, None, "bad", detail) for tag in self.tags]

    # ---- public ----------------------------------------------------------------------------------

    async def read_all(self) -> list[Sample]:
        """Read every tag once with the Read service; refused tags and a failed connection come back as bad samples."""
        for attempt in range(2):
            if not self.connected:
                try:
                    await self._connect()
                except OpcUaSetupError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported per tag as the reason
                    self._connect_failed(exc)
                    return self._bad_batch("disconnected")
            client = self._client
            assert client is not None  # noqa: S101 - set by _connect
            try:
                samples = await self._read_resolved(client)
            except (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError) as exc:
                # A session the server has forgotten (BadSessionIdInvalid) is rebuilt once, never passed on.
                self._count_failure(exc)
                self.last_error = f"read failed: {self._failure_text(exc, 'reading values')}"
                await self.close()
                if attempt == 1:
                    return self._bad_batch("disconnected")
                continue
            received = now_ms()
            read = {sample.tag for sample in samples}
            missing = [(name, reason) for name, reason in self.refused.items() if name not in read]
            samples += [Sample(self.config.id, name, received, "gateway", received, None, None, "bad", reason) for name, reason in missing]
            order = {tag.name: position for position, tag in enumerate(self.tags)}
            return sorted(samples, key=lambda sample: order[sample.tag])
        return self._bad_batch("disconnected")

    async def stream(self) -> AsyncIterator[list[Sample]]:
        """Yield notification batches; on a loss, one batch of bad ``disconnected`` samples, then rebuild with backoff.

        The backoff restarts from ``reconnect_min_ms`` once a rebuilt session has delivered data, not at a connect.
        Failures are logged as ``opcua.connect_failed``/``opcua.disconnected`` and ``opcua.retry_failed`` (see RetryLog),
        the first data after an outage as ``opcua.connected`` with its ``failures`` and ``outage_s``, and values the
        server reports Bad as ``opcua.values_bad`` and ``opcua.values_good`` (see BadValueLog).
        """
        backoff = self.backoff
        batches_at_connect = self.stats["publish_batches"]
        while True:
            if not self.connected:
                batches_at_connect = self.stats["publish_batches"]
                try:
                    await self._connect()
                    raise_if_cancelling()
                except OpcUaSetupError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every connect failure is retried with backoff
                    self._connect_failed(exc)
                    delay = backoff.next_delay()
                    if self.last_status in USER_REFUSED:
                        delay = max(delay, self.config.auth_retry_ms / 1000)
                    if self._failed("opcua.connect_failed", delay):
                        yield self._bad_batch("disconnected")
                    await sleep_unless_cancelled(delay)
                    continue
            item = await self._queue.get()
            if item is _LOST:
                await self.close()
                self.last_status = "connection_lost"
                delay = backoff.next_delay()
                if self._failed("opcua.disconnected", delay):
                    yield self._bad_batch("disconnected")
                await sleep_unless_cancelled(delay)
                continue
            if self._retries.failures and self.stats["publish_batches"] > batches_at_connect:
                # The server delivered data, so the next outage starts again from the shortest delay.
                backoff.reset()
                self._retries.answered("opcua.connected", **self._session_fields)
            self._values.observe(item, skip=self.refused)
            yield item

    def _failed(self, event: str, delay_s: float) -> bool:
        return self._retries.failed(event, status=self.last_status, error=self.last_error, retry_in_s=round(delay_s, 2))
