"""Normalize one machine's samples into state events, counter readings and a watermark on the PLC's clock.

Where the tag map sets ``time.source: plc`` the PLC's own time stamps every
event, and with ``time.source: gateway`` the gateway's receive time does.
Modbus devices deliver one batch per poll (:mod:`.normalize_modbus`), and
OPC UA devices deliver notifications (:mod:`.normalize_opcua`).

On PLC time the clock's steps are judged by
:class:`~valuegate.edge.clock_steps.ClockWatch`, on Modbus from the
``clock`` register of each poll, on OPC UA from each new SourceTimestamp
of the clock variable. A map without a clock tag is not judged.

A PLC time outside the plausible range of
:data:`valuegate.adapters.values.PLAUSIBLE_TIME_MS` (a wrong word order, a
clock in seconds) is never used. A Modbus poll without a plausible clock
leaves the watermark where it was, so that interval has no data until the
clock is good again. An implausible ``state_since`` falls back to the poll's
clock. An OPC UA notification with an implausible SourceTimestamp counts as
Bad data: the machine is offline from the watermark on. Each such value is
counted in ``implausible_total`` and per tag in ``implausible``, for the
caller to log.
"""

from __future__ import annotations

from collections.abc import Sequence

from valuegate.adapters.rules import StateEvaluator, StateResult
from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import TagMap

from .clock_steps import ClockWatch
from .normalize_modbus import ModbusPolls
from .normalize_opcua import OpcUaNotifications
from .protocol.records import STATE_CODES
from .spool_rows import CounterReading, MachineBatch, StateEvent

__all__ = ("Normalizer",)

OFFLINE = STATE_CODES["offline"]
# Distinct unmatched state values remembered per machine, so that a noisy input cannot grow the set without end.
_UNMATCHED_KEPT = 32


