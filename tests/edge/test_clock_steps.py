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
HOUR = 3_600_000
MINUTE = 60_000


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


def test_years_ahead_before_rate_is_measured() -> None:
    """100 ms after the first poll, before any rate is known, the clock reads 40 years ahead: held, not taken."""
    normalizer = Normalizer("filler-1", FILLER)
    assert running(normalizer, T0, 0) == [(0, 0)]
    assert running(normalizer, T0 + 100, 40 * 365 * DAY + 100) == [(0, 5)]
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]
    assert normalizer.watermark_ms == T0
    assert running(normalizer, T0 + 200, 200) == [(200, 0)]


def test_outage_forgets_the_clock() -> None:
    """After the connection was down, a PLC back with another clock near the gateway's is data resuming, not a step."""
    normalizer = Normalizer("filler-1", FILLER)
    for second in range(6):
        running(normalizer, T0 + second * 1000, second * 1000)
    normalizer.offline()
    # The PLC restarted with its clock 2 h ahead of where it was, within a day of the gateway's clock (9 s).
    assert running(normalizer, T0 + 9_000, 2 * HOUR) == [(2 * HOUR, 0)]
    assert normalizer.clock.steps == []


def restarted(watermark: int) -> Normalizer:
    """Return a normalizer started as the agent starts it, on a spool that contains data up to ``watermark`` (a PLC offset)."""
    normalizer = Normalizer("filler-1", FILLER, watermark_ms=T0 + watermark)
    assert [(event.ts_ms - T0, event.code) for event in normalizer.resume().states] == [(watermark, 5)]
    return normalizer


def test_restart_holds_clock_years_ahead() -> None:
    """At a start the clock 40 years ahead of the spool and the gateway is held, also past the minute that takes a steady clock."""
    normalizer = restarted(10 * MINUTE)
    forty_years = 40 * 365 * DAY
    for second in range(90):
        gateway = 11 * MINUTE + second * 1000
        assert running(normalizer, T0 + gateway, forty_years + gateway) == []
        assert normalizer.watermark_ms - T0 == 10 * MINUTE
    assert [(step.direction, step.expected_ms - T0) for step in normalizer.clock.steps] == [("ahead", 11 * MINUTE)]
    assert normalizer.clock.steps[0].step_ms == forty_years
    # The clock is set right: data resumes at its time, and the offline gap is only what the gateway saw pass.
    assert running(normalizer, T0 + 13 * MINUTE, 13 * MINUTE) == [(13 * MINUTE, 0)]
    assert normalizer.watermark_ms - T0 == 13 * MINUTE
    assert len(normalizer.clock.steps) == 1
    assert running(normalizer, T0 + 13 * MINUTE + 1_000, 13 * MINUTE + 1_000) == []


def test_restart_holds_clock_days_ahead() -> None:
    """Three days ahead at a start: held, because nothing shows that three days passed; while running it would be taken after a minute."""
    normalizer = restarted(10 * MINUTE)
    for second in range(120):
        gateway = 11 * MINUTE + second * 1000
        assert running(normalizer, T0 + gateway, 3 * DAY + gateway) == []
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]
    assert normalizer.watermark_ms - T0 == 10 * MINUTE


def test_restart_takes_clock_hours_ahead() -> None:
    """A PLC clock 8 h ahead of the gateway (a PLC set to local time) is less than a day ahead: data resumes at its time."""
    normalizer = restarted(8 * HOUR)
    assert running(normalizer, T0 + 5 * MINUTE, 8 * HOUR + 5 * MINUTE) == [(8 * HOUR + 5 * MINUTE, 0)]
    assert normalizer.clock.steps == []


def test_restart_clock_behind_the_spool() -> None:
    """A clock 5 min behind what the spool contains at a start: a back step, and offline until the clock passes the spool's time."""
    normalizer = restarted(10 * MINUTE)
    assert running(normalizer, T0 + 11 * MINUTE, 5 * MINUTE) == []
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("back", -5 * MINUTE)]
    for offset in range(6 * MINUTE, 10 * MINUTE, 30_000):
        assert running(normalizer, T0 + 6 * MINUTE + offset, offset) == []
        assert normalizer.watermark_ms - T0 == 10 * MINUTE
    assert running(normalizer, T0 + 16 * MINUTE, 10 * MINUTE + 500) == [(10 * MINUTE + 500, 0)]


def test_restart_clock_seconds_behind() -> None:
    """20 s behind at a start, as after an NTP correction: no step reported, and no data before the spool's time either."""
    normalizer = restarted(10 * MINUTE)
    assert running(normalizer, T0 + 10 * MINUTE, 10 * MINUTE - 20_000) == []
    assert normalizer.clock.steps == []
    assert running(normalizer, T0 + 10 * MINUTE + 20_000, 10 * MINUTE) == [(10 * MINUTE, 0)]
