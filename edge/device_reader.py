"""Read one machine's device for the edge agent: open it, feed its samples to the machine's normalizer, queue the batches.

A device fault closes the connection, marks the machine offline and
reopens the device after a backoff, so it never stops the agent. Each batch
updates the device's metrics. What the normalizer noticed (missed state
transitions, implausible PLC times, PLC clock steps) is counted, and logged
through the agent's log limiter at most once a minute per machine and kind.
Each state value that no rule of the tag map matches is logged once (the
normalizer reports up to 32 distinct values per machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from valuegate.adapters.backoff import Backoff
from valuegate.adapters.tagmap import TagMap

from .issuer import iso_utc
from .metrics import AgentMetrics, LogLimiter
from .normalize import Normalizer
from .spool_rows import MachineBatch

__all__ = ("DeviceOpener", "DeviceReader", "default_opener")

DeviceOpener = Callable[[Any, TagMap], AbstractAsyncContextManager[Any]]
# How often a connected OPC UA machine on gateway time moves its watermark, so that its minutes close without value changes.
_TICK_S = 1.0


def default_opener(device: Any, tag_map: TagMap) -> AbstractAsyncContextManager[Any]:
    """Open ``device`` with the adapter for its protocol."""
    from valuegate.adapters.devices import open_device

    return open_device(device, tag_map)


_CLOCK_STEP_ACTIONS = {
    "forward": "the time across the step counts as offline (no data); data resumes at the new PLC time",
    "ahead": "the PLC time is far ahead of where it should be and is not used; the machine has no data until the PLC clock is set right, "
    "or has run steadily from the new time for a minute (taken then, if it is ahead by a year at most); after an agent start or an "
    "outage, a clock more than a day ahead of both the stored data and the gateway's clock is taken only once it is set right",
    "back": "the spool already holds data up to the PLC time before the step, so the machine is offline until the PLC clock passes it "
    "again; set the PLC clock right",
}


class DeviceReader:
    """The reading task of one machine's device; ``enqueue`` hands each non-empty batch to the agent's spool writer."""

    def __init__(
        self,
        machine_id: str,
        device: Any,
        normalizer: Normalizer,
        *,
        open_device: DeviceOpener,
        metrics: AgentMetrics,
        limit: LogLimiter,
        log: Any,
        stopping: asyncio.Event,
        enqueue: Callable[[MachineBatch], Awaitable[None]],
    ) -> None:
        self.machine_id = machine_id
        self.device = device
        self.device_id: str = getattr(device, "id", machine_id)
        self.normalizer = normalizer
        self.metrics = metrics
        self._open_device = open_device
        self._limit = limit
        self._log = log
        self._stopping = stopping
        self._enqueue = enqueue
        self._stats: dict[str, int] = {}
        """The adapter's counts last copied into the metrics, per count."""

    async def run(self) -> None:
        """Read the device until the agent stops or the device's stream ends, reopening it after each fault."""
        machine_id, device_id, normalizer = self.machine_id, self.device_id, self.normalizer
        backoff = Backoff(1.0, 60.0)
        while not self._stopping.is_set():
            try:
                async with self._open_device(self.device, normalizer.tag_map) as client, self._ticking(client):
                    self._log.info("device_opened", device=device_id, machine=machine_id)
                    async for samples in client.stream():
                        await self._on_samples(client, samples)
                    backoff.reset()
                    if self._stopping.is_set():
                        return
                    self._log.info("device_stream_ended", device=device_id, machine=machine_id)
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a device fault must never stop the agent
                delay = backoff.next_delay()
                self.metrics.device_connected.labels(device_id).set(0)
                if (held := self._limit(("device_failed", device_id))) is not None:
                    self._log.error("device_failed", device=device_id, machine=machine_id, error=repr(exc), retry_in_s=round(delay, 1), repeats_not_logged=held)
                await self._enqueue(normalizer.offline())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()

    def _copy_device_stats(self, stats: dict[str, int]) -> None:
        """Add what the adapter counted since the last batch to the connection metrics; a reopened client counts from 0 again."""
        for key, metric in (("connect_failures", self.metrics.device_connect_failures), ("reconnects", self.metrics.device_reconnects)):
            count = int(stats.get(key, 0))
            seen = self._stats.get(key, 0)
            added = count - seen if count >= seen else count
            if added:
                metric.labels(self.device_id).inc(added)
            self._stats[key] = count

    @contextlib.asynccontextmanager
    async def _ticking(self, client: Any) -> AsyncIterator[None]:
        """While the device is open, move an OPC UA machine's watermark on gateway time once a second (see :meth:`Normalizer.tick`).

        It moves only as far as the server's newest response (``client.last_response_ms``). A link that goes silent without a reset
        is noticed only when a keep-alive fails, so the time since the last response must not count in the machine's last state.
        """
        normalizer = self.normalizer
        if normalizer.plc_time or normalizer.poll_batches:
            yield
            return

        async def tick() -> None:
            while True:
                await asyncio.sleep(_TICK_S)
                now = time.time_ns() // 1_000_000
                # While the connection is down the state is offline, and the minutes may close at the gateway's time.
                last_response = getattr(client, "last_response_ms", None) if getattr(client, "connected", False) else now
                await self._enqueue(normalizer.tick(min(now, last_response or 0)))

        ticker = asyncio.create_task(tick(), name=f"tick:{normalizer.machine}")
        try:
            yield
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _on_samples(self, client: Any, samples: list[Any]) -> None:
        machine_id, device_id, normalizer = self.machine_id, self.device_id, self.normalizer
        self.metrics.values_read.labels(device_id).inc(len(samples))
        bad = sum(1 for sample in samples if sample.status == "bad")
        if bad:
            self.metrics.decode_errors.labels(device_id).inc(bad)
        connected = bool(getattr(client, "connected", True))
        self.metrics.device_connected.labels(device_id).set(int(connected))
        self._copy_device_stats(getattr(client, "stats", {}))
        missed_before = normalizer.missed_total
        implausible_before = normalizer.implausible_total
        unmatched_before = normalizer.unmatched_total
        batch = normalizer.feed(samples) if connected or samples else normalizer.offline()
        if normalizer.missed_total > missed_before:
            self.metrics.missed_transitions.labels(machine_id).inc(normalizer.missed_total - missed_before)
            if (held := self._limit(("state_transitions_missed", machine_id))) is not None:
                self._log.warning("state_transitions_missed", machine=machine_id, missed_total=normalizer.missed_total, repeats_not_logged=held)
        if normalizer.implausible_total > implausible_before:
            self._report_implausible()
        if normalizer.clock.steps:
            self._report_clock_steps()
        if normalizer.unmatched_total > unmatched_before:
            self.metrics.state_unmatched.labels(machine_id).inc(normalizer.unmatched_total - unmatched_before)
        if normalizer.unmatched_new:
            # Each distinct value is logged once: a missing or mistyped rule, not a passing fault.
            default = normalizer.tag_map.states.default
            self._log.warning("state_unmatched", machine=machine_id, device=device_id, values=list(normalizer.unmatched_new), category=default,
                              hint=f"no rule of tag map '{normalizer.tag_map.name}' matches; add a rule if these are real machine states")
            normalizer.unmatched_new.clear()
        await self._enqueue(batch)

    def _report_implausible(self) -> None:
        """Count the PLC times the normalizer did not use, and log each tag's reason at most once a minute."""
        machine_id, normalizer = self.machine_id, self.normalizer
        for tag, (count, detail) in normalizer.implausible.items():
            self.metrics.implausible_times.labels(machine_id, tag).inc(count)
            if (held := self._limit(("plc_time_implausible", machine_id, tag))) is not None:
                self._log.warning("plc_time_implausible", machine=machine_id, device=self.device_id, tag=tag, detail=detail, repeats_not_logged=held)
        normalizer.implausible.clear()

    def _report_clock_steps(self) -> None:
        """Count the PLC clock's steps and log each direction at most once a minute, with what the agent does about it."""
        machine_id, normalizer = self.machine_id, self.normalizer
        for step in normalizer.clock.steps:
            self.metrics.plc_clock_steps.labels(machine_id, step.direction).inc()
            if (held := self._limit(("plc_clock_step", machine_id, step.direction))) is not None:
                self._log.warning(
                    "plc_clock_step", machine=machine_id, device=self.device_id, direction=step.direction, step_s=round(step.step_ms / 1000, 1),
                    expected_plc_time=iso_utc(step.expected_ms), plc_time=iso_utc(step.clock_ms), action=_CLOCK_STEP_ACTIONS[step.direction],
                    repeats_not_logged=held,
                )  # fmt: skip
        normalizer.clock.steps.clear()