class Normalizer(ModbusPolls, OpcUaNotifications):
    """Turns sample batches of one device into :class:`MachineBatch` rows for the spool."""

    def __init__(self, machine: str, tag_map: TagMap, *, watermark_ms: int = 0) -> None:
        self.machine = machine
        self.tag_map = tag_map
        self.evaluator = StateEvaluator(tag_map)
        self.plc_time = tag_map.time.source == "plc"
        self.poll_batches = tag_map.protocol == "modbus"
        self.since_tag = tag_map.time.state_since
        self.clock_tag = tag_map.time.clock
        self.seq_tag = tag_map.time.state_seq
        self.counter_tags = {counter.tag for counter in tag_map.counters}
        self.state_tags = set(self.evaluator.inputs) | {rule.reason_tag for rule in tag_map.states.rules if rule.reason_tag}
        self.seq_modulus = self._seq_modulus()
        self.watermark_ms = watermark_ms
        self.last_ts_ms = watermark_ms
        self.last_state: tuple[int, str | None, bool] | None = None
        self.resuming = True
        """True before the first data and after the gateway lost the data (no connection, a Modbus poll without a good state):
        the next state starts no earlier than the PLC time that brings data back."""
        self._resume_after: int | None = None
        """After a gap on OPC UA: the PLC time of the first notification, which reports a value's state before reading began."""
        self._pending_counts: dict[str, Sample] = {}
        """Counter values reported after a gap before the PLC time that brings data back is known; they are stamped with it."""
        self.last_seq: int | None = None
        self.last_seq_ms = 0
        self.seq_gap = False
        """True after a poll without a good ``state_seq`` value (an outage, a Bad value), until the next good one."""
        self.seq_resets = 0
        self.last_counter: dict[str, float] = {}
        self.missed_total = 0
        self.implausible_total = 0
        self.implausible: dict[str, tuple[int, str]] = {}
        """Implausible PLC times per tag not yet reported: tag name -> (count, latest detail); the caller clears it."""
        self.unmatched_total = 0
        """State evaluations that matched no rule and took the map's default category."""
        self.clock = ClockWatch()
        """Steps of the PLC clock between two readings (see :mod:`valuegate.edge.clock_steps`); the caller reports ``clock.steps``."""
        self._clock_read_ms: int | None = None
        """OPC UA: the clock variable's SourceTimestamp judged last; a value read again with the same one is not a new reading."""
        self._clock_held = False
        """OPC UA: True while the clock's times are not used (a clock ahead, or behind the watermark); values wait for it."""
        self._values_held = False
        """OPC UA: True while values whose SourceTimestamps would be a clock step wait for the clock's next reading to judge it."""
        self._resume_at: int | None = None
        """OPC UA: the PLC time at which data resumes after a clock step, known without waiting for a further clock tick."""
        self.unmatched_new: list[str] = []
        """State input values (``state=4``) that matched no rule, each listed once when first seen; the caller clears it."""
        self._unmatched_seen: set[str] = set()

    # -- public -------------------------------------------------------------

    def resume(self) -> MachineBatch:
        """Start after a restart: the machine is offline from the last watermark until fresh data arrives.

        Fresh data arrives with the first poll's clock (Modbus) or the clock's
        first tick after the values a new subscription reports first (OPC UA,
        see :meth:`_resume_floor`). A ``state_since`` or SourceTimestamp
        older than that does not shorten the gap: the PLC saying a state
        began before the restart does not tell what the machine did while
        nobody read it.
        """
        batch = MachineBatch(self.machine)
        self._gap()
        self.clock.forget()
        if self.watermark_ms > 0:
            self._emit(batch, self.watermark_ms, (OFFLINE, None, False), missed=0)
        return batch

    def offline(self) -> MachineBatch:
        """Record that the device connection is down: no data from the last watermark on."""
        batch = MachineBatch(self.machine)
        self.seq_gap = True
        self._gap()
        self.clock.forget()
        if self.last_state is not None and self.last_state[0] != OFFLINE:
            self._emit(batch, self.watermark_ms or self.last_ts_ms, (OFFLINE, None, False), missed=0)
        return batch

    def tick(self, now_ms: int) -> MachineBatch:
        """Move the watermark to the gateway's ``now_ms`` on a map on gateway time, once the machine has a state.

        An OPC UA server sends values only when they change. On the PLC's time its clock tag moves the watermark. On the
        gateway's time nothing else would, so minutes would stay open while the machine keeps its state. While the
        connection is down the state is offline, and the minutes close as offline.
        """
        batch = MachineBatch(self.machine)
        if self.plc_time or self.last_state is None or now_ms <= self.watermark_ms:
            return batch
        self.watermark_ms = now_ms
        batch.watermark_ms = now_ms
        return batch

    def feed(self, samples: Sequence[Sample]) -> MachineBatch:
        """Normalize one batch: a Modbus poll, or one OPC UA notification message."""
        batch = MachineBatch(self.machine)
        if not samples:
            return batch
        if self.poll_batches:
            self._feed_poll(samples, batch)
        else:
            self._feed_notifications(samples, batch)
        batch.watermark_ms = self.watermark_ms
        return batch

    # -- shared -----------------------------------------------------------

    def _gap(self) -> None:
        """Note that the gateway lost the data: the next state waits for the PLC time that brings data back."""
        self._resume_after = None
        self._resume_at = None
        self._pending_counts.clear()
        self.resuming = True

    def _count_implausible(self, tag: str, detail: str) -> None:
        self.implausible_total += 1
        count, _ = self.implausible.get(tag, (0, ""))
        self.implausible[tag] = (count + 1, detail)

    def _evaluate(self) -> StateResult:
        """Evaluate the state rules; note the inputs when no rule matched (up to 32 distinct values per machine)."""
        result = self.evaluator.evaluate()
        if result.unmatched:
            self.unmatched_total += 1
            if len(self._unmatched_seen) < _UNMATCHED_KEPT:
                values = self.evaluator.input_values()
                if values not in self._unmatched_seen:
                    self._unmatched_seen.add(values)
                    self.unmatched_new.append(values)
        return result

    def _emit(self, batch: MachineBatch, ts_ms: int, state: tuple[int, str | None, bool], *, missed: int) -> None:
        code, reason, uncertain = state
        batch.states.append(StateEvent(ts_ms, code, reason, uncertain, missed))
        self.last_state = state
        self.last_ts_ms = ts_ms
        if code != OFFLINE:
            self.resuming = False

    def _counter(self, batch: MachineBatch, ts_ms: int, sample: Sample) -> None:
        if sample.status == "bad" or not isinstance(sample.value, int | float) or isinstance(sample.value, bool):
            return
        value = float(sample.value)
        if self.last_counter.get(sample.tag) == value:
            return
        self.last_counter[sample.tag] = value
        batch.counters.append(CounterReading(ts_ms, sample.tag, value))
