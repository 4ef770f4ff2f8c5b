"""Normalize one machine's samples into state events, counter readings and a watermark on the PLC's clock.

Where the tag map sets ``time.source: plc`` the PLC's own time stamps every
event. Modbus devices deliver one batch per poll: a state change is stamped
with the decoded ``state_since`` register (PLC milliseconds), the ``clock``
register is the machine's watermark (PLC now), and a ``state_seq`` jump of
more than one means transitions happened between two polls that the agent
never saw; they are counted and the next state event is flagged uncertain.
OPC UA devices deliver notifications: each change is stamped with its
SourceTimestamp and the watermark is the largest SourceTimestamp of the
clock variable (of any variable when the map names no clock). With
``time.source: gateway`` the gateway's receive time does both jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from valuegate.adapters.rules import StateEvaluator
from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import REGISTER_COUNT, TagMap

from .protocol.records import STATE_CODES
from .spool import CounterReading, MachineBatch, StateEvent

__all__ = ("Normalizer",)

OFFLINE = STATE_CODES["offline"]


class Normalizer:
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
        self.last_seq: int | None = None
        self.last_counter: dict[str, float] = {}
        self.missed_total = 0

    def _seq_modulus(self) -> int:
        if self.seq_tag is None:
            return 0
        for tag in self.tag_map.tags:
            if tag.get("name") == self.seq_tag:
                return 1 << (16 * REGISTER_COUNT.get(str(tag.get("type")), 1))
        return 1 << 16

    # -- public -------------------------------------------------------------

    def resume(self) -> MachineBatch:
        """Start after a restart: the machine is offline from the last watermark until fresh data arrives.

        With PLC time the first poll shortens that gap again: its
        ``state_since`` stamps the state it reports, never earlier than the
        watermark, so a state the PLC says began before the restart covers
        the whole outage.
        """
        batch = MachineBatch(self.machine)
        if self.watermark_ms > 0:
            self._emit(batch, self.watermark_ms, (OFFLINE, None, False), missed=0)
        return batch

    def offline(self) -> MachineBatch:
        """Record that the device connection is down: no data from the last watermark on."""
        batch = MachineBatch(self.machine)
        if self.last_state is not None and self.last_state[0] != OFFLINE:
            self._emit(batch, self.watermark_ms or self.last_ts_ms, (OFFLINE, None, False), missed=0)
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

    # -- Modbus: one consistent poll ----------------------------------------

    def _feed_poll(self, samples: Sequence[Sample], batch: MachineBatch) -> None:
        by_tag = {sample.tag: sample for sample in samples}
        for sample in samples:
            self.evaluator.update(sample)

        now = self._poll_time(samples, by_tag)
        if now is None:
            # No PLC time in this poll (a Bad clock, or the batch of Bad samples an outage yields):
            # when the state has become offline, the machine is offline from the last watermark on.
            result = self.evaluator.evaluate()
            if result.code == OFFLINE and self.last_state is not None and self.last_state[0] != OFFLINE:
                self._emit(batch, max(self.watermark_ms, self.last_ts_ms), (OFFLINE, None, False), missed=0)
            return
        self.watermark_ms = max(self.watermark_ms, now)

        missed, seq_moved = self._check_seq(by_tag.get(self.seq_tag) if self.seq_tag else None)
        result = self.evaluator.evaluate()
        state = (result.code, result.reason, result.uncertain or missed > 0)
        if state != self.last_state or seq_moved:
            since = by_tag.get(self.since_tag) if self.since_tag else None
            stamp = now
            if self.plc_time and since is not None and since.status != "bad" and isinstance(since.value, int | float):
                stamp = int(since.value)
            self._emit(batch, min(max(stamp, self.last_ts_ms), now), state, missed=missed)

        for tag in self.counter_tags:
            sample = by_tag.get(tag)
            if sample is not None:
                self._counter(batch, now, sample)

    def _poll_time(self, samples: Sequence[Sample], by_tag: dict[str, Sample]) -> int | None:
        if not self.plc_time:
            return max(sample.ts_ms for sample in samples)
        clock = by_tag.get(self.clock_tag) if self.clock_tag else None
        if clock is None:
            return max(sample.ts_ms for sample in samples)
        if clock.status == "bad" or not isinstance(clock.value, int | float):
            return None
        return int(clock.value)

    def _check_seq(self, sample: Sample | None) -> tuple[int, bool]:
        """Return the transitions missed since the previous poll and whether the counter moved."""
        if sample is None or sample.status == "bad" or not isinstance(sample.value, int | float):
            return 0, False
        value = int(sample.value)
        previous, self.last_seq = self.last_seq, value
        if previous is None:
            return 0, False
        step = (value - previous) % self.seq_modulus
        missed = max(step - 1, 0)
        self.missed_total += missed
        return missed, step > 0

    # -- OPC UA: notifications with SourceTimestamps ----------------------

    def _feed_notifications(self, samples: Sequence[Sample], batch: MachineBatch) -> None:
        for sample in sorted(samples, key=lambda item: item.ts_ms):
            stamp = sample.ts_ms if self.plc_time else sample.received_ms
            self.evaluator.update(sample)
            if sample.tag in self.state_tags:
                result = self.evaluator.evaluate()
                state = (result.code, result.reason, result.uncertain)
                if state != self.last_state:
                    self._emit(batch, max(stamp, self.last_ts_ms), state, missed=0)
            if sample.tag in self.counter_tags:
                self._counter(batch, max(stamp, self.last_ts_ms), sample)
            if self.clock_tag is None or sample.tag == self.clock_tag or not self.plc_time:
                self.watermark_ms = max(self.watermark_ms, stamp)

    # -- shared -----------------------------------------------------------

    def _emit(self, batch: MachineBatch, ts_ms: int, state: tuple[int, str | None, bool], *, missed: int) -> None:
        code, reason, uncertain = state
        batch.states.append(StateEvent(ts_ms, code, reason, uncertain, missed))
        self.last_state = state
        self.last_ts_ms = ts_ms

    def _counter(self, batch: MachineBatch, ts_ms: int, sample: Sample) -> None:
        if sample.status == "bad" or not isinstance(sample.value, int | float) or isinstance(sample.value, bool):
            return
        value = float(sample.value)
        if self.last_counter.get(sample.tag) == value:
            return
        self.last_counter[sample.tag] = value
        batch.counters.append(CounterReading(ts_ms, sample.tag, value))
