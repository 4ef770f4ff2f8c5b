"""Tag-map checks that need more than types: Modbus addresses and overlaps, rule values, no-reason values, OPC UA node ids, time tags."""

from __future__ import annotations

from pathlib import Path

import msgspec

from .errors import ConfigIssue
from .nodeid import NODE_ID_FORMS, browse_prefix_problem, node_id_problem, parse_node_id
from .tagmap import REGISTER_COUNT, TAGMAP_SCHEMA, ModbusTag, OpcUaTag, Scalar, TagMap
from .tagmap_parts import MapParts
from .yamlsource import YamlSource, load_yaml
from .yamltypes import TypeCheck

__all__ = ("tag_map_warnings", "namespace_warnings", "validate")


def _check_modbus_tag(source: YamlSource, index: int, tag: ModbusTag, issues: list[ConfigIssue]) -> None:
    where = f"$.tags[{index}]"
    registers = tag.table in ("holding_register", "input_register")
    address_ok = 0 <= tag.address <= 65535
    if not address_ok:
        issues.append(source.issue(f"{where}.address", "address is outside the Modbus range", allowed="0..65535"))
    if not registers:
        if tag.type != "bool":
            issues.append(source.issue(f"{where}.type", f"a {tag.table} holds one bit", allowed="bool"))
        if tag.order is not None:
            issues.append(source.issue(f"{where}.order", f"a {tag.table} has no byte or word order; remove the field"))
        return
    if tag.order is None:
        issues.append(
            source.issue(f"{where}.order", "`order` is missing; a register tag must name its byte and word order", allowed="ABCD, CDAB, BADC, DCBA")
        )
    if tag.type == "bool" and (tag.bit is None or not 0 <= tag.bit <= 15):
        issues.append(source.issue(f"{where}.bit", "a bool in a register needs the bit number", allowed="0..15"))
    if tag.type != "bool" and tag.bit is not None:
        issues.append(source.issue(f"{where}.bit", f"only bool tags take a bit number; {tag.name} is a {tag.type}", allowed="no bit, or type bool"))
    if tag.type == "string" and (tag.length is None or not 1 <= tag.length <= 125):
        issues.append(source.issue(f"{where}.length", "a string needs its length in registers", allowed="1..125"))
    count = tag.length if tag.type == "string" and tag.length else REGISTER_COUNT.get(tag.type, 1)
    if address_ok and tag.address + count - 1 > 65535:
        issues.append(
            source.issue(
                f"{where}.address",
                f"a {tag.type} tag here takes registers {tag.address}..{tag.address + count - 1}, past the last address 65535",
                allowed=f"0..{65536 - count}",
            )
        )


def _check_opcua_tag(source: YamlSource, index: int, tag: OpcUaTag, namespaces: dict[str, str], issues: list[ConfigIssue]) -> None:
    """Check the node id syntax and the browse path's namespace prefixes, which need no server."""
    where = f"$.tags[{index}]"
    if tag.node is None and not tag.browse_path:
        issues.append(source.issue(where, "an OPC UA tag needs `node` (nsu=...;s=...) or `browse_path`", value=None))
    if tag.node is not None:
        problem = node_id_problem(tag.node)
        if problem is not None:
            issues.append(source.issue(f"{where}.node", f"invalid node id: {problem}", allowed=NODE_ID_FORMS))
    prefixes = ", ".join(namespaces) or "none defined"
    for position, element in enumerate(tag.browse_path or []):
        problem = browse_prefix_problem(element, namespaces)
        if problem is not None:
            issues.append(
                source.issue(
                    f"{where}.browse_path[{position}]",
                    problem,
                    allowed=f"prefix:BrowseName with a prefix from `namespaces` ({prefixes}) or a namespace URI, or BrowseName for namespace 0",
                )
            )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


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


def _check_rule_values(source: YamlSource, parts: MapParts, issues: list[ConfigIssue]) -> None:
    """Reject rule values whose type can never equal the value their Modbus tag decodes to."""
    tags = {tag["name"]: tag for _, tag in parts.tags if isinstance(tag.get("name"), str)}
    for index, rule in parts.rules:
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


