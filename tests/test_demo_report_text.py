"""Wording of the demo report in Chinese and English: dates, instants and punctuation, read from the printed and the HTML report."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from valuegate.cloud.web.i18n import set_display_time_zone
from valuegate.demo.render import print_report, report_html


def sample_report() -> dict:
    """Return a demo report with one bottling day, one finding, one invoice and one renewal package."""
    return {
        "generated_at": "2026-12-05T16:03:52Z",
        "machines": [
            {
                "id": "filler-01",
                "recording": "bottling-line",
                "protocol": "Modbus TCP",
                "time_zone": "America/Sao_Paulo",
                "days": [
                    {"date": "2022-07-22", "planned_min": 528.85, "run_min": 303.83, "downtime_min": 225.02, "idle_min": 0.0, "changeover_min": 0.0,
                     "availability": 0.5745, "published": {"pause_min": 225.02, "efficiency": 0.5745}},
                ],
            }
        ],
        "vouchers": {"issued": 146, "verified": 146, "stored": 146, "reproduced": 146, "rejected": 0},
        "value": [
            {"contract": "DEMO-BOTTLING", "anchor": "filler-downtime", "title": {"en": "Filler unplanned downtime avoided", "zh-CN": "灌装机非计划停机减少"},
             "metric": "unplanned_downtime_rate", "avoided_minutes": "-1213.084628", "points_gained": "0", "running_days": 46, "amount": "0.00", "currency": "CNY"},
        ],
        "realized_total": "0.00",
        "currency": "CNY",
        "findings": [{"machine": "filler-01", "date": "2022-01-13", "kind": "events_without_summary_day", "detail": "18 downtime events"}],
        "invoices": [{"contract": "DEMO-BOTTLING", "number": "INV-20220921-96D8B961D7", "status": "approved", "total": "0.00", "currency": "CNY"}],
        "renewal_packages": [
            {"contract": "DEMO-BOTTLING", "trigger": "days_before_end:60", "trigger_kind": "days_before_end",
             "detail": {"end": "2023-03-31", "days": 60, "fires_on": "2023-01-30"}, "file": "/out/renewal.zip"},
        ],
    }


def printed(language: str) -> str:
    out = io.StringIO()
    print_report(sample_report(), Console(file=out, width=160, color_system=None), language)
    return out.getvalue()


@pytest.fixture
def shanghai_time():
    set_display_time_zone("Asia/Shanghai")
    yield
    set_display_time_zone("UTC")


def test_chinese_report_writes_chinese_dates() -> None:
    text = printed("zh-CN")
    assert "│ 2022年7月22日 │" in text
    assert "  filler-01 2022年1月13日 停机事件所在日期没有日汇总" in text
    assert "合同到期前 60 天（2023年3月31日到期）" in text
    assert "2022-07-22" not in text


def test_english_report_keeps_iso_dates() -> None:
    text = printed("en")
    assert "│ 2022-07-22 │" in text
    assert "  filler-01 2022-01-13 events_without_summary_day: 18 downtime events" in text
    assert "60 days before the contract ends (2023-03-31)" in text


def test_html_report_generated_time(shanghai_time) -> None:
    assert "<p>生成时间：2026年12月6日 00:03（UTC+8）</p>" in report_html(sample_report(), "zh-CN")
    assert "<p>Generated: 2026-12-05T16:03:52Z</p>" in report_html(sample_report(), "en")
    assert "<td class=\"n\">2022年7月22日</td>" in report_html(sample_report(), "zh-CN")


def test_chinese_report_punctuation() -> None:
    text = printed("zh-CN")
    assert "filler-01（bottling-line，Modbus TCP，America/Sao_Paulo）" in text
    assert "│ 暂停 225.0，效率 0.575 │" in text
    assert "凭证：已签发 146，已核验 146，已存储 146，已复算一致 146，已拒收 0" in text
    assert "发票：INV-20220921-96D8B961D7（已审批） ¥0.00" in text
    assert "续约准备包：DEMO-BOTTLING · " in text
    assert "数据质量提示（每条说明的原文为英文）：1" in text
    assert "停机事件所在日期没有日汇总：18 downtime events" in text


def test_english_report_punctuation() -> None:
    text = printed("en")
    assert "filler-01 (bottling-line, Modbus TCP, America/Sao_Paulo)" in text
    assert "│ pause 225.0, efficiency 0.575 │" in text
    assert "Vouchers: 146 issued, 146 verified, 146 stored, 146 reproduced, 0 rejected" in text
    assert "Invoices: INV-20220921-96D8B961D7 (approved) CNY 0.00" in text
    assert "Data-quality findings: 1" in text


def test_html_report_punctuation() -> None:
    chinese = report_html(sample_report(), "zh-CN")
    assert "<h2>设备 filler-01（bottling-line，Modbus TCP，America/Sao_Paulo）</h2>" in chinese
    assert "<p>已签发 146 · 已核验 146 · 已存储 146 · 已复算一致 146 · 已拒收 0</p>" in chinese
    assert "<li>INV-20220921-96D8B961D7（已审批）：¥0.00</li>" in chinese
    assert "<li>DEMO-BOTTLING：合同到期前 60 天（2023年3月31日到期） → /out/renewal.zip</li>" in chinese
    english = report_html(sample_report(), "en")
    assert "<h2>Machine filler-01 (bottling-line, Modbus TCP, America/Sao_Paulo)</h2>" in english
    assert "<p>146 issued · 146 verified · 146 stored · 146 reproduced · 0 rejected</p>" in english
    assert "<li>INV-20220921-96D8B961D7 (approved): CNY 0.00</li>" in english
