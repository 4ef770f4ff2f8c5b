"""Seeded synthetic production: shifts, failures (MTBF/MTTR), micro-stops, starvation, changeovers and rejects.

The same generated line can be served over Modbus (as a :class:`StateTimeline`
in a tag map's state codes) and over OPC UA (as MTConnect-style execution,
mode, alarm and counter events).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from .recordings.files import epoch_ms, plant_day_bounds_ms
from .recordings.mtconnect import CounterIncrements, MtconnectRecording, MtEvent
from .replay import DAY_CLOSE_MS
from .timeline import StateTimeline

__all__ = ("SyntheticScenario", "Segment", "SyntheticLine", "generate_line", "CATEGORY_CODES")

# Categories the generator produces, in the order used for default state codes.
CATEGORY_CODES = {"planned_stop": 0, "running": 1, "unplanned_stop": 2, "changeover": 3, "idle": 4}
MICRO_STOP_REASON = 200
STARVED_REASON = 300
CHANGEOVER_REASON = 400


@dataclass(frozen=True)
class SyntheticScenario:
    """Parameters of a synthetic line; the same seed and parameters always give the same line."""

    seed: int = 1
    """Seed of the random generator."""
    days: int = 5
    """Calendar days generated, starting at ``start``."""
    start: date = date(2024, 3, 4)
    """First plant day (a Monday by default)."""
    zone: str = "Asia/Shanghai"
    """IANA time zone of the plant; shifts are local times."""
    shifts: tuple[tuple[str, str], ...] = (("06:00", "14:00"), ("14:00", "22:00"))
    """Shift start and end, local ``HH:MM``; production is scheduled only inside shifts."""
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Weekdays with shifts (Monday = 0)."""
    ideal_cycle_s: float = 2.7
    """Nameplate seconds per item."""
    speed_ratio: float = 0.92
    """Actual rate as a share of the nameplate rate while running (speed loss)."""
    mtbf_min: float = 90.0
    """Mean running minutes between failures (exponential)."""
    mttr_min: float = 9.0
    """Median minutes to repair (lognormal)."""
    mttr_sigma: float = 0.6
    """Shape of the lognormal repair time."""
    failure_reasons: tuple[int, ...] = (101, 102, 103, 104)
    """Reason codes of failures, drawn with decreasing weight (Pareto-like)."""
    micro_stops_per_h: float = 4.0
    """Micro-stops per running hour (exponential gaps)."""
    micro_stop_s: tuple[float, float] = (5.0, 90.0)
    """Micro-stop duration range, seconds (uniform)."""
    starved_per_h: float = 0.3
    """Idle episodes (starved or blocked) per running hour."""
    starved_mean_min: float = 3.0
    """Mean idle episode, minutes (exponential)."""
    changeover_every_h: float = 4.0
    """Hours between changeovers; 0 turns them off. The first comes after this much of a shift."""
    changeover_min: tuple[float, float] = (20.0, 5.0)
    """Changeover mean and standard deviation, minutes (normal, at least 1 minute)."""
    reject_rate: float = 0.02
    """Share of items rejected."""

    def __post_init__(self) -> None:
        checks = [
            (self.days >= 1, f"days={self.days} must be 1 or more"),
            (self.ideal_cycle_s > 0, f"ideal_cycle_s={self.ideal_cycle_s} must be positive seconds"),
            (0 < self.speed_ratio <= 1, f"speed_ratio={self.speed_ratio} must be in (0, 1]"),
            (self.mtbf_min > 0 and self.mttr_min > 0, f"mtbf_min={self.mtbf_min} and mttr_min={self.mttr_min} must be positive"),
            (0 <= self.reject_rate < 1, f"reject_rate={self.reject_rate} must be in [0, 1)"),
            (self.micro_stops_per_h >= 0 and self.starved_per_h >= 0, "micro_stops_per_h and starved_per_h must be 0 or more"),
            (0 < self.micro_stop_s[0] <= self.micro_stop_s[1], f"micro_stop_s={self.micro_stop_s} must be (min, max) with 0 < min <= max"),
            (self.changeover_every_h >= 0, f"changeover_every_h={self.changeover_every_h} must be 0 or more"),
            (bool(self.failure_reasons), "failure_reasons must name at least one reason code"),
        ]
        for valid, message in checks:
            if not valid:
                raise ValueError(f"invalid synthetic scenario: {message}")
        ZoneInfo(self.zone)
        for begin, end in self.shifts:
            if _minutes(begin) >= _minutes(end):
                raise ValueError(f"invalid synthetic scenario: shift {begin}-{end} must end after it starts on the same day")


@dataclass(frozen=True, slots=True)
class Segment:
    """One interval of the synthetic line in one category, with its reason code (0 when none)."""

    start_ms: int
    end_ms: int
    category: str
    reason: int


