"""Builds a simulator from a source name (a shipped recording or ``synthetic``) and a protocol."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from valuegate.adapters.tagmap import TagMap, load_tag_map

from .faults import FaultSpec
from .layouts import state_codes, synthetic_filler_map
from .modbus_line import DEFAULT_COUNTER_OFFSET, BottlingModbusSimulator, ModbusLineSimulator, check_counter_offset
from .mtconnect_opcua import MtconnectOpcUaSimulator
from .recordings.bottling import load_bottling
from .recordings.mtconnect import MTCONNECT_RECORDINGS
from .replay import ReplayPacing
from .service import ReplayService
from .synthetic import SyntheticScenario, generate_line
from .timeline import STATE_FAULT, STATE_NONE, STATE_PRODUCING, bottling_timeline

__all__ = ("SOURCES", "SimulatorOptions", "build_simulator", "protocols_of")

# Source name -> protocols it can be served over; the first is the default.
SOURCES: dict[str, tuple[str, ...]] = {
    "bottling": ("modbus", "opcua"),
    **{name: ("opcua",) for name in MTCONNECT_RECORDINGS},
    "synthetic": ("modbus", "opcua"),
}


# The bottling line over OPC UA, in the items of the MTConnect tag map: producing is ACTIVE in
# AUTOMATIC, a stop (no reason recorded) is FEED_HOLD, and no production scheduled is UNAVAILABLE.
BOTTLING_LOOKS = {
    STATE_NONE: ("UNAVAILABLE", "UNAVAILABLE"),
    STATE_PRODUCING: ("ACTIVE", "AUTOMATIC"),
    STATE_FAULT: ("FEED_HOLD", "AUTOMATIC"),
}


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything the command line can set on a simulator."""

    host: str = "127.0.0.1"
    port: int = 0
    speed: float = 3600.0
    min_dwell_ms: int = 0
    tick_ms: int = 20
    days: int | None = None
    start: date | None = None
    end: date | None = None
    counter_offset: int | None = None
    unit_id: int = 0
    tag_map: Path | None = None
    seed: int = 1
    faults: list[FaultSpec] = field(default_factory=list)
    paused: bool = False
    wait_for_client: bool = False
    """Start the replay when the first client reads (Modbus) or reads or subscribes (OPC UA)."""
    hold_until_read: bool = False
    """Modbus only: hold each state change until a client has read it."""
    scenario: SyntheticScenario | None = None
    """Synthetic line parameters; without it ``seed``, ``days`` and ``start`` set the defaults."""


def protocols_of(source: str) -> tuple[str, ...]:
    """Return the protocols ``source`` can be served over; raise ValueError naming the sources for an unknown one."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[source]


def build_simulator(source: str, protocol: str | None, options: SimulatorOptions) -> ReplayService:
    """Return the (not yet started) simulator serving ``source`` over ``protocol``."""
    protocols = protocols_of(source)
    protocol = protocol or protocols[0]
    if protocol not in protocols:
        raise ValueError(f"source {source!r} is served over {' or '.join(protocols)}, not {protocol}")
    faults: Iterable[FaultSpec] = options.faults
    if options.hold_until_read and protocol != "modbus":
        raise ValueError("holding each change until it is read works over Modbus only; an OPC UA subscriber queues every change")
    waiting = {"paused": options.paused, "wait_for_client": options.wait_for_client}
    if source == "bottling" and protocol == "opcua":
        recording = load_bottling()
        if options.days is not None or options.start is not None or options.end is not None:
            recording = recording.select(first_days=options.days, start=options.start, end=options.end)
        offset = DEFAULT_COUNTER_OFFSET if options.counter_offset is None else options.counter_offset
        check_counter_offset(offset, 1 << 31, "the Int32 part counter Machine/PartCount")
        events = bottling_timeline(recording).mtconnect("bottling", BOTTLING_LOOKS, counter_offset=offset)
        return MtconnectOpcUaSimulator(
            events, host=options.host, port=options.port, speed=options.speed, min_dwell_ms=options.min_dwell_ms,
            tick_ms=options.tick_ms, faults=faults, **waiting,
        )
    if source == "bottling":
        return BottlingModbusSimulator(
            host=options.host, port=options.port, unit_id=options.unit_id, speed=options.speed,
            min_dwell_ms=options.min_dwell_ms, hold_until_read=options.hold_until_read, tick_ms=options.tick_ms,
            days=options.days, start=options.start, end=options.end, tag_map=options.tag_map, faults=faults, **waiting,
            **({} if options.counter_offset is None else {"counter_offset": options.counter_offset}),
        )
    if source in MTCONNECT_RECORDINGS:
        return MtconnectOpcUaSimulator(
            source, host=options.host, port=options.port, speed=options.speed, min_dwell_ms=options.min_dwell_ms,
            tick_ms=options.tick_ms, days=options.days, start=options.start, end=options.end, faults=faults, **waiting,
        )
    if options.start is not None and options.end is not None and options.end < options.start:
        raise ValueError(f"end {options.end} is before start {options.start}")
    scenario = options.scenario or SyntheticScenario(
        seed=options.seed,
        days=options.days or ((options.end - options.start).days + 1 if options.start and options.end else 5),
        **({"start": options.start} if options.start else {}),
    )
    line = generate_line(scenario)
    if protocol == "opcua":
        return MtconnectOpcUaSimulator(
            line.mtconnect(), host=options.host, port=options.port, speed=options.speed, min_dwell_ms=options.min_dwell_ms,
            tick_ms=options.tick_ms, faults=faults, **waiting,
        )
    tag_map: TagMap = load_tag_map(options.tag_map) if options.tag_map else synthetic_filler_map()
    return ModbusLineSimulator(
        line.timeline(state_codes(tag_map)), tag_map, host=options.host, port=options.port, unit_id=options.unit_id,
        pacing=ReplayPacing(
            speed=options.speed, min_dwell_ms=options.min_dwell_ms, tick_ms=options.tick_ms, hold_until_read=options.hold_until_read
        ),
        counter_offset=options.counter_offset or 0, faults=faults, **waiting,
    )
