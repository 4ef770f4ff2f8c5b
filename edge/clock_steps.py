"""Steps of a PLC's clock: a clock set forward or back between two Modbus polls.

On ``time.source: plc`` durations come from the PLC's clock, so a clock set
3 days forward would book 3 days in the current state, and one set back
would stamp readings before what the spool already holds. The watch learns
how fast the PLC clock runs against the gateway's receive times (1 for a
real PLC, the speed factor for a simulator replaying a recording) and
judges each poll against it:

- ``forward``: a real-time clock (running at half to twice the gateway's
  speed) moved further than the elapsed time allows. The machine is
  offline from the time the clock should have shown to the new one, and
  data resumes at the new clock. Any other clock belongs to a simulator
  or a test stand. A simulator replaying a recording jumps over idle spans
  on purpose, and a test stand holds its clock until read, so their forward
  jumps count as elapsed time.
- ``ahead``: a real-time clock moved more than :data:`MAX_FORWARD_STEP_MS`
  further than expected, or any clock more than a year (a clock set to a
  wrong year). Its times are not used, so the machine has no data until
  the clock is back where it should be. A clock that has run steadily from
  its new time for a minute, and is ahead by a year at most, is then taken
  as a ``forward`` step.
- ``back``: the clock went back. The spool holds data up to its watermark,
  so the machine is offline until the PLC clock passes that time again.

Only a reading of the PLC clock is judged: the ``clock`` register of a
Modbus poll, or the SourceTimestamp of an OPC UA clock variable.

An agent start and an outage drop the reference, because the PLC may come
back with another clock. The first reading after that, and every reading
until the rate has been measured, is judged against the time the spool
holds data up to (its watermark) and the gateway's own clock. A clock
behind the watermark is ``back``. A clock more than
:data:`MAX_FORWARD_STEP_MS` ahead of both is ``ahead`` and is held until
it is set right. It is never taken for running steadily, because the time
up to it would be filled with offline minutes, more than the gateway's
clock saw pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ("ClockStep", "ClockWatch", "MAX_FORWARD_STEP_MS")

MAX_FORWARD_STEP_MS = 86_400_000
"""A real-time clock's forward step larger than a day is taken for a wrong clock, not a correction."""
_MIN_STEP_MS = 60_000
"""PLC milliseconds of deviation that always pass: clock corrections by NTP, a late poll response."""
_JITTER_GATEWAY_MS = 5_000
"""Gateway milliseconds of delay a poll may carry; scaled by the clock's rate, so a fast simulator gets a wider band."""
_RATE_WINDOW_MS = 1_000
"""Gateway milliseconds of normal polls over which the rate is measured once."""
_REAL_TIME_RATES = (0.5, 2.0)
"""A clock running this fast against the gateway's is a real PLC's; a faster or slower one is a simulator's or a test stand's."""
_AHEAD_CONFIRM_GATEWAY_MS = 60_000
"""How long a clock far ahead must run steadily from its new time before it is taken."""
_MAX_ACCEPTED_STEP_MS = 366 * 86_400_000
"""A clock further ahead than this is never taken while the agent runs."""

Verdict = Literal["ok", "forward", "ahead", "back", "behind"]


@dataclass(frozen=True, slots=True)
class ClockStep:
    """A step found: its direction, by how many PLC milliseconds it departs from the expected clock, and the PLC times involved."""

    direction: Literal["forward", "ahead", "back"]
    step_ms: int
    expected_ms: int
    clock_ms: int


