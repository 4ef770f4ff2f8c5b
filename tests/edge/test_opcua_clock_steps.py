"""An OPC UA server's clock set forward or back: SourceTimestamps judged like the Modbus clock register.

The unit tests feed notifications whose gateway receive time (``received``)
and SourceTimestamp are offsets from T0 in milliseconds, worked out by hand.
The last test steps the SourceTimestamps of a real asyncua server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from asyncua import ua

from tests.adapters.servers import UaServer, tag_map
from tests.edge.test_normalize import MAZAK, T0
from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.adapters.samples import Sample
from valuegate.edge.normalize import Normalizer
from valuegate.edge.protocol.records import STATE_CODES
from valuegate.services import free_port

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
FORTY_YEARS = 40 * 365 * DAY
RUNNING, OFFLINE, UNPLANNED = STATE_CODES["running"], STATE_CODES["offline"], STATE_CODES["unplanned_stop"]


def note(tag: str, stamp: int, value: object, received: int) -> Sample:
    return Sample("mazak", tag, T0 + stamp, "plc", T0 + received, value, value, "good")


def events(normalizer: Normalizer, samples: list[Sample]) -> list[tuple[int, int]]:
    """Feed one notification message; return its state events as (PLC offset, code)."""
    return [(event.ts_ms - T0, event.code) for event in normalizer.feed(samples).states]


def tick(normalizer: Normalizer, received: int, stamp: int) -> list[tuple[int, int]]:
    """Feed a message with one clock value stamped ``stamp`` and return its state events."""
    return events(normalizer, [note("clock", stamp, T0 + stamp, received)])


def running_mazak(*, until: int = 5_000, rate: int = 1) -> Normalizer:
    """Return a Mazak normalizer running since the clock tick at 500, ticked every 500 ms of gateway time up to ``until``.

    With ``rate`` the server's clock runs that many times faster than the gateway's, as a simulator replaying a recording does.
    """
    normalizer = Normalizer("mazak-1", MAZAK)
    current = [note("clock", 0, T0, 0), note("alarm_code", -100, 0, 0), note("mode", -100, "AUTOMATIC", 0),
               note("execution", -100, "ACTIVE", 0)]
    assert events(normalizer, current) == []
    assert tick(normalizer, 500, rate * 500) == [(rate * 500, RUNNING)]
    for received in range(1_000, until + 1, 500):
        assert tick(normalizer, received, rate * received) == []
    return normalizer


def test_forward_step_is_offline_then_new_clock() -> None:
    normalizer = running_mazak()
    # 500 ms later by the gateway the clock stamps 2 h more: offline from 5,500 (where it should be) to the new time.
    batch = normalizer.feed([note("part_count", 2 * HOUR + 5_400, 3, 5_500), note("clock", 2 * HOUR + 5_500, 0, 5_500)])
    assert [(event.ts_ms - T0, event.code) for event in batch.states] == [(5_500, OFFLINE), (2 * HOUR + 5_500, RUNNING)]
    assert [(reading.ts_ms - T0, reading.value) for reading in batch.counters] == [(2 * HOUR + 5_500, 3.0)]
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("forward", 2 * HOUR)]
    assert normalizer.watermark_ms - T0 == 2 * HOUR + 5_500
    assert tick(normalizer, 6_000, 2 * HOUR + 6_000) == []


def test_years_ahead_held_until_set_right() -> None:
    normalizer = running_mazak()
    assert tick(normalizer, 5_500, FORTY_YEARS + 5_500) == [(5_000, OFFLINE)]
    # A feed hold and a part stamped on the wrong clock: kept until the clock is right, never stored at their times.
    held = normalizer.feed([note("execution", FORTY_YEARS + 5_600, "FEED_HOLD", 5_700), note("part_count", FORTY_YEARS + 5_700, 7, 5_700)])
    assert (held.states, held.counters) == ([], [])
    for received in range(6_000, 8_000, 500):
        assert tick(normalizer, received, FORTY_YEARS + received) == []
        assert normalizer.watermark_ms - T0 == 5_000
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]

    back = normalizer.feed([note("clock", 8_000, 0, 8_000)])
    assert [(event.ts_ms - T0, event.code, event.reason) for event in back.states] == [(8_000, UNPLANNED, "FEED_HOLD")]
    assert [(reading.ts_ms - T0, reading.value) for reading in back.counters] == [(8_000, 7.0)]
    assert normalizer.watermark_ms - T0 == 8_000
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]


def test_value_ahead_waits_for_clock() -> None:
    """A change stamped 40 years ahead arrives before any clock reading: it waits, and the clock's next reading in line starts it."""
    normalizer = running_mazak()
    assert events(normalizer, [note("execution", FORTY_YEARS + 5_200, "FEED_HOLD", 5_200)]) == []
    assert normalizer.watermark_ms - T0 == 5_000
    assert tick(normalizer, 5_500, 5_500) == [(5_500, UNPLANNED)]
    assert normalizer.watermark_ms - T0 == 5_500
    assert normalizer.clock.steps == []


