"""The parts of a tag map that the checks across fields can read, when other parts have type errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tagmap import CounterSpec, StateRule, TimeSpec
from .yamlsource import YamlSource
from .yamltypes import TypeCheck

__all__ = ("MapParts",)


@dataclass(frozen=True, slots=True)
class MapParts:
    """The parts of a tag map that have the right types, each list item with its index, for the checks across fields.

    A part with a type error is left out (its error is reported already), so
    that one wrong value does not hide the problems of the other parts.
    """

    schema: str | None
    protocol: str | None
    namespaces: dict[str, str]
    tags: list[tuple[int, dict[str, Any]]]
    """Each tag that is a mapping, not yet checked against the protocol's tag fields."""
    rules: list[tuple[int, StateRule]]
    rules_complete: bool
    """Whether every state rule is among ``rules``; when not, a tag may be used by a rule left out."""
    counters: list[tuple[int, CounterSpec]]
    time: TimeSpec | None
    ideal_cycle_time_s: float | None

    @classmethod
    def of(cls, source: YamlSource, check: TypeCheck) -> MapParts:
        data = source.data if isinstance(source.data, dict) else {}
        states = data.get("states") if isinstance(data.get("states"), dict) else {}
        raw_rules = states.get("rules")
        rules = check.items("$.states.rules", raw_rules, StateRule)
        tags = data.get("tags")
        return cls(
            schema=check.value("$.schema", data.get("schema"), str),
            protocol=check.value("$.protocol", data.get("protocol"), str),
            namespaces=check.value("$.namespaces", data.get("namespaces"), dict[str, str], {}),
            tags=[(index, tag) for index, tag in enumerate(tags) if isinstance(tag, dict)] if isinstance(tags, list) else [],
            rules=rules,
            rules_complete=isinstance(raw_rules, list) and len(rules) == len(raw_rules),
            counters=check.items("$.counters", data.get("counters"), CounterSpec),
            time=check.value("$.time", data.get("time"), TimeSpec),
            ideal_cycle_time_s=check.value("$.ideal_cycle_time_s", data.get("ideal_cycle_time_s"), float),
        )
