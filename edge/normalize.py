"""Normalize one machine's samples into state events, counter readings and a watermark on the PLC's clock.

Where the tag map sets ``time.source: plc`` the PLC's own time stamps every
event. Modbus devices deliver one batch per poll: a state change is stamped
with the decoded ``state_since`` register (PLC milliseconds), the ``clock``
register is the machine's watermark (PLC now), and a ``state_seq`` jump of
more than one means transitions happened between two polls that the agent
never saw; they are counted and the next state event is flagged uncertain.
A ``state_seq`` that falls is a wrap or a reset, decided like a part
counter's in the counter kernels: it wrapped when the transitions the wrap
implies fit :data:`SEQ_MAX_PER_S` over the time between the two polls.
Otherwise the PLC restarted and set it back. A fall after a gap in its
readings (an outage, a Bad value) is always a reset, because whatever
happened in the gap lies in offline time. A reset counts no missed
transitions. It is counted in ``seq_resets`` and logged as ``state_seq_reset``.
OPC UA devices deliver notifications: each change is stamped with its
SourceTimestamp and the watermark is the largest SourceTimestamp of the
clock variable (of any variable when the map names no clock). A value
stamped before the watermark is moved up to it, so a late or stale
SourceTimestamp never lands in minutes the watermark has closed. With
``time.source: gateway`` the gateway's receive time does both jobs.

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

import structlog

from valuegate.adapters.rules import StateEvaluator, StateResult
from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import REGISTER_COUNT, TagMap
from valuegate.adapters.values import IMPLAUSIBLE_TIME, implausible_time

from .clock_steps import ClockWatch
from .protocol.records import STATE_CODES
from .spool_rows import CounterReading, MachineBatch, StateEvent

__all__ = ("Normalizer", "SEQ_MAX_PER_S")

log = structlog.get_logger("valuegate.edge.normalize")

OFFLINE = STATE_CODES["offline"]
SEQ_MAX_PER_S = 60
"""State transitions per second a PLC can plausibly record; a fall of ``state_seq`` that would need more is a reset, not a wrap."""
# Distinct unmatched state values remembered per machine, so that a noisy input cannot grow the set without end.
_UNMATCHED_KEPT = 32


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

    # -- Modbus: one consistent poll ----------------------------------------

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

    def _count_implausible(self, tag: str, detail: str) -> None:
        self.implausible_total += 1
        count, _ = self.implausible.get(tag, (0, ""))
        self.implausible[tag] = (count + 1, detail)

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

    # -- OPC UA: notifications with SourceTimestamps ----------------------

    def _gap(self) -> None:
        """Note that the gateway lost the data: the next state waits for the PLC time that brings data back."""
        self._resume_after = None
        self._resume_at = None
        self._pending_counts.clear()
        self.resuming = True

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

    # -- shared -----------------------------------------------------------

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