def test_queued_wrong_clock_after_set_right() -> None:
    """One message queues the clock's last wrong value and its first right one: the wrong one never moves the watermark."""
    normalizer = running_mazak()
    assert tick(normalizer, 5_500, FORTY_YEARS + 5_500) == [(5_000, OFFLINE)]
    queued = [note("clock", FORTY_YEARS + 6_000, 0, 6_500), note("clock", 6_500, 0, 6_500)]
    assert events(normalizer, queued) == [(6_500, RUNNING)]
    assert normalizer.watermark_ms - T0 == 6_500


def test_backward_step_offline_until_watermark() -> None:
    normalizer = running_mazak(until=60_000)
    # Set back 2 min: offline from the watermark (60,000), and a change stamped on the set-back clock is not stored.
    assert tick(normalizer, 60_500, -59_500) == [(60_000, OFFLINE)]
    assert [(step.direction, step.step_ms) for step in normalizer.clock.steps] == [("back", -120_000)]
    assert events(normalizer, [note("execution", -59_200, "FEED_HOLD", 60_800)]) == []
    for received in range(61_000, 120_000, 10_000):
        assert tick(normalizer, received, received - 120_000) == []
        assert normalizer.watermark_ms - T0 == 60_000
    # The clock passes the watermark: data resumes at its time with the state the held change set.
    assert tick(normalizer, 180_500, 60_500) == [(60_500, UNPLANNED)]
    assert len(normalizer.clock.steps) == 1


def test_replay_idle_jump_is_no_step() -> None:
    """A recording replayed at 3600x jumps over an idle span of 8 h in one tick: elapsed time, not a step. Forty years is a wrong clock."""
    normalizer = running_mazak(rate=3_600)
    stamp = 3_600 * 5_000 + 8 * HOUR
    assert tick(normalizer, 5_100, stamp) == []
    assert normalizer.watermark_ms - T0 == stamp
    assert tick(normalizer, 5_200, stamp + FORTY_YEARS) == [(stamp, OFFLINE)]
    assert [step.direction for step in normalizer.clock.steps] == ["ahead"]


def test_value_older_than_watermark_moves_up() -> None:
    """A change stamped before the clock's last tick arrives late: it starts at the watermark, not inside closed time."""
    normalizer = running_mazak()
    assert events(normalizer, [note("execution", 3_000, "FEED_HOLD", 5_100)]) == [(5_000, UNPLANNED)]


def test_restart_holds_clock_years_ahead() -> None:
    """At a start, a clock 40 years ahead of the spool and the gateway is held back.

    The current values wait until the clock is set right.
    """
    normalizer = Normalizer("mazak-1", MAZAK, watermark_ms=T0 + 10 * MINUTE)
    assert [(event.ts_ms - T0, event.code) for event in normalizer.resume().states] == [(10 * MINUTE, OFFLINE)]
    now = 11 * MINUTE
    current = [note("clock", FORTY_YEARS + now, 0, now), note("alarm_code", FORTY_YEARS, 0, now), note("mode", FORTY_YEARS, "AUTOMATIC", now),
               note("execution", FORTY_YEARS, "ACTIVE", now), note("part_count", FORTY_YEARS, 41, now)]
    assert events(normalizer, current) == []
    for received in range(now + 500, now + 2 * MINUTE, 500):
        assert tick(normalizer, received, FORTY_YEARS + received) == []
    assert normalizer.watermark_ms - T0 == 10 * MINUTE
    assert [(step.direction, step.expected_ms - T0) for step in normalizer.clock.steps] == [("ahead", now)]

    back = normalizer.feed([note("clock", 14 * MINUTE, 0, 14 * MINUTE)])
    assert [(event.ts_ms - T0, event.code) for event in back.states] == [(14 * MINUTE, RUNNING)]
    assert [(reading.ts_ms - T0, reading.value) for reading in back.counters] == [(14 * MINUTE, 41.0)]
    assert normalizer.watermark_ms - T0 == 14 * MINUTE


