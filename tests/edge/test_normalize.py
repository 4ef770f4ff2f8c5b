"""Normalizing samples: PLC timestamps, missed transitions, watermarks and counter readings."""

from __future__ import annotations

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge.normalize import Normalizer

# 2026-01-01T00:00:00Z: PLC times in these tests are offsets from it, inside the plausible range.
T0 = 1_767_225_600_000
FILLER = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
MAZAK = load_tag_map(shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml")


def poll(poll_ms: int, *, state: int, since: int, clock: int, containers: int, changes: int, reason: int = 0, status: str = "good") -> list[Sample]:
    values = {"state": state, "reason": reason, "state_since": T0 + since, "clock": T0 + clock, "containers": containers, "state_changes": changes}
    return [Sample("filler", tag, poll_ms, "gateway", poll_ms, value, value, status if tag == "state" else "good") for tag, value in values.items()]


def test_modbus_change_stamped_with_state_since() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    # The first poll starts the data at its clock: a state_since before it lies in time when the PLC was not read.
    first = normalizer.feed(poll(9_000_000, state=1, since=1_000, clock=5_000, containers=10, changes=4))
    assert [(e.ts_ms - T0, e.code) for e in first.states] == [(5_000, 0)]
    assert first.watermark_ms - T0 == 5_000
    second = normalizer.feed(poll(9_001_000, state=2, since=5_600, clock=6_000, containers=12, changes=5, reason=17))
    assert [(e.ts_ms - T0, e.code, e.reason, e.missed) for e in second.states] == [(5_600, 3, "17", 0)]
    assert second.watermark_ms - T0 == 6_000
    assert [(c.ts_ms - T0, c.value) for c in second.counters] == [(6_000, 12.0)]


def test_modbus_no_reason_code_stores_none() -> None:
    """The filler map's no_reason: [0]: a stop reading reason 0 is stored without a reason, one reading 17 with it."""
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(9_000_000, state=1, since=1_000, clock=5_000, containers=10, changes=4))
    stop = normalizer.feed(poll(9_001_000, state=2, since=5_600, clock=6_000, containers=12, changes=5, reason=0))
    assert [(e.code, e.reason) for e in stop.states] == [(3, None)]
    coded = normalizer.feed(poll(9_002_000, state=2, since=6_500, clock=7_000, containers=12, changes=6, reason=17))
    assert [(e.code, e.reason) for e in coded.states] == [(3, "17")]


def test_modbus_seq_jump_counts_missed_transitions() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=0, changes=65534))
    # Three transitions between polls (65534 -> 1 wraps at 2**16): running -> ... -> running again.
    batch = normalizer.feed(poll(0, state=1, since=2_900, clock=3_000, containers=0, changes=1))
    assert normalizer.missed_total == 2
    assert [(e.ts_ms - T0, e.code, e.uncertain, e.missed) for e in batch.states] == [(2_900, 0, True, 2)]


def outage() -> list[Sample]:
    return [Sample("filler", tag, T0, "gateway", T0, None, None, "bad", "disconnected")
            for tag in ("state", "reason", "state_since", "clock", "containers", "state_changes")]


def test_seq_fall_after_outage_resets() -> None:
    """A PLC restart sets state_seq back to 0 behind an outage: no missed transitions, one reset."""
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=44))
    normalizer.feed(outage())
    batch = normalizer.feed(poll(0, state=1, since=9_000, clock=9_500, containers=0, changes=0))
    assert normalizer.missed_total == 0
    assert normalizer.seq_resets == 1
    # The state the PLC reports since 9,000 starts at 9,500, the clock of the poll that reads it after the outage.
    assert [(e.ts_ms - T0, e.code, e.uncertain, e.missed) for e in batch.states] == [(9_500, 0, False, 0)]
    # It counts on from the new level: one transition per poll again, nothing missed.
    normalizer.feed(poll(0, state=2, since=9_800, clock=10_000, containers=0, changes=1))
    assert (normalizer.missed_total, normalizer.seq_resets) == (0, 1)


def test_seq_fall_after_offline_resets() -> None:
    """Transitions during an outage fall in offline time, so a fall after one is never counted as a wrap."""
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=65534))
    normalizer.offline()
    normalizer.feed(poll(0, state=1, since=2_500, clock=3_000, containers=5, changes=1))
    assert (normalizer.missed_total, normalizer.seq_resets) == (0, 1)


def test_seq_fall_too_far_resets() -> None:
    """Without an outage, 40000 -> 5 in one second would be 25541 transitions: more than the plausible rate allows."""
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=40_000))
    batch = normalizer.feed(poll(0, state=0, since=2_900, clock=3_000, containers=5, changes=5))
    assert (normalizer.missed_total, normalizer.seq_resets) == (0, 1)
    assert [(e.code, e.uncertain, e.missed) for e in batch.states] == [(2, False, 0)]


