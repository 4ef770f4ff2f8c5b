"""Catalogs: both languages hold the same keys and placeholders, and the Chinese one is written in Chinese."""

from __future__ import annotations

import datetime as dt
import re
import string
from decimal import Decimal

import pytest

from valuegate.cloud.web.i18n import catalog, format_date, format_money, pick_language, translate

TERMS = ["合同", "价值锚点", "基线", "报告期", "可用率", "停机", "发票", "贷项通知单", "借项通知单", "续约准备包"]


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_catalogs_have_same_keys_and_placeholders():
    zh, en = catalog("zh-CN"), catalog("en")
    assert set(zh) == set(en)
    for key in zh:
        assert placeholders(zh[key]) == placeholders(en[key]), key


def test_chinese_catalog_uses_field_terms():
    text = "\n".join(catalog("zh-CN").values())
    for term in TERMS:
        assert term in text, term
    # Every message a reader sees is Chinese, except names that stay as they are (OEE, CSV, PDF, language names),
    # and list punctuation or placeholders joined by punctuation ("{anchor}：{chart}").
    for key, value in catalog("zh-CN").items():
        if key.startswith("lang.") or not re.search(r"\w", re.sub(r"\{\w+\}", "", value)):
            continue
        assert re.search(r"[\u4e00-\u9fff]", value), f"{key}: {value!r} has no Chinese"


def test_pick_language_order():
    assert pick_language(None, None) == "zh-CN"
    assert pick_language("en", "zh-CN") == "en"
    assert pick_language(None, "en") == "en"
    assert pick_language("fr", None) == "zh-CN"
    assert pick_language(None, None, "en-US,en;q=0.9") == "en"


def test_money_and_dates():
    assert format_money(Decimal("60000.00"), "CNY", "zh-CN") == "¥60,000.00"
    assert format_money(Decimal("-1000.5"), "CNY", "en") == "-CNY 1,000.5"
    assert format_date(dt.date(2024, 5, 6), "zh-CN") == "2024年5月6日"
    assert format_date(dt.date(2024, 5, 6), "en") == "2024-05-06"
    assert translate("en", "invoice.days", days=20) == "20 days"
    assert translate("zh-CN", "no.such.key") == "no.such.key"


@pytest.mark.parametrize(
    ("zone", "chinese", "english"),
    [("Asia/Shanghai", "2024年5月6日 16:30（UTC+8）", "2024-05-06 16:30 UTC+8"), ("UTC", "2024年5月6日 08:30（UTC）", "2024-05-06 08:30 UTC"),
     ("Asia/Kolkata", "2024年5月6日 14:00（UTC+5:30）", "2024-05-06 14:00 UTC+5:30"),
     ("America/Sao_Paulo", "2024年5月6日 05:30（UTC-3）", "2024-05-06 05:30 UTC-3"),
     ("Pacific/Auckland", "2024年5月6日 20:30（UTC+12）", "2024-05-06 20:30 UTC+12")],
)
def test_instants_shown_in_display_zone(zone: str, chinese: str, english: str) -> None:
    from valuegate.cloud.web.i18n import set_display_time_zone

    set_display_time_zone(zone)
    try:
        instant = dt.datetime(2024, 5, 6, 8, 30, tzinfo=dt.UTC)
        assert format_date(instant, "zh-CN") == chinese
        assert format_date(instant, "en") == english
    finally:
        set_display_time_zone("UTC")
    # Plant dates have no time of day, so the zone never moves them.
    assert format_date(dt.date(2024, 5, 6), "en") == "2024-05-06"


def test_display_zone_setting_checked() -> None:
    from valuegate.cloud.settings import CloudSettings, ConfigError

    assert CloudSettings().display_time_zone == "Asia/Shanghai"
    with pytest.raises(ConfigError, match="display_time_zone 'Asia/Beijing' is not an IANA time zone; use a name such as Asia/Shanghai or UTC"):
        CloudSettings(display_time_zone="Asia/Beijing")


def test_count_of_one_uses_singular_variant():
    assert translate("en", "quality.no_production", count=1) == (
        "No production scheduled: 1 day (no planned busy time, so it bills nothing; not a data-quality problem)"
    )
    assert translate("en", "quality.no_production", count=2).startswith("No production scheduled: 2 days (")
    assert translate("en", "quality.unnamed", count=1) == "1 without a voucher id"
    assert translate("zh-CN", "quality.no_production", count=1).startswith("无计划生产：1 天")
