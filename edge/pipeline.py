"""From spooled events to minute records, plant days, anchor days and vouchers, one machine step at a time.

:meth:`Pipeline.step` runs on the spool thread. It summarizes every minute
that the machine's watermark has closed and closes every plant day those
minutes complete. It stores each anchor's baseline and reporting days once
all machines of its scope have closed them, and issues the vouchers that
the anchor's baseline allows. Each of those writes is one spool transaction,
made only after its inputs are on disk, so a crash between two of them
repeats at most the unfinished step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import structlog

from valuegate.adapters.tagmap import TagMap, CounterSpec
from valuegate.edge import kernels, methodology
from valuegate.edge.protocol.canonical import canonicalize
from valuegate.edge.protocol.contract import Anchor, Contract
from valuegate.edge.protocol.evidence import merkle_root
from valuegate.edge.protocol.records import RECORD_SCHEMA, STATES, MinuteRecord, minute_iso

from .issuer import VoucherSigner, iso_utc
from .outbox import PendingVoucher
from .spool import Carry, CounterReading, Spool, StateEvent

__all__ = ("MachineInfo", "AnchorPlan", "StepResult", "Pipeline", "summarize_minutes", "canonical_record")

MINUTE_MS = kernels.MINUTE_MS
UNPLANNED = STATES.index("unplanned_stop")
PLANNED = STATES.index("planned_stop")

log = structlog.get_logger("valuegate.edge.pipeline")


@dataclass(frozen=True)
class MachineInfo:
    """A machine as the pipeline needs it: its tag map and the time zone of its plant days."""

    id: str
    tag_map: TagMap
    time_zone: str

    def reference(self) -> dict[str, Any]:
        """Return the voucher's ``machines`` entry for this machine."""
        return {
            "id": self.id,
            "mapping_hash": self.tag_map.content_hash(),
            "time_source": self.tag_map.time.source,
            "ideal_cycle_time_s": self.tag_map.ideal_cycle_time_s,
        }


@dataclass(frozen=True)
class AnchorPlan:
    """One contract anchor this gateway measures, with its scope sorted by machine id."""

    contract: Contract
    anchor: Anchor
    machines: tuple[str, ...]
    time_zone: str


@dataclass
class StepResult:
    """Minutes, plant days and vouchers written by one step, and the anchors still waiting for a baseline."""

    minutes: int = 0
    days: list[str] = field(default_factory=list)
    vouchers: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def _counter_minutes(
    spec: CounterSpec, carry: list[float] | None, readings: list[CounterReading], start_ms: int, n_minutes: int
) -> tuple[np.ndarray, list[float] | None]:
    """Return the counter's increments per minute and the last accepted reading to carry forward."""
    ts = [reading.ts_ms for reading in readings]
    raw = [reading.value for reading in readings]
    offset = 0
    if carry is not None:
        ts.insert(0, int(carry[0]))
        raw.insert(0, carry[1])
        offset = 1
    if len(ts) <= offset:
        return np.zeros(n_minutes, np.int64), carry
    steps = kernels.normalize_counter(np.array(ts, np.int64), np.array(raw, np.float64), bits=spec.bits, signed=spec.signed, max_rate_per_min=spec.max_rate_per_min)
    per_minute = kernels.bucket_counts(np.array(ts[offset:], np.int64), steps.increments[offset:], start_ms, n_minutes)
    accepted = np.flatnonzero(steps.kind != kernels.GLITCH)
    last = int(accepted[-1]) if accepted.size else None
    new_carry = [float(ts[last]), float(raw[last])] if last is not None else carry
    return per_minute, new_carry


