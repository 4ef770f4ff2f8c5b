"""Renminbi amounts in Chinese capital numerals (大写金额), as Chinese finance writes them on settlement documents.

The rules follow the Ministry of Finance's accounting practice (会计基础工作规范, article 52).
A run of zeros inside the number reads as one 零. An amount that ends at 元 or 角
ends with 整, and one that has 分 does not.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ("capital_amount",)

_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_PLACES = ((1000, "仟"), (100, "佰"), (10, "拾"), (1, ""))


def _section(number: int) -> str:
    """Return 1..9999 in capital numerals, with one 零 for each run of zeros between digits."""
    text, gap = "", False
    for power, place in _PLACES:
        digit = number // power % 10
        if digit == 0:
            gap = bool(text)
            continue
        if gap:
            text += "零"
        text += _DIGITS[digit] + place
        gap = False
    return text


def _number(number: int) -> str:
    """Return a positive whole number below 10^16 in capital numerals: 亿 above 万, as in 壹拾贰万叁仟肆佰伍拾陆亿 for 12,345,600,000,000."""
    for size, unit in ((10**8, "亿"), (10**4, "万")):
        if number >= size:
            high, low = divmod(number, size)
            text = _number(high) + unit
            if low:
                # A zero right after the unit reads as 零: 壹万零伍 (10,005), 壹亿零伍佰万 (105,000,000).
                text += ("零" if low < size // 10 else "") + _number(low)
            return text
    return _section(number)


def capital_amount(amount: Decimal | str | int) -> str:
    """Return ``amount`` (rounded half up to the fen) in capital numerals, for example 壹万陆仟陆佰叁拾叁元叁角玖分.

    ``amount`` may be a Decimal or its plain decimal text, as documents store amounts.
    A negative amount, as a credit note carries, starts with 负. Raises ValueError beyond 9,999,999,999,999,999.99.
    """
    amount = Decimal(amount) if isinstance(amount, str | int) else amount
    fen_total = int((abs(amount) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    yuan, jiao, fen = fen_total // 100, fen_total // 10 % 10, fen_total % 10
    if yuan >= 10**16:
        raise ValueError(f"amount {amount} is too large to write in capital numerals; the largest is 9,999,999,999,999,999.99")
    if fen_total == 0:
        return "零元整"
    text = _number(yuan) + "元" if yuan else ""
    if jiao:
        text += _DIGITS[jiao] + "角"
    elif fen and yuan:
        text += "零"
    text += _DIGITS[fen] + "分" if fen else "整"
    return ("负" if amount < 0 else "") + text
