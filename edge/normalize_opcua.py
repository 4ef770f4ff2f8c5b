"""Normalize an OPC UA machine's notifications, each value stamped with its SourceTimestamp.

Each change is stamped with its SourceTimestamp, and the watermark is the
largest SourceTimestamp of the clock variable (of any variable when the map
names no clock). A value stamped before the watermark is moved up to it, so
a late or stale SourceTimestamp never lands in minutes the watermark has
closed. With ``time.source: gateway`` the gateway's receive time does both
jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

from valuegate.adapters.samples import Sample
from valuegate.adapters.values import implausible_time

from .protocol.records import STATE_CODES
from .spool_rows import MachineBatch

__all__ = ("OpcUaNotifications",)

OFFLINE = STATE_CODES["offline"]


class OpcUaNotifications:
    """The OPC UA part of :class:`~valuegate.edge.normalize.Normalizer`, working on its state and shared helpers."""

    def _resume_floor(self, samples: Sequence[Sample]) -> int | None:
        """Return the PLC time at which data resumes after a gap, or None while ``samples`` do not show it yet.

        A new subscription first reports each variable's current value with the SourceTimestamp of its last change, which
        may lie before reading began, even the clock's when it ticks only every few seconds. So data resumes with the first
        clock notification after that one. Without a clock tag it resumes with the first change of any variable after the
        current values (see :meth:`TagMap.missing_clock_effect`).
        """
        if self._resume_at is not None:
            return self._resume_at
        stamps = sorted(sample.ts_ms for sample in samples
                        if (self.clock_tag is None or sample.tag == self.clock_tag) and sample.status != "bad" and sample.time_source == "plc"
                        and implausible_time(sample.ts_ms, what="SourceTimestamp") is None)
        if not stamps:
            return None
        if self._resume_after is None:
            self._resume_after = stamps[0] if self.clock_tag is not None else stamps[-1]
        return next((stamp for stamp in stamps if stamp > self._resume_after), None)

    def _feed_notifications(self, samples: Sequence[Sample], batch: MachineBatch) -> None:
        if self.plc_time and self.clock_tag is not None and not self._judge_clock(samples, batch):
            self._hold(samples)
            return
        # After the gateway lost the data (no connection, the agent not running), a state or count stamped before the clock
        # that brings data back lies in time when the PLC was not read. Until such a clock arrives the state stays offline; with
        # no clock in a message the resumed state waits for the next. A Bad value the server reports live is no such gap:
        # the SourceTimestamp of its next Good value marks when data came back.
        resuming = self.resuming and self.plc_time
        floor = self._resume_floor(samples) if resuming else None
        if floor is not None and self._pending_counts:
            # Values a subscription reported before data resumed: the counter stood there when reading began.
            for sample in self._pending_counts.values():
                self._counter(batch, max(floor, self.last_ts_ms), sample)
            self._pending_counts.clear()
        for sample in sorted(samples, key=lambda item: item.ts_ms):
            stamp = sample.ts_ms if self.plc_time else sample.received_ms
            timed = True
            if self.plc_time and sample.time_source == "plc" and (detail := implausible_time(stamp, what="SourceTimestamp")):
                # No usable PLC time: Bad data, so the machine is offline from the watermark on.
                self._count_implausible(sample.tag, detail)
                sample = Sample(sample.device, sample.tag, sample.ts_ms, sample.time_source, sample.received_ms, None,
                                sample.raw, "bad", detail)
                stamp, timed = max(self.watermark_ms, self.last_ts_ms), False
            elif sample.status == "bad" and sample.time_source == "gateway":
                # An outage or a refused node: offline from the watermark on, and what the PLC reports after it for earlier
                # times was not read when it happened. On gateway time too, because a link that goes silent is noticed
                # only when a keep-alive fails, while the watermark stops at the server's last response.
                stamp, timed = max(self.watermark_ms, self.last_ts_ms), False
                if sample.tag in self.state_tags:
                    self._gap()
            elif self.plc_time and self.clock_tag is not None and self.clock.departs(stamp, sample.received_ms, self.watermark_ms):
                # Stamped by a clock the judged reading does not confirm, for example a queued value from before the clock
                # was set right: its value counts from now, its time does not.
                stamp = max(self.watermark_ms, self.last_ts_ms)
            if resuming and floor is not None and timed:
                stamp = max(stamp, floor)
            if self.plc_time and timed:
                stamp = max(stamp, self.watermark_ms)
            self.evaluator.update(sample)
            if sample.tag in self.state_tags:
                result = self._evaluate()
                state = (result.code, result.reason, result.uncertain)
                if state[0] == OFFLINE:
                    # Before the first state the machine is offline anyway.
                    emit = self.last_state is not None
                else:
                    emit = not (resuming and self.resuming and floor is None)
                if emit and state != self.last_state:
                    self._emit(batch, max(stamp, self.last_ts_ms), state, missed=0)
            if sample.tag in self.counter_tags:
                if resuming and floor is None and sample.status != "bad":
                    # Stamped with its last change, it would open minutes back to before reading began.
                    self._pending_counts[sample.tag] = sample
                else:
                    self._counter(batch, max(stamp, self.last_ts_ms), sample)
            if timed and (self.clock_tag is None or sample.tag == self.clock_tag or not self.plc_time):
                self.watermark_ms = max(self.watermark_ms, stamp)
        if resuming and floor is not None and self.resuming:
            # The state arrived in an earlier message than the clock that brings data back.
            result = self._evaluate()
            state = (result.code, result.reason, result.uncertain)
            if state[0] != OFFLINE and state != self.last_state:
                self._emit(batch, max(floor, self.last_ts_ms), state, missed=0)

    def _judge_clock(self, samples: Sequence[Sample], batch: MachineBatch) -> bool:
        """Judge the clock variable's newest SourceTimestamp in one message; return False while the message's times are not used.

        A forward step ends the last state offline where the clock should have been, and data resumes at the new clock. A clock
        ahead or behind the watermark ends it offline at the watermark, and data resumes at the first clock back in line. A
        value whose SourceTimestamp would be such a step may arrive before the clock's next reading shows it, so it waits for
        that reading.
        """
        reading = None
        for sample in samples:  # in the order the server queued them, so the last is the clock's newest value
            if sample.tag == self.clock_tag and self._plc_stamped(sample):
                reading = sample
        if reading is None or reading.ts_ms == self._clock_read_ms:
            if not (self._clock_held or self._values_held):
                previous_ms = max(self.watermark_ms, self.last_ts_ms)
                self._values_held = any(self._plc_stamped(sample) and self.clock.departs(sample.ts_ms, sample.received_ms, previous_ms)
                                        for sample in samples)
            return not (self._clock_held or self._values_held)

        self._clock_read_ms = reading.ts_ms
        previous_ms = max(self.watermark_ms, self.last_ts_ms)
        verdict, offline_at = self.clock.judge(reading.ts_ms, reading.received_ms, previous_ms)
        waited = self._clock_held or self._values_held
        self._values_held = False
        if verdict == "ok" and not waited:
            return True
        if verdict in ("ok", "forward"):
            if verdict == "forward" and not self._clock_held:
                self._end_offline(batch, min(max(offline_at, previous_ms), reading.ts_ms))
            if not self._clock_held:
                # Values that waited for this reading start with it. After a hold the gap is open already.
                self._clock_gap()
            self._clock_held = False
            self._resume_at = reading.ts_ms
            return True
        self._end_offline(batch, previous_ms)
        self._clock_held = True
        self._clock_gap()
        return False

    def _plc_stamped(self, sample: Sample) -> bool:
        return sample.status != "bad" and sample.time_source == "plc" and implausible_time(sample.ts_ms, what="SourceTimestamp") is None

    def _clock_gap(self) -> None:
        """Open a gap for a clock step; the counters held while the clock was in doubt wait for the time at which data resumes."""
        pending = dict(self._pending_counts)
        self._gap()
        self._pending_counts.update(pending)

    def _end_offline(self, batch: MachineBatch, at_ms: int) -> None:
        if self.last_state is not None and self.last_state[0] != OFFLINE:
            self._emit(batch, at_ms, (OFFLINE, None, False), missed=0)

    def _hold(self, samples: Sequence[Sample]) -> None:
        """Take the values of a message whose times are not used: the state they give starts when data resumes, and so do the counters."""
        for sample in samples:
            self.evaluator.update(sample)
            if sample.tag in self.counter_tags and sample.status != "bad":
                self._pending_counts[sample.tag] = sample
