"""Renminbi amounts in capital numerals: hand-written cases for the zero and 整 rules, and a reader that turns the text back into the amount."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from valuegate.cloud.web.capital import capital_amount


@pytest.mark.parametrize(("amount", "text"), [
    ("16633.39", "壹万陆仟陆佰叁拾叁元叁角玖分"),
    ("0", "零元整"),
    ("0.05", "伍分"),
    ("0.50", "伍角整"),
    ("10", "壹拾元整"),
    ("1005", "壹仟零伍元整"),
    ("1050.07", "壹仟零伍拾元零柒分"),
    ("10005", "壹万零伍元整"),
    ("100000", "壹拾万元整"),
    ("1000500", "壹佰万零伍佰元整"),
    ("105000000", "壹亿零伍佰万元整"),
    ("100000005", "壹亿零伍元整"),
    ("1680.32", "壹仟陆佰捌拾元叁角贰分"),
    ("107000.53", "壹拾万柒仟元伍角叁分"),
    ("-3000.00", "负叁仟元整"),
    ("12345600000000", "壹拾贰万叁仟肆佰伍拾陆亿元整"),
    ("1000000050000", "壹万亿零伍万元整"),
    ("2.005", "贰元零壹分"),  # rounded half up to the fen
    ("9999999999999999.99", "玖仟玖佰玖拾玖万玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
])
def test_hand_written_amounts(amount: str, text: str) -> None:
    assert capital_amount(Decimal(amount)) == text


def test_too_large_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="amount 10000000000000000 is too large"):
        capital_amount(Decimal("10000000000000000"))


_VALUES = {c: i for i, c in enumerate("零壹贰叁肆伍陆柒捌玖")}
_PLACES = {"拾": 10, "佰": 100, "仟": 1000}


def read_capital(text: str) -> Decimal:
    """Turn capital numerals back into an amount, by a left-to-right scan independent of how they were written."""
    sign = -1 if text.startswith("负") else 1
    text = text.removeprefix("负").removesuffix("整")
    above, group, section, digit, cents, total = 0, 0, 0, 0, 0, 0
    for char in text:
        if char in _VALUES:
            digit = _VALUES[char]
        elif char in _PLACES:
            section += digit * _PLACES[char]
            digit = 0
        elif char == "万":
            group += (section + digit) * 10**4
            section = digit = 0
        elif char == "亿":
            # 亿 multiplies everything before it, 万 included: 壹拾万亿 is 10^13.
            above = (group + section + digit) * 10**8
            group = section = digit = 0
        elif char == "元":
            total = above + group + section + digit
            digit = 0
        elif char == "角":
            cents += digit * 10
            digit = 0
        elif char == "分":
            cents += digit
            digit = 0
        else:
            raise AssertionError(f"unexpected character {char!r} in {text!r}")
    return sign * (Decimal(total) + Decimal(cents) / 100)


def test_random_amounts_read_back() -> None:
    rng = random.Random(8)
    for _ in range(5000):
        digits = rng.randint(1, 16)
        amount = Decimal(rng.randint(0, 10**digits - 1)) + Decimal(rng.randint(0, 99)) / 100
        if rng.random() < 0.3:
            # Zeros in runs are where capital numerals go wrong.
            amount = Decimal("".join(rng.choice("0000009") for _ in range(digits)).lstrip("0") or "0") + Decimal(rng.choice([0, 5, 50])) / 100
        text = capital_amount(amount)
        assert read_capital(text) == amount, (amount, text)
        assert "零零" not in text and not text.startswith("零") or text == "零元整", (amount, text)
