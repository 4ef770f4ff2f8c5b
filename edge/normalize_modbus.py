"""Normalize a Modbus machine's polls: each poll is one consistent batch of the machine's registers.

A state change is stamped with the decoded ``state_since`` register (PLC
milliseconds), and the ``clock`` register is the machine's watermark (PLC
now). A ``state_seq`` jump of more than one means transitions happened
between two polls that the agent never saw. They are counted, and the next
state event is flagged uncertain.
A ``state_seq`` that falls is a wrap or a reset, decided like a part
counter's in the counter kernels: it wrapped when the transitions the wrap
implies fit :data:`SEQ_MAX_PER_S` over the time between the two polls.
Otherwise the PLC restarted and set it back. A fall after a gap in its
readings (an outage, a Bad value) is always a reset, because whatever
happened in the gap lies in offline time. A reset counts no missed
transitions. It is counted in ``seq_resets`` and logged as ``state_seq_reset``.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import REGISTER_COUNT
from valuegate.adapters.values import IMPLAUSIBLE_TIME, implausible_time

from .protocol.records import STATE_CODES
from .spool_rows import MachineBatch

__all__ = ("ModbusPolls", "SEQ_MAX_PER_S")

# The normalizer's events carry one logger name, whichever of its modules logs them.
log = structlog.get_logger("valuegate.edge.normalize")

OFFLINE = STATE_CODES["offline"]
SEQ_MAX_PER_S = 60
"""State transitions per second a PLC can plausibly record; a fall of ``state_seq`` that would need more is a reset, not a wrap."""


class ModbusPolls:
    """The Modbus part of :class:`~valuegate.edge.normalize.Normalizer`, working on its state and shared helpers."""

    def _seq_modulus(self) -> int:
        if self.seq_tag is None:
            return 0
        for tag in self.tag_map.tags:
            if tag.get("name") == self.seq_tag:
                return 1 << (16 * REGISTER_COUNT.get(str(tag.get("type")), 1))
        return 1 << 16

    def _feed_poll(self, samples: Sequence[Sample], batch: MachineBatch) -> None:
        by_tag = {sample.tag: sample for sample in samples}
        for sample in samples:
            self.evaluator.update(sample)
        seq = by_tag.get(self.seq_tag) if self.seq_tag else None
        if seq is None or seq.status == "bad":
            self.seq_gap = True

        now = self._poll_time(samples, by_tag)
        if now is None:
            # No PLC time in this poll (a Bad or implausible clock, or the batch of Bad samples an outage
            # yields): the watermark stays, and when the state has become offline, the machine is offline
            # from the last watermark on.
            result = self.evaluator.evaluate()
            if result.code == OFFLINE:
                self._gap()
                if self.last_state is not None and self.last_state[0] != OFFLINE:
                    self._emit(batch, max(self.watermark_ms, self.last_ts_ms), (OFFLINE, None, False), missed=0)
            return
        previous_ms = max(self.watermark_ms, self.last_ts_ms)
        if self.plc_time and self.clock_tag is not None:
            verdict, offline_at = self.clock.judge(now, max(sample.received_ms for sample in samples), previous_ms)
            if verdict != "ok":
                # The clock was set forward or back: no time across the step counts as the state before it.
                self._gap()
                if self.last_state is not None and self.last_state[0] != OFFLINE:
                    at = min(max(offline_at, previous_ms), now) if verdict == "forward" else previous_ms
                    self._emit(batch, at, (OFFLINE, None, False), missed=0)
                if verdict != "forward":
                    return  # its times are not used until the clock is back in line
        self.watermark_ms = max(self.watermark_ms, now)

        missed, seq_moved = self._check_seq(seq, now)
        result = self._evaluate()
        state = (result.code, result.reason, result.uncertain or missed > 0)
        if result.code == OFFLINE:
            # A poll is the only view of the PLC: a state it cannot read leaves no data until a poll reads one again.
            self._gap()
        if state != self.last_state or seq_moved:
            since = by_tag.get(self.since_tag) if self.since_tag and self.plc_time else None
            since_ms = self._time_value(since) if since is not None else None
            stamp = now if since_ms is None else since_ms
            if result.code == OFFLINE:
                # The state cannot be read: no data from the previous poll on.
                self._emit(batch, min(previous_ms, now), state, missed=missed)
            else:
                # After a gap the data starts with this poll: what the PLC reports for earlier times was not read when it happened.
                floor = now if self.resuming else self.last_ts_ms
                self._emit(batch, min(max(stamp, floor, self.last_ts_ms), now), state, missed=missed)

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
        return self._time_value(clock)

    def _time_value(self, sample: Sample) -> int | None:
        """Return a PLC time sample's value in epoch ms, or None when it is Bad or implausible."""
        if sample.status == "bad":
            if sample.detail.startswith(IMPLAUSIBLE_TIME):
                self._count_implausible(sample.tag, sample.detail)
            return None
        detail = implausible_time(sample.value)
        if detail is not None:
            self._count_implausible(sample.tag, detail)
            return None
        return int(sample.value)

    def _check_seq(self, sample: Sample | None, now: int) -> tuple[int, bool]:
        """Return the transitions missed since the previous good ``state_seq`` and whether it moved."""
        if sample is None or sample.status == "bad" or not isinstance(sample.value, int | float):
            return 0, False
        value = int(sample.value)
        previous, previous_ms, gap = self.last_seq, self.last_seq_ms, self.seq_gap
        self.last_seq, self.last_seq_ms, self.seq_gap = value, now, False
        if previous is None:
            return 0, False
        step = (value - previous) % self.seq_modulus
        # The same test as a part counter's: a step is plausible when step x 1000 <= rate x elapsed ms.
        if value < previous and (gap or step * 1000 > SEQ_MAX_PER_S * max(now - previous_ms, 0)):
            self.seq_resets += 1
            log.warning("state_seq_reset", machine=self.machine, tag=self.seq_tag, previous=previous, value=value,
                        cause="after_gap" if gap else "fall_too_far_for_a_wrap")
            return 0, True
        missed = max(step - 1, 0)
        self.missed_total += missed
        return missed, step > 0
