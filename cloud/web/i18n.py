"""Message catalogs (zh-CN default, English) and locale-aware money, number and date formatting.

Catalogs are YAML files in ``cloud/web/locales/``, one flat mapping of keys
to strings per language. Strings may hold ``{name}`` placeholders filled by
:func:`translate`. Both catalogs must hold the same keys, which a test checks.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
import functools
from decimal import Decimal
from importlib import resources
from typing import Any

import yaml

__all__ = (
    "LANGUAGES",
    "DEFAULT_LANGUAGE",
    "LANGUAGE_COOKIE",
    "catalog",
    "translate",
    "pick_language",
    "format_money",
    "format_number",
    "format_date",
    "set_display_time_zone",
)

LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
LANGUAGE_COOKIE = "vg_lang"

_ALIASES = {"zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN", "zh_cn": "zh-CN", "en": "en", "en-us": "en", "en-gb": "en"}
_CURRENCY_SIGNS = {"CNY": "¥", "USD": "$", "EUR": "€"}


@functools.cache
def catalog(language: str) -> dict[str, str]:
    """Return the catalog of ``language`` (one of :data:`LANGUAGES`)."""
    if language not in LANGUAGES:
        raise KeyError(f"no catalog for language {language!r}; available: {', '.join(LANGUAGES)}")
    text = resources.files("valuegate.cloud.web").joinpath("locales", f"{language}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return {str(key): str(value) for key, value in data.items()}


def translate(language: str, key: str, **values: Any) -> str:
    """Return the message ``key`` in ``language`` with its placeholders filled; an unknown key shows as itself.

    With ``count`` equal to 1, the variant ``<key>.one`` is used where the catalog has one (English singular nouns).
    """
    messages = catalog(language)
    template = messages.get(f"{key}.one") if values.get("count") == 1 else None
    if template is None:
        template = messages.get(key)
    if template is None:
        return key
    return template.format(**values) if values else template


def normalize(language: str | None) -> str | None:
    if not language:
        return None
    if language in LANGUAGES:
        return language
    return _ALIASES.get(language.strip().lower())


def pick_language(query: str | None, cookie: str | None, accept_language: str | None = None) -> str:
    """Choose the page language: the ``lang`` query parameter, then the cookie, then Accept-Language, then zh-CN."""
    for candidate in (query, cookie):
        chosen = normalize(candidate)
        if chosen:
            return chosen
    for part in (accept_language or "").split(","):
        chosen = normalize(part.split(";")[0].strip())
        if chosen:
            return chosen
    return DEFAULT_LANGUAGE


def format_number(value: Decimal | float | int | None, places: int | None = None) -> str:
    if value is None:
        return "–"
    number = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places))
    return f"{number:,}"


def format_money(amount: Decimal | str | None, currency: str, language: str, rounding: str | None = None) -> str:
    """Format an amount with thousands separators (``¥60,000.00``, ``CNY 60,000.00``).

    With the contract's ``rounding`` step, the amount shows the step's decimal
    places (``¥0.00`` for ``0`` and ``0.01``) unless that would drop digits,
    as for a unit price finer than the step. Without it, the amount keeps its
    stored places.
    """
    if amount is None:
        return "–"
    number = Decimal(amount)
    if rounding is not None:
        number = _to_places(number, rounding)
    sign = "-" if number < 0 else ""
    digits = f"{abs(number):,}"
    if language == "zh-CN" and currency in _CURRENCY_SIGNS:
        return f"{sign}{_CURRENCY_SIGNS[currency]}{digits}"
    return f"{sign}{currency} {digits}"


def _to_places(number: Decimal, rounding: str) -> Decimal:
    """Return ``number`` with the decimal places of the step ``rounding``, or unchanged when those places cannot hold it exactly."""
    places = max(0, -int(Decimal(rounding).as_tuple().exponent))
    shown = number.quantize(Decimal(1).scaleb(-places))
    return shown if shown == number else number


# The zone in which instants are shown; the cloud sets it from its display_time_zone setting at start.
_display_zone: dt.tzinfo = dt.UTC


def set_display_time_zone(name: str) -> None:
    """Show every later formatted instant in the IANA zone ``name``."""
    global _display_zone
    _display_zone = dt.UTC if name == "UTC" else zoneinfo.ZoneInfo(name)


def format_date(value: dt.date | dt.datetime | str | None, language: str) -> str:
    """Format a plant date or an instant in the display zone with its offset.

    Chinese: ``2024年5月4日`` and ``2024年5月4日 16:00（UTC+8）``; English: ``2024-05-04`` and ``2024-05-04 16:00 UTC+8``.
    """
    if value is None:
        return "–"
    if isinstance(value, str):
        value = dt.date.fromisoformat(value[:10])
    if isinstance(value, dt.datetime):
        stamp = value.astimezone(_display_zone)
        if language == "zh-CN":
            return f"{_chinese_date(stamp)} {stamp:%H:%M}（{_offset_name(stamp)}）"
        return f"{stamp:%Y-%m-%d %H:%M} {_offset_name(stamp)}"
    if language == "zh-CN":
        return _chinese_date(value)
    return value.isoformat()


def _chinese_date(value: dt.date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


def _offset_name(stamp: dt.datetime) -> str:
    """Return ``UTC`` or ``UTC+8``, ``UTC-3:30``: the offset of an aware instant, which names the zone whatever the language."""
    offset = stamp.utcoffset() or dt.timedelta(0)
    if not offset:
        return "UTC"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