def summarize_minutes(
    machine: MachineInfo,
    carry: Carry | None,
    states: Sequence[StateEvent],
    counters: Sequence[CounterReading],
    start_ms: int,
    end_ms: int,
) -> tuple[list[tuple[int, str]], Carry]:
    """Compute the minute records of ``[start_ms, end_ms)`` and the state and counters in force at ``end_ms``.

    Returns ``(minute_ms, canonical JSON)`` pairs; minutes spent wholly in
    planned_stop are left out. Time before the first known state is offline.
    """
    n_minutes = (end_ms - start_ms) // MINUTE_MS
    first_code = carry.code if carry is not None else -1
    first_reason = carry.reason if carry is not None else None
    first_uncertain = carry.uncertain if carry is not None else False

    # States: the carried state lasts from start_ms until the first event.
    reasons: dict[str, int] = {}

    def reason_index(code: int, reason: str | None) -> int:
        if code != UNPLANNED or reason is None:
            return -1
        return reasons.setdefault(reason, len(reasons))

    # The carried run starts 1 ms before the chunk so that a stop that began
    # in an earlier chunk is not counted again: the table counts only runs
    # that start inside it.
    carried_ms = start_ms - 1
    ts = np.array([carried_ms, *(event.ts_ms for event in states)], np.int64)
    codes = np.array([first_code, *(event.code for event in states)], np.int8)
    reason_ids = np.array([reason_index(first_code, first_reason), *(reason_index(e.code, e.reason) for e in states)], np.int32)
    intervals = kernels.state_intervals(ts, codes, reason_ids, end_ms, start_ms=carried_ms)
    table = kernels.minute_table(intervals, start_ms, n_minutes, len(reasons))

    # Uncertain time, through the same kernels: code 1 marks an uncertain run, 0 a certain one.
    flags = np.array([int(first_uncertain), *(int(event.uncertain) for event in states)], np.int8)
    flag_runs = kernels.state_intervals(ts, flags, np.full(ts.shape[0], -1, np.int32), end_ms, start_ms=carried_ms)
    uncertain = kernels.minute_table(flag_runs, start_ms, n_minutes, 0)
    uncertain_ms = uncertain.state_ms[:, 1]

    # Counters, per kind of count.
    counts = {"produced": np.zeros(n_minutes, np.int64), "good": np.zeros(n_minutes, np.int64), "reject": np.zeros(n_minutes, np.int64)}
    seen = set()
    counter_carry = dict(carry.counters) if carry is not None else {}
    for spec in machine.tag_map.counters:
        readings = [reading for reading in counters if reading.tag == spec.tag]
        per_minute, counter_carry[spec.tag] = _counter_minutes(spec, counter_carry.get(spec.tag), readings, start_ms, n_minutes)
        counts[spec.kind] += per_minute
        seen.add(spec.kind)
    produced = counts["produced"] if "produced" in seen else counts["good"] + counts["reject"]
    if "reject" in seen:
        reject = counts["reject"]
    elif "produced" in seen and "good" in seen:
        reject = np.maximum(counts["produced"] - counts["good"], 0)
    else:
        reject = np.zeros(n_minutes, np.int64)

    names = list(reasons)
    records: list[tuple[int, str]] = []
    for m in range(n_minutes):
        row = table.state_ms[m]
        if row[PLANNED] == MINUTE_MS:
            continue
        minute_ms = start_ms + m * MINUTE_MS
        record = MinuteRecord(
            machine=machine.id,
            minute=minute_iso(minute_ms),
            **{f"{name}_ms": int(row[code]) for code, name in enumerate(STATES)},
            produced=int(produced[m]),
            reject=int(reject[m]),
            stops=int(table.stops[m]),
            reasons={names[r]: int(table.reason_ms[m, r]) for r in range(len(names)) if table.reason_ms[m, r]},
            uncertain_ms=int(uncertain_ms[m]),
        )
        records.append((minute_ms, canonical_record(record)))

    last = states[-1] if states else None
    end_state = (last.code, last.reason, last.uncertain) if last is not None else (first_code, first_reason, first_uncertain)
    code = end_state[0] if end_state[0] >= 0 else STATES.index("offline")
    return records, Carry(int(code), end_state[1], bool(end_state[2]), counter_carry)


def canonical_record(record: MinuteRecord) -> str:
    """Return the RFC 8785 canonical JSON text of a minute record.

    A record contains only integers and strings. msgspec's sorted encoding
    of those is byte-identical to RFC 8785 unless a key contains a character
    at or above U+D800, where UTF-16 order (RFC 8785) and code point order
    (msgspec) can differ. Reason codes with such characters go through the
    rfc8785 package instead.
    """
    if all(max(map(ord, code), default=0) < 0xD800 for code in record.reasons):
        return _ENCODER.encode(record_dict(record)).decode("utf-8")
    return canonicalize(msgspec.to_builtins(record)).decode("utf-8")


def record_dict(record: MinuteRecord) -> dict[str, Any]:
    return msgspec.structs.asdict(record)


_ENCODER = msgspec.json.Encoder(order="sorted")


def _totals_dict(totals: kernels.Totals) -> dict[str, Any]:
    return {**dataclasses.asdict(totals), "reasons": dict(totals.reasons)}


