"""Line timelines: the state, reason and counts a simulated line PLC shows at every recorded instant."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from .recordings.bottling import BottlingRecording
from .recordings.files import plant_date_of_ms
from .recordings.mtconnect import CounterIncrements, MtconnectRecording, MtEvent
from .recordings.intervals import merge_intervals
from .replay import DAY_CLOSE_MS

__all__ = ("STATE_NONE", "STATE_PRODUCING", "STATE_FAULT", "LineStatus", "StateTimeline", "bottling_timeline")

# State codes of the bottling filler tag map.
STATE_NONE = 0
STATE_PRODUCING = 1
STATE_FAULT = 2


@dataclass(frozen=True, slots=True)
class LineStatus:
    """State, reason, state start, change count and counts the PLC shows at one instant."""

    state: int
    reason: int
    since_ms: int
    changes: int
    produced: int
    rejected: int


@dataclass(frozen=True)
class StateTimeline:
    """A line's states and counts over a replay, all instants in UTC epoch milliseconds.

    ``change_ms[i]`` is when state ``states[i]`` (reason ``reasons[i]``)
    began; before the first change the line is in ``initial_state`` since
    ``initial_since_ms``. ``produced_ms`` and ``rejected_ms`` are the sorted
    instants at which a counter rises by one. ``idle`` lists the spans in
    which nothing changes and that the replay may jump over.
    """

    zone: str
    start_ms: int
    end_ms: int
    initial_since_ms: int
    change_ms: list[int]
    states: list[int]
    reasons: list[int]
    produced_ms: list[int]
    rejected_ms: list[int] = field(default_factory=list)
    idle: list[tuple[int, int]] = field(default_factory=list)
    initial_state: int = STATE_NONE

    def __post_init__(self) -> None:
        if not len(self.change_ms) == len(self.states) == len(self.reasons):
            raise ValueError("change_ms, states and reasons must have one entry per state change")
        if any(later < earlier for earlier, later in zip(self.change_ms, self.change_ms[1:])):
            raise ValueError("change_ms must be sorted")

    def status_at(self, now_ms: int) -> LineStatus:
        """Return the state, its start, the number of changes so far and the counts at ``now_ms``."""
        index = bisect.bisect_right(self.change_ms, now_ms) - 1
        produced = bisect.bisect_right(self.produced_ms, now_ms)
        rejected = bisect.bisect_right(self.rejected_ms, now_ms)
        if index < 0:
            return LineStatus(self.initial_state, 0, self.initial_since_ms, 0, produced, rejected)
        return LineStatus(self.states[index], self.reasons[index], self.change_ms[index], index + 1, produced, rejected)

    def intervals(self, start_ms: int | None = None, end_ms: int | None = None) -> list[tuple[int, int, int, int]]:
        """Return ``(start_ms, end_ms, state, reason)`` for every state interval clipped to the range."""
        start_ms = self.start_ms if start_ms is None else start_ms
        end_ms = self.end_ms if end_ms is None else end_ms
        bounds = [(self.initial_since_ms, self.initial_state, 0)] + list(zip(self.change_ms, self.states, self.reasons))
        result = []
        for (begin, state, reason), (finish, _, _) in zip(bounds, bounds[1:] + [(self.end_ms, 0, 0)]):
            begin, finish = max(begin, start_ms), min(finish, end_ms)
            if finish > begin:
                result.append((begin, finish, state, reason))
        return result

    def stops(self, state: int = STATE_FAULT) -> list[tuple[int, int]]:
        """Return the intervals spent in ``state`` (by default: stopped by a fault)."""
        return [(begin, finish) for begin, finish, code, _ in self.intervals() if code == state]

    def mtconnect(self, name: str, looks: dict[int, tuple[str, str]], *, counter_offset: int = 0) -> MtconnectRecording:
        """Return the timeline as MTConnect-style events for the OPC UA simulator.

        ``looks`` maps each state code to its (execution, controller mode);
        the reason code becomes the alarm code, and the counts become
        ``part_count`` (from ``counter_offset``) and ``reject_count``.
        """
        missing = sorted(set(self.states) - set(looks))
        if missing:
            raise ValueError(f"no execution and mode given for state codes {missing}")
        execution, mode = looks[self.initial_state]
        initial: dict[str, str | int | float | None] = {
            "execution": execution, "mode": mode, "alarm_code": 0, "part_count": counter_offset, "reject_count": 0,
        }
        events: list[MtEvent] = []
        for instant, state, reason in zip(self.change_ms, self.states, self.reasons):
            execution, mode = looks[state]
            events += [
                MtEvent(instant * 1000, "execution", execution),
                MtEvent(instant * 1000, "mode", mode),
                MtEvent(instant * 1000, "alarm_code", reason),
            ]
        events += [MtEvent(instant * 1000, "part_count", counter_offset + number) for number, instant in enumerate(self.produced_ms, 1)]
        events += [MtEvent(instant * 1000, "reject_count", number) for number, instant in enumerate(self.rejected_ms, 1)]
        events.insert(0, MtEvent(self.start_ms * 1000, "execution", initial["execution"]))
        events.sort(key=lambda event: event.ts_us)
        zone = ZoneInfo(self.zone)
        days = sorted({plant_date_of_ms(self.start_ms, zone), plant_date_of_ms(self.end_ms - DAY_CLOSE_MS - 1, zone)})
        first, last = days[0], days[-1]
        published: dict[date, dict[str, CounterIncrements]] = {
            first + timedelta(days=offset): {} for offset in range((last - first).days + 1)
        }
        return MtconnectRecording(name, name, self.zone, events, published, [], initial)


def bottling_timeline(recording: BottlingRecording) -> StateTimeline:
    """Build the replayed timeline of a bottling recording (or a slice of it).

    The state is 0 outside the product runs, 1 inside them and 2 during the
    replayed stops. Each hour's containers are spread evenly over that hour's
    running time; a container counts in the middle of its share of running time.
    """
    if not recording.days:
        raise ValueError("the recording slice has no production day; select at least one day")
    change_ms: list[int] = []
    states: list[int] = []
    produced: list[int] = []
    current = STATE_NONE
    for day in recording.days.values():
        bounds = sorted({instant for interval in (*day.runs, *day.stops) for instant in interval})
        for instant in bounds:
            state = _state_after(day.runs, day.stops, instant)
            if state != current:
                change_ms.append(instant)
                states.append(state)
                current = state
        running = day.running
        for hour in day.hours:
            produced.extend(_spread(hour.replayed, running, hour.start_ms, hour.end_ms))

    days = list(recording.days.values())
    end_ms = days[-1].day_end_ms + DAY_CLOSE_MS
    idle = _idle_spans(days[0].day_start_ms, end_ms, change_ms, states)
    produced.sort()
    return StateTimeline(
        zone=recording.zone,
        start_ms=days[0].day_start_ms,
        end_ms=end_ms,
        initial_since_ms=days[0].day_start_ms,
        change_ms=change_ms,
        states=states,
        reasons=[0] * len(states),
        produced_ms=produced,
        idle=idle,
    )


def _state_after(runs: tuple[tuple[int, int], ...], stops: tuple[tuple[int, int], ...], instant: int) -> int:
    """Return the state from ``instant`` on. A stop wins over a run, and outside both the state is 0."""
    if any(begin <= instant < finish for begin, finish in stops):
        return STATE_FAULT
    if any(begin <= instant < finish for begin, finish in runs):
        return STATE_PRODUCING
    return STATE_NONE


def _spread(count: int, running: tuple[tuple[int, int], ...], start_ms: int, end_ms: int) -> list[int]:
    """Return ``count`` instants spread evenly over the running time in ``[start_ms, end_ms)``."""
    if count <= 0:
        return []
    pieces = [(max(begin, start_ms), min(finish, end_ms)) for begin, finish in running if min(finish, end_ms) > max(begin, start_ms)]
    total = sum(finish - begin for begin, finish in pieces)
    if total == 0:
        # No running time anywhere in the day: count over the whole hour.
        pieces, total = [(start_ms, end_ms)], end_ms - start_ms
    instants = []
    piece_index, consumed = 0, 0
    for number in range(count):
        # The middle of the container's share of running time, so that it lies inside the hour.
        offset = (2 * number + 1) * total // (2 * count)
        while offset >= consumed + pieces[piece_index][1] - pieces[piece_index][0]:
            consumed += pieces[piece_index][1] - pieces[piece_index][0]
            piece_index += 1
        instants.append(pieces[piece_index][0] + offset - consumed)
    return instants


def _idle_spans(start_ms: int, end_ms: int, change_ms: list[int], states: list[int]) -> list[tuple[int, int]]:
    """Return the spans in state 0 (no production scheduled): nothing changes in them."""
    bounds = [(start_ms, STATE_NONE)] + list(zip(change_ms, states)) + [(end_ms, STATE_NONE)]
    spans = [(begin, finish) for (begin, state), (finish, _) in zip(bounds, bounds[1:]) if state == STATE_NONE and finish > begin]
    return merge_intervals(spans)