async def test_real_server_clock_steps(tmp_path: Path) -> None:
    """An asyncua server whose clock variable and state carry SourceTimestamps 2 h ahead, then 40 years ahead, then 90 s behind."""
    offset_ms = 0

    def stamped() -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=offset_ms)

    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32), "clock": ua.Variant(stamped(), ua.VariantType.DateTime)}) as server:

        async def write(name: str, value: object, variant_type: ua.VariantType) -> None:
            source = stamped()
            data_value = ua.DataValue(ua.Variant(value, variant_type), StatusCode=ua.StatusCode(ua.StatusCodes.Good), SourceTimestamp=source)
            await server.server.write_attribute_value(server.nodes[name].nodeid, data_value)

        async def ticking() -> None:
            # The PLC's clock variable, written every 100 ms with its own time as value and SourceTimestamp.
            while True:
                await write("clock", stamped(), ua.VariantType.DateTime)
                await asyncio.sleep(0.1)

        ticker = asyncio.create_task(ticking())
        tags = tag_map(tmp_path, "stepped", "opcua", [{"name": "state", "node": "nsu=urn:valuegate:test:line;s=Line/state"},
                                                      {"name": "clock", "node": "nsu=urn:valuegate:test:line;s=Line/clock", "role": "clock"}],
                       time={"source": "plc", "clock": "clock"})
        normalizer = Normalizer("line-1", tags)
        seen: list[tuple[int, int]] = []
        config = OpcUaDeviceConfig(id="line-1", endpoint=server.endpoint, tag_map="unused", publishing_interval_ms=50, sampling_ms=0,
                                   timeout_ms=2000, reconnect_min_ms=50, reconnect_max_ms=200)
        try:
            async with open_device(config, tags) as client:
                stream = client.stream()

                async def read_for(seconds: float) -> None:
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        batch = await asyncio.wait_for(anext(stream), 5)
                        seen.extend((event.ts_ms, event.code) for event in normalizer.feed(batch).states)

                await read_for(2.0)  # running, and a rate learned over more than a second of ticks
                assert [code for _, code in seen] == [RUNNING]
                before_step = normalizer.watermark_ms

                offset_ms = 2 * HOUR
                await read_for(1.0)
                assert [code for _, code in seen] == [RUNNING, OFFLINE, RUNNING]
                assert before_step <= seen[1][0] <= before_step + 500
                assert seen[2][0] >= before_step + 2 * HOUR
                shifted = normalizer.watermark_ms

                offset_ms = 2 * HOUR + FORTY_YEARS
                await write("state", 0, ua.VariantType.Int32)  # a stop stamped on the wrong clock
                await read_for(1.5)
                assert [code for _, code in seen][3:] == [OFFLINE]
                assert shifted <= normalizer.watermark_ms <= shifted + 500

                offset_ms = 2 * HOUR
                await read_for(0.5)
                assert [code for _, code in seen][4:] == [STATE_CODES["planned_stop"]]
                assert seen[4][0] >= shifted + 1_500

                held_at = normalizer.watermark_ms
                offset_ms = 2 * HOUR - 90_000
                await read_for(1.0)
                assert [code for _, code in seen][5:] == [OFFLINE]
                assert seen[5][0] == held_at
                assert normalizer.watermark_ms == held_at
                offset_ms = 2 * HOUR
                await read_for(0.5)
                assert [code for _, code in seen][6:] == [STATE_CODES["planned_stop"]]
                assert seen[6][0] > held_at
                await stream.aclose()
        finally:
            ticker.cancel()

    assert [step.direction for step in normalizer.clock.steps] == ["forward", "ahead", "back"]
    assert 2 * HOUR - 1_000 <= normalizer.clock.steps[0].step_ms <= 2 * HOUR + 1_000
    assert 0.9 <= normalizer.clock.rate <= 1.2  # a real-time clock; jitter of the receive times moves the learned rate a little