class ClockWatch:
    """Judges each poll's PLC clock against the previous one and the gateway time between them."""

    def __init__(self) -> None:
        self.rate: float | None = None
        self._ref: tuple[int, int] | None = None  # (PLC ms, gateway ms) of the last poll judged normal
        self._anchor: tuple[int, int] | None = None  # the start of the current window that measures the rate
        self._behind_until: int | None = None
        self._ahead_since: tuple[int, int] | None = None  # the first poll on a clock judged ahead
        self._unreferenced = False
        """True after :meth:`forget` until a first reading is taken: it is judged by :meth:`_judge_first`."""
        self.steps: list[ClockStep] = []
        """Steps not yet reported; the caller logs and clears them."""

    def forget(self) -> None:
        """Drop the reference at an agent start or after an outage; the learned rate stays.

        The next reading is judged against the stored watermark and the gateway's clock (see :meth:`_judge_first`).
        """
        self._ref = None
        self._anchor = None
        self._ahead_since = None
        self._unreferenced = True

    def judge(self, clock_ms: int, received_ms: int, watermark_ms: int) -> tuple[Verdict, int]:
        """Return the verdict for a poll and, for ``forward``, the PLC time at which the machine goes offline."""
        if self._behind_until is not None:
            self._ref, self._anchor = (clock_ms, received_ms), None
            if clock_ms < self._behind_until:
                return "behind", 0
            self._behind_until = None
            return "ok", 0

        ref, rate = self._ref, self.rate
        if (ref is None and self._unreferenced) or (ref is not None and rate is None):
            return self._judge_first(clock_ms, received_ms, watermark_ms)
        if ref is None or rate is None:
            self._learn(clock_ms, received_ms)
            self._ref = (clock_ms, received_ms)
            return "ok", 0
        moved, expected, slack = self._measure(ref, rate, clock_ms, received_ms)

        if moved < -slack:
            self.steps.append(ClockStep("back", moved - expected, ref[0] + expected, clock_ms))
            self._behind_until = watermark_ms
            self._ref, self._anchor, self._ahead_since = (clock_ms, received_ms), None, None
            return "back", 0

        step = moved - expected
        kind = self._departure(rate, moved, expected, slack)
        if kind == "ahead":
            return self._ahead(clock_ms, received_ms, ref[0] + expected, step, slack)
        self._ahead_since = None
        if kind == "forward":
            self.steps.append(ClockStep("forward", step, ref[0] + expected, clock_ms))
            self._ref, self._anchor = (clock_ms, received_ms), None
            return "forward", ref[0] + expected
        # A faster clock is a simulator replaying a recording, which jumps over idle spans on purpose. A slower one is a
        # test stand, or a simulator that keeps each change until the agent has read it.
        self._learn(clock_ms, received_ms)
        self._ref = (clock_ms, received_ms)
        return "ok", 0

    def departs(self, clock_ms: int, received_ms: int, watermark_ms: int) -> bool:
        """Return whether a reading at ``clock_ms`` would be a forward step or ahead, without judging it or reporting a step.

        An OPC UA value stamped like that may arrive before the clock variable's next reading; the caller holds it until then.
        """
        ref, rate = self._ref, self.rate
        if self._behind_until is not None or (ref is None and not self._unreferenced):
            return False
        if ref is None or rate is None:
            return clock_ms > max(watermark_ms, received_ms) + MAX_FORWARD_STEP_MS
        return self._departure(rate, *self._measure(ref, rate, clock_ms, received_ms)) is not None

    @staticmethod
    def _measure(ref: tuple[int, int], rate: float, clock_ms: int, received_ms: int) -> tuple[int, int, int]:
        """Return how far the clock moved since ``ref``, how far it should have moved at ``rate``, and the deviation that always passes."""
        elapsed = max(received_ms - ref[1], 0)
        return clock_ms - ref[0], round(rate * elapsed), max(_MIN_STEP_MS, round(rate * _JITTER_GATEWAY_MS))

    @staticmethod
    def _departure(rate: float, moved: int, expected: int, slack: int) -> Literal["forward", "ahead"] | None:
        """Classify a clock that moved ``moved`` PLC ms where ``expected`` were due: a forward step, ahead, or neither."""
        if moved <= 3 * expected + slack:
            return None
        step = moved - expected
        real_time = _REAL_TIME_RATES[0] <= rate <= _REAL_TIME_RATES[1]
        if step > _MAX_ACCEPTED_STEP_MS or (real_time and step > MAX_FORWARD_STEP_MS):
            return "ahead"
        return "forward" if real_time else None

    def _judge_first(self, clock_ms: int, received_ms: int, watermark_ms: int) -> tuple[Verdict, int]:
        """Judge a reading that has no reference (the first after :meth:`forget`) or comes before the rate is measured.

        Neither shows how much PLC time should have passed. So a clock more than a day ahead of both the watermark and the
        gateway's receive time stays ``ahead`` until it is back within that bound, and the step is reported once. A clock
        behind the watermark is ``back``, or ``behind`` without a report when it is less than a minute behind, as after an
        NTP correction.
        """
        bound = max(watermark_ms, received_ms)
        if clock_ms > bound + MAX_FORWARD_STEP_MS:
            if self._ahead_since is None:
                self._ahead_since = (clock_ms, received_ms)
                self.steps.append(ClockStep("ahead", clock_ms - bound, bound, clock_ms))
            return "ahead", 0
        self._unreferenced = False
        self._ahead_since = None
        self._learn(clock_ms, received_ms)
        self._ref = (clock_ms, received_ms)
        if clock_ms >= watermark_ms:
            return "ok", 0
        self._behind_until = watermark_ms
        if watermark_ms - clock_ms <= _MIN_STEP_MS:
            return "behind", 0
        self.steps.append(ClockStep("back", clock_ms - watermark_ms, watermark_ms, clock_ms))
        return "back", 0

    def _ahead(self, clock_ms: int, received_ms: int, expected_ms: int, step: int, slack: int) -> tuple[Verdict, int]:
        """Keep a clock far ahead unused until it has run steadily from there for a minute, then take it if it is ahead by a year at most."""
        since = self._ahead_since
        if since is None:
            self._ahead_since = (clock_ms, received_ms)
            self.steps.append(ClockStep("ahead", step, expected_ms, clock_ms))
            return "ahead", 0  # the reference stays, so the clock's return is judged against it
        steady = abs((clock_ms - since[0]) - (self.rate or 0.0) * (received_ms - since[1])) <= slack
        if not steady:
            self._ahead_since = (clock_ms, received_ms)
            return "ahead", 0
        if received_ms - since[1] < _AHEAD_CONFIRM_GATEWAY_MS or step > _MAX_ACCEPTED_STEP_MS:
            return "ahead", 0
        self.steps.append(ClockStep("forward", step, expected_ms, clock_ms))
        self._ref, self._anchor, self._ahead_since = (clock_ms, received_ms), None, None
        return "forward", expected_ms

    def _learn(self, clock_ms: int, received_ms: int) -> None:
        """Measure the rate over each window of at least a second of normal polls; polls every 100 ms are too short alone."""
        if self._anchor is None:
            self._anchor = (clock_ms, received_ms)
            return
        span = received_ms - self._anchor[1]
        if span < _RATE_WINDOW_MS:
            return
        observed = (clock_ms - self._anchor[0]) / span
        if observed >= 0:
            self.rate = observed if self.rate is None else 0.5 * self.rate + 0.5 * observed
        self._anchor = (clock_ms, received_ms)
