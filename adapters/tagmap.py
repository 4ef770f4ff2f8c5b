"""Tag maps: which PLC node or register holds what, and how vendor states map to OEE categories.

A tag map is a YAML file (schema ``valuegate/tagmap/v1``) per PLC family and
state model. Every Modbus register tag names its data type and its byte and
word order explicitly; there are no defaults for either.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal


import msgspec
import rfc8785

from .errors import ConfigError
from .yamlsource import load_yaml

__all__ = (
    "TAGMAP_SCHEMA",
    "CATEGORIES",
    "DataType",
    "Order",
    "ModbusTag",
    "OpcUaTag",
    "StateRule",
    "StateModel",
    "CounterSpec",
    "TimeSpec",
    "TagMap",
    "load_tag_map",
    "REGISTER_COUNT",
    "TIME_ROLES",
)

TAGMAP_SCHEMA = "valuegate/tagmap/v1"

Category = Literal["running", "idle", "planned_stop", "unplanned_stop", "changeover", "offline"]
CATEGORIES: tuple[str, ...] = ("running", "idle", "planned_stop", "unplanned_stop", "changeover", "offline")
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"]
# ABCD: big-endian bytes and words; CDAB: words swapped; BADC: bytes swapped in each word; DCBA: both.
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
Table = Literal["coil", "discrete_input", "holding_register", "input_register"]
Role = Literal[
    "state_input",
    "state_since",
    "state_seq",
    "clock",
    "counter",
    "reason",
    "alarm",
    "value",
]

# Roles whose values are PLC times (UTC epoch ms); the adapters check that each is a plausible instant.
TIME_ROLES = frozenset({"clock", "state_since"})

# Registers occupied by each fixed-width type; strings take ``length`` registers.
REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

Scalar = str | int | float | bool


class _Spec(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ModbusTag(_Spec):
    """One Modbus value: where it lives, its type and order, and how raw values scale.

    ``no_reason`` lists the values of a reason tag that mean the PLC records no reason, so a stop gets none.
    """

    name: str
    table: Table
    address: int
    type: DataType
    order: Order | None = None
    bit: int | None = None
    length: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    range: list[float] | None = None
    role: Role = "value"
    no_reason: list[Scalar] | None = None
    description: str = ""


class OpcUaTag(_Spec):
    """One OPC UA variable, named by a namespace-URI node id (``nsu=...;s=...``) or a browse path."""

    name: str
    node: str | None = None
    browse_path: list[str] | None = None
    unit: str = ""
    range: list[float] | None = None
    role: Role = "value"
    sampling_ms: int | None = None
    queue_size: int = 1000
    no_reason: list[Scalar] | None = None
    description: str = ""


class StateRule(_Spec):
    """A rule mapping tag values to a category; all ``when`` tags must match and no ``unless`` tag may."""

    category: Category
    when: dict[str, list[Scalar]] = {}
    unless: dict[str, list[Scalar]] = {}
    reason: str | None = None
    reason_tag: str | None = None
    label: str = ""


class StateModel(_Spec):
    """The vendor state model: rules evaluated in order, the first match wins, else ``default``."""

    model: str
    rules: list[StateRule]
    default: Category


class CounterSpec(_Spec):
    """A part counter: its wrap width and signedness, and the fastest rate the machine can count."""

    tag: str
    kind: Literal["produced", "good", "reject"]
    bits: Literal[16, 32, 64]
    signed: bool
    max_rate_per_min: float


class TimeSpec(_Spec):
    """Where durations come from: the PLC's own timestamps (``plc``) or the gateway clock."""

    source: Literal["plc", "gateway"]
    state_since: str | None = None
    clock: str | None = None
    state_seq: str | None = None


class TagMap(_Spec):
    """A parsed, validated tag map."""

    schema: str
    name: str
    protocol: Literal["modbus", "opcua"]
    states: StateModel
    time: TimeSpec
    tags: list[dict[str, Any]]
    counters: list[CounterSpec] = []
    ideal_cycle_time_s: float | None = None
    description: str = ""
    vendor: str = ""
    namespaces: dict[str, str] = {}

    @property
    def modbus_tags(self) -> list[ModbusTag]:
        return [msgspec.convert(tag, ModbusTag) for tag in self.tags] if self.protocol == "modbus" else []

    @property
    def opcua_tags(self) -> list[OpcUaTag]:
        return [msgspec.convert(tag, OpcUaTag) for tag in self.tags] if self.protocol == "opcua" else []

    def tag_names(self) -> list[str]:
        return [str(tag.get("name")) for tag in self.tags]

    def content_hash(self) -> str:
        """Return ``sha256:<hex>`` over the canonical JSON of the map, independent of YAML layout and comments."""
        return "sha256:" + hashlib.sha256(rfc8785.dumps(msgspec.to_builtins(self))).hexdigest()

    def time_tags(self) -> frozenset[str]:
        """Return the tags that carry a PLC time: role ``clock`` or ``state_since``, or named so in ``time:``."""
        names = {str(tag.get("name")) for tag in self.tags if tag.get("role") in TIME_ROLES}
        names.update(name for name in (self.time.clock, self.time.state_since) if name is not None)
        return frozenset(names)

    def missing_clock_effect(self) -> str | None:
        """Return what goes wrong because a map on PLC time names no PLC clock, or None when nothing does.

        Plant days and minutes close when the machine's watermark passes
        their end. On OPC UA without a clock the watermark is the newest
        SourceTimestamp of any tag, so it stops while no value changes. On
        Modbus without ``time.clock`` it is the gateway's receive time.
        """
        if self.time.source != "plc" or self.time.clock is not None:
            return None
        if self.protocol == "opcua":
            if any(tag.get("role") == "clock" for tag in self.tags):
                return None
            return (
                "time.source is plc but no tag carries the PLC clock, so minutes and plant days close only when some "
                "tag's value changes: a machine that stays in one state keeps its last day open until its next change; "
                "and after the agent starts or a connection comes back, the machine stays offline until a value changes, "
                "because nothing says when reading resumed"
            )
        return (
            "time.source is plc but time.clock names no clock register, so minutes and plant days are closed by the "
            "gateway's clock while state changes carry the PLC's state_since"
        )

    def no_reason_values(self) -> dict[str, list[Scalar]]:
        """Return, per tag, the values that mean no reason (the tag's ``no_reason``)."""
        return {str(tag.get("name")): list(tag["no_reason"]) for tag in self.tags if tag.get("no_reason")}

    def state_tags(self) -> list[str]:
        """Return the tags the state rules read, in first-use order."""
        names: list[str] = []
        for rule in self.states.rules:
            for name in [*rule.when, *rule.unless, *([rule.reason_tag] if rule.reason_tag else [])]:
                if name not in names:
                    names.append(name)
        return names


def load_tag_map(path: str | Path) -> TagMap:
    """Load and validate a tag map; raises :class:`ConfigError` listing every problem with file and line."""
    source = load_yaml(path)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue("$", "a tag map must be a YAML mapping")])
    from .tagmap_checks import validate  # it imports this module's types

    # Each tag, rule and counter is checked on its own, so one bad value does not hide the problems of the others.
    check = source.type_check(TagMap)
    issues = check.issues + validate(source, check)
    if issues:
        raise ConfigError(issues)
    return source.convert(TagMap)


def shipped_tag_map_dir() -> Path:
    """Return the folder of tag maps shipped with valuegate (``firmware_configs``)."""
    import valuegate.firmware_configs as shipped

    return Path(shipped.__file__).parent
