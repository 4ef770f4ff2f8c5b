"""The replay clock: speed, landing on every change, minimum dwell, idle jumps and the end of the last day."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from valuegate.simulators.replay import ReplayClock, ReplayPacing

UTC = ZoneInfo("UTC")


def _ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


async def _run(clock: ReplayClock) -> list[tuple[float, int]]:
    loop = asyncio.get_running_loop()
    steps: list[tuple[float, int]] = []
    await clock.run(lambda now_ms: steps.append((loop.time(), now_ms)))
    return steps


async def test_lands_on_every_mark_with_dwell() -> None:
    start = _ms(2024, 1, 1, 8)
    marks = [start + 1_000, start + 1_500, start + 1_501, start + 60_000]
    clock = ReplayClock(
        ReplayPacing(speed=1_000_000, min_dwell_ms=30, tick_ms=5),
        start_ms=start, end_ms=start + 120_000, marks=marks, idle=[], zone=UTC,
    )
    steps = await _run(clock)
    instants = [now for _, now in steps]
    assert instants == sorted(instants)
    assert instants[-1] == start + 120_000
    landed = {now: moment for moment, now in steps}
    for mark in marks:
        assert mark in landed
    times = [landed[mark] for mark in [*marks, start + 120_000]]
    for earlier, later in zip(times, times[1:]):
        # Each change is served at least the dwell before the next one.
        assert later - earlier >= 0.029


async def test_speed_sets_recorded_pace() -> None:
    start = _ms(2024, 1, 1, 8)
    clock = ReplayClock(ReplayPacing(speed=100_000, tick_ms=10), start_ms=start, end_ms=start + 20_000_000, marks=[], idle=[], zone=UTC)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await _run(clock)
    # 20,000 recorded seconds at 100,000 per second take 0.2 s of real time.
    assert loop.time() - began == pytest.approx(0.2, abs=0.1)


async def test_idle_span_jumps_to_day_end_then_next_start() -> None:
    zone = ZoneInfo("America/Sao_Paulo")
    window_end = int(datetime(2022, 7, 22, 20, 47, tzinfo=zone).timestamp() * 1000)
    next_start = int(datetime(2022, 7, 26, 12, 0, tzinfo=zone).timestamp() * 1000)
    end = int(datetime(2022, 7, 27, 0, 1, tzinfo=zone).timestamp() * 1000)
    pacing = ReplayPacing(speed=1000, min_dwell_ms=10, tick_ms=2, lead_ms=60_000)
    clock = ReplayClock(
        pacing, start_ms=window_end - 1_000, end_ms=end, marks=[window_end, next_start],
        idle=[(window_end, next_start), (next_start + 1, end)], zone=zone,
    )
    steps = await _run(clock)
    instants = [now for _, now in steps]
    day_close = int(datetime(2022, 7, 23, 0, 1, tzinfo=zone).timestamp() * 1000)
    after_window = instants[instants.index(window_end) + 1 :]
    # From the window end the clock stops at the end of that plant day plus a minute, then one minute before the next start.
    assert after_window[0] == day_close
    assert after_window[1] == next_start - 60_000
    assert next_start in instants
    assert instants[-1] == end
    assert len(steps) < 200


def test_pacing_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="speed=0 must be positive"):
        ReplayPacing(speed=0)
    with pytest.raises(ValueError, match="min_dwell_ms=-1 must be 0 or more"):
        ReplayPacing(min_dwell_ms=-1)
