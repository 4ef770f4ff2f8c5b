"""Shipped recordings as tag traces, so that `valuegate oee recording:NAME` reads what `valuegate simulate NAME` serves."""

from __future__ import annotations

from valuegate.edge.trace import Trace, TraceError, TraceRow

__all__ = ("RECORDING_SCHEME", "recording_names", "read_recording", "register")

RECORDING_SCHEME = "recording"


def recording_names() -> tuple[str, ...]:
    """Return the names of the shipped recordings, as `valuegate simulate` takes them."""
    from valuegate.simulators.recordings import MTCONNECT_RECORDINGS

    return ("bottling", *MTCONNECT_RECORDINGS)


def read_recording(name: str) -> Trace:
    """Return a shipped recording as the trace of one machine named after it, in the recording's plant time zone.

    MTConnect recordings (mazak03, hurco02, hurco04) give one row per
    recorded item value, with the tag names of the OPC UA simulator's items
    (execution, mode, alarm_code, part_count, ...). A number recorded as
    UNAVAILABLE becomes a row with status bad. Where the recording has
    conditions, alarm_code starts at 0, as the simulator serves it.

    The bottling recording gives the tags of the demo Modbus tag map
    bottling-filler-modbus: state, reason and the 16-bit containers counter,
    which starts at 50,000 and wraps at 65,536 as the simulator serves it.
    The line keeps its last state to the end of the last plant day.
    """
    reference = f"{RECORDING_SCHEME}:{name}"
    if name not in recording_names():
        msg = f"{reference}: unknown recording {name!r}; choose one of {', '.join(recording_names())}, e.g. {RECORDING_SCHEME}:mazak03"
        raise TraceError(msg, file=reference, value=name)
    if name == "bottling":
        return _bottling_trace(reference)
    return _mtconnect_trace(name, reference)


def _mtconnect_trace(name: str, reference: str) -> Trace:
    from valuegate.simulators.recordings import MTCONNECT_RECORDINGS, load_mtconnect

    recording = load_mtconnect(name)
    rows: list[TraceRow] = []
    if MTCONNECT_RECORDINGS[name].conditions:
        rows.append(TraceRow(recording.events[0].ts_us // 1000, name, "alarm_code", 0, "good"))
    for event in recording.events:
        status = "bad" if event.value is None else "good"
        rows.append(TraceRow(event.ts_us // 1000, name, event.item, event.value, status))
    return Trace(reference, rows, zone=recording.zone)


def _bottling_trace(reference: str) -> Trace:
    from valuegate.simulators.modbus_line import DEFAULT_COUNTER_OFFSET
    from valuegate.simulators.recordings import load_bottling
    from valuegate.simulators.replay import DAY_CLOSE_MS
    from valuegate.simulators.timeline import bottling_timeline

    machine = "bottling"
    timeline = bottling_timeline(load_bottling())
    start = timeline.start_ms
    rows = [
        TraceRow(start, machine, "state", timeline.initial_state, "good"),
        TraceRow(start, machine, "reason", 0, "good"),
        TraceRow(start, machine, "containers", DEFAULT_COUNTER_OFFSET % 65536, "good"),
    ]
    for instant, state, reason in zip(timeline.change_ms, timeline.states, timeline.reasons, strict=True):
        rows += [TraceRow(instant, machine, "state", state, "good"), TraceRow(instant, machine, "reason", reason, "good")]
    for number, instant in enumerate(timeline.produced_ms, 1):
        rows.append(TraceRow(instant, machine, "containers", (DEFAULT_COUNTER_OFFSET + number) % 65536, "good"))
    last_day_end = timeline.end_ms - DAY_CLOSE_MS
    final = timeline.status_at(last_day_end - 1)
    rows.append(TraceRow(last_day_end, machine, "state", final.state, "good"))
    rows.sort(key=lambda row: row.ts_ms)
    return Trace(reference, rows, zone=timeline.zone)


def register() -> None:
    """Let `valuegate oee` read ``recording:NAME``."""
    from valuegate.edge import cli_oee

    cli_oee.add_trace_source(RECORDING_SCHEME, read_recording, recording_names)
