"""Renewal triggers: target met, days before the contract ends, cumulative value over a threshold."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from tests.verify.bundles import oee_contract
from valuegate.edge.protocol.contract import ContractError, Trigger
from valuegate.cloud.renewal.triggers import Progress, TriggerError, evaluate

TRIGGERS = [
    {"kind": "target_met"},
    {"kind": "days_before_end", "days": 90},
    {"kind": "value_over", "amount": "50000"},
]


def keys(firings) -> list[str]:
    return [f.key for f in firings]


def test_nothing_fires_early():
    contract = oee_contract(triggers=TRIGGERS)
    firings = evaluate(contract, today=dt.date(2024, 6, 1), progress={"line-oee": Progress(Decimal("1.0"), Decimal("1.2"))}, realized_total=Decimal("49999.99"))
    assert firings == []


def test_each_trigger_fires_at_its_threshold():
    contract = oee_contract(triggers=TRIGGERS)
    # The contract ends 2024-12-31; 90 days before is 2024-10-02.
    firings = evaluate(contract, today=dt.date(2024, 10, 2), progress={"line-oee": Progress(Decimal("1.2"), Decimal("1.2"))}, realized_total=Decimal("50000"))
    assert keys(firings) == ["target_met:line-oee", "days_before_end:90", "value_over:50000"]
    assert firings[0].detail == {"anchor": "line-oee", "mean_gain": "1.2", "target": "1.2"}
    assert firings[1].detail["fires_on"] == "2024-10-02"
    assert evaluate(contract, today=dt.date(2024, 10, 1), progress={"line-oee": Progress(None, Decimal("1.2"))}, realized_total=Decimal(0)) == []


def test_trigger_without_parameter_is_rejected():
    with pytest.raises(ContractError, match=r"\$\.triggers\[0\]\.amount: a value_over trigger needs an amount"):
        oee_contract(triggers=[{"kind": "value_over"}])
    with pytest.raises(ContractError, match=r"\$\.triggers\[0\]\.anchor: no anchor of this contract has this id \(got 'nope'\); allowed: line-oee"):
        oee_contract(triggers=[{"kind": "target_met", "anchor": "nope"}])
    # A revision stored before the parser checked triggers still fails clearly when it is evaluated.
    stored = oee_contract(triggers=[{"kind": "value_over", "amount": "1"}])
    stored = msgspec.structs.replace(stored, triggers=[Trigger(kind="value_over")])
    with pytest.raises(TriggerError, match=r"triggers\[0\] \(value_over\): amount is missing"):
        evaluate(stored, today=dt.date(2024, 6, 1), progress={"line-oee": Progress(None, None)}, realized_total=Decimal(0))
    stored = msgspec.structs.replace(stored, triggers=[Trigger(kind="target_met", anchor="nope")])
    with pytest.raises(TriggerError, match="anchor 'nope' is not in the contract"):
        evaluate(stored, today=dt.date(2024, 6, 1), progress={"line-oee": Progress(None, None)}, realized_total=Decimal(0))


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_trigger_text_names_anchor_title(language: str) -> None:
    from valuegate.cloud.renewal.package import trigger_text

    contract = oee_contract(triggers=TRIGGERS)
    title = contract.anchor("line-oee").title[language]
    firing = evaluate(contract, today=dt.date(2024, 10, 2), progress={"line-oee": Progress(Decimal("1.2"), Decimal("1.2"))}, realized_total=Decimal(0))[0]
    text = trigger_text(firing, language, contract)
    assert title in text
    assert "line-oee" not in text
