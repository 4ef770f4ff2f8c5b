"""MTConnect recordings (Mazak03, Hurco02, Hurco04) replayed as OPC UA variables with recorded SourceTimestamps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

import structlog
from asyncua import ua

from .faults import FaultSpec, parse_fault
from .opcua_server import VariableServer, VariableSpec, utc_datetime
from .recordings.files import plant_day_bounds_ms
from .recordings.mtconnect import MTCONNECT_RECORDINGS, UNAVAILABLE, MtconnectRecording, MtEvent, load_mtconnect
from .replay import DAY_CLOSE_MS, ReplayClock, ReplayPacing
from .service import ReplayService

__all__ = ("MTCONNECT_NAMESPACE", "NODE_NAMES", "MtconnectOpcUaSimulator")

log = structlog.get_logger("valuegate.simulators.mtconnect")

MTCONNECT_NAMESPACE = "urn:valuegate:simulator:mtconnect"
OBJECT_NAME = "Machine"

# Timeline item -> variable name under Machine/, with its OPC UA type.
NODE_NAMES: dict[str, str] = {
    "execution": "Execution",
    "mode": "ControllerMode",
    "alarm_code": "AlarmCode",
    "part_count": "PartCount",
    "auto_time": "AutoTime",
    "total_time": "TotalTime",
    "spindle_time": "SpindleTime",
    "program": "Program",
    "estop": "EStop",
    "availability": "Availability",
    "reject_count": "RejectCount",
}
_TYPES: dict[str, ua.VariantType] = {
    "alarm_code": ua.VariantType.Int32,
    "part_count": ua.VariantType.Int32,
    "reject_count": ua.VariantType.Int32,
    "auto_time": ua.VariantType.Double,
    "total_time": ua.VariantType.Double,
    "spindle_time": ua.VariantType.Double,
}
# Changes of these items are state changes: the replay lands on each and can hold it for a minimum dwell.
STATE_ITEMS = frozenset(("execution", "mode", "alarm_code"))
# A number the recording reports as UNAVAILABLE keeps its last value with this status.
UNAVAILABLE_STATUS = ua.StatusCodes.BadNoCommunication
_INT32 = 1 << 32


class MtconnectOpcUaSimulator(ReplayService):
    """Serves one MTConnect recording over OPC UA in namespace ``urn:valuegate:simulator:mtconnect``.

    Variables are ``Machine/Execution``, ``Machine/ControllerMode`` (Mazak
    only), ``Machine/AlarmCode`` (Mazak only: native code of the active
    Fault condition, 0 when none), ``Machine/PartCount``, ``Machine/AutoTime``
    and ``Machine/TotalTime`` (Mazak), ``Machine/SpindleTime`` (Hurco),
    ``Machine/Program``, ``Machine/Clock`` (the recorded time) and
    ``Machine/ReplayDone``. Every write carries the recorded time as its
    SourceTimestamp. A variable whose item the recording lacks is not created.
    The ``clock_step`` fault shifts every SourceTimestamp and the ``Clock``
    value, as a PLC whose clock was set forward or back would stamp them.
    """

    def __init__(
        self,
        recording: str | MtconnectRecording = "mazak03",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 3600.0,
        min_dwell_ms: int = 0,
        tick_ms: int = 20,
        days: int | None = None,
        start: date | None = None,
        end: date | None = None,
        faults: Iterable[FaultSpec | str] = (),
        paused: bool = False,
        wait_for_client: bool = False,
    ) -> None:
        super().__init__(paused=paused, wait_for_client=wait_for_client)
        if isinstance(recording, str):
            recording = load_mtconnect(recording)
        if days is not None or start is not None or end is not None:
            recording = recording.select(first_days=days, start=start, end=end)
        if not recording.events:
            raise ValueError(f"the {recording.name} slice has no recorded event; choose other days")
        self.recording = recording
        self.pacing = ReplayPacing(speed=speed, min_dwell_ms=min_dwell_ms, tick_ms=tick_ms)
        source = MTCONNECT_RECORDINGS.get(recording.name)
        if source is not None:
            self.items = [*source.items.values(), *(["alarm_code"] if source.conditions else [])]
        else:
            self.items = list(dict.fromkeys([*recording.initial, *recording.items()]))
        self.server = VariableServer(
            MTCONNECT_NAMESPACE, OBJECT_NAME, self._variables(), host=host, port=port,
            initial_source=utc_datetime(recording.events[0].ts_us),
        )
        zone = ZoneInfo(recording.zone)
        self.events = recording.events
        self.start_ms = self.events[0].ts_us // 1000
        self.end_ms = plant_day_bounds_ms(recording.plant_days[-1], zone)[1] + DAY_CLOSE_MS
        self.clock = ReplayClock(
            self.pacing, start_ms=self.start_ms, end_ms=self.end_ms, marks=self._marks(), idle=self._idle(), zone=zone
        )
        self.faults = [parse_fault(item, protocol="opcua") if isinstance(item, str) else item for item in faults]
        self._next_event = 0
        self._part_count_adjust = 0
        self._last_part_count = int(recording.initial.get("part_count") or 0)
        self._clock_shift_ms = 0
        """Offset, in recorded milliseconds, that the fault clock_step adds to every SourceTimestamp and to the Clock value."""
        self._log = log.bind(recording=recording.name, device=recording.device)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def port(self) -> int:
        return self.server.port

    def node_id(self, item_or_name: str) -> str:
        """Return ``nsu=...;s=Machine/<Name>`` for a timeline item (``execution``) or a variable name (``Clock``)."""
        return self.server.node_id(NODE_NAMES.get(item_or_name, item_or_name))

    def _variables(self) -> list[VariableSpec]:
        specs = []
        for item in self.items:
            initial = self.recording.initial.get(item)
            variant_type = _TYPES.get(item, ua.VariantType.String)
            if variant_type == ua.VariantType.String:
                specs.append(VariableSpec(NODE_NAMES[item], variant_type, initial if isinstance(initial, str) else UNAVAILABLE))
            elif item == "alarm_code":
                specs.append(VariableSpec(NODE_NAMES[item], variant_type, int(initial or 0)))
            elif initial is None:
                zero = 0 if variant_type == ua.VariantType.Int32 else 0.0
                specs.append(VariableSpec(NODE_NAMES[item], variant_type, zero, ua.StatusCodes.BadWaitingForInitialData))
            else:
                specs.append(VariableSpec(NODE_NAMES[item], variant_type, initial))
        start = utc_datetime(self.recording.events[0].ts_us)
        specs.append(VariableSpec("Clock", ua.VariantType.DateTime, start))
        specs.append(VariableSpec("ReplayDone", ua.VariantType.Boolean, False))
        return specs

    def _marks(self) -> list[int]:
        current = dict(self.recording.initial)
        marks = []
        for event in self.events:
            if event.item in STATE_ITEMS and current.get(event.item) != event.value:
                marks.append(event.ts_us // 1000)
            current[event.item] = event.value
        return marks

    def _idle(self) -> list[tuple[int, int]]:
        """Return the gaps between recorded events (machine powered off, or waiting overnight)."""
        instants = [event.ts_us // 1000 for event in self.events] + [self.end_ms]
        return [(earlier, later) for earlier, later in zip(instants, instants[1:]) if later > earlier]

    def expected_changes(self, item: str) -> list[MtEvent]:
        """Return the recorded events of ``item`` whose value differs from the one before: what a subscriber receives."""
        current = self.recording.initial.get(item)
        changes = []
        for event in self.events:
            if event.item == item and event.value != current:
                changes.append(event)
                current = event.value
        return changes

    # -- replay ---------------------------------------------------------------

    async def _apply(self, now_ms: int) -> None:
        events = self.events
        while self._next_event < len(events) and events[self._next_event].ts_us // 1000 <= now_ms:
            await self._write_event(events[self._next_event])
            self._next_event += 1
        clock = self._stamp(now_ms)
        await self.server.write("Clock", clock, clock)

    def _stamp(self, recorded_ms: int) -> datetime:
        """Return the time the PLC's clock shows at recorded time ``recorded_ms``, clock_step faults included."""
        return utc_datetime((recorded_ms + self._clock_shift_ms) * 1000)

    async def _write_event(self, event: MtEvent) -> None:
        name = NODE_NAMES[event.item]
        source = utc_datetime(event.ts_us + self._clock_shift_ms * 1000)
        current = self.server.value(name)
        good = current.StatusCode is None or current.StatusCode.is_good()
        if event.value is None:
            if good:
                await self.server.write(name, current.Value.Value, source, status=UNAVAILABLE_STATUS)
            return
        value = event.value
        if event.item == "part_count":
            self._last_part_count = int(value)
            value = self._wrap_int32(int(value) + self._part_count_adjust)
        if value != current.Value.Value or not good:
            await self.server.write(name, value, source)

    @staticmethod
    def _wrap_int32(value: int) -> int:
        return (value + (1 << 31)) % _INT32 - (1 << 31)

    # -- faults ---------------------------------------------------------------

    async def inject(self, fault: FaultSpec | str) -> None:
        """Apply one fault now (ignoring its ``at``)."""
        spec = parse_fault(fault, protocol="opcua") if isinstance(fault, str) else fault
        self._log.warning("fault_injected", fault=spec.kind, options=spec.options, duration_s=spec.duration_s)
        if spec.kind == "clock_step":
            self._clock_shift_ms = round(float(spec.options["by"]) * 1000)
            clock = self._stamp(self.clock.now_ms)
            await self.server.write("Clock", clock, clock)
            return
        now = self._stamp(self.clock.now_ms)
        if spec.kind in ("bad", "uncertain"):
            names = self._fault_nodes(spec)
            status = getattr(ua.StatusCodes, str(spec.options["status"]))
            await self.server.override_status(names, status, now)
            if spec.duration_s is not None and spec.duration_s != float("inf"):
                self._spawn(self._clear_later(names, spec.duration_s), "fault-clear")
        elif spec.kind == "slow":
            self.server.delay_responses(int(spec.option("delay_ms", 500)) / 1000, duration_s=float(spec.duration_s or 0.0))
        elif spec.kind == "timeout":
            self.server.hold_responses(duration_s=float(spec.duration_s or 0.0))
        elif spec.kind == "drop":
            self.server.drop_connections()
        elif spec.kind == "server_restart":
            await self.server.restart(down_s=float(spec.option("down", 1.0)))
        elif spec.kind == "plc_restart":
            await self.server.stop()
            await asyncio.sleep(float(spec.option("down", 1.0)))
            await self._set_part_count(0)
            await self.server.start()
            self._log.info("plc_restarted", at_ms=self.clock.now_ms)
        elif spec.kind == "counter_wrap":
            await self._set_part_count((1 << 31) - int(spec.option("margin", 5)))
        elif spec.kind == "counter_reset":
            await self._set_part_count(0)
        else:
            raise ValueError(f"fault {spec.kind!r} is not available over OPC UA")

    def _fault_nodes(self, spec: FaultSpec) -> list[str]:
        names = [NODE_NAMES[item] for item in self.items]
        chosen = spec.options.get("node")
        if chosen is None:
            return names
        if chosen not in names:
            raise ValueError(f"fault {spec.text!r}: node {chosen!r} is not served; choose one of {', '.join(names)}")
        return [str(chosen)]

    async def _clear_later(self, names: list[str], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self.server.clear_overrides(names, self._stamp(self.clock.now_ms))

    async def _set_part_count(self, shown: int) -> None:
        if "part_count" not in self.items:
            raise ValueError(f"the {self.recording.name} recording has no part counter to change")
        self._part_count_adjust = shown - self._last_part_count
        await self.server.write(NODE_NAMES["part_count"], self._wrap_int32(shown), self._stamp(self.clock.now_ms))

    # -- lifecycle ------------------------------------------------------------

    async def _start_server(self) -> None:
        await self.server.start()
        self._log.info("simulator_started", endpoint=self.endpoint, speed=self.pacing.speed, min_dwell_ms=self.pacing.min_dwell_ms)

    async def _stop_server(self) -> None:
        await self.server.stop()

    async def _mark_done(self) -> None:
        await self.server.write("ReplayDone", True, self._stamp(self.clock.now_ms))

    def _client_arrived(self) -> asyncio.Event:
        return self.server.first_client
