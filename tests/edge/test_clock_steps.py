"""A PLC clock set forward or back between Modbus polls: no time across the step counts as running, and nothing floods the spool.

Polls carry the gateway's receive time (``poll_ms``) and the PLC clock; the
PLC times below are offsets from T0 in milliseconds, worked out by hand.
"""

from __future__ import annotations

import random

from tests.edge.test_normalize import FILLER, T0, poll
from valuegate.edge.clock_steps import ClockWatch
from valuegate.edge.normalize import Normalizer

DAY = 86_400_000


def running(normalizer: Normalizer, gateway_ms: int, clock: int, containers: int = 0) -> list[tuple[int, int]]:
    """Feed a poll of a running filler whose state began at 0; return its state events as (PLC offset, code)."""
    batch = normalizer.feed(poll(gateway_ms, state=1, since=0, clock=clock, containers=containers, changes=1))
    return [(event.ts_ms - T0, event.code) for event in batch.states]


def test_forward_step_is_offline_not_running() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    assert running(normalizer, 0, 0) == [(0, 0)]
    for second in range(1, 6):
        assert running(normalizer, second * 1000, second * 1000) == []
    # One second later by the gateway, the PLC clock reads 2 h and 6 s: offline from 6 s (where the clock should be) to the new time.
    hours = 2 * 3_600_000
    assert running(normalizer, 6_000, hours + 6_000) == [(6_000, 5), (hours + 6_000, 0)]
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("forward", hours)]
    assert running(normalizer, 7_000, hours + 7_000) == []
    assert normalizer.watermark_ms - T0 == hours + 7_000


def test_far_ahead_clock_held() -> None:
    """Three days ahead, or forty years: more than a day, so a wrong clock, never booked and never filled with minutes."""
    normalizer = Normalizer("filler-1", FILLER)
    for second in range(6):
        running(normalizer, second * 1000, second * 1000)
    assert running(normalizer, 6_000, 3 * DAY + 6_000) == [(5_000, 5)]
    forty_years = 40 * 365 * DAY
    for second in range(7, 37):  # 30 s on wrong clocks: nothing stored, the watermark stays
        assert running(normalizer, second * 1000, forty_years + second * 1000) == []
        assert normalizer.watermark_ms - T0 == 5_000
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]
    # The clock is set right again: data resumes at its time, and no second step is reported.
    assert running(normalizer, 37_000, 37_000) == [(37_000, 0)]
    assert normalizer.watermark_ms - T0 == 37_000
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]


def test_backward_step_offline_until_passed() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    minute = 60_000
    for n in range(11):
        running(normalizer, n * minute, n * minute)
    # Set back 30 minutes at 11 min: offline from 10 min (the last stored time) on.
    assert running(normalizer, 11 * minute, -19 * minute) == [(10 * minute, 5)]
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("back", -30 * minute)]
    for n in range(12, 40):  # the PLC clock reads -18 .. 9 min: still before what the spool contains
        assert running(normalizer, n * minute, (n - 30) * minute) == []
        assert normalizer.watermark_ms - T0 == 10 * minute
    assert running(normalizer, 40 * minute, 10 * minute) == [(10 * minute, 0)]
    assert len(normalizer.clock.steps) == 1


def test_simulator_speed_and_poll_jitter_are_no_step() -> None:
    """A recording replayed at 450x, polled every 100 ms with +-30 ms jitter: the watch learns the rate and reports nothing."""
    generator = random.Random(5)
    watch, gateway, clock = ClockWatch(), 0, 0
    for _ in range(2_000):
        elapsed = 100 + generator.randint(-30, 30)
        gateway += elapsed
        clock += 450 * elapsed + generator.randint(-2_000, 2_000)
        assert watch.judge(T0 + clock, gateway, T0 + clock)[0] == "ok"
    assert watch.steps == []
    assert 440 < watch.rate < 460
    # A stall of the gateway for 20 s (the clock moved 450 x 20 s meanwhile) is no step either.
    gateway, clock = gateway + 20_000, clock + 9_000_000
    assert watch.judge(T0 + clock, gateway, T0 + clock)[0] == "ok"
    # Nor three days forward: a replay jumps over idle spans, and at 450x that is elapsed time. Forty years is a wrong clock.
    gateway, clock = gateway + 100, clock + 45_000 + 3 * DAY
    assert watch.judge(T0 + clock, gateway, T0 + clock)[0] == "ok"
    assert watch.judge(T0 + clock + 40 * 365 * DAY, gateway + 100, T0 + clock)[0] == "ahead"
    assert [step.direction for step in watch.steps] == ["ahead"]


def test_steady_clock_ahead_taken_after_a_minute() -> None:
    """A real-time clock set 3 days ahead that then runs on steadily is taken after a minute; the 3 days are offline, never running."""
    normalizer = Normalizer("filler-1", FILLER)
    for second in range(6):
        running(normalizer, second * 1000, second * 1000)
    assert running(normalizer, 6_000, 3 * DAY + 6_000) == [(5_000, 5)]
    for second in range(7, 66):
        assert running(normalizer, second * 1000, 3 * DAY + second * 1000) == []
    assert running(normalizer, 66_000, 3 * DAY + 66_000) == [(3 * DAY + 66_000, 0)]
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("ahead", 3 * DAY), ("forward", 3 * DAY)]
    assert normalizer.watermark_ms - T0 == 3 * DAY + 66_000


def test_outage_forgets_the_clock() -> None:
    """After the connection was down, a PLC restarted with another clock is data resuming, not a step."""
    normalizer = Normalizer("filler-1", FILLER)
    for second in range(6):
        running(normalizer, second * 1000, second * 1000)
    normalizer.offline()
    assert running(normalizer, 9_000, 2 * DAY) == [(2 * DAY, 0)]
    assert normalizer.clock.steps == []
