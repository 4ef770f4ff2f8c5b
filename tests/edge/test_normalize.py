"""Normalizing samples: PLC timestamps, missed transitions, watermarks and counter readings."""

from __future__ import annotations

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge.normalize import Normalizer

FILLER = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
MAZAK = load_tag_map(shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml")


def poll(poll_ms: int, *, state: int, since: int, clock: int, containers: int, changes: int, reason: int = 0, status: str = "good") -> list[Sample]:
    values = {"state": state, "reason": reason, "state_since": since, "clock": clock, "containers": containers, "state_changes": changes}
    return [Sample("filler", tag, poll_ms, "gateway", poll_ms, value, value, status if tag == "state" else "good") for tag, value in values.items()]


def test_modbus_change_stamped_with_state_since() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    first = normalizer.feed(poll(9_000_000, state=1, since=1_000, clock=5_000, containers=10, changes=4))
    assert [(e.ts_ms, e.code) for e in first.states] == [(1_000, 0)]
    assert first.watermark_ms == 5_000
    second = normalizer.feed(poll(9_001_000, state=2, since=5_600, clock=6_000, containers=12, changes=5, reason=17))
    assert [(e.ts_ms, e.code, e.reason, e.missed) for e in second.states] == [(5_600, 3, "17", 0)]
    assert second.watermark_ms == 6_000
    assert [(c.ts_ms, c.value) for c in second.counters] == [(6_000, 12.0)]


def test_modbus_seq_jump_counts_missed_transitions() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=0, changes=65534))
    # Three transitions between polls (65534 -> 1 wraps at 2**16): running -> ... -> running again.
    batch = normalizer.feed(poll(0, state=1, since=2_900, clock=3_000, containers=0, changes=1))
    assert normalizer.missed_total == 2
    assert [(e.ts_ms, e.code, e.uncertain, e.missed) for e in batch.states] == [(2_900, 0, True, 2)]


def test_modbus_unchanged_state_emits_nothing_and_counter_only_on_change() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    batch = normalizer.feed(poll(0, state=1, since=1_000, clock=3_000, containers=5, changes=1))
    assert batch.states == []
    assert batch.counters == []
    assert batch.watermark_ms == 3_000


def test_state_since_before_last_event_is_clamped() -> None:
    normalizer = Normalizer("filler-1", FILLER, watermark_ms=10_000)
    resumed = normalizer.resume()
    assert [(e.ts_ms, e.code) for e in resumed.states] == [(10_000, 5)]
    batch = normalizer.feed(poll(0, state=1, since=4_000, clock=12_000, containers=5, changes=1))
    assert [(e.ts_ms, e.code) for e in batch.states] == [(10_000, 0)]


def test_bad_state_input_is_offline_never_running() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    batch = normalizer.feed(poll(0, state=1, since=1_000, clock=3_000, containers=5, changes=1, status="bad"))
    assert [(e.ts_ms, e.code) for e in batch.states] == [(1_000, 5)]


def opcua(tag: str, ts_ms: int, value: object) -> Sample:
    return Sample("mazak", tag, ts_ms, "plc", ts_ms + 500, value, value, "good")


def test_opcua_source_timestamps_and_clock_watermark() -> None:
    normalizer = Normalizer("mazak-1", MAZAK)
    batch = normalizer.feed(
        [
            opcua("clock", 3_000, 3_000),
            opcua("alarm_code", 900, 0),
            opcua("mode", 1_000, "AUTOMATIC"),
            opcua("execution", 1_200, "ACTIVE"),
            opcua("part_count", 2_500, 7),
            opcua("execution", 2_000, "FEED_HOLD"),
        ]
    )
    assert [(e.ts_ms, e.code, e.reason) for e in batch.states] == [(900, 5, None), (1_200, 0, None), (2_000, 3, "FEED_HOLD")]
    assert [(c.ts_ms, c.value) for c in batch.counters] == [(2_500, 7.0)]
    assert batch.watermark_ms == 3_000


def test_outage_batch_goes_offline_at_watermark() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    outage = [Sample("filler", tag, 9_999, "gateway", 9_999, None, None, "bad", "disconnected") for tag in ("state", "reason", "state_since", "clock", "containers", "state_changes")]
    batch = normalizer.feed(outage)
    assert [(e.ts_ms, e.code) for e in batch.states] == [(2_000, 5)]
    assert batch.watermark_ms == 2_000
    # Back online: the state starts again at the PLC's state_since, never before the outage began.
    back = normalizer.feed(poll(0, state=1, since=1_000, clock=8_000, containers=5, changes=1))
    assert [(e.ts_ms, e.code) for e in back.states] == [(2_000, 0)]
