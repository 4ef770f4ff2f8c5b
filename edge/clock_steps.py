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

Only a poll that carries a PLC clock is judged. An outage drops the
reference, because a PLC may restart with another clock behind it.
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
        self.steps: list[ClockStep] = []
        """Steps not yet reported; the caller logs and clears them."""

    def forget(self) -> None:
        """Drop the reference after an outage; the learned rate stays."""
        self._ref = None
        self._anchor = None
        self._ahead_since = None

    def judge(self, clock_ms: int, received_ms: int, watermark_ms: int) -> tuple[Verdict, int]:
        """Return the verdict for a poll and, for ``forward``, the PLC time at which the machine goes offline."""
        if self._behind_until is not None:
            self._ref, self._anchor = (clock_ms, received_ms), None
            if clock_ms < self._behind_until:
                return "behind", 0
            self._behind_until = None
            return "ok", 0

        ref, rate = self._ref, self.rate
        if ref is None or rate is None:
            self._learn(clock_ms, received_ms)
            self._ref = (clock_ms, received_ms)
            return "ok", 0
        moved, elapsed = clock_ms - ref[0], max(received_ms - ref[1], 0)
        expected = round(rate * elapsed)
        slack = max(_MIN_STEP_MS, round(rate * _JITTER_GATEWAY_MS))

        if moved < -slack:
            self.steps.append(ClockStep("back", moved - expected, ref[0] + expected, clock_ms))
            self._behind_until = watermark_ms
            self._ref, self._anchor, self._ahead_since = (clock_ms, received_ms), None, None
            return "back", 0

        step = moved - expected
        real_time = _REAL_TIME_RATES[0] <= rate <= _REAL_TIME_RATES[1]
        if moved > 3 * expected + slack and (step > _MAX_ACCEPTED_STEP_MS or (real_time and step > MAX_FORWARD_STEP_MS)):
            return self._ahead(clock_ms, received_ms, ref[0] + expected, step, slack)
        self._ahead_since = None
        if moved > 3 * expected + slack and real_time:
            self.steps.append(ClockStep("forward", step, ref[0] + expected, clock_ms))
            self._ref, self._anchor = (clock_ms, received_ms), None
            return "forward", ref[0] + expected
        # A faster clock is a simulator replaying a recording, which jumps over idle spans on purpose. A slower one is a
        # test stand, or a simulator that keeps each change until the agent has read it.
        self._learn(clock_ms, received_ms)
        self._ref = (clock_ms, received_ms)
        return "ok", 0

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