def _check_no_reason(source: YamlSource, parts: MapParts, issues: list[ConfigIssue]) -> None:
    """Reject a ``no_reason`` that is empty, sits on a tag no rule reads as reason, or lists values its Modbus tag never reads."""
    reason_tags = {rule.reason_tag for _, rule in parts.rules if rule.reason_tag}
    for index, raw in parts.tags:
        values = raw.get("no_reason")
        if not isinstance(values, list):
            continue  # absent, or of a wrong type that the tag's own check reports
        where, name = f"$.tags[{index}].no_reason", raw.get("name")
        if not values:
            issues.append(source.issue(where, "list at least one value that means no reason, or remove no_reason", value=values))
        if name not in reason_tags and parts.rules_complete:
            issues.append(source.issue(
                where, f"no rule names tag '{name}' in reason_tag, so no_reason has no effect; name it in a rule's reason_tag or remove no_reason",
                value=values))
        if parts.protocol != "modbus":
            continue
        try:
            tag = msgspec.convert(raw, ModbusTag)
        except msgspec.ValidationError:
            continue  # the tag's own check reports it
        for position, value in enumerate(values):
            problem = _rule_value_problem(value, tag)
            if problem is not None:
                issues.append(source.issue(f"{where}[{position}]", problem, value=value))


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
                message = (
                    f"tag '{tag.name}' reads bit {tag.bit} of {tag.table} {first}, as tag '{other.name}' of tags[{other_index}] does; "
                    "give each tag its own bit"
                )
            else:
                message = (
                    f"tag '{tag.name}' ({tag.table} {first}..{last}) overlaps tag '{other.name}' of tags[{other_index}] "
                    f"({other_first}..{other_last}); give each tag its own registers"
                )
            issues.append(source.issue(f"$.tags[{index}].address", message))
        placed.append((index, tag, first, last))


def _check_tags(source: YamlSource, parts: MapParts, issues: list[ConfigIssue]) -> dict[str, int]:
    """Check each tag on its own and the overlaps between Modbus tags; return the position of each tag name."""
    names: dict[str, int] = {}
    spans: list[tuple[int, ModbusTag]] = []
    spec_type = {"modbus": ModbusTag, "opcua": OpcUaTag}.get(parts.protocol or "")
    for index, raw in parts.tags:
        name = raw.get("name")
        if spec_type is None:
            # Without a valid protocol the tag fields are unknown, but rules and counters may still name the tag.
            if isinstance(name, str):
                names.setdefault(name, index)
            continue
        try:
            tag = msgspec.convert(raw, spec_type)
        except msgspec.ValidationError:
            for issue in source.type_check(spec_type, prefix=f"$.tags[{index}]", data=raw).issues:
                issues.append(issue)
            if isinstance(name, str):
                names.setdefault(name, index)  # so that rules naming it do not report a second error
            continue
        if tag.name in names:
            issues.append(
                source.issue(
                    f"$.tags[{index}].name",
                    f"duplicate tag name, first used at tags[{names[tag.name]}]",
                    allowed="a name no other tag of this map uses",
                )
            )
        names.setdefault(tag.name, index)
        if isinstance(tag, ModbusTag):
            _check_modbus_tag(source, index, tag, issues)
            spans.append((index, tag))
        else:
            _check_opcua_tag(source, index, tag, parts.namespaces, issues)
        if tag.range is not None and len(tag.range) != 2:
            issues.append(source.issue(f"$.tags[{index}].range", "range needs two numbers", allowed="[min, max] with min <= max"))
        elif tag.range is not None and tag.range[0] > tag.range[1]:
            issues.append(
                source.issue(
                    f"$.tags[{index}].range",
                    "min is greater than max",
                    allowed=f"[min, max] with min <= max, such as [{_number(tag.range[1])}, {_number(tag.range[0])}]",
                )
            )
    _check_overlaps(source, spans, issues)
    return names


def validate(source: YamlSource, check: TypeCheck) -> list[ConfigIssue]:
    """Return every problem of a tag map beyond the type errors in ``check``, each with its line.

    The parts with type errors are skipped, so each line reports a problem of its own, not a consequence of another.
    """
    parts = MapParts.of(source, check)
    issues: list[ConfigIssue] = []
    if parts.schema is not None and parts.schema != TAGMAP_SCHEMA:
        issues.append(source.issue("$.schema", "unknown tag map schema", allowed=TAGMAP_SCHEMA))
    names = _check_tags(source, parts, issues)
    known = ", ".join(names) or "no tags defined"

    for index, rule in parts.rules:
        for part in ("when", "unless"):
            for name in getattr(rule, part):
                if name not in names:
                    issues.append(source.issue(f"$.states.rules[{index}].{part}.{name}", "rule reads an unknown tag", value=name, allowed=known))
        if rule.reason_tag is not None and rule.reason_tag not in names:
            issues.append(source.issue(f"$.states.rules[{index}].reason_tag", "unknown tag", allowed=known))
        if not rule.when and not rule.unless:
            issues.append(
                source.issue(f"$.states.rules[{index}]", "a rule needs at least one `when` or `unless` condition", allowed="when: {tag: [values]} or unless: {tag: [values]}")
            )
    if parts.protocol == "modbus":
        _check_rule_values(source, parts, issues)
    _check_no_reason(source, parts, issues)

    for index, counter in parts.counters:
        if counter.tag not in names:
            issues.append(source.issue(f"$.counters[{index}].tag", "unknown tag", allowed=known))
        if counter.max_rate_per_min <= 0:
            issues.append(
                source.issue(f"$.counters[{index}].max_rate_per_min", "must be positive", allowed="a number of counts per minute above 0")
            )
    if parts.time is not None:
        for field in ("state_since", "clock", "state_seq"):
            name = getattr(parts.time, field)
            if name is not None and name not in names:
                issues.append(source.issue(f"$.time.{field}", "unknown tag", allowed=known))
    if parts.ideal_cycle_time_s is not None and parts.ideal_cycle_time_s <= 0:
        issues.append(source.issue("$.ideal_cycle_time_s", "must be positive", allowed="seconds per item, a number above 0"))
    return issues


