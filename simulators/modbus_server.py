"""Modbus TCP server (pymodbus) serving a tag map's holding registers and coils, with injectable faults."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simutils import SimUtils

from valuegate.adapters.decode import encode_registers, register_count
from valuegate.adapters.tagmap import ModbusTag, TagMap

from .errors import ListenError, bind_failure

__all__ = ("RegisterServer", "ExceptionRange", "COIL_COUNT")

log = structlog.get_logger("valuegate.simulators.modbus")

# Coils served next to the tag map's registers; coil 0 is set when the replay is done.
COIL_COUNT = 16
_HOLDING_CODES = frozenset((3, 6, 16, 22, 23))
_READ_CODES = frozenset((3, 23))
_COIL_CODES = frozenset((1, 5, 15))


@dataclass(frozen=True, slots=True)
class ExceptionRange:
    """Holding registers ``start`` .. ``start + count - 1`` respond with exception ``code`` until ``until`` (monotonic s)."""

    start: int
    count: int
    code: int
    until: float


class RegisterServer:
    """A Modbus TCP server whose holding registers carry the tags of one tag map.

    The simulator sets tag values by name with :meth:`set_values`; every
    request reads one consistent image. Registers are read-only: writes get
    exception 0x02. Faults: exception responses for an address range,
    dropped responses (client timeouts), delayed responses, dropped
    connections and a server restart on the same port.
    """

    def __init__(self, tag_map: TagMap, *, host: str = "127.0.0.1", port: int = 0, unit_id: int = 0) -> None:
        if tag_map.protocol != "modbus":
            raise ValueError(f"tag map {tag_map.name!r} is for {tag_map.protocol}, not modbus; pass a Modbus tag map")
        self.tag_map = tag_map
        self.host = host
        self.requested_port = port
        self.unit_id = unit_id
        self._tags: dict[str, ModbusTag] = {}
        size = 0
        for tag in tag_map.modbus_tags:
            if tag.table != "holding_register":
                raise ValueError(f"tag {tag.name!r} is a {tag.table}; the simulator serves holding registers only")
            self._tags[tag.name] = tag
            size = max(size, tag.address + register_count(tag.type, length=tag.length))
        self.register_count = size
        self._registers = [0] * size
        self._coils = [False] * COIL_COUNT
        self._exceptions: list[ExceptionRange] = []
        self._delay_s = 0.0
        self._delay_until = 0.0
        self._silent_until = 0.0
        self._server: ModbusTcpServer | None = None
        self.port = 0
        self.requests = 0
        self.holding_reads = 0
        self.first_read = asyncio.Event()
        """Set when a client first reads the holding registers."""

    # -- values -------------------------------------------------------------

    def set_values(self, values: dict[str, Any]) -> None:
        """Encode tag values into the register image; unsigned integer tags wrap at their width."""
        for name, value in values.items():
            tag = self._tags[name]
            if tag.type.startswith("uint"):
                value = int(value) % (1 << (16 * register_count(tag.type)))
            words = encode_registers(value, tag.type, tag.order or "ABCD", bit=tag.bit, length=tag.length)
            self._registers[tag.address : tag.address + len(words)] = words

    def set_coil(self, index: int, value: bool) -> None:
        self._coils[index] = bool(value)

    @property
    def registers(self) -> list[int]:
        return list(self._registers)

    # -- faults -------------------------------------------------------------

    def add_exception(self, start: int, count: int, code: int = int(ExcCodes.ILLEGAL_ADDRESS), *, duration_s: float = float("inf")) -> None:
        """Respond to requests touching holding registers ``start`` .. ``start + count - 1`` with exception ``code``."""
        if count < 1 or start < 0:
            raise ValueError(f"exception range start={start} count={count} is empty; use start >= 0 and count >= 1")
        if code not in {int(item) for item in ExcCodes}:
            raise ValueError(f"exception code {code} is not a Modbus exception code; use one of {sorted(int(item) for item in ExcCodes)}")
        self._exceptions.append(ExceptionRange(start, count, code, time.monotonic() + duration_s))

    def clear_exceptions(self) -> None:
        self._exceptions.clear()

    def delay_responses(self, delay_s: float, *, duration_s: float = float("inf")) -> None:
        """Delay every response by ``delay_s`` for ``duration_s``."""
        self._delay_s = delay_s
        self._delay_until = time.monotonic() + duration_s

    def drop_responses(self, *, duration_s: float) -> None:
        """Send no response for ``duration_s``, so that clients time out."""
        self._silent_until = time.monotonic() + duration_s

    def drop_connections(self) -> int:
        """Close every client connection; return how many were closed."""
        if self._server is None:
            return 0
        connections = list(self._server.active_connections.values())
        for connection in connections:
            connection.close()
        log.info("modbus_connections_dropped", port=self.port, count=len(connections))
        return len(connections)

    async def restart(self, *, down_s: float = 1.0) -> None:
        """Stop listening, stay down ``down_s`` seconds, and listen again on the same port."""
        await self.stop()
        await asyncio.sleep(down_s)
        self.requested_port = self.port
        await self.start()
        log.info("modbus_server_restarted", port=self.port, down_s=down_s)

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port``; with port 0 the bound port is in :attr:`port`."""
        device = SimDevice(
            id=self.unit_id,
            simdata=(
                [SimData(0, count=COIL_COUNT, values=False, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS, readonly=True)],
                [SimData(0, count=self.register_count, values=0, datatype=DataType.REGISTERS, readonly=True)],
                [SimData(0, count=1, values=0, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )
        server = ModbusTcpServer(device, address=(self.host, self.requested_port), trace_packet=self._trace_packet)
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as exc:
            # pymodbus 3.x raises a bare RuntimeError("Could not start listen") without the cause.
            await server.shutdown()
            raise ListenError("Modbus TCP", self.host, self.requested_port, bind_failure(self.host, self.requested_port)) from exc
        self._server = server
        self.port = server.transport.sockets[0].getsockname()[1]
        log.info("modbus_server_started", host=self.host, port=self.port, tag_map=self.tag_map.name)

    async def stop(self) -> None:
        """Close the listener and every connection; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self.drop_connections_of(server)
        await server.shutdown()
        log.info("modbus_server_stopped", port=self.port)

    @staticmethod
    def drop_connections_of(server: ModbusTcpServer) -> None:
        for connection in list(server.active_connections.values()):
            connection.close()

    async def __aenter__(self) -> RegisterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- pymodbus hooks -----------------------------------------------------

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Refresh the block pymodbus reads from, or answer with an injected exception or delay."""
        self.requests += 1
        now = time.monotonic()
        if self._delay_s and now < self._delay_until:
            await asyncio.sleep(self._delay_s)
        if function_code in _HOLDING_CODES:
            self._exceptions = [item for item in self._exceptions if item.until > now]
            for item in self._exceptions:
                if address < item.start + item.count and item.start < address + count:
                    return ExcCodes(item.code)
            current_registers[: self.register_count] = self._registers
            if function_code in _READ_CODES:
                self.holding_reads += 1
                self.first_read.set()
        elif function_code in _COIL_CODES:
            current_registers[: COIL_COUNT // 16] = SimUtils.bitsToRegisters(self._coils)
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and time.monotonic() < self._silent_until:
            return b""
        return data
