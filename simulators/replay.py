"""Accelerated replay clock: recorded time advances at a speed factor, each state is shown for a minimum real dwell.

All values a simulator serves are functions of the recorded time, so the
speed changes only how long a replay takes, never the durations an edge
computes from the PLC's timestamps. Long idle spans (no production
scheduled, machine powered off) are jumped over: the clock stops at the end
of the plant day, then just before the next change.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import structlog

from .recordings.files import plant_date_of_ms, plant_day_bounds_ms

__all__ = ("ReplayPacing", "ReplayClock", "DAY_CLOSE_MS", "MAX_SPEED")

# The fastest replay: about 30 recorded years a real second. Faster ones gain nothing, and far faster ones overflow the time arithmetic.
MAX_SPEED = 1e9

log = structlog.get_logger("valuegate.simulators.replay")

# After the last plant day the clock runs this far past its end, so that an edge can close the day.
DAY_CLOSE_MS = 60_000


@dataclass(frozen=True, slots=True)
class ReplayPacing:
    """Pace of a replay."""

    speed: float = 3600.0
    """Recorded seconds per real second (3600: one recorded hour per second)."""
    min_dwell_ms: int = 0
    """Real milliseconds each state is served before the next state change (about 3 x a client's poll period)."""
    tick_ms: int = 20
    """Real milliseconds between clock updates."""
    skip_idle_ms: int = 15 * 60_000
    """Idle spans longer than this (recorded ms) are jumped over instead of replayed."""
    lead_ms: int = 60_000
    """Recorded milliseconds replayed at ``speed`` before an idle span ends."""
    hold_until_read: bool = False
    """Serve each state until a client has read it at least once, so a poller sees every change at any speed."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and 0 < self.speed <= MAX_SPEED):
            raise ValueError(f"speed={self.speed} must be positive recorded seconds per real second, at most {MAX_SPEED:.0e}, e.g. 3600")
        if self.min_dwell_ms < 0:
            raise ValueError(f"min_dwell_ms={self.min_dwell_ms} must be 0 or more real milliseconds")
        if not 1 <= self.tick_ms <= 10_000:
            raise ValueError(f"tick_ms={self.tick_ms} must be 1 to 10000 real milliseconds")
        if self.skip_idle_ms < 0 or self.lead_ms < 0:
            raise ValueError(f"skip_idle_ms={self.skip_idle_ms} and lead_ms={self.lead_ms} must be 0 or more")


Apply = Callable[[int], Awaitable[None] | None]


class ReplayClock:
    """Drives recorded time from ``start_ms`` to ``end_ms`` through the change instants ``marks``.

    ``marks`` are recorded instants (UTC ms) at which a served state
    changes. The clock lands on each one, and with a minimum dwell it shows
    each for at least that long in real time. ``idle`` spans are intervals
    without changes that may be jumped over.
    """

    def __init__(
        self,
        pacing: ReplayPacing,
        *,
        start_ms: int,
        end_ms: int,
        marks: Sequence[int],
        idle: Sequence[tuple[int, int]],
        zone: ZoneInfo,
    ) -> None:
        if end_ms < start_ms:
            raise ValueError(f"end_ms={end_ms} is before start_ms={start_ms}")
        self.pacing = pacing
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.now_ms = start_ms
        self._jumps: list[tuple[int, int]] = []
        checkpoints: set[int] = set()
        for span_start, span_end in idle:
            targets = self._idle_checkpoints(span_start, span_end, zone)
            if targets:
                self._jumps.append((span_start, targets[-1]))
                checkpoints.update(targets)
        self._jumps.sort()
        self.marks = sorted({mark for mark in marks if start_ms < mark <= end_ms} | checkpoints | {end_ms})

    def _idle_checkpoints(self, span_start: int, span_end: int, zone: ZoneInfo) -> list[int]:
        """Return where the clock stops while it jumps over an idle span, or [] to replay the span."""
        resume = span_end - self.pacing.lead_ms if span_end < self.end_ms else self.end_ms
        if resume - span_start <= self.pacing.skip_idle_ms:
            return []
        # Stop once at the end of the plant day the span starts in, so that an edge can close that day.
        # Later days without production are skipped in one jump.
        day_close = plant_day_bounds_ms(plant_date_of_ms(span_start, zone), zone)[1] + DAY_CLOSE_MS
        targets = [day_close] if span_start < day_close < resume else []
        targets.append(resume)
        return targets

    def _jump_target(self, now_ms: int) -> int | None:
        index = bisect.bisect_right(self._jumps, (now_ms, float("inf"))) - 1
        if index >= 0:
            span_start, last_target = self._jumps[index]
            if span_start <= now_ms < last_target:
                return self.marks[bisect.bisect_right(self.marks, now_ms)]
        return None

    async def run(self, apply: Apply, *, stop: asyncio.Event | None = None, reads: Callable[[], int] | None = None) -> None:
        """Advance the clock to ``end_ms``, calling ``apply(now_ms)`` after every step.

        ``reads`` returns how many client reads the server has answered so
        far; with ``hold_until_read`` the clock leaves a change instant only
        after at least one read since it landed there.
        """
        loop = asyncio.get_running_loop()
        pacing = self.pacing
        dwell_s = pacing.min_dwell_ms / 1000
        gated = pacing.hold_until_read and reads is not None
        await _call(apply, self.now_ms)
        last_real = loop.time()
        last_mark_real = last_real
        reads_at_mark = reads() if gated else 0
        while self.now_ms < self.end_ms:
            await asyncio.sleep(pacing.tick_ms / 1000)
            if stop is not None and stop.is_set():
                return
            real = loop.time()
            next_mark = self.marks[bisect.bisect_right(self.marks, self.now_ms)]
            jump = self._jump_target(self.now_ms)
            target = jump if jump is not None else self.now_ms + int((real - last_real) * pacing.speed * 1000)
            last_real = real
            if target >= next_mark:
                unread = gated and reads() <= reads_at_mark  # type: ignore[misc]
                if (dwell_s and real - last_mark_real < dwell_s) or unread:
                    # Wait just before the change; a jump waits where it is.
                    target = self.now_ms if jump is not None else max(self.now_ms, next_mark - 1)
                elif dwell_s or gated or jump is not None:
                    target = next_mark
                    last_mark_real = real
                else:
                    last_mark_real = real
            if target > self.now_ms:
                self.now_ms = min(target, self.end_ms)
                await _call(apply, self.now_ms)
                if gated and self.now_ms == next_mark:
                    reads_at_mark = reads()  # type: ignore[misc]
        log.debug("replay_clock_done", end_ms=self.end_ms)

    def real_duration_estimate_s(self) -> float:
        """Estimate the real seconds a replay takes: recorded time over speed, or the dwells, whichever is longer."""
        jumped = sum(target - start for start, target in self._jumps)
        replayed_s = max(0, self.end_ms - self.start_ms - jumped) / 1000 / self.pacing.speed
        return max(replayed_s, len(self.marks) * self.pacing.min_dwell_ms / 1000)


async def _call(apply: Apply, now_ms: int) -> None:
    result = apply(now_ms)
    if inspect.isawaitable(result):
        await result

