"""ISO 22400-2 KPIs from summed times and counts; roll-ups sum first and divide last."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from valuegate.edge.protocol.records import STATES, MinuteRecord

__all__ = ("Totals", "Kpis", "ideal_us_per_item", "totals_from_records", "totals_from_columns", "kpis")

_MS_PER_MIN = 60_000.0
UNASSIGNED = "unassigned"


def ideal_us_per_item(ideal_cycle_time_s: float | None) -> int | None:
    """Return the ideal cycle time in whole microseconds, so that sums stay exact integers."""
    if ideal_cycle_time_s is None:
        return None
    if not ideal_cycle_time_s > 0:
        raise ValueError(f"ideal cycle time {ideal_cycle_time_s!r} s must be positive; leave it unset when unknown")
    return round(ideal_cycle_time_s * 1_000_000)


@dataclass(frozen=True)
class Totals:
    """Summable times (ms) and counts of one window; add two with ``+`` to roll up machines, shifts or days.

    ``ideal_us`` is produced items times their ideal cycle time in
    microseconds. ``produced_without_ideal`` counts items of machines whose
    ideal cycle time is unknown, and any such item leaves effectiveness undefined.
    """

    running_ms: int = 0
    idle_ms: int = 0
    planned_stop_ms: int = 0
    unplanned_stop_ms: int = 0
    changeover_ms: int = 0
    offline_ms: int = 0
    produced: int = 0
    reject: int = 0
    stops: int = 0
    ideal_us: int = 0
    produced_without_ideal: int = 0
    uncertain_ms: int = 0
    reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def ideal_ms(self) -> float:
        return self.ideal_us / 1000

    @property
    def state_ms(self) -> tuple[int, ...]:
        return tuple(getattr(self, f"{name}_ms") for name in STATES)

    def __add__(self, other: Totals) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        reasons = dict(self.reasons)
        for code, ms in other.reasons.items():
            reasons[code] = reasons.get(code, 0) + ms
        summed = {name: getattr(self, name) + getattr(other, name) for name in _SUMMED}
        return Totals(**summed, reasons=reasons)


_SUMMED = tuple(name for name in Totals.__dataclass_fields__ if name != "reasons")


def totals_from_records(records: Iterable[MinuteRecord], *, ideal_cycle_time_s: Mapping[str, float | None]) -> Totals:
    """Sum per-minute records of any machines and minutes into one :class:`Totals`.

    ``ideal_cycle_time_s`` maps every machine in ``records`` to its ideal cycle
    time in seconds per item, or None when unknown.
    """
    ideal = {machine: ideal_us_per_item(seconds) for machine, seconds in ideal_cycle_time_s.items()}
    sums = dict.fromkeys(_SUMMED, 0)
    reasons: dict[str, int] = {}
    for record in records:
        if record.machine not in ideal:
            known = ", ".join(sorted(ideal)) or "none"
            raise KeyError(f"machine {record.machine!r} has no ideal cycle time entry; pass None for an unknown one (known: {known})")
        for name in STATES:
            sums[f"{name}_ms"] += getattr(record, f"{name}_ms")
        sums["produced"] += record.produced
        sums["reject"] += record.reject
        sums["stops"] += record.stops
        sums["uncertain_ms"] += record.uncertain_ms
        per_item = ideal[record.machine]
        if per_item is None:
            sums["produced_without_ideal"] += record.produced
        else:
            sums["ideal_us"] += record.produced * per_item
        for code, ms in record.reasons.items():
            reasons[code] = reasons.get(code, 0) + ms
    return Totals(**sums, reasons=reasons)


def totals_from_columns(
    state_ms: Iterable[int],
    *,
    produced: int = 0,
    reject: int = 0,
    stops: int = 0,
    reasons: Mapping[str, int] | None = None,
    ideal_cycle_time_s: float | None = None,
    uncertain_ms: int = 0,
) -> Totals:
    """Build the totals of one machine and window from summed columns (ms per state in STATES order)."""
    times = [int(value) for value in state_ms]
    if len(times) != len(STATES):
        raise ValueError(f"state_ms has {len(times)} values; pass one per state in order {', '.join(STATES)}")
    per_item = ideal_us_per_item(ideal_cycle_time_s)
    produced = int(produced)
    return Totals(
        **{f"{name}_ms": value for name, value in zip(STATES, times, strict=True)},
        produced=produced,
        reject=int(reject),
        stops=int(stops),
        ideal_us=0 if per_item is None else produced * per_item,
        produced_without_ideal=produced if per_item is None else 0,
        uncertain_ms=int(uncertain_ms),
        reasons={code: int(ms) for code, ms in (reasons or {}).items() if ms},
    )


@dataclass(frozen=True)
class Kpis:
    """ISO 22400-2 KPIs of one window, times in minutes; an undefined ratio is None and ``why`` gives the reason."""

    planned_busy_min: float
    run_min: float
    unplanned_downtime_min: float
    planned_stop_min: float
    idle_min: float
    changeover_min: float
    offline_min: float
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None
    mtbf_min: float | None
    mttr_min: float | None
    produced: int = 0
    reject: int = 0
    stops: int = 0
    why: dict[str, str] = field(default_factory=dict)
    downtime_by_reason: dict[str, float] = field(default_factory=dict)


def _pareto(totals: Totals) -> dict[str, float]:
    reasons = {code: ms for code, ms in totals.reasons.items() if ms > 0}
    rest = totals.unplanned_stop_ms - sum(reasons.values())
    if rest > 0:
        reasons[UNASSIGNED] = reasons.get(UNASSIGNED, 0) + rest
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return {code: ms / _MS_PER_MIN for code, ms in ordered}


def kpis(totals: Totals) -> Kpis:
    """Compute the KPIs of summed totals; a zero denominator gives None and a reason, never NaN or infinity."""
    planned_busy_ms = totals.running_ms + totals.idle_ms + totals.unplanned_stop_ms + totals.changeover_ms
    run_ms = totals.running_ms
    why: dict[str, str] = {}

    availability = run_ms / planned_busy_ms if planned_busy_ms > 0 else None
    if availability is None:
        why["availability"] = "planned busy time is zero: no running, idle, unplanned stop or changeover time in the window"

    effectiveness: float | None = None
    if totals.produced_without_ideal > 0:
        why["effectiveness"] = f"{totals.produced_without_ideal} produced items come from machines without an ideal cycle time"
    elif run_ms <= 0:
        why["effectiveness"] = "actual production time is zero: the machine never ran in the window"
    else:
        effectiveness = totals.ideal_us / (run_ms * 1000)

    quality = (totals.produced - totals.reject) / totals.produced if totals.produced > 0 else None
    if quality is None:
        why["quality"] = "no items were produced in the window"

    oee = None
    if availability is not None and effectiveness is not None and quality is not None:
        oee = availability * effectiveness * quality
    else:
        missing = [name for name in ("availability", "effectiveness", "quality") if name in why]
        why["oee"] = "undefined because " + " and ".join(missing) + (" is" if len(missing) == 1 else " are") + " undefined"

    mtbf = mttr = None
    if totals.stops > 0:
        mtbf = run_ms / _MS_PER_MIN / totals.stops
        mttr = totals.unplanned_stop_ms / _MS_PER_MIN / totals.stops
    else:
        why["mtbf_min"] = why["mttr_min"] = "no unplanned stop began in the window"

    return Kpis(
        planned_busy_min=planned_busy_ms / _MS_PER_MIN,
        run_min=run_ms / _MS_PER_MIN,
        unplanned_downtime_min=totals.unplanned_stop_ms / _MS_PER_MIN,
        planned_stop_min=totals.planned_stop_ms / _MS_PER_MIN,
        idle_min=totals.idle_ms / _MS_PER_MIN,
        changeover_min=totals.changeover_ms / _MS_PER_MIN,
        offline_min=totals.offline_ms / _MS_PER_MIN,
        availability=availability,
        effectiveness=effectiveness,
        quality=quality,
        oee=oee,
        mtbf_min=mtbf,
        mttr_min=mttr,
        produced=totals.produced,
        reject=totals.reject,
        stops=totals.stops,
        why=why,
        downtime_by_reason=_pareto(totals),
    )