@dataclass(frozen=True)
class SyntheticLine:
    """A generated line: its segments, the instants items were made and rejected, and the plant days."""

    scenario: SyntheticScenario
    segments: list[Segment]
    produced_ms: list[int]
    rejected_ms: list[int]
    day_starts_ms: list[int]
    end_ms: int
    findings: list[dict[str, str]] = field(default_factory=list)

    def timeline(self, codes: dict[str, int] | None = None) -> StateTimeline:
        """Return the line as a :class:`StateTimeline` with ``codes`` (category -> state code)."""
        codes = codes or CATEGORY_CODES
        missing = sorted({segment.category for segment in self.segments} - set(codes))
        if missing:
            raise ValueError(f"no state code for categories {', '.join(missing)}; give the tag map a rule for each")
        change_ms, states, reasons = [], [], []
        current = (codes["planned_stop"], 0)
        for segment in self.segments:
            value = (codes[segment.category], segment.reason)
            if value != current:
                change_ms.append(segment.start_ms)
                states.append(value[0])
                reasons.append(value[1])
                current = value
        idle = [(segment.start_ms, segment.end_ms) for segment in self.segments if segment.category == "planned_stop"]
        return StateTimeline(
            zone=self.scenario.zone,
            start_ms=self.day_starts_ms[0],
            end_ms=self.end_ms,
            initial_since_ms=self.day_starts_ms[0],
            initial_state=codes["planned_stop"],
            change_ms=change_ms,
            states=states,
            reasons=reasons,
            produced_ms=self.produced_ms,
            rejected_ms=self.rejected_ms,
            idle=idle,
        )

    def mtconnect(self) -> MtconnectRecording:
        """Return the line as MTConnect-style events: execution, mode, alarm code, part and reject counts."""
        looks = {
            "planned_stop": ("UNAVAILABLE", "UNAVAILABLE"),
            "running": ("ACTIVE", "AUTOMATIC"),
            "idle": ("READY", "AUTOMATIC"),
            "changeover": ("READY", "MANUAL"),
        }
        events: list[MtEvent] = []
        for segment in self.segments:
            ts_us = segment.start_ms * 1000
            if segment.category == "unplanned_stop":
                micro = segment.reason == MICRO_STOP_REASON
                execution, mode = ("FEED_HOLD", "AUTOMATIC") if micro else ("STOPPED", "AUTOMATIC")
                alarm = 0 if micro else segment.reason
            else:
                execution, mode = looks[segment.category]
                alarm = 0
            events += [MtEvent(ts_us, "execution", execution), MtEvent(ts_us, "mode", mode), MtEvent(ts_us, "alarm_code", alarm)]
        events += [MtEvent(instant * 1000, "part_count", number) for number, instant in enumerate(self.produced_ms, start=1)]
        events += [MtEvent(instant * 1000, "reject_count", number) for number, instant in enumerate(self.rejected_ms, start=1)]
        events.sort(key=lambda event: event.ts_us)
        initial = {"execution": "UNAVAILABLE", "mode": "UNAVAILABLE", "alarm_code": 0, "part_count": 0, "reject_count": 0}
        days = [self.scenario.start + timedelta(days=offset) for offset in range(self.scenario.days)]
        published: dict[date, dict[str, CounterIncrements]] = {day: {} for day in days}
        return MtconnectRecording("synthetic", "SyntheticLine", self.scenario.zone, events, published, list(self.findings), initial)

    def daily_truth(self) -> dict[date, dict[str, int]]:
        """Return per plant day the milliseconds in each category, unplanned stops, items made and rejected."""
        zone = ZoneInfo(self.scenario.zone)
        truth: dict[date, dict[str, int]] = {}
        for offset, day_start in enumerate(self.day_starts_ms):
            day = self.scenario.start + timedelta(days=offset)
            day_end = plant_day_bounds_ms(day, zone)[1]
            totals = {f"{name}_ms": 0 for name in CATEGORY_CODES}
            totals["stops"] = 0
            for segment in self.segments:
                overlap = min(segment.end_ms, day_end) - max(segment.start_ms, day_start)
                if overlap > 0:
                    totals[f"{segment.category}_ms"] += overlap
                if segment.category == "unplanned_stop" and day_start <= segment.start_ms < day_end:
                    totals["stops"] += 1
            totals["produced"] = sum(1 for instant in self.produced_ms if day_start <= instant < day_end)
            totals["rejected"] = sum(1 for instant in self.rejected_ms if day_start <= instant < day_end)
            truth[day] = totals
        return truth


