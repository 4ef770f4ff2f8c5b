"""Minute records from spooled events, against a slow per-event reference, and day closing through vouchers."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import msgspec
import pytest
import structlog
import structlog.testing

from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge import keys
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.minutes import MachineInfo, summarize_minutes
from valuegate.edge.pipeline import Pipeline
from valuegate.edge.protocol.contract import parse_contract
from valuegate.edge.protocol.evidence import evidence_digest
from valuegate.edge.protocol.records import STATES
from valuegate.edge.protocol.voucher import verify_voucher, voucher_hash
from valuegate.edge.spool import Spool
from valuegate.edge.spool_rows import Carry, CounterReading, MachineBatch, StateEvent

FILLER = load_tag_map(shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml")
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def reference_minutes(carry: Carry | None, states: list[StateEvent], counters: list[CounterReading], start: int, end: int) -> dict[int, dict]:
    """Walk the events one by one and split each state run at minute edges; count increments modulo 2**16.

    A stop begins where an unplanned-stop run starts whose state or reason
    differs from the run before it; a stop carried in from before ``start``
    did not begin here.
    """
    code, reason, uncertain = (carry.code, carry.reason, carry.uncertain) if carry else (5, None, False)
    runs = []  # (start, end, state, reason, uncertain, begins_stop)
    at, previous = start, (code, reason) if carry else None
    begins = False
    for event in states:
        runs.append((at, event.ts_ms, code, reason, uncertain, begins))
        begins = event.code == 3 and (event.code, event.reason) != (code, reason)
        at, code, reason, uncertain = event.ts_ms, event.code, event.reason, event.uncertain
    runs.append((at, end, code, reason, uncertain, begins))
    del previous
    minutes: dict[int, dict] = {}
    for minute in range(start, end, 60_000):
        row = {f"{name}_ms": 0 for name in STATES} | {"produced": 0, "reject": 0, "stops": 0, "reasons": {}, "uncertain_ms": 0}
        for run_start, run_end, state, why, doubt, begins_stop in runs:
            overlap = min(run_end, minute + 60_000) - max(run_start, minute)
            if overlap > 0:
                row[f"{STATES[state]}_ms"] += overlap
                if doubt:
                    row["uncertain_ms"] += overlap
                if state == 3 and why is not None:
                    row["reasons"][why] = row["reasons"].get(why, 0) + overlap
            if begins_stop and minute <= run_start < minute + 60_000 and run_end > run_start:
                row["stops"] += 1
        minutes[minute] = row
    last = carry.counters.get("containers") if carry else None
    for reading in counters:
        if last is not None and not _touches_offline(runs, last[0], reading.ts_ms):
            minutes[reading.ts_ms // 60_000 * 60_000]["produced"] += int(reading.value - last[1]) % 65536
        last = [reading.ts_ms, reading.value]
    return {minute: row for minute, row in minutes.items() if row["planned_stop_ms"] < 60_000}


def _touches_offline(runs: list[tuple], after_ms: float, until_ms: float) -> bool:
    """Whether an offline run (state 5) shares time with ``(after_ms, until_ms]``."""
    return any(state == 5 and run_end > run_start and run_start < until_ms and run_end > after_ms for run_start, run_end, state, *_ in runs)


def reference_runs(carry: Carry | None, states: list[StateEvent], start: int, end: int) -> list[tuple]:
    runs, at, code = [], start, carry.code if carry else 5
    for event in states:
        runs.append((at, event.ts_ms, code))
        at, code = event.ts_ms, event.code
    runs.append((at, end, code))
    return runs


def random_events(rng: random.Random, start: int, end: int) -> tuple[list[StateEvent], list[CounterReading]]:
    states, counters = [], []
    at, count = start, 1000
    while True:
        at += rng.randint(1, 400_000)
        if at >= end:
            break
        code = rng.choice([0, 0, 0, 1, 2, 3, 3, 4, 5])
        states.append(StateEvent(at, code, rng.choice(["17", "21", None]) if code == 3 else None, rng.random() < 0.2))
    for ts in range(start + 7_000, end, 20_000):
        count = (count + rng.randint(0, 15)) % 65536
        counters.append(CounterReading(ts, "containers", count))
    return states, counters


@pytest.mark.parametrize("seed", range(6))
def test_minutes_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    start, end = T0, T0 + 180 * 60_000
    states, counters = random_events(rng, start + 1, end)
    carry = Carry(rng.choice([0, 2, 3]), "17", False, {"containers": [start - 5_000, 995.0]}) if seed % 2 else None
    machine = MachineInfo("filler-1", FILLER, "UTC")
    records, next_carry, *_ = summarize_minutes(machine, carry, states, counters, start, end)
    expected = reference_minutes(carry, states, counters, start, end)
    got = {minute: json.loads(text) for minute, text in records}
    assert sorted(got) == sorted(expected)
    for minute, row in expected.items():
        record = got[minute]
        for key, value in row.items():
            assert record[key] == value, (minute, key)
    if states:
        expected_code = states[-1].code
    elif carry is not None:
        expected_code = carry.code
    else:
        expected_code = 5
    assert next_carry.code == expected_code
    gap_after = _touches_offline(reference_runs(carry, states, start, end), counters[-1].ts_ms, end)
    assert next_carry.counters["containers"] == [float(counters[-1].ts_ms), counters[-1].value, 1.0 if gap_after else 0.0]


def test_counter_wrap_and_planned_minutes() -> None:
    machine = MachineInfo("filler-1", FILLER, "UTC")
    start = T0
    states = [StateEvent(start + 30_000, 2), StateEvent(start + 180_000, 0)]
    counters = [CounterReading(start + 10_000, "containers", 65530), CounterReading(start + 200_000, "containers", 4)]
    records, *_ = summarize_minutes(machine, Carry(0, None, False, {}), states, counters, start, start + 240_000)
    minutes = [minute for minute, _ in records]
    assert minutes == [start, start + 180_000]  # minutes 1 and 2 were planned stop throughout
    first, last = (json.loads(text) for _, text in records)
    assert first["running_ms"] == 30_000
    assert first["planned_stop_ms"] == 30_000
    assert last["produced"] == 10  # 65530 -> 4 wraps at 2**16



def test_parts_counted_across_offline_time_are_left_out() -> None:
    # A PLC restart: offline from 60 s to 120 s; the counter reads 110 before and 150 when it is back.
    machine = MachineInfo("filler-1", FILLER, "UTC")
    start = T0
    states = [StateEvent(start + 60_000, 5), StateEvent(start + 120_000, 0)]
    counters = [CounterReading(start + 30_000, "containers", 110), CounterReading(start + 120_000, "containers", 150), CounterReading(start + 150_000, "containers", 155)]
    summary = summarize_minutes(machine, Carry(0, None, False, {"containers": [float(start), 100.0]}), states, counters, start, start + 180_000)
    produced = [json.loads(text)["produced"] for _, text in summary.records]
    assert produced == [10, 0, 5]
    assert summary.counts_left_out == 40
    assert summary.carry.counters["containers"] == [float(start + 150_000), 155.0, 0.0]
    assert summary.glitches == 0


def test_increment_after_glitch_spanning_offline_left_out() -> None:
    # Offline from 60 s to 120 s, then a glitch reading; the next reading counts from 110, across the offline time.
    machine = MachineInfo("filler-1", FILLER, "UTC")
    start = T0
    states = [StateEvent(start + 60_000, 5), StateEvent(start + 120_000, 0)]
    counters = [
        CounterReading(start + 30_000, "containers", 110),
        CounterReading(start + 130_000, "containers", 40_000),
        CounterReading(start + 150_000, "containers", 150),
        CounterReading(start + 170_000, "containers", 155),
    ]
    summary = summarize_minutes(machine, Carry(0, None, False, {"containers": [float(start), 100.0]}), states, counters, start, start + 180_000)
    produced = [json.loads(text)["produced"] for _, text in summary.records]
    assert produced == [10, 0, 5]
    assert summary.counts_left_out == 40
    assert summary.carry.counters["containers"] == [float(start + 170_000), 155.0, 0.0]
    # The jump to 40,000 in 10 s exceeds the filler's 60 a minute: one reading rejected as a glitch.
    assert summary.glitches == 1


def test_glitch_after_carried_offline_gap_left_out() -> None:
    # The offline time lies in an earlier chunk; a glitch comes first in this one, then a reading that spans the gap.
    machine = MachineInfo("filler-1", FILLER, "UTC")
    start = T0
    carry = Carry(0, None, False, {"containers": [float(start - 90_000), 100.0, 1.0]})
    counters = [CounterReading(start + 10_000, "containers", 50_000), CounterReading(start + 20_000, "containers", 120)]
    summary = summarize_minutes(machine, carry, [], counters, start, start + 60_000)
    assert [json.loads(text)["produced"] for _, text in summary.records] == [0]
    assert summary.counts_left_out == 20


def test_offline_gap_from_an_earlier_chunk_is_carried() -> None:
    # Chunk 1 ends after an offline stretch that began after the last reading; chunk 2's first increment spans it.
    machine = MachineInfo("filler-1", FILLER, "UTC")
    start = T0
    first = summarize_minutes(
        machine, Carry(0, None, False, {"containers": [float(start), 0.0]}),
        [StateEvent(start + 60_000, 5), StateEvent(start + 90_000, 0)], [CounterReading(start + 30_000, "containers", 10)],
        start, start + 120_000,
    )  # fmt: skip
    assert [json.loads(text)["produced"] for _, text in first.records] == [10, 0]
    assert first.carry.counters["containers"] == [float(start + 30_000), 10.0, 1.0]
    second = summarize_minutes(
        machine, first.carry, [], [CounterReading(start + 130_000, "containers", 40), CounterReading(start + 150_000, "containers", 45)],
        start + 120_000, start + 180_000,
    )  # fmt: skip
    assert [json.loads(text)["produced"] for _, text in second.records] == [5]
    assert second.counts_left_out == 30
    assert second.carry.counters["containers"] == [float(start + 150_000), 45.0, 0.0]

CONTRACT = {
    "schema": "valuegate/contract/v1",
    "id": "c-1",
    "tenant": "acme",
    "customer": "Acme",
    "start": "2026-01-01",
    "end": "2026-12-31",
    "anchors": [
        {
            "id": "oee-filler",
            "scope": ["filler-1"],
            "metric": "oee_points",
            "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-02", "min_days": 2},
            "reporting": {"first_date": "2026-01-03", "last_date": "2026-01-31"},
            "uncertainty": {"resamples": 200, "block_days": 1, "seed": 3},
        }
    ],
}


def test_days_close_and_vouchers_chain(tmp_path: Path) -> None:
    keys.create_key(tmp_path / "keys")
    spool = Spool(tmp_path / "spool.db")
    signer = VoucherSigner(tmp_path / "keys", tenant="acme", site="s", gateway="gw-1")
    pipeline = Pipeline([MachineInfo("filler-1", FILLER, "UTC")], [parse_contract(CONTRACT)], signer)
    rng = random.Random(11)
    states, counters = random_events(rng, T0, T0 + 5 * 86_400_000)
    spool.append([MachineBatch("filler-1", [StateEvent(T0, 0), *states], counters, T0 + 5 * 86_400_000 + 5_000)])

    issued, days = [], []
    while (result := pipeline.step(spool, "filler-1", now_ms=T0)).minutes:
        issued += result.vouchers
        days += result.days
    assert days == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]
    assert [v["credentialSubject"]["period"]["plant_date"] for v in issued] == ["2026-01-03", "2026-01-04", "2026-01-05"]
    assert [v["credentialSubject"]["seq"] for v in issued] == [1, 2, 3]
    assert issued[0]["credentialSubject"]["prev"] is None
    assert issued[1]["credentialSubject"]["prev"] == voucher_hash(issued[0])
    assert issued[2]["credentialSubject"]["prev"] == voucher_hash(issued[1])
    for voucher in issued:
        assert verify_voucher(voucher).ok
        claims = voucher["credentialSubject"]
        day_start = int(dt.datetime.fromisoformat(claims["period"]["start"].replace("Z", "+00:00")).timestamp() * 1000)
        records = spool.minute_records("filler-1", day_start, day_start + 86_400_000)
        assert claims["evidence"]["merkle_root"] == evidence_digest(records)[0]
        assert claims["evidence"]["records"] == len(records)
        assert claims["machines"][0]["mapping_hash"] == FILLER.content_hash()

    # A second pass issues nothing new.
    assert pipeline.step(spool, "filler-1", now_ms=T0).vouchers == []


def test_baseline_rebuilt_only_when_days_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from valuegate.edge import methodology

    builds = []
    build = methodology.build_baseline
    monkeypatch.setattr(methodology, "build_baseline", lambda anchor, days: builds.append(len(days)) or build(anchor, days))
    keys.create_key(tmp_path / "keys")
    spool = Spool(tmp_path / "spool.db")
    signer = VoucherSigner(tmp_path / "keys", tenant="acme", site="s", gateway="gw-1")
    pipeline = Pipeline([MachineInfo("filler-1", FILLER, "UTC")], [parse_contract(CONTRACT)], signer)
    states, counters = random_events(random.Random(5), T0, T0 + 6 * 86_400_000)
    spool.append([MachineBatch("filler-1", [StateEvent(T0, 0), *states], counters, T0 + 6 * 86_400_000 + 5_000)])

    issued = []
    while (result := pipeline.step(spool, "filler-1", now_ms=T0)).minutes:
        issued += result.vouchers
    assert len(issued) == 4
    assert builds == [2]
    assert len({json.dumps(v["credentialSubject"]["baseline"], sort_keys=True) for v in issued}) == 1

    # A baseline day that arrives later (a third day in the table) makes the next voucher use a new baseline.
    body = spool.anchor_days("c-1", "oee-filler", "baseline")[0][1]
    spool.store_anchor_day("c-1", "oee-filler", "2025-12-31", "baseline", body)
    spool.append([MachineBatch("filler-1", [], [], T0 + 7 * 86_400_000 + 5_000)])
    while (result := pipeline.step(spool, "filler-1", now_ms=T0)).minutes:
        issued += result.vouchers
    assert len(issued) == 5
    assert builds == [2, 3]


def test_vouchers_wait_for_baseline(tmp_path: Path) -> None:
    keys.create_key(tmp_path / "keys")
    spool = Spool(tmp_path / "spool.db")
    signer = VoucherSigner(tmp_path / "keys", tenant="acme", site="s", gateway="gw-1")
    contract = json.loads(json.dumps(CONTRACT))
    contract["anchors"][0]["baseline"]["min_days"] = 2
    pipeline = Pipeline([MachineInfo("filler-1", FILLER, "UTC")], [parse_contract(contract)], signer)
    # Day 1 has no data at all, so the baseline has one covered day of the two it needs.
    start = T0 + 86_400_000
    spool.append([MachineBatch("filler-1", [StateEvent(start, 0)], [], start + 3 * 86_400_000 + 1)])
    waited = []
    with structlog.testing.capture_logs() as logs:
        while (result := pipeline.step(spool, "filler-1", now_ms=T0)).minutes:
            assert result.vouchers == []
            waited += result.waiting
    assert "oee-filler" in waited
    assert len(spool.anchor_days("c-1", "oee-filler", "reporting")) == 2
    # One warning while the covered days stay the same, naming each day left out and why.
    warnings = [entry for entry in logs if entry["event"] == "vouchers_waiting_for_baseline"]
    assert len(warnings) == 1
    assert (warnings[0]["covered"], warnings[0]["required"]) == (0, 2)
    assert warnings[0]["excluded_days"] == {"2026-01-02": ["oee_points is undefined: undefined because quality is undefined"]}
    assert "Collect more baseline days or lower baseline.min_days" in warnings[0]["reason"]


@pytest.mark.parametrize("reason", ["17", "E-12 \u00fc\u6545\u969c", "tab\tquote\"back\\", "\ue000", "\U0001f527", "\x7f\x00"])
def test_canonical_record_matches_rfc8785(reason: str) -> None:
    from valuegate.edge.minutes import canonical_record
    from valuegate.edge.protocol.canonical import canonicalize
    from valuegate.edge.protocol.records import MinuteRecord

    record = MinuteRecord("m\u00e9-1", "2026-01-01T00:00:00Z", 1, 2, 3, 4, 5, 59_985, 2**40, 0, 1, {reason: 4, "a": 1, "Z": 2}, 7)
    assert canonical_record(record) == canonicalize(msgspec.to_builtins(record)).decode("utf-8")


def test_two_machine_anchor_waits_for_both(tmp_path: Path) -> None:
    keys.create_key(tmp_path / "keys")
    spool = Spool(tmp_path / "spool.db")
    signer = VoucherSigner(tmp_path / "keys", tenant="acme", site="s", gateway="gw-1")
    contract = json.loads(json.dumps(CONTRACT))
    contract["anchors"][0]["scope"] = ["filler-2", "filler-1"]
    contract["anchors"][0]["baseline"]["min_days"] = 1
    machines = [MachineInfo("filler-1", FILLER, "UTC"), MachineInfo("filler-2", FILLER, "UTC")]
    pipeline = Pipeline(machines, [parse_contract(contract)], signer)
    rng = random.Random(5)
    end = T0 + 3 * 86_400_000 + 1
    for machine in ("filler-1", "filler-2"):
        states, counters = random_events(rng, T0, end - 1)
        spool.append([MachineBatch(machine, [StateEvent(T0, 0), *states], counters, end if machine == "filler-1" else T0 + 86_400_000)])

    def run(machine: str) -> list[dict]:
        issued = []
        while (result := pipeline.step(spool, machine, now_ms=T0)).minutes:
            issued += result.vouchers
        return issued

    assert run("filler-1") == []  # filler-2 has not closed a reporting day yet
    spool.append([MachineBatch("filler-2", [], [], end)])
    issued = run("filler-2")
    assert [v["credentialSubject"]["period"]["plant_date"] for v in issued] == ["2026-01-03"]
    claims = issued[0]["credentialSubject"]
    assert [m["id"] for m in claims["machines"]] == ["filler-1", "filler-2"]
    day = T0 + 2 * 86_400_000
    records = spool.minute_records("filler-1", day, day + 86_400_000) + spool.minute_records("filler-2", day, day + 86_400_000)
    assert claims["evidence"]["merkle_root"] == evidence_digest(records)[0]
    assert claims["evidence"]["records"] == len(records)
    # Planned busy time sums both machines' records.
    busy_ms = sum(r["running_ms"] + r["idle_ms"] + r["unplanned_stop_ms"] + r["changeover_ms"] for r in records)
    assert claims["reporting"]["planned_busy_min"] == pytest.approx(busy_ms / 60_000, abs=1e-6)


def _kpis_by_hand(records: list[dict], ideal_cycle_time_s: float):
    """KPIs of one machine day from its raw records, without the spool's stored day totals."""
    from valuegate.edge import kernels
    from valuegate.edge.protocol.records import MinuteRecord

    parsed = [msgspec.convert(record, MinuteRecord) for record in records]
    return kernels.kpis(kernels.totals_from_records(parsed, ideal_cycle_time_s={"filler-1": ideal_cycle_time_s}))


