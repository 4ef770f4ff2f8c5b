"""Renewal triggers: which of a contract's triggers fire, given its realized value and the date.

Each firing has a key that names the trigger and its parameters. A contract
builds at most one package per key, however often the triggers are checked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from valuegate.edge.protocol.contract import Contract

__all__ = ("TriggerError", "Progress", "Firing", "evaluate")


class TriggerError(ValueError):
    """A trigger in the contract lacks a parameter it needs; the message names the trigger and the field."""


@dataclass(frozen=True, slots=True)
class Progress:
    """An anchor's realized value so far: the mean gain per counted day and its target."""

    mean_gain: Decimal | None
    target: Decimal | None

    @property
    def target_met(self) -> bool:
        return self.mean_gain is not None and self.target is not None and self.mean_gain >= self.target


@dataclass(frozen=True, slots=True)
class Firing:
    """One trigger that fired: its idempotency key, kind and the numbers that made it fire."""

    key: str
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


def evaluate(contract: Contract, *, today: dt.date, progress: Mapping[str, Progress], realized_total: Decimal) -> list[Firing]:
    """Return the contract's triggers that fire on ``today``.

    ``target_met`` without an anchor fires once per anchor that has a target.
    ``days_before_end`` fires from ``end - days`` on. ``value_over`` fires
    once the realized value to date reaches ``amount``.
    """
    firings: list[Firing] = []
    for index, trigger in enumerate(contract.triggers):
        where = f"contract {contract.id!r} triggers[{index}] ({trigger.kind})"
        if trigger.kind == "target_met":
            anchors = [trigger.anchor] if trigger.anchor else [a.id for a in contract.anchors if a.target is not None]
            for anchor_id in anchors:
                if anchor_id not in progress:
                    raise TriggerError(f"{where}: anchor {anchor_id!r} is not in the contract; name one of {', '.join(a.id for a in contract.anchors)}")
                state = progress[anchor_id]
                if state.target_met:
                    detail = {"anchor": anchor_id, "mean_gain": str(state.mean_gain), "target": str(state.target)}
                    firings.append(Firing(f"target_met:{anchor_id}", "target_met", detail))
        elif trigger.kind == "days_before_end":
            if trigger.days is None or trigger.days < 0:
                raise TriggerError(f"{where}: days is {trigger.days!r}; give a whole number of days, 0 or more")
            fires_on = contract.end - dt.timedelta(days=trigger.days)
            if today >= fires_on:
                detail = {"days": trigger.days, "end": contract.end.isoformat(), "fires_on": fires_on.isoformat()}
                firings.append(Firing(f"days_before_end:{trigger.days}", "days_before_end", detail))
        elif trigger.kind == "value_over":
            if trigger.amount is None:
                raise TriggerError(f"{where}: amount is missing; give the threshold as a decimal string in {contract.currency}")
            threshold = Decimal(trigger.amount)
            if realized_total >= threshold:
                detail = {"amount": str(threshold), "realized": str(realized_total), "currency": contract.currency}
                firings.append(Firing(f"value_over:{threshold}", "value_over", detail))
    return firings