def generate_line(scenario: SyntheticScenario) -> SyntheticLine:
    """Generate the line of ``scenario``; every draw comes from one generator seeded with ``scenario.seed``."""
    rng = np.random.default_rng(scenario.seed)
    zone = ZoneInfo(scenario.zone)
    segments: list[Segment] = []
    day_starts: list[int] = []
    cursor = plant_day_bounds_ms(scenario.start, zone)[0]
    for offset in range(scenario.days):
        day = scenario.start + timedelta(days=offset)
        day_starts.append(plant_day_bounds_ms(day, zone)[0])
        if day.weekday() not in scenario.workdays:
            continue
        for begin, end in scenario.shifts:
            shift_start = _local_ms(day, begin, zone)
            shift_end = _local_ms(day, end, zone)
            if shift_start > cursor:
                segments.append(Segment(cursor, shift_start, "planned_stop", 0))
            segments.extend(_shift(scenario, rng, shift_start, shift_end))
            cursor = shift_end
    end_ms = plant_day_bounds_ms(scenario.start + timedelta(days=scenario.days - 1), zone)[1] + DAY_CLOSE_MS
    segments.append(Segment(cursor, end_ms, "planned_stop", 0))
    segments = _join(segments)

    produced, rejected = _items(scenario, rng, segments)
    return SyntheticLine(scenario, segments, produced, rejected, day_starts, end_ms)


def _shift(scenario: SyntheticScenario, rng: np.random.Generator, start: int, end: int) -> list[Segment]:
    """Draw the running periods and stops of one shift."""
    segments: list[Segment] = []
    weights = np.array([1.0 / (rank + 1) for rank in range(len(scenario.failure_reasons))])
    weights /= weights.sum()
    every_ms = int(scenario.changeover_every_h * 3_600_000)
    next_changeover = start + every_ms if every_ms else math.inf
    now = start
    while now < end:
        candidates = {
            "failure": now + rng.exponential(scenario.mtbf_min * 60_000),
            "micro": now + (rng.exponential(3_600_000 / scenario.micro_stops_per_h) if scenario.micro_stops_per_h else math.inf),
            "starved": now + (rng.exponential(3_600_000 / scenario.starved_per_h) if scenario.starved_per_h else math.inf),
            "changeover": next_changeover,
        }
        kind = min(candidates, key=lambda name: candidates[name])
        event_ms = int(min(candidates[kind], end))
        if event_ms > now:
            segments.append(Segment(now, event_ms, "running", 0))
        if event_ms >= end:
            break
        if kind == "failure":
            duration = rng.lognormal(math.log(scenario.mttr_min * 60_000), scenario.mttr_sigma)
            segment = ("unplanned_stop", int(rng.choice(scenario.failure_reasons, p=weights)))
        elif kind == "micro":
            duration = rng.uniform(scenario.micro_stop_s[0] * 1000, scenario.micro_stop_s[1] * 1000)
            segment = ("unplanned_stop", MICRO_STOP_REASON)
        elif kind == "starved":
            duration = rng.exponential(scenario.starved_mean_min * 60_000)
            segment = ("idle", STARVED_REASON)
        else:
            mean, spread = scenario.changeover_min
            duration = max(60_000.0, rng.normal(mean * 60_000, spread * 60_000))
            segment = ("changeover", CHANGEOVER_REASON)
            next_changeover = event_ms + every_ms
        stop_end = min(end, event_ms + max(1000, int(duration)))
        segments.append(Segment(event_ms, stop_end, segment[0], segment[1]))
        now = stop_end
        if kind != "changeover" and next_changeover < now:
            next_changeover = now
    return segments


def _items(scenario: SyntheticScenario, rng: np.random.Generator, segments: list[Segment]) -> tuple[list[int], list[int]]:
    """Place one item per actual cycle of cumulative running time; reject each with ``reject_rate``."""
    cycle_ms = scenario.ideal_cycle_s * 1000 / scenario.speed_ratio
    produced: list[int] = []
    phase = 0.0
    for segment in segments:
        if segment.category != "running":
            continue
        length = segment.end_ms - segment.start_ms
        first = cycle_ms - phase
        count = 0 if first > length else int((length - first) // cycle_ms) + 1
        produced.extend(segment.start_ms + int(first + number * cycle_ms) for number in range(count))
        phase = (phase + length) % cycle_ms
    rejected_mask = rng.random(len(produced)) < scenario.reject_rate
    rejected = [instant for instant, is_reject in zip(produced, rejected_mask) if is_reject]
    return produced, rejected


def _join(segments: list[Segment]) -> list[Segment]:
    """Merge neighbours of the same category and reason, and drop empty segments."""
    joined: list[Segment] = []
    for segment in segments:
        if segment.end_ms <= segment.start_ms:
            continue
        last = joined[-1] if joined else None
        if last is not None and (last.category, last.reason) == (segment.category, segment.reason) and last.end_ms == segment.start_ms:
            joined[-1] = Segment(last.start_ms, segment.end_ms, last.category, last.reason)
        else:
            joined.append(segment)
    return joined


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    try:
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        raise ValueError(f"invalid synthetic scenario: shift time {text!r} must be HH:MM") from None
    if not 0 <= value <= 24 * 60:
        raise ValueError(f"invalid synthetic scenario: shift time {text!r} must lie between 00:00 and 24:00")
    return value


def _local_ms(day: date, clock: str, zone: ZoneInfo) -> int:
    minutes = _minutes(clock)
    return epoch_ms(datetime.combine(day, time(0), tzinfo=zone) + timedelta(minutes=minutes))