def test_seq_wrap_within_rate_counts_missed() -> None:
    """65500 -> 20 in 2 s is a wrap of 56 transitions (within 60 per second): 55 missed, no reset."""
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=65_500))
    normalizer.feed(poll(0, state=1, since=3_900, clock=4_000, containers=5, changes=20))
    assert (normalizer.missed_total, normalizer.seq_resets) == (55, 0)
    # The same fall in 0.5 s needs 112 per second: a reset.
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=65_500))
    normalizer.feed(poll(0, state=1, since=2_400, clock=2_500, containers=5, changes=20))
    assert (normalizer.missed_total, normalizer.seq_resets) == (0, 1)


def test_modbus_unchanged_state_emits_nothing_and_counter_only_on_change() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    batch = normalizer.feed(poll(0, state=1, since=1_000, clock=3_000, containers=5, changes=1))
    assert batch.states == []
    assert batch.counters == []
    assert batch.watermark_ms - T0 == 3_000


def test_state_after_restart_starts_with_the_first_poll() -> None:
    """The agent was down from 10,000 on; the PLC reports running since 4,000, but it was not read until the poll at 12,000."""
    normalizer = Normalizer("filler-1", FILLER, watermark_ms=T0 + 10_000)
    resumed = normalizer.resume()
    assert [(e.ts_ms - T0, e.code) for e in resumed.states] == [(10_000, 5)]
    batch = normalizer.feed(poll(0, state=1, since=4_000, clock=12_000, containers=5, changes=1))
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(12_000, 0)]
    # Once data flows, a change is stamped with its state_since between two polls.
    later = normalizer.feed(poll(0, state=2, since=12_400, clock=13_000, containers=5, changes=2))
    assert [(e.ts_ms - T0, e.code) for e in later.states] == [(12_400, 3)]


def test_bad_state_input_is_offline_never_running() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    batch = normalizer.feed(poll(0, state=1, since=1_000, clock=3_000, containers=5, changes=1, status="bad"))
    # Offline from the last poll that read the state, 2,000.
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(2_000, 5)]
    # Readable again: the state starts with the poll that reads it, not at its older state_since.
    back = normalizer.feed(poll(0, state=1, since=1_000, clock=4_000, containers=5, changes=1))
    assert [(e.ts_ms - T0, e.code) for e in back.states] == [(4_000, 0)]


def opcua(tag: str, ts_ms: int, value: object) -> Sample:
    return Sample("mazak", tag, T0 + ts_ms, "plc", T0 + ts_ms + 500, value, value, "good")


def running_mazak() -> Normalizer:
    """Return a Mazak normalizer that has read the current values (clock written at 2,000) and a clock tick at 3,000: running since 3,000."""
    normalizer = Normalizer("mazak-1", MAZAK)
    normalizer.feed([opcua("clock", 2_000, T0 + 2_000), opcua("alarm_code", 900, 0), opcua("mode", 1_000, "AUTOMATIC"), opcua("execution", 1_200, "ACTIVE")])
    assert [(e.ts_ms - T0, e.code) for e in normalizer.feed([opcua("clock", 3_000, T0 + 3_000)]).states] == [(3_000, 0)]
    return normalizer


def test_opcua_source_timestamps_and_clock_watermark() -> None:
    normalizer = Normalizer("mazak-1", MAZAK)
    # A new subscription reports each variable's current value, the clock's too, which may be older than the subscription.
    first = normalizer.feed([opcua("clock", 500, T0 + 500), opcua("alarm_code", 100, 0), opcua("mode", 200, "AUTOMATIC"), opcua("execution", 300, "READY")])
    assert first.states == []
    # The clock's next tick was read as it happened: data starts there.
    tick = normalizer.feed([opcua("clock", 900, T0 + 900)])
    assert [(e.ts_ms - T0, e.code) for e in tick.states] == [(900, 1)]
    batch = normalizer.feed(
        [
            opcua("clock", 3_000, T0 + 3_000),
            opcua("execution", 1_200, "ACTIVE"),
            opcua("part_count", 2_500, 7),
            opcua("execution", 2_000, "FEED_HOLD"),
        ]
    )
    assert [(e.ts_ms - T0, e.code, e.reason) for e in batch.states] == [(1_200, 0, None), (2_000, 3, "FEED_HOLD")]
    assert [(c.ts_ms - T0, c.value) for c in batch.counters] == [(2_500, 7.0)]
    assert batch.watermark_ms - T0 == 3_000


