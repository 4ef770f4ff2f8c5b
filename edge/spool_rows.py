"""Rows the spool stores and hands back: state events, counter readings, poll batches, carries and progress."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ("INT64_MIN", "INT64_MAX", "StateEvent", "CounterReading", "MachineBatch", "Carry", "Progress", "split_unfit")

# SQLite stores INTEGER values as signed 64-bit numbers; binding a larger Python int raises OverflowError.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class StateEvent:
    """The machine entered state ``code`` at ``ts_ms``; ``missed`` counts transitions the PLC reported but we never saw."""

    ts_ms: int
    code: int
    reason: str | None = None
    uncertain: bool = False
    missed: int = 0


@dataclass(frozen=True, slots=True)
class CounterReading:
    """A raw counter value read at ``ts_ms`` (before wrap handling)."""

    ts_ms: int
    tag: str
    value: float


@dataclass(slots=True)
class MachineBatch:
    """State events, counter readings and watermark of one machine from one poll or notification batch."""

    machine: str
    states: list[StateEvent] = field(default_factory=list)
    counters: list[CounterReading] = field(default_factory=list)
    watermark_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Carry:
    """State and last counter values in force at a minute boundary, carried into the next minutes."""

    code: int
    reason: str | None
    uncertain: bool
    counters: dict[str, float]

    def to_json(self) -> str:
        return json.dumps({"code": self.code, "reason": self.reason, "uncertain": self.uncertain, "counters": self.counters})

    @classmethod
    def from_json(cls, text: str | None) -> Carry | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(int(data["code"]), data["reason"], bool(data["uncertain"]), dict(data["counters"]))


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one machine has been read and summarized."""

    machine: str
    watermark_ms: int
    minutes_done_ms: int | None
    carry: Carry | None
    missed_transitions: int
    day_done: str | None


def split_unfit(batch: MachineBatch) -> tuple[MachineBatch, dict[str, Any], int]:
    """Split off the events and watermark of ``batch`` whose integers do not fit SQLite's int64.

    Returns the batch that can be stored, what was left out (for the log) and how many values that was.
    """
    bad_states = [event for event in batch.states if not _fits(event.ts_ms, event.code, event.missed)]
    bad_counters = [reading for reading in batch.counters if not _fits(reading.ts_ms, reading.value)]
    bad_watermark = batch.watermark_ms is not None and not _fits(batch.watermark_ms)
    count = len(bad_states) + len(bad_counters) + int(bad_watermark)
    if not count:
        return batch, {}, 0
    states = [event for event in batch.states if _fits(event.ts_ms, event.code, event.missed)]
    counters = [reading for reading in batch.counters if _fits(reading.ts_ms, reading.value)]
    rejected = {
        "states": [(event.ts_ms, event.code, event.missed) for event in bad_states],
        "counters": [(reading.tag, reading.ts_ms, reading.value) for reading in bad_counters],
        "watermark_ms": batch.watermark_ms if bad_watermark else None,
    }
    return MachineBatch(batch.machine, states, counters, None if bad_watermark else batch.watermark_ms), rejected, count


def _fits(*values: float) -> bool:
    """Return whether every integer among ``values`` fits SQLite's signed 64-bit INTEGER."""
    return all(INT64_MIN <= value <= INT64_MAX for value in values if isinstance(value, int))
