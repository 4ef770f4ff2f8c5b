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

from .errors import ConfigError, ConfigIssue
from .yamlsource import YamlSource, load_yaml

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
    """One Modbus value: where it lives, its type and order, and how raw values scale."""

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

    def state_tags(self) -> list[str]:
        """Return the tags the state rules read, in first-use order."""
        names: list[str] = []
        for rule in self.states.rules:
            for name in [*rule.when, *rule.unless, *([rule.reason_tag] if rule.reason_tag else [])]:
                if name not in names:
                    names.append(name)
        return names


def _check_modbus_tag(source: YamlSource, index: int, tag: ModbusTag, issues: list[ConfigIssue]) -> None:
    where = f"$.tags[{index}]"
    registers = tag.table in ("holding_register", "input_register")
    if tag.address < 0 or tag.address > 65535:
        issues.append(source.issue(f"{where}.address", "address is outside the Modbus range", allowed="0..65535"))
    if not registers:
        if tag.type != "bool":
            issues.append(source.issue(f"{where}.type", f"a {tag.table} holds one bit", allowed="bool"))
        if tag.order is not None:
            issues.append(source.issue(f"{where}.order", f"a {tag.table} has no byte or word order; remove the field"))
        return
    if tag.order is None:
        issues.append(
            source.issue(f"{where}.order", "register tags must name their byte and word order", allowed="ABCD, CDAB, BADC, DCBA", value=None)
        )
    if tag.type == "bool" and (tag.bit is None or not 0 <= tag.bit <= 15):
        issues.append(source.issue(f"{where}.bit", "a bool in a register needs the bit number", allowed="0..15"))
    if tag.type != "bool" and tag.bit is not None:
        issues.append(source.issue(f"{where}.bit", "only bool tags take a bit number"))
    if tag.type == "string" and (tag.length is None or not 1 <= tag.length <= 125):
        issues.append(source.issue(f"{where}.length", "a string needs its length in registers", allowed="1..125"))
    count = tag.length if tag.type == "string" and tag.length else REGISTER_COUNT.get(tag.type, 1)
    if tag.address + count - 1 > 65535:
        issues.append(source.issue(f"{where}.address", f"the tag's {count} registers run past address 65535"))