def test_outage_batch_goes_offline_at_watermark() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    outage = [Sample("filler", tag, T0 + 9_999, "gateway", T0 + 9_999, None, None, "bad", "disconnected") for tag in ("state", "reason", "state_since", "clock", "containers", "state_changes")]
    batch = normalizer.feed(outage)
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(2_000, 5)]
    assert batch.watermark_ms - T0 == 2_000
    # Back online: the state starts again with the poll that reads it. The PLC's state_since (1,000) shows the state did not
    # change, but the outage from 2,000 to 8,000 stays offline, as all time without data does.
    back = normalizer.feed(poll(0, state=1, since=1_000, clock=8_000, containers=5, changes=1))
    assert [(e.ts_ms - T0, e.code) for e in back.states] == [(8_000, 0)]


def test_implausible_clock_is_never_plc_time() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    # The clock read with the wrong word order: 2**62 ms, with good status as a stand-in device would send it.
    wrong = [sample if sample.tag != "clock" else Sample("filler", "clock", 0, "gateway", 0, 1 << 62, 1 << 62, "good")
             for sample in poll(0, state=2, since=2_500, clock=0, containers=6, changes=2)]
    batch = normalizer.feed(wrong)
    assert batch.states == []
    assert batch.counters == []
    assert batch.watermark_ms - T0 == 2_000
    assert normalizer.implausible_total == 1
    count, detail = normalizer.implausible["clock"]
    assert count == 1
    assert detail.startswith("implausible_time: value 4611686018427387904 ms")
    assert "byte/word order" in detail

    # The adapter's bad sample for the same fault counts too, and the clock coming back resumes at state_since.
    marked = [sample if sample.tag != "clock" else Sample("filler", "clock", 0, "gateway", 0, None, [1, 2, 3, 4], "bad", detail)
              for sample in poll(0, state=2, since=2_500, clock=0, containers=6, changes=2)]
    assert normalizer.feed(marked).states == []
    assert normalizer.implausible["clock"][0] == 2
    back = normalizer.feed(poll(0, state=2, since=2_500, clock=4_000, containers=6, changes=2))
    assert [(e.ts_ms - T0, e.code) for e in back.states] == [(2_500, 3)]
    assert back.watermark_ms - T0 == 4_000


def test_implausible_state_since_uses_poll_clock() -> None:
    normalizer = Normalizer("filler-1", FILLER)
    normalizer.feed(poll(0, state=1, since=1_000, clock=2_000, containers=5, changes=1))
    polled = [sample if sample.tag != "state_since" else Sample("filler", "state_since", 0, "gateway", 0, 1_000, 1_000, "good")
              for sample in poll(0, state=2, since=0, clock=3_000, containers=5, changes=2)]
    batch = normalizer.feed(polled)
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(3_000, 3)]
    assert normalizer.implausible["state_since"][1].startswith("implausible_time: value 1000 ms")


def test_opcua_implausible_source_timestamp_is_offline() -> None:
    normalizer = running_mazak()
    # A SourceTimestamp of 1601-01-01, the OPC UA minimum a PLC without a set clock may send.
    unset = Sample("mazak", "execution", -11_644_473_600_000, "plc", T0 + 3_500, "STOPPED", "STOPPED", "good")
    batch = normalizer.feed([unset])
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(3_000, 5)]
    assert batch.watermark_ms - T0 == 3_000
    assert normalizer.implausible["execution"][1].startswith("implausible_time: SourceTimestamp -11644473600000 ms")


def test_opcua_outage_keeps_plc_watermark() -> None:
    normalizer = running_mazak()
    # The gateway's clock runs years ahead of a replayed recording: the outage starts at the PLC watermark.
    gateway_now = T0 + 5 * 365 * 86_400_000
    outage = [Sample("mazak", tag, gateway_now, "gateway", gateway_now, None, None, "bad", "disconnected")
              for tag in ("clock", "alarm_code", "mode", "execution")]
    batch = normalizer.feed(outage)
    assert [(e.ts_ms - T0, e.code) for e in batch.states] == [(3_000, 5)]
    assert batch.watermark_ms - T0 == 3_000
    assert normalizer.implausible_total == 0


def test_opcua_state_after_outage_waits_for_the_clock() -> None:
    """After a reconnect the state stays offline until a clock tick after the clock's current value shows when reading resumed."""
    normalizer = running_mazak()
    outage = [Sample("mazak", tag, T0 + 3_400, "gateway", T0 + 3_400, None, None, "bad", "disconnected") for tag in ("clock", "alarm_code", "mode", "execution")]
    assert [(e.ts_ms - T0, e.code) for e in normalizer.feed(outage).states] == [(3_000, 5)]
    # The first values after the reconnect: ACTIVE since 1,200, as before the outage, but no clock yet.
    early = normalizer.feed([opcua("alarm_code", 900, 0), opcua("mode", 1_000, "AUTOMATIC"), opcua("execution", 1_200, "ACTIVE")])
    assert early.states == []
    # The clock's current value, written at 8,000, may be from before the reconnect; its next tick at 9,000 is not.
    current = normalizer.feed([opcua("clock", 8_000, T0 + 8_000)])
    assert current.states == []
    later = normalizer.feed([opcua("clock", 9_000, T0 + 9_000)])
    assert [(e.ts_ms - T0, e.code) for e in later.states] == [(9_000, 0)]