def test_cycle_time_change_revalues_baseline_and_day(tmp_path: Path) -> None:
    """After a tag-map change of the ideal cycle time, a voucher measures baseline and day with the cycle time it names."""
    from valuegate.edge import methodology

    keys.create_key(tmp_path / "keys")
    spool = Spool(tmp_path / "spool.db")
    signer = VoucherSigner(tmp_path / "keys", tenant="acme", site="s", gateway="gw-1")
    contract = parse_contract(CONTRACT)
    states, counters = random_events(random.Random(23), T0, T0 + 5 * 86_400_000)
    split = T0 + 4 * 86_400_000
    spool.append([MachineBatch("filler-1", [StateEvent(T0, 0), *[s for s in states if s.ts_ms < split]], [c for c in counters if c.ts_ms < split], split + 5_000)])

    def run(pipeline: Pipeline) -> list[dict]:
        issued = []
        while (result := pipeline.step(spool, "filler-1", now_ms=T0)).minutes:
            issued += result.vouchers
        return issued

    before = run(Pipeline([MachineInfo("filler-1", FILLER, "UTC")], [contract], signer))
    assert [v["credentialSubject"]["period"]["plant_date"] for v in before] == ["2026-01-03", "2026-01-04"]

    # The engineer corrects the cycle time and restarts the agent before day 5 closes; day 4 closed with the old one.
    faster = msgspec.structs.replace(FILLER, ideal_cycle_time_s=2.0)
    spool.append([MachineBatch("filler-1", [s for s in states if s.ts_ms >= split], [c for c in counters if c.ts_ms >= split], T0 + 5 * 86_400_000 + 5_000)])
    after = run(Pipeline([MachineInfo("filler-1", faster, "UTC")], [contract], signer))
    assert [v["credentialSubject"]["period"]["plant_date"] for v in after] == ["2026-01-05"]
    claims = after[0]["credentialSubject"]
    assert claims["machines"][0]["ideal_cycle_time_s"] == 2.0

    def day_records(day: int) -> list[dict]:
        start = T0 + day * 86_400_000
        return [msgspec.to_builtins(record) for record in spool.minute_records("filler-1", start, start + 86_400_000)]

    anchor = contract.anchors[0]
    expected = methodology.build_baseline(anchor, [(f"2026-01-0{day + 1}", _kpis_by_hand(day_records(day), 2.0)) for day in (0, 1)])
    assert claims["baseline"] == msgspec.to_builtins(expected.claim())
    old = methodology.build_baseline(anchor, [(f"2026-01-0{day + 1}", _kpis_by_hand(day_records(day), 2.7)) for day in (0, 1)])
    assert before[0]["credentialSubject"]["baseline"] == msgspec.to_builtins(old.claim())
    assert expected.value != pytest.approx(old.value, abs=1e-6)
    reporting, delta, _ = methodology.value_for_day(anchor, expected, "2026-01-05", _kpis_by_hand(day_records(4), 2.0))
    assert claims["reporting"] == msgspec.to_builtins(reporting)
    assert claims["delta"] == msgspec.to_builtins(delta)
    # The cloud's reproduction, which values every day at the voucher's cycle times, reaches the same baseline.
    from valuegate.cloud.recompute import baseline_from_records
    from valuegate.edge.protocol.records import MinuteRecord
    from valuegate.edge.protocol.voucher import Claims

    parsed = msgspec.convert(claims, Claims)
    records = [msgspec.convert(record, MinuteRecord) for day in (0, 1) for record in day_records(day)]
    assert baseline_from_records(anchor, parsed, records).claim() == expected.claim()

    # The offline verifier recomputes all three vouchers from one bundle, each baseline at the voucher's own cycle time.
    from valuegate.cloud.bundle import GatewayKey, write_bundle
    from valuegate.verify import verify_bundle

    exported = [msgspec.to_builtins(record) for record in spool.minute_records("filler-1", T0, T0 + 5 * 86_400_000)]
    public = keys.export_public(tmp_path / "keys")["public_key_multibase"]
    path = write_bundle(tmp_path / "bundle.zip", contract=CONTRACT, vouchers=before + after, keys=[GatewayKey("gw-1", public)], documents=[],
                        created_at="2026-02-01T00:00:00Z", records={"filler-1": exported})  # fmt: skip
    report = verify_bundle(path)
    assert report.ok, [(v.subject, v.reasons) for v in report.verdicts if not v.ok]
    assert report.evidence.recomputed == 3
