"""Line PLC simulators over Modbus TCP: a timeline replayed into the registers of a tag map."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from valuegate.adapters.tagmap import TagMap, load_tag_map, shipped_tag_map_dir

from .faults import FaultSpec, parse_fault
from .modbus_server import RegisterServer
from .recordings.bottling import load_bottling
from .replay import ReplayClock, ReplayPacing
from .service import ReplayService
from .timeline import LineStatus, StateTimeline, bottling_timeline

__all__ = ("ModbusLineSimulator", "BottlingModbusSimulator", "BOTTLING_TAG_MAP", "DEFAULT_COUNTER_OFFSET", "check_counter_offset")

log = structlog.get_logger("valuegate.simulators.modbus_line")

BOTTLING_TAG_MAP = "demo/bottling-filler-modbus.yaml"
# The container counter starts here so that it wraps at 65,536 during a full replay (60,692 containers).
DEFAULT_COUNTER_OFFSET = 50_000
# Coil set once the replay has reached its end.
DONE_COIL = 0


class ModbusLineSimulator(ReplayService):
    """Serves a :class:`StateTimeline` over Modbus TCP in the register layout of a tag map.

    Tags are filled by role. The first ``state_input`` tag gets the state
    code and ``reason`` the reason code. ``state_since`` gets the instant the
    state began, ``clock`` the recorded time and ``state_seq`` the number of
    state changes. Each counter gets its count (``produced``, ``good`` or ``reject``).
    All times are UTC epoch milliseconds of the recording, so durations do
    not depend on ``speed``. Use it as an async context manager.
    """

    def __init__(
        self,
        timeline: StateTimeline,
        tag_map: TagMap,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 0,
        pacing: ReplayPacing | None = None,
        counter_offset: int = DEFAULT_COUNTER_OFFSET,
        faults: Iterable[FaultSpec | str] = (),
        paused: bool = False,
        wait_for_client: bool = False,
    ) -> None:
        super().__init__(paused=paused, wait_for_client=wait_for_client)
        self.truth = timeline
        self.tag_map = tag_map
        self.pacing = pacing or ReplayPacing()
        self.counter_offset = counter_offset
        self.server = RegisterServer(tag_map, host=host, port=port, unit_id=unit_id)
        self.clock = ReplayClock(
            self.pacing,
            start_ms=timeline.start_ms,
            end_ms=timeline.end_ms,
            marks=timeline.change_ms,
            idle=timeline.idle,
            zone=ZoneInfo(timeline.zone),
        )
        self.faults = [parse_fault(item, protocol="modbus") if isinstance(item, str) else item for item in faults]
        self._roles = self._tags_by_role(tag_map)
        if "counter_produced" in self._roles:
            bits = self._counter_bits("counter_produced")
            check_counter_offset(counter_offset, 1 << bits, f"the {bits}-bit part counter {self._roles['counter_produced']!r}")
        else:
            check_counter_offset(counter_offset, None, "the part counter")
        self._produced_adjust = 0
        self._rejected_adjust = 0
        self._restart_ms: int | None = None
        self._clock_shift_ms = 0
        """Offset, in recorded milliseconds, that the fault clock_step adds to the clock and state_since registers."""
        self._restart_changes = 0
        self._log = log.bind(tag_map=tag_map.name)

    @staticmethod
    def _tags_by_role(tag_map: TagMap) -> dict[str, str]:
        roles: dict[str, str] = {}
        for tag in tag_map.modbus_tags:
            if tag.role in ("state_input", "reason", "state_since", "clock", "state_seq"):
                roles.setdefault(tag.role, tag.name)
        for counter in tag_map.counters:
            roles.setdefault(f"counter_{counter.kind}", counter.tag)
        if "state_input" not in roles:
            raise ValueError(f"tag map {tag_map.name!r} has no state_input tag; the simulator needs one for the state code")
        return roles

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def host(self) -> str:
        return self.server.host

    # -- register image -----------------------------------------------------

    def values_at(self, now_ms: int) -> dict[str, int]:
        """Return the tag values the PLC shows at recorded time ``now_ms``, faults included."""
        status = self.truth.status_at(now_ms)
        since, changes = status.since_ms, status.changes
        produced = self.counter_offset + status.produced + self._produced_adjust
        rejected = status.rejected + self._rejected_adjust
        if self._restart_ms is not None:
            since = max(since, self._restart_ms)
            changes -= self._restart_changes
        values = {
            "state_input": status.state,
            "reason": status.reason,
            "state_since": since + self._clock_shift_ms,
            "clock": now_ms + self._clock_shift_ms,
            "state_seq": changes,
            "counter_produced": produced,
            "counter_reject": rejected,
            # A map that counts good parts instead of all of them (kind good) gets produced minus rejected.
            "counter_good": max(produced - rejected, 0),
        }
        return {self._roles[role]: value for role, value in values.items() if role in self._roles}

    async def _apply(self, now_ms: int) -> None:
        self.server.set_values(self.values_at(now_ms))

    def _reads(self) -> int:
        return self.server.holding_reads

    def _client_arrived(self) -> asyncio.Event:
        return self.server.first_read

    # -- faults ---------------------------------------------------------------

    async def inject(self, fault: FaultSpec | str) -> None:
        """Apply one fault now (ignoring its ``at``)."""
        spec = parse_fault(fault, protocol="modbus") if isinstance(fault, str) else fault
        self._log.warning("fault_injected", fault=spec.kind, options=spec.options, duration_s=spec.duration_s)
        duration = spec.duration_s if spec.duration_s is not None else 0.0
        if spec.kind == "exception":
            self.server.add_exception(int(spec.options["start"]), int(spec.options["count"]), int(spec.option("code", 2)), duration_s=duration)
        elif spec.kind == "timeout":
            self.server.drop_responses(duration_s=duration)
        elif spec.kind == "slow":
            self.server.delay_responses(int(spec.option("delay_ms", 500)) / 1000, duration_s=duration)
        elif spec.kind == "drop":
            self.server.drop_connections()
        elif spec.kind == "server_restart":
            await self.server.restart(down_s=float(spec.option("down", 1.0)))
        elif spec.kind == "plc_restart":
            await self._plc_restart(float(spec.option("down", 1.0)))
        elif spec.kind == "counter_wrap":
            self._wrap_counter(int(spec.option("margin", 5)))
        elif spec.kind == "counter_reset":
            self._reset_counters()
        elif spec.kind == "clock_step":
            self._clock_shift_ms = round(float(spec.options["by"]) * 1000)
        else:
            raise ValueError(f"fault {spec.kind!r} is not available over Modbus")
        await self._apply(self.clock.now_ms)

    def _counter_bits(self, role: str) -> int:
        for counter in self.tag_map.counters:
            if counter.tag == self._roles.get(role):
                return counter.bits
        return 16

    def _current(self) -> LineStatus:
        return self.truth.status_at(self.clock.now_ms)

    def _wrap_counter(self, margin: int) -> None:
        status = self._current()
        modulus = 1 << self._counter_bits("counter_produced")
        shown = self.counter_offset + status.produced + self._produced_adjust
        self._produced_adjust += (modulus - margin - shown) % modulus

    def _reset_counters(self) -> None:
        status = self._current()
        self._produced_adjust = -(self.counter_offset + status.produced)
        self._rejected_adjust = -status.rejected

    async def _plc_restart(self, down_s: float) -> None:
        await self.server.stop()
        await asyncio.sleep(down_s)
        self._reset_counters()
        self._restart_ms = self.clock.now_ms
        self._restart_changes = self._current().changes
        self.server.requested_port = self.server.port
        await self.server.start()
        self._log.info("plc_restarted", at_ms=self._restart_ms)

    # -- lifecycle ------------------------------------------------------------

    async def _start_server(self) -> None:
        await self.server.start()
        self._log.info(
            "simulator_started", port=self.port, start_ms=self.truth.start_ms, end_ms=self.truth.end_ms,
            speed=self.pacing.speed, min_dwell_ms=self.pacing.min_dwell_ms,
        )

    async def _stop_server(self) -> None:
        await self.server.stop()

    async def _mark_done(self) -> None:
        self.server.set_coil(DONE_COIL, True)


def check_counter_offset(offset: int, size: int | None, counter: str) -> None:
    """Raise ValueError when ``counter``, which shows ``size`` values from 0, cannot start at ``offset``."""
    if offset < 0:
        raise ValueError(f"counter offset {offset} is negative; {counter} starts at 0 or more")
    if size is not None and offset >= size:
        raise ValueError(f"counter offset {offset} does not fit {counter}; choose 0..{size - 1}")


class BottlingModbusSimulator(ModbusLineSimulator):
    """The recorded juice bottling line served over Modbus TCP in the bottling filler register layout.

    ``days`` replays the first N production days; ``start``/``end`` select
    a range of plant dates (America/Sao_Paulo).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 0,
        speed: float = 3600.0,
        min_dwell_ms: int = 0,
        hold_until_read: bool = False,
        tick_ms: int = 20,
        days: int | None = None,
        start: date | None = None,
        end: date | None = None,
        counter_offset: int = DEFAULT_COUNTER_OFFSET,
        tag_map: TagMap | str | Path | None = None,
        faults: Iterable[FaultSpec | str] = (),
        paused: bool = False,
        wait_for_client: bool = False,
    ) -> None:
        recording = load_bottling()
        if days is not None or start is not None or end is not None:
            recording = recording.select(first_days=days, start=start, end=end)
        self.recording = recording
        if tag_map is None:
            tag_map = shipped_tag_map_dir() / BOTTLING_TAG_MAP
        if not isinstance(tag_map, TagMap):
            tag_map = load_tag_map(tag_map)
        super().__init__(
            bottling_timeline(recording),
            tag_map,
            host=host,
            port=port,
            unit_id=unit_id,
            pacing=ReplayPacing(speed=speed, min_dwell_ms=min_dwell_ms, tick_ms=tick_ms, hold_until_read=hold_until_read),
            counter_offset=counter_offset,
            faults=faults,
            paused=paused,
            wait_for_client=wait_for_client,
        )
