"""Minute records from spooled state events and counter readings: one canonical record per machine-minute."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import numpy as np

from valuegate.adapters.tagmap import CounterSpec, TagMap
from valuegate.edge import kernels
from valuegate.edge.protocol.canonical import canonicalize
from valuegate.edge.protocol.records import STATES, MinuteRecord, minute_iso

from .spool_rows import Carry, CounterReading, StateEvent

__all__ = ("MINUTE_MS", "MachineInfo", "MinuteSummary", "summarize_minutes", "canonical_record", "record_dict")

MINUTE_MS = kernels.MINUTE_MS
UNPLANNED = STATES.index("unplanned_stop")
PLANNED = STATES.index("planned_stop")
OFFLINE = STATES.index("offline")


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


class MinuteSummary(NamedTuple):
    """Minute records of one chunk, what carries into the next, and the counter increments left out for touching offline time."""

    records: list[tuple[int, str]]
    carry: Carry
    counts_left_out: int
    glitches: int = 0
    """Counter readings rejected as glitches (a jump faster than the counter's max_rate_per_min that no later reading confirmed)."""


def _counter_minutes(
    spec: CounterSpec, carry: list[float] | None, readings: list[CounterReading], start_ms: int, n_minutes: int, offline: kernels.Intervals
) -> tuple[np.ndarray, list[float] | None, int, int]:
    """Return the counter's increments per minute, the last accepted reading to carry forward, the parts left out and the glitches.

    An increment whose gap since the last accepted reading touches offline
    time is left out (see :func:`kernels.gaps_since_accepted`). The carried reading has a
    third element, 1.0 when offline time has passed since it, so that a gap
    that began in an earlier chunk is still seen.
    """
    end_ms = start_ms + n_minutes * MINUTE_MS
    ts = [reading.ts_ms for reading in readings]
    raw = [reading.value for reading in readings]
    offset = 0
    if carry is not None:
        ts.insert(0, int(carry[0]))
        raw.insert(0, carry[1])
        offset = 1
    carried_gap = carry is not None and len(carry) > 2 and bool(carry[2])
    if len(ts) <= offset:
        if carry is None:
            return np.zeros(n_minutes, np.int64), carry, 0, 0
        return np.zeros(n_minutes, np.int64), _carried(carry[0], carry[1], carried_gap, end_ms, offline), 0, 0
    times = np.array(ts, np.int64)
    steps = kernels.normalize_counter(times, np.array(raw, np.float64), bits=spec.bits, signed=spec.signed, max_rate_per_min=spec.max_rate_per_min)
    gaps = kernels.gaps_touching(times, offline, OFFLINE)
    if offset and carried_gap:
        gaps[1] = True
    touched = kernels.gaps_since_accepted(gaps, steps.kind)
    increments = np.where(touched, 0, steps.increments)
    dropped = int(steps.increments[touched].sum())
    per_minute = kernels.bucket_counts(times[offset:], increments[offset:], start_ms, n_minutes)
    accepted = np.flatnonzero(steps.kind != kernels.GLITCH)
    glitches = int(np.count_nonzero(steps.kind[offset:] == kernels.GLITCH))
    last = int(accepted[-1]) if accepted.size else None
    if last is None:
        return per_minute, carry, dropped, glitches
    # Kept from an earlier chunk, the carried reading keeps its gap mark too.
    return per_minute, _carried(ts[last], raw[last], carried_gap and last == 0 and offset == 1, end_ms, offline), dropped, glitches


def _carried(ts_ms: float, value: float, gap_before: bool, end_ms: int, offline: kernels.Intervals) -> list[float]:
    """Return the carried reading ``[ts_ms, value, gap]``; gap is 1.0 when offline time follows it before ``end_ms``."""
    gap = gap_before or bool(kernels.gaps_touching(np.array([int(ts_ms), end_ms], np.int64), offline, OFFLINE)[1])
    return [float(ts_ms), float(value), 1.0 if gap else 0.0]


def summarize_minutes(
    machine: MachineInfo,
    carry: Carry | None,
    states: Sequence[StateEvent],
    counters: Sequence[CounterReading],
    start_ms: int,
    end_ms: int,
) -> MinuteSummary:
    """Compute the minute records of ``[start_ms, end_ms)`` and the state and counters in force at ``end_ms``.

    The records are ``(minute_ms, canonical JSON)`` pairs; minutes spent
    wholly in planned_stop are left out. Time before the first known state
    is offline.
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
    counts_left_out = glitches = 0
    counter_carry = dict(carry.counters) if carry is not None else {}
    for spec in machine.tag_map.counters:
        readings = [reading for reading in counters if reading.tag == spec.tag]
        per_minute, counter_carry[spec.tag], left_out, rejected = _counter_minutes(spec, counter_carry.get(spec.tag), readings, start_ms, n_minutes, intervals)
        counts[spec.kind] += per_minute
        counts_left_out += left_out
        glitches += rejected
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
    return MinuteSummary(records, Carry(int(code), end_state[1], bool(end_state[2]), counter_carry), counts_left_out, glitches)


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
