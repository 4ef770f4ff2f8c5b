"""Modbus TCP client (pymodbus): grouped polling, exception isolation and reconnects with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from .backoff import Backoff, RetryLog, raise_if_cancelling, sleep_unless_cancelled
from .devices import ModbusDeviceConfig
from .modbus_plan import EXCEPTION_NAMES, UNIT_ID_EXCEPTIONS, ReadRequest, plan_requests, unit_id_hint
from .samples import Sample
from .tagmap import TagMap
from .values import IMPLAUSIBLE_TIME, now_ms
from .valuelog import BadValueLog

__all__ = ("ModbusClient",)

log = structlog.get_logger("valuegate.adapters.modbus")



class _Disconnected(Exception):
    """The connection broke during a poll; ``cause`` is one of ``timeout``, ``reset``, ``refused``, ``closed``."""

    def __init__(self, cause: str, text: str) -> None:
        super().__init__(text)
        self.cause = cause


class ModbusClient:
    """Polls one Modbus TCP device: every tag of its tag map once per ``poll_ms``.

    Use it as an async context manager (or through
    :func:`valuegate.adapters.devices.open_device`). A device exception
    response marks only the tags of the failing request; a grouped request
    that fails is split until the failing tag stands alone, and that tag
    keeps its own request from then on. Timeouts, resets and refused
    connections close the connection and reconnect with jittered
    exponential backoff; each is counted in ``stats``. The backoff starts
    again from ``reconnect_min_ms`` only after a poll that got a response.
    So a device that accepts connections but responds too late gets ever
    longer pauses, like one that refuses connections. The first failure of
    an outage is logged as ``modbus.disconnected`` (or
    ``modbus.connect_failed``). Later failed retries are logged as
    ``modbus.retry_failed`` at most once a minute. Each event names the
    cause and the delay before the next attempt. ``modbus.connected`` is
    logged at the first connect, and after an outage at the first poll
    that gets a response, with the outage's failures and length. Connects inside an outage
    are logged at debug only. Values that turn Bad while the device responds
    (``out_of_range``, an exception response) are logged as
    ``modbus.values_bad`` and ``modbus.values_good`` (see BadValueLog).
    A poll in which every request got the same exception that a wrong unit
    id causes logs ``modbus.all_requests_failed`` with a hint to check
    ``unit_id``, once until a request succeeds again.
    """

    def __init__(self, config: ModbusDeviceConfig, tag_map: TagMap) -> None:
        self.config = config
        self.tag_map = tag_map
        self.tags = tag_map.modbus_tags
        self.connected = False
        self.last_error = ""
        self.stats: dict[str, int] = dict.fromkeys(
            ("polls", "requests", "values_read", "bad_values", "decode_errors", "out_of_range", "implausible_times", "exceptions",
             "timeouts", "resets", "refused", "connect_failures", "reconnects", "splits"),
            0,
        )
        self._isolated: set[str] = set()
        self._plan = self._make_plan()
        self._client: AsyncModbusTcpClient | None = None
        self._ever_answered = False
        # Exception names of the current poll's requests, whether one of them succeeded, and whether the
        # unit id hint was logged since the last success.
        self._poll_exceptions: set[str] = set()
        self._poll_succeeded = False
        self._unit_id_logged = False
        self._log = log.bind(device=config.id, host=config.host, port=config.port, unit_id=config.unit_id)
        self.backoff = Backoff(config.reconnect_min_ms / 1000, config.reconnect_max_ms / 1000)
        self._retries = RetryLog(self._log, "modbus.retry_failed")
        self._values = BadValueLog(self._log, "modbus")

    def _make_plan(self) -> list[ReadRequest]:
        return plan_requests(
            self.tags,
            max_registers=self.config.max_registers,
            max_bits=self.config.max_bits,
            max_gap=self.config.max_gap,
            isolated=frozenset(self._isolated),
            time_tags=self.tag_map.time_tags(),
        )

    @property
    def requests(self) -> list[ReadRequest]:
        """The current read plan: one entry per request sent each poll."""
        return list(self._plan)

    async def __aenter__(self) -> ModbusClient:
        with contextlib.suppress(_Disconnected):
            await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            client.close()

    async def _connect(self) -> None:
        await self.close()
        timeout_s = self.config.timeout_ms / 1000
        client = AsyncModbusTcpClient(
            self.config.host, port=self.config.port, timeout=timeout_s, retries=0, reconnect_delay=0, name=self.config.id
        )
        if not await client.connect():
            client.close()
            cause, text = await _connect_failure(self.config.host, self.config.port, timeout_s)
            self.stats["connect_failures"] += 1
            if cause != "connect_failures":
                self.stats[cause] += 1
            self.last_error = text
            raise _Disconnected(cause, text)
        self._client = client
        self.connected = True
        if self._retries.failures:
            # Inside an outage a connect proves little, because a device may accept connections and never
            # respond. So the first poll that gets a response logs modbus.connected instead.
            self._log.debug("modbus.connection_opened", failures=self._retries.failures)
        else:
            self._log.info("modbus.connected")

    async def _execute(self, request: ReadRequest) -> Any:
        client = self._client
        if client is None or not client.connected:
            raise _Disconnected("closed", "connection closed")
        self.stats["requests"] += 1
        unit = self.config.unit_id
        try:
            if request.table == "holding_register":
                return await client.read_holding_registers(request.start, count=request.count, device_id=unit)
            if request.table == "input_register":
                return await client.read_input_registers(request.start, count=request.count, device_id=unit)
            if request.table == "coil":
                return await client.read_coils(request.start, count=request.count, device_id=unit)
            return await client.read_discrete_inputs(request.start, count=request.count, device_id=unit)
        except ConnectionResetError as exc:
            raise _Disconnected("resets", f"connection reset: {exc}") from exc
        except (ModbusException, asyncio.TimeoutError, OSError) as exc:
            cause = "timeouts" if client.connected else "resets"
            raise _Disconnected(cause, f"{'no response' if cause == 'timeouts' else 'connection lost'}: {exc}") from exc

    async def _read(self, request: ReadRequest, ts_ms: int) -> list[Sample]:
        """Read one request; an exception response on several tags splits it until the failing tags stand alone."""
        response = await self._execute(request)
        raise_if_cancelling()
        received = now_ms()
        if not response.isError():
            self._poll_succeeded = True
            words = response.bits if request.is_bits else response.registers
            samples, errors = request.decode(self.config.id, words, ts_ms, received)
            self.stats["decode_errors"] += errors
            return samples
        self.stats["exceptions"] += 1
        code = int(getattr(response, "exception_code", 0))
        detail = EXCEPTION_NAMES.get(code, f"exception_{code}")
        self._poll_exceptions.add(detail)
        if len(request.readers) > 1:
            self.stats["splits"] += 1
            samples = []
            for part in request.split():
                samples.extend(await self._read(part, ts_ms))
            return samples
        name = request.readers[0].tag.name
        if name not in self._isolated:
            self._isolated.add(name)
            self._plan = self._make_plan()
            self._log.warning("modbus.exception", tag=name, address=request.start, function_code=request.function_code,
                              exception_code=code, detail=detail)
        return [Sample(self.config.id, name, ts_ms, "gateway", received, None, None, "bad", detail)]

    def _check_unit_id(self) -> None:
        """Log a hint to check ``unit_id`` when every request of a complete poll got the same exception a wrong unit id causes."""
        if self._poll_succeeded:
            self._unit_id_logged = False
            return
        if self._unit_id_logged or len(self._poll_exceptions) != 1:
            return
        (detail,) = self._poll_exceptions
        if detail in UNIT_ID_EXCEPTIONS:
            self._unit_id_logged = True
            self._log.warning("modbus.all_requests_failed", detail=detail, requests=len(self._plan), hint=unit_id_hint(self.config.unit_id))

    def _bad_batch(self, names: list[str], detail: str) -> list[Sample]:
        ts = now_ms()
        return [Sample(self.config.id, name, ts, "gateway", ts, None, None, "bad", detail) for name in names]

    async def _poll(self) -> tuple[list[Sample], _Disconnected | None]:
        ts_ms = now_ms()
        self.stats["polls"] += 1
        samples: list[Sample] = []
        failure: _Disconnected | None = None
        self._poll_exceptions.clear()
        self._poll_succeeded = False
        for request in list(self._plan):
            try:
                samples.extend(await self._read(request, ts_ms))
            except _Disconnected as exc:
                failure = exc
                break
        if failure is None:
            self._check_unit_id()
        else:
            self.stats[failure.cause] = self.stats.get(failure.cause, 0) + 1
            self.last_error = str(failure)
            await self.close()
            read = {sample.tag for sample in samples}
            samples.extend(self._bad_batch([t.name for t in self.tags if t.name not in read], "disconnected"))
        bad = [sample for sample in samples if sample.status == "bad"]
        self.stats["values_read"] += len(samples) - len(bad)
        self.stats["bad_values"] += len(bad)
        self.stats["out_of_range"] += sum(1 for sample in bad if sample.detail == "out_of_range")
        self.stats["implausible_times"] += sum(1 for sample in bad if sample.detail.startswith(IMPLAUSIBLE_TIME))
        return samples, failure

    async def read_all(self) -> list[Sample]:
        """Read every tag once, connecting first when needed; unread tags come back bad with detail ``disconnected``."""
        if not self.connected:
            try:
                await self._connect()
            except _Disconnected:
                return self._bad_batch([tag.name for tag in self.tags], "disconnected")
        samples, _ = await self._poll()
        return samples

    async def stream(self) -> AsyncIterator[list[Sample]]:
        """Yield one batch per poll; while disconnected, one batch of bad samples per outage, then retry with backoff."""
        loop = asyncio.get_running_loop()
        backoff = self.backoff
        period = self.config.poll_ms / 1000
        next_poll = loop.time()
        while True:
            if not self.connected:
                try:
                    await self._connect()
                    raise_if_cancelling()
                except _Disconnected as exc:
                    delay = backoff.next_delay()
                    if self._failed("modbus.connect_failed", exc, delay):
                        yield self._bad_batch([tag.name for tag in self.tags], "disconnected")
                    await sleep_unless_cancelled(delay)
                    continue
                next_poll = loop.time()
            samples, failure = await self._poll()
            self._values.observe(samples)
            if failure is not None:
                if self._retries.failures:
                    # A device that accepts the connection but does not respond fails the attempt as a refusal does.
                    self.stats["connect_failures"] += 1
                delay = backoff.next_delay()
                self._failed("modbus.disconnected", failure, delay)
                yield samples
                await sleep_unless_cancelled(delay)
                continue
            # The device responded, so the next outage starts again from the shortest delay.
            backoff.reset()
            if self._retries.failures and self._ever_answered:
                # Only a response proves the connection is back, because a device may accept connections and never respond.
                self.stats["reconnects"] += 1
            self._ever_answered = True
            self._retries.answered("modbus.connected")
            yield samples
            next_poll += period
            delay = next_poll - loop.time()
            if delay < 0:
                next_poll = loop.time()  # behind schedule: poll again now rather than in a burst
                delay = 0
            if self.connected:
                await sleep_unless_cancelled(delay)

    def _failed(self, event: str, exc: _Disconnected, delay_s: float) -> bool:
        """Log a failed connect or poll and return True when it is the first failure since the last response."""
        return self._retries.failed(event, cause=exc.cause, error=str(exc), retry_in_s=round(delay_s, 2))


async def _connect_failure(host: str, port: int, timeout_s: float) -> tuple[str, str]:
    """Find out why a connection failed: pymodbus reports only that it did, so a plain socket connect tells the cause."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError as exc:
        return "refused", f"connection refused by {host}:{port}: {exc.strerror}"
    except asyncio.TimeoutError:
        return "timeouts", f"connecting to {host}:{port} timed out after {timeout_s:g} s"
    except OSError as exc:
        return "connect_failures", f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    writer.close()
    return "connect_failures", f"connecting to {host}:{port} failed"