class Pipeline:
    """Summarizes minutes, closes days and issues vouchers for the machines of one gateway."""

    def __init__(
        self,
        machines: Sequence[MachineInfo],
        contracts: Sequence[Contract],
        signer: VoucherSigner | None,
        *,
        max_minutes_per_step: int = 1440,
    ) -> None:
        self.machines = {machine.id: machine for machine in machines}
        self.signer = signer
        self.max_minutes = max_minutes_per_step
        self.plans: list[AnchorPlan] = []
        for contract in contracts:
            for anchor in contract.anchors:
                scope = tuple(sorted(anchor.scope))
                if all(machine in self.machines for machine in scope):
                    self.plans.append(AnchorPlan(contract, anchor, scope, self.machines[scope[0]].time_zone))
        self._waiting_logged: set[tuple[str, str]] = set()
        # Baseline per (contract, anchor) with the number of baseline days it was built from.
        self._baselines: dict[tuple[str, str], tuple[int, Any]] = {}
        self._leaf_cache: dict[tuple[str, int, int], list[bytes]] = {}

    def step(self, spool: Spool, machine_id: str, *, now_ms: int) -> StepResult:
        """Summarize the closed minutes of one machine (at most ``max_minutes_per_step``) and what they complete.

        Days, anchor days and vouchers that a crash left undone after their
        inputs were stored are picked up again here, even when no new minute
        has closed.
        """
        result = StepResult()
        machine = self.machines[machine_id]
        progress = spool.progress(machine_id)
        start = progress.minutes_done_ms
        if start is None:
            first = spool.first_event_ms(machine_id)
            if first is None:
                return result
            start = first // MINUTE_MS * MINUTE_MS
        end = min(progress.watermark_ms // MINUTE_MS * MINUTE_MS, start + self.max_minutes * MINUTE_MS)
        done = progress.minutes_done_ms
        if end > start:
            states, counters = spool.events(machine_id, start, end)
            records, carry = summarize_minutes(machine, progress.carry, states, counters, start, end)
            spool.store_minutes(machine_id, records, done_ms=end, carry=carry)
            result.minutes = (end - start) // MINUTE_MS
            done = end
        if done is None:
            return result

        self._leaf_cache = {}
        result.days = self._close_days(spool, machine, progress.day_done, done)
        for plan in self.plans:
            if machine_id in plan.machines:
                self._anchor_days(spool, plan, self._unstored_days(spool, plan, machine_id))
                result.vouchers += self._issue(spool, plan, now_ms=now_ms, waiting=result.waiting)
        return result

    # -- plant days --------------------------------------------------------

    def _close_days(self, spool: Spool, machine: MachineInfo, day_done: str | None, end_ms: int) -> list[str]:
        tz = kernels.windows.zone(machine.time_zone)
        if day_done is not None:
            first = dt.date.fromisoformat(day_done) + dt.timedelta(days=1)
        else:
            first_minute = spool.db.execute("SELECT min(minute_ms) FROM minutes WHERE machine = ?", (machine.id,)).fetchone()[0]
            if first_minute is None:
                return []
            first = dt.datetime.fromtimestamp(first_minute / 1000, tz).date()
        last = dt.datetime.fromtimestamp(end_ms / 1000, tz).date()
        if last < first:
            return []
        windows = kernels.plant_day_windows(machine.time_zone, first, last)
        closed: list[str] = []
        ideal = {machine.id: machine.tag_map.ideal_cycle_time_s}
        for label, day_start, day_end in zip(windows.labels, windows.start_ms.tolist(), windows.end_ms.tolist(), strict=True):
            if day_end > end_ms:
                break
            records = [msgspec.json.decode(text, type=MinuteRecord) for text in spool.minute_texts(machine.id, day_start, day_end)]
            totals = kernels.totals_from_records(records, ideal_cycle_time_s=ideal)
            spool.store_day(machine.id, label, day_start, day_end, {"totals": _totals_dict(totals), "records": len(records)})
            closed.append(label)
        return closed

    # -- anchors -----------------------------------------------------------

    def _scope_totals(self, spool: Spool, plan: AnchorPlan, plant_date: str) -> kernels.Totals | None:
        total = kernels.Totals()
        for machine in plan.machines:
            day = spool.day(machine, plant_date)
            if day is None:
                return None
            total = total + kernels.Totals(**day["totals"])
        return total

    def _unstored_days(self, spool: Spool, plan: AnchorPlan, machine_id: str) -> list[str]:
        """Return the machine's closed days in the anchor's periods that have no anchor day yet."""
        anchor = plan.anchor
        rows = spool.db.execute(
            "SELECT plant_date FROM days d WHERE machine = ? AND plant_date >= ? AND plant_date <= ? AND NOT EXISTS "
            "(SELECT 1 FROM anchor_days a WHERE a.contract = ? AND a.anchor = ? AND a.plant_date = d.plant_date) ORDER BY plant_date",
            (machine_id, anchor.baseline.first_date.isoformat(), anchor.reporting.last_date.isoformat(), plan.contract.id, anchor.id),
        ).fetchall()
        return [row[0] for row in rows]

    def _anchor_days(self, spool: Spool, plan: AnchorPlan, dates: list[str]) -> None:
        anchor = plan.anchor
        for plant_date in dates:
            day = dt.date.fromisoformat(plant_date)
            if anchor.baseline.first_date <= day <= anchor.baseline.last_date:
                role = "baseline"
            elif anchor.reporting.first_date <= day <= anchor.reporting.last_date:
                role = "reporting"
            else:
                continue
            totals = self._scope_totals(spool, plan, plant_date)
            if totals is None:
                continue
            body: dict[str, Any] = {"totals": _totals_dict(totals)}
            if role == "reporting":
                window = kernels.plant_day_windows(plan.time_zone, day, day)
                start_ms, end_ms = int(window.start_ms[0]), int(window.end_ms[0])
                leaves = [leaf for machine in plan.machines for leaf in self._leaves(spool, machine, start_ms, end_ms)]
                evidence = {"merkle_root": merkle_root(leaves), "records": len(leaves), "record_schema": RECORD_SCHEMA}
                body.update(start_ms=start_ms, end_ms=end_ms, evidence=evidence)
            spool.store_anchor_day(plan.contract.id, anchor.id, plant_date, role, body)

    def _leaves(self, spool: Spool, machine: str, start_ms: int, end_ms: int) -> list[bytes]:
        """Return the Merkle leaf hashes of a machine's records in a window, computed once per step.

        The spool stores each record as its RFC 8785 canonical text, so the
        leaf is hashed from those bytes without parsing them again. The
        result equals :func:`valuegate.edge.protocol.evidence.leaf_hash`.
        """
        key = (machine, start_ms, end_ms)
        if key not in self._leaf_cache:
            self._leaf_cache[key] = [hashlib.sha256(b"\x00" + text.encode("utf-8")).digest() for text in spool.minute_texts(machine, start_ms, end_ms)]
        return self._leaf_cache[key]

    def baseline_spans(self) -> list[tuple[str, int, int]]:
        """Return ``(machine, start_ms, end_ms)`` of every anchor's baseline period, whose records the cloud rebuilds baselines from."""
        spans = set()
        for plan in self.plans:
            windows = kernels.plant_day_windows(plan.time_zone, plan.anchor.baseline.first_date, plan.anchor.baseline.last_date)
            spans.update((machine, int(windows.start_ms[0]), int(windows.end_ms[-1])) for machine in plan.machines)
        return sorted(spans)

    def _baseline(self, spool: Spool, plan: AnchorPlan) -> Any:
        """Return the anchor's baseline, rebuilt only when a baseline day was added since the last build."""
        key = (plan.contract.id, plan.anchor.id)
        count = spool.anchor_day_count(*key, "baseline")
        cached = self._baselines.get(key)
        if cached is not None and cached[0] == count:
            return cached[1]
        baseline_days = [(date, kernels.kpis(kernels.Totals(**body["totals"]))) for date, body, _ in spool.anchor_days(*key, "baseline")]
        baseline = methodology.build_baseline(plan.anchor, baseline_days)
        self._baselines[key] = (count, baseline)
        return baseline

    def _issue(self, spool: Spool, plan: AnchorPlan, *, now_ms: int, waiting: list[str]) -> list[dict[str, Any]]:
        anchor = plan.anchor
        # Read only the days still waiting for a voucher, so that each step costs the same however long the contract has run.
        pending = [(date, body) for date, body, _ in spool.anchor_days(plan.contract.id, anchor.id, "reporting", unissued=True)]
        if not pending or self.signer is None:
            return []
        try:
            baseline = self._baseline(spool, plan)
        except methodology.InsufficientBaseline as exc:
            waiting.append(anchor.id)
            key = (plan.contract.id, anchor.id)
            if key not in self._waiting_logged:
                self._waiting_logged.add(key)
                log.warning("vouchers_waiting_for_baseline", contract=plan.contract.id, anchor=anchor.id, covered=exc.covered, required=exc.required)
            return []

        items: list[PendingVoucher] = []
        for plant_date, body in pending:
            day_kpis = kernels.kpis(kernels.Totals(**body["totals"]))
            reporting, delta, sufficiency = methodology.value_for_day(anchor, baseline, plant_date, day_kpis)
            claims_body = {
                "contract": plan.contract.id,
                "anchor": anchor.id,
                "machines": [self.machines[machine].reference() for machine in plan.machines],
                "period": {"start": iso_utc(body["start_ms"]), "end": iso_utc(body["end_ms"]), "plant_date": plant_date, "time_zone": plan.time_zone},
                "metric": msgspec.to_builtins(methodology.metric_claim(anchor.metric)),
                "reporting": msgspec.to_builtins(reporting),
                "baseline": msgspec.to_builtins(baseline.claim()),
                "delta": msgspec.to_builtins(delta),
                "sufficiency": msgspec.to_builtins(sufficiency),
                "evidence": body["evidence"],
            }
            items.append(PendingVoucher(plan.contract.id, anchor.id, plant_date, plan.machines, body["start_ms"], body["end_ms"], claims_body))
        return self.signer.issue(spool, items, now_ms=now_ms)
