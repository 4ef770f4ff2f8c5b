"""State rules: map the latest values of a machine's state input tags to one of the six OEE categories."""

from __future__ import annotations

from typing import Any

import msgspec

from .samples import Sample
from .tagmap import CATEGORIES, StateRule, TagMap

__all__ = ("StateEvaluator", "StateResult", "match_value")


class StateResult(msgspec.Struct, frozen=True):
    """The machine's state category at one instant.

    ``code`` is the category's index in ``CATEGORIES`` (running 0 .. offline 5);
    ``reason`` is the stop reason (the value of the rule's ``reason_tag``, or
    its fixed ``reason`` while that tag has none or a value of its ``no_reason``); ``uncertain`` is true when an input had Uncertain status;
    ``label`` is the matched rule's label or why the state is offline;
    ``unmatched`` is true when every input had a value but no rule matched,
    so the map's ``default`` category applies.
    """

    category: str
    code: int
    reason: str | None
    uncertain: bool
    label: str
    unmatched: bool = False


def match_value(actual: Any, allowed: list[Any]) -> bool:
    """Return whether ``actual`` equals one of ``allowed``; numbers compare by value, text exactly."""
    for candidate in allowed:
        if isinstance(actual, str) or isinstance(candidate, str):
            if isinstance(actual, str) and isinstance(candidate, str) and actual == candidate:
                return True
            continue
        if actual == candidate:
            return True
    return False


def _reason_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


class StateEvaluator:
    """Evaluates a tag map's state rules over the latest sample of each state input tag.

    The rules are tried in order and the first whose ``when`` conditions all
    match and whose ``unless`` conditions all fail decides the category; the
    model's ``default`` applies otherwise. The state is ``offline`` while any
    state input has no sample yet or its latest sample has Bad status, so a
    Bad input never yields ``running``. Uncertain inputs are used and the
    result is flagged ``uncertain``.
    """

    def __init__(self, tag_map: TagMap) -> None:
        self.tag_map = tag_map
        self._rules: list[StateRule] = list(tag_map.states.rules)
        inputs: list[str] = []
        for rule in self._rules:
            for name in [*rule.when, *rule.unless]:
                if name not in inputs:
                    inputs.append(name)
        self.inputs: tuple[str, ...] = tuple(inputs)
        self._reason_tags = {rule.reason_tag for rule in self._rules if rule.reason_tag}
        self._no_reason = tag_map.no_reason_values()
        self._latest: dict[str, Sample] = {}

    def update(self, sample: Sample) -> None:
        """Keep ``sample`` as the latest of its tag when the tag is a state input or a reason tag."""
        if sample.tag in self.inputs or sample.tag in self._reason_tags:
            self._latest[sample.tag] = sample

    def evaluate(self) -> StateResult:
        """Return the state category for the latest samples."""
        uncertain = False
        for name in self.inputs:
            sample = self._latest.get(name)
            if sample is None:
                return self._offline(f"no value yet for state input {name}")
            if sample.status == "bad":
                detail = f": {sample.detail}" if sample.detail else ""
                return self._offline(f"bad status on state input {name}{detail}")
            uncertain = uncertain or sample.status == "uncertain"

        for rule in self._rules:
            if not all(match_value(self._latest[name].value, values) for name, values in rule.when.items()):
                continue
            if any(match_value(self._latest[name].value, values) for name, values in rule.unless.items()):
                continue
            reason, reason_uncertain = self._reason(rule)
            return StateResult(
                category=rule.category,
                code=CATEGORIES.index(rule.category),
                reason=reason,
                uncertain=uncertain or reason_uncertain,
                label=rule.label or rule.category,
            )

        default = self.tag_map.states.default
        return StateResult(default, CATEGORIES.index(default), None, uncertain, f"no rule matched; default {default}", unmatched=True)

    def input_values(self) -> str:
        """Return the latest state input values as ``name=value`` pairs, such as ``state=4 mode='AUTO'``."""
        shown = []
        for name in self.inputs:
            sample = self._latest.get(name)
            value = None if sample is None else sample.value
            shown.append(f"{name}={value!r}" if value is None or isinstance(value, str) else f"{name}={_reason_text(value)}")
        return " ".join(shown)

    def _reason(self, rule: StateRule) -> tuple[str | None, bool]:
        if rule.reason_tag is None:
            return rule.reason, False
        sample = self._latest.get(rule.reason_tag)
        if sample is None or sample.status == "bad" or sample.value is None:
            return rule.reason, False
        if match_value(sample.value, self._no_reason.get(rule.reason_tag, [])):
            return rule.reason, sample.status == "uncertain"
        return _reason_text(sample.value), sample.status == "uncertain"

    @staticmethod
    def _offline(label: str) -> StateResult:
        return StateResult("offline", CATEGORIES.index("offline"), None, False, label)