def _number_text(text: str) -> str | None:
    """Return ``text`` as a YAML number literal when it reads as one, else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


def _rule_value_problem(value: Scalar, tag: ModbusTag) -> str | None:
    """Return why a rule value can never equal what ``tag`` decodes to, with the fix, or None when it can."""
    name = f"tag '{tag.name}'"
    if tag.type == "string":
        if isinstance(value, str):
            return None
        return f"a number never matches {name}, which is a string; write '{value}' in quotes"
    if isinstance(value, str):
        number = _number_text(value)
        fix = f"write {number} without quotes" if number is not None else "write the number the PLC sends"
        return f"text never matches {name}, which is {tag.type}; {fix}"
    if tag.type == "bool":
        return None if value in (0, 1) else f"{name} is bool and reads only 0 or 1 (false or true)"
    integer = tag.type.startswith(("int", "uint")) and tag.scale == 1.0 and tag.offset == 0.0
    if integer and isinstance(value, float) and not value.is_integer():
        return f"{name} is {tag.type} and reads whole numbers only; write the integer the PLC sends"
    return None


def _check_rule_values(source: YamlSource, tag_map: TagMap, issues: list[ConfigIssue]) -> None:
    """Reject rule values whose type can never equal the value their Modbus tag decodes to."""
    tags = {tag["name"]: tag for tag in tag_map.tags if isinstance(tag, dict) and isinstance(tag.get("name"), str)}
    for index, rule in enumerate(tag_map.states.rules):
        for part in ("when", "unless"):
            for name, values in getattr(rule, part).items():
                try:
                    tag = msgspec.convert(tags[name], ModbusTag)
                except (KeyError, msgspec.ValidationError):
                    continue  # an unknown or malformed tag is reported on its own
                for position, value in enumerate(values):
                    problem = _rule_value_problem(value, tag)
                    if problem is not None:
                        issues.append(source.issue(f"$.states.rules[{index}].{part}.{name}[{position}]", problem, value=value))


def _check_overlaps(source: YamlSource, spans: list[tuple[int, ModbusTag]], issues: list[ConfigIssue]) -> None:
    """Reject two tags that read the same register or bit of one table.

    A bool tag with a ``bit`` may share its register with other bit tags and
    with a tag that reads the whole register (a status word and its flags),
    but not with a tag of the same bit.
    """
    placed: list[tuple[int, ModbusTag, int, int]] = []
    for index, tag in sorted(spans, key=lambda item: (item[1].table, item[1].address, item[0])):
        count = tag.length if tag.type == "string" and tag.length else REGISTER_COUNT.get(tag.type, 1)
        first, last = tag.address, tag.address + count - 1
        # Sorted by table and address: only tags of this table that end at or after ``first`` can overlap.
        placed = [entry for entry in placed if entry[1].table == tag.table and entry[3] >= first]
        for other_index, other, other_first, other_last in placed:
            if tag.bit is not None or other.bit is not None:
                if tag.bit != other.bit:
                    continue
                message = f"tag '{tag.name}' reads bit {tag.bit} of {tag.table} {first}, as tag '{other.name}' of tags[{other_index}] does"
            else:
                message = (
                    f"tag '{tag.name}' ({tag.table} {first}..{last}) overlaps tag '{other.name}' of tags[{other_index}] "
                    f"({other_first}..{other_last})"
                )
            message += "; give each tag its own registers"
            issues.append(source.issue(f"$.tags[{index}].address", message))
        placed.append((index, tag, first, last))


def _validate(source: YamlSource, tag_map: TagMap) -> None:
    issues: list[ConfigIssue] = []
    if tag_map.schema != TAGMAP_SCHEMA:
        issues.append(source.issue("$.schema", "unknown tag map schema", allowed=TAGMAP_SCHEMA))

    names: dict[str, int] = {}
    spans: list[tuple[int, ModbusTag]] = []
    for index, raw in enumerate(tag_map.tags):
        spec_type = ModbusTag if tag_map.protocol == "modbus" else OpcUaTag
        try:
            tag = msgspec.convert(raw, spec_type)
        except msgspec.ValidationError as exc:
            issues.append(source.validation_issue(exc, spec_type, raw, prefix=f"$.tags[{index}]"))
            if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                names.setdefault(raw["name"], index)  # so that rules naming it do not report a second error
            continue
        if tag.name in names:
            issues.append(source.issue(f"$.tags[{index}].name", f"duplicate tag name, first used at tags[{names[tag.name]}]"))
        names[tag.name] = index
        if isinstance(tag, ModbusTag):
            _check_modbus_tag(source, index, tag, issues)
            spans.append((index, tag))
        elif tag.node is None and not tag.browse_path:
            issues.append(source.issue(f"$.tags[{index}]", "an OPC UA tag needs `node` (nsu=...;s=...) or `browse_path`"))
        if tag.range is not None and (len(tag.range) != 2 or tag.range[0] > tag.range[1]):
            issues.append(source.issue(f"$.tags[{index}].range", "range must be [min, max] with min <= max"))

    _check_overlaps(source, spans, issues)

    for index, rule in enumerate(tag_map.states.rules):
        for part in ("when", "unless"):
            for name in getattr(rule, part):
                if name not in names:
                    issues.append(
                        source.issue(f"$.states.rules[{index}].{part}.{name}", "rule reads an unknown tag", value=name, allowed=", ".join(names))
                    )
        if rule.reason_tag is not None and rule.reason_tag not in names:
            issues.append(source.issue(f"$.states.rules[{index}].reason_tag", "unknown tag", allowed=", ".join(names)))
        if not rule.when and not rule.unless:
            issues.append(source.issue(f"$.states.rules[{index}]", "a rule needs at least one `when` or `unless` condition"))
    if tag_map.protocol == "modbus":
        _check_rule_values(source, tag_map, issues)

    for index, counter in enumerate(tag_map.counters):
        if counter.tag not in names:
            issues.append(source.issue(f"$.counters[{index}].tag", "unknown tag", allowed=", ".join(names)))
        if counter.max_rate_per_min <= 0:
            issues.append(source.issue(f"$.counters[{index}].max_rate_per_min", "must be positive"))
    for field in ("state_since", "clock", "state_seq"):
        name = getattr(tag_map.time, field)
        if name is not None and name not in names:
            issues.append(source.issue(f"$.time.{field}", "unknown tag", allowed=", ".join(names)))
    if tag_map.ideal_cycle_time_s is not None and tag_map.ideal_cycle_time_s <= 0:
        issues.append(source.issue("$.ideal_cycle_time_s", "must be positive seconds per item"))
    if issues:
        raise ConfigError(issues)


def load_tag_map(path: str | Path) -> TagMap:
    """Load and validate a tag map; raises :class:`ConfigError` listing every problem with file and line."""
    source = load_yaml(path)
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue("$", "a tag map must be a YAML mapping")])
    tag_map = source.convert(TagMap)
    _validate(source, tag_map)
    return tag_map


def shipped_tag_map_dir() -> Path:
    """Return the folder of tag maps shipped with valuegate (``firmware_configs``)."""
    import valuegate.firmware_configs as shipped

    return Path(shipped.__file__).parent