def test_opcua_live_bad_ends_at_good() -> None:
    """A Bad value the server reports while connected is no gap in reading: the next Good value starts at its own SourceTimestamp."""
    normalizer = running_mazak()
    bad = Sample("mazak", "execution", T0 + 4_000, "plc", T0 + 4_100, None, "ACTIVE", "bad", "BadCommunicationError")
    assert [(e.ts_ms - T0, e.code) for e in normalizer.feed([bad]).states] == [(4_000, 5)]
    good = normalizer.feed([opcua("execution", 6_500, "ACTIVE")])
    assert [(e.ts_ms - T0, e.code) for e in good.states] == [(6_500, 0)]


def test_tick_moves_gateway_time_only() -> None:
    hurco = load_tag_map(shipped_tag_map_dir() / "demo" / "hurco-mtconnect-opcua.yaml")
    assert hurco.time.source == "gateway"
    normalizer = Normalizer("hurco-1", hurco)
    assert normalizer.tick(T0 + 1_000).watermark_ms is None, "no state yet, so no time to move on"
    normalizer.feed([Sample("hurco", "execution", T0 + 900, "plc", T0 + 1_000, "ACTIVE", "ACTIVE", "good")])
    assert normalizer.tick(T0 + 5_000).watermark_ms == T0 + 5_000
    assert normalizer.tick(T0 + 4_000).watermark_ms is None, "never backwards"
    # On the PLC's time only the clock tag moves the machine's time.
    mazak = Normalizer("mazak-1", MAZAK)
    mazak.feed([opcua("clock", 3_000, T0 + 3_000), opcua("execution", 1_200, "ACTIVE")])
    assert mazak.tick(T0 + 9_000).watermark_ms is None


def test_opcua_without_clock_waits_for_a_change(tmp_path) -> None:  # noqa: ANN001
    """Without a clock nothing shows when reading resumed: the machine stays offline until a value changes after the current values."""
    import yaml

    document = yaml.safe_load((shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml").read_text(encoding="utf-8"))
    document["tags"] = [tag for tag in document["tags"] if tag["name"] != "clock"]
    del document["time"]["clock"]
    (tmp_path / "no-clock.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    normalizer = Normalizer("mazak-1", load_tag_map(tmp_path / "no-clock.yaml"))
    # ACTIVE since 1,200, as the current values report it, possibly long before the agent started.
    current = normalizer.feed([opcua("alarm_code", 900, 0), opcua("mode", 1_000, "AUTOMATIC"), opcua("execution", 1_200, "ACTIVE")])
    assert current.states == []
    # The first change read as it happened starts the data.
    change = normalizer.feed([opcua("execution", 7_000, "FEED_HOLD")])
    assert [(e.ts_ms - T0, e.code, e.reason) for e in change.states] == [(7_000, 3, "FEED_HOLD")]


def test_gateway_time_outage_starts_at_the_last_answer() -> None:
    """On gateway time a silent link is noticed late: the outage starts where the watermark stopped, at the server's last response."""
    hurco = load_tag_map(shipped_tag_map_dir() / "demo" / "hurco-mtconnect-opcua.yaml")
    normalizer = Normalizer("hurco-1", hurco)
    normalizer.feed([Sample("hurco", "execution", T0 + 900, "plc", T0 + 1_000, "ACTIVE", "ACTIVE", "good")])
    normalizer.tick(T0 + 5_000)  # the agent ticks only up to the server's last response
    outage = [Sample("hurco", tag, T0 + 15_000, "gateway", T0 + 15_000, None, None, "bad", "disconnected") for tag in ("execution", "part_count")]
    assert [(e.ts_ms - T0, e.code) for e in normalizer.feed(outage).states] == [(5_000, 5)]


def test_counter_values_before_data_resumes_wait_for_it() -> None:
    """A subscription reports a counter with the time of its last change, possibly hours ago: it is stamped when data resumes."""
    normalizer = Normalizer("mazak-1", MAZAK)
    first = normalizer.feed([opcua("clock", 2_000, T0 + 2_000), opcua("part_count", -7_200_000, 41), opcua("alarm_code", 900, 0),
                             opcua("mode", 1_000, "AUTOMATIC"), opcua("execution", 1_200, "ACTIVE")])
    assert (first.states, first.counters) == ([], [])
    tick = normalizer.feed([opcua("clock", 3_000, T0 + 3_000)])
    assert [(c.ts_ms - T0, c.value) for c in tick.counters] == [(3_000, 41.0)]
    assert [(e.ts_ms - T0, e.code) for e in tick.states] == [(3_000, 0)]
