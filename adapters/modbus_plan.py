"""Modbus read planning: group a tag map's tags into as few requests as the protocol limits allow, and decode responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .decode import make_decoder, register_count
from .samples import Sample
from .tagmap import TIME_ROLES, ModbusTag
from .values import make_sample, scaled

__all__ = ("EXCEPTION_NAMES", "FUNCTION_CODES", "UNIT_ID_EXCEPTIONS", "ReadRequest", "TagReader", "plan_requests", "unit_id_hint")

# Function code of the read request for each table (Modbus Application Protocol v1.1b3, section 6).
FUNCTION_CODES = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}

# Exception codes of the same specification (section 7), as the detail of a sample.
EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}

# Exceptions that a device or gateway sends for every request addressed to a unit id it does not serve: pymodbus's
# server sends server_device_failure, gateways send gateway_path_unavailable or gateway_target_failed_to_respond,
# and some devices send illegal_function.
UNIT_ID_EXCEPTIONS = frozenset({"illegal_function", "server_device_failure", "gateway_path_unavailable", "gateway_target_failed_to_respond"})


def unit_id_hint(unit_id: int) -> str:
    """Return the advice for a device whose every request got the same one of the :data:`UNIT_ID_EXCEPTIONS`."""
    return f"check the device's unit_id ({unit_id}) against the PLC or gateway"


@dataclass(frozen=True, slots=True)
class TagReader:
    """One tag with its register span and its decoder, resolved once from the tag map.

    ``plain`` marks an integer tag without scaling, range or time check,
    whose decoded value can go into a sample without further checks.
    ``plc_time`` marks a tag whose value must be a plausible PLC time.
    """

    tag: ModbusTag
    count: int
    decode: Callable[[Sequence[int]], Any]
    plain: bool
    plc_time: bool = False

    @classmethod
    def of(cls, tag: ModbusTag, *, plc_time: bool = False) -> TagReader:
        plc_time = plc_time or tag.role in TIME_ROLES
        if tag.table in ("coil", "discrete_input"):
            return cls(tag, 1, bool, not plc_time, plc_time)
        count = register_count(tag.type, length=tag.length)
        plain = tag.type in _INTEGER_TYPES and tag.scale == 1.0 and tag.offset == 0.0 and tag.range is None and not plc_time
        return cls(tag, count, make_decoder(tag.type, tag.order or "ABCD", bit=tag.bit, length=tag.length), plain, plc_time)

    @property
    def end(self) -> int:
        return self.tag.address + self.count


_INTEGER_TYPES = frozenset({"bool", "int16", "uint16", "int32", "uint32", "int64", "uint64"})


@dataclass(slots=True)
class ReadRequest:
    """One read request: a function code over a contiguous address span covering some tags."""

    table: str
    start: int
    count: int
    readers: list[TagReader] = field(default_factory=list)

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    @property
    def is_bits(self) -> bool:
        return self.table in ("coil", "discrete_input")

    def decode(self, device: str, words: Sequence[Any], ts_ms: int, received_ms: int) -> tuple[list[Sample], int]:
        """Decode a response into one sample per tag; returns the samples and the number of decode errors."""
        samples: list[Sample] = []
        append = samples.append
        start = self.start
        if self.is_bits:
            for reader in self.readers:
                bit = bool(words[reader.tag.address - start])
                if reader.plain:
                    append(Sample(device, reader.tag.name, ts_ms, "gateway", received_ms, bit, bit, "good", ""))
                else:
                    append(make_sample(device, reader.tag.name, ts_ms=ts_ms, time_source="gateway", received_ms=received_ms,
                                       raw=bit, value=bit, status="good", plc_time=True))
            return samples, 0

        errors = 0
        for reader in self.readers:
            tag = reader.tag
            offset = tag.address - start
            raw = list(words[offset : offset + reader.count])
            try:
                value = reader.decode(raw)
            except (ValueError, TypeError) as exc:
                errors += 1
                append(Sample(device, tag.name, ts_ms, "gateway", received_ms, None, raw, "bad", f"decode_error: {exc}"))
                continue
            if reader.plain:
                append(Sample(device, tag.name, ts_ms, "gateway", received_ms, value, raw, "good", ""))
            else:
                append(make_sample(device, tag.name, ts_ms=ts_ms, time_source="gateway", received_ms=received_ms, raw=raw,
                                   value=scaled(value, tag.scale, tag.offset), status="good", value_range=tag.range,
                                   plc_time=reader.plc_time))
        return samples, errors

    def split(self) -> list[ReadRequest]:
        """Split into two requests of about half the tags each, to isolate a tag that makes the device reject the read."""
        middle = len(self.readers) // 2
        return [_request_for(self.table, self.readers[:middle]), _request_for(self.table, self.readers[middle:])]


def _request_for(table: str, readers: list[TagReader]) -> ReadRequest:
    start = min(reader.tag.address for reader in readers)
    end = max(reader.end for reader in readers)
    return ReadRequest(table, start, end - start, list(readers))


def plan_requests(
    tags: Sequence[ModbusTag],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 0,
    isolated: frozenset[str] = frozenset(),
    time_tags: frozenset[str] = frozenset(),
) -> list[ReadRequest]:
    """Group tags by table into requests of adjacent (or overlapping) addresses.

    Tags are packed in address order into as few requests as ``max_registers``
    (or ``max_bits`` for coils and discrete inputs) allows. A request spans at
    most ``max_gap`` unused addresses between two tags. Tags in ``isolated``
    get a request of their own, because the device rejected a grouped read
    that contained them. Tags in ``time_tags`` (see :meth:`TagMap.time_tags`)
    and tags with a time role must decode to a plausible PLC time, or their
    sample is bad.
    """
    requests: list[ReadRequest] = []
    for table in FUNCTION_CODES:
        table_requests: list[ReadRequest] = []
        limit = max_bits if table in ("coil", "discrete_input") else max_registers
        readers = sorted(
            (TagReader.of(tag, plc_time=tag.name in time_tags) for tag in tags if tag.table == table),
            key=lambda r: (r.tag.address, r.count),
        )
        current: list[TagReader] = []
        start = end = 0
        for reader in readers:
            if reader.tag.name in isolated:
                table_requests.append(_request_for(table, [reader]))
                continue
            joins = current and reader.tag.address - end <= max_gap and max(end, reader.end) - start <= limit
            if joins:
                current.append(reader)
                end = max(end, reader.end)
                continue
            if current:
                table_requests.append(_request_for(table, current))
            current, start, end = [reader], reader.tag.address, reader.end
        if current:
            table_requests.append(_request_for(table, current))
        requests.extend(sorted(table_requests, key=lambda request: (request.start, request.count)))
    return requests