CLOCK_FIX = "a tag with role clock that reads the PLC's current time (epoch ms), named in time.clock"


def tag_map_warnings(path: str | Path) -> list[ConfigIssue]:
    """Return what a valid tag map allows but probably does not intend, each with file and line.

    The caller has loaded the map with :func:`valuegate.adapters.tagmap.load_tag_map` already.
    """
    source = load_yaml(path)
    tag_map = source.convert(TagMap)
    effect = tag_map.missing_clock_effect()
    if effect is None:
        return []
    warning = source.issue("$.time", effect, allowed=CLOCK_FIX)
    warning.value = None  # the message names the fields; the whole time block adds nothing
    return [warning]


def namespace_warnings(path: str | Path) -> list[ConfigIssue]:
    """Return a warning for each ``nsu=`` node id whose URI is not among the map's ``namespaces``, a likely typo.

    Whether a namespace exists is known only on the server, so a map that lists
    no namespaces gets no warning. The caller has loaded the map already.
    """
    source = load_yaml(path)
    tag_map = source.convert(TagMap)
    listed = set(tag_map.namespaces.values())
    if tag_map.protocol != "opcua" or not listed:
        return []
    warnings = []
    for index, tag in enumerate(tag_map.opcua_tags):
        if tag.node is None:
            continue
        uri = parse_node_id(tag.node).uri
        if uri is not None and uri not in listed:
            message = f"namespace URI {uri!r} of tag {tag.name} is not among the map's namespaces; check it for a typo, or add it to namespaces"
            warnings.append(source.issue(f"$.tags[{index}].node", message, allowed=", ".join(sorted(listed))))
    return warnings


# Bits a counter wraps at, for each integer register type.
_TYPE_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


def mistake_warnings(path: str | Path) -> list[ConfigIssue]:
    """Return settings a valid tag map accepts but that are most often mistakes, each with file and line.

    These are a counter that wraps at another width than its tag's type and a scaled counter. Also a ``length`` on a
    type other than string, a PLC time tag in a map on gateway time, a map without state rules, and an OPC UA node id
    by namespace index. The caller has loaded the map already.
    """
    source = load_yaml(path)
    tag_map = source.convert(TagMap)
    warnings: list[ConfigIssue] = []
    positions = {str(tag.get("name")): index for index, tag in enumerate(tag_map.tags)}
    modbus = {tag.name: tag for tag in tag_map.modbus_tags}
    for index, counter in enumerate(tag_map.counters):
        tag = modbus.get(counter.tag)
        if tag is None:
            continue
        width = _TYPE_BITS.get(tag.type)
        if width is not None and width != counter.bits:
            message = (f"counter {counter.tag} wraps at {counter.bits} bits, but its tag is a {tag.type} of {width} bits; "
                       "a wrap the PLC never makes would count as thousands of parts, or a real one as a reset")
            warnings.append(source.issue(f"$.counters[{index}].bits", message, value=counter.bits, allowed=f"{width}, unless the PLC's counter is narrower than its register"))
        if tag.scale != 1.0 or tag.offset != 0.0:
            warnings.append(source.issue(f"$.tags[{positions[tag.name]}].scale", f"counter tag {tag.name} is scaled, so its increments are no whole parts",
                                         value=tag.scale, allowed="scale 1 and offset 0 on a part counter"))
    for name, tag in modbus.items():
        if tag.length is not None and tag.type != "string":
            warnings.append(source.issue(f"$.tags[{positions[name]}].length", f"length is read only for strings; {name} is a {tag.type}, whose width its type sets",
                                         value=tag.length, allowed="no length, or type string"))
    if tag_map.time.source == "gateway":
        for index, tag in enumerate(tag_map.tags):
            if tag.get("role") in ("state_since", "clock"):
                warnings.append(source.issue(f"$.tags[{index}].role", f"time.source is gateway, so the agent stamps samples with its own clock "
                                             f"and never reads {tag.get('name')} as the PLC's time", value=tag.get("role"),
                                             allowed="time.source: plc to use the PLC's time stamps, or another role"))
    if not tag_map.states.rules:
        warnings.append(source.issue("$.states.rules", f"no state rules, so every value takes the default category {tag_map.states.default}",
                                     allowed="rules that map the PLC's state values to categories"))
    for tag in tag_map.opcua_tags:
        if tag.node is None:
            continue
        parsed = parse_node_id(tag.node)
        if parsed.uri is None and parsed.index:
            warnings.append(source.issue(f"$.tags[{positions[tag.name]}].node", f"node id of {tag.name} names namespace index {parsed.index}, "
                                         "which changes when the server registers its namespaces in another order",
                                         value=tag.node, allowed="nsu=<namespace URI>;... or a browse_path"))
    return warnings
