"""The value-summary PDF's table headers wrap only between words, read back from the PDF with pypdf."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from pypdf import PdfReader
from weasyprint import HTML

from tests.verify.bundles import oee_contract
from valuegate.cloud.renewal.package import AnchorSummary, PackageInputs, summary_html
from valuegate.cloud.renewal.triggers import Firing
from valuegate.cloud.web.i18n import translate

# A long title, a long metric name and a seven-digit amount make the columns narrow enough to wrap.
ANCHOR = AnchorSummary(
    "mazak-availability", {"zh-CN": "马扎克加工中心可用率", "en": "Mazak machining centre availability"}, "availability_points", "availability_points",
    Decimal("1.2"), Decimal("1.5"), 20, Decimal("1216633.39"), [], {},
)
MACHINE = {"machine": "m-1", "planned_busy_min": 600, "run_min": 500, "unplanned_min": 100, "availability": 0.83}
HEADERS = ("anchor.heading", "anchor.metric", "anchor.target", "anchor.days_counted", "anchor.realized_value",
           "machines.machine", "machine.planned_busy", "machine.run", "machine.unplanned", "machine.availability")


def summary_lines(language: str) -> list[str]:
    """Return the lines of text of the summary PDF, page after page."""
    inputs = PackageInputs(
        contract=oee_contract(settlement="lower_bound"), firing=Firing("days_before_end:30", "days_before_end", {"days": 30}),
        fired_at=dt.datetime(2024, 6, 1, tzinfo=dt.UTC), total=ANCHOR.amount, voucher_count=20, anchors=[ANCHOR], reductions=[],
        machines=[MACHINE], bundle=b"",
    )
    pdf = HTML(string=summary_html(inputs, language, [])).write_pdf()
    return [line for page in PdfReader(io.BytesIO(pdf)).pages for line in page.extract_text().splitlines()]


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_summary_headers_keep_words_whole(language: str) -> None:
    lines = summary_lines(language)
    text = " ".join(lines)
    for key in HEADERS:
        header = translate(language, key)
        if language == "zh-CN":
            # Chinese headers have no spaces: each one must stand whole on a single line.
            assert any(header in line for line in lines), header
        else:
            assert all(word in text.split() for word in header.split()), header


def test_long_chinese_header_wraps_before_its_bracket() -> None:
    lines = summary_lines("zh-CN")
    assert any("平均每运行日增益" in line for line in lines)
    assert any("（置信区间下限）" in line for line in lines)
    assert any("¥1,216,633.39" in line for line in lines)


def test_keep_words_marks_each_part() -> None:
    from valuegate.cloud.web.templating import keep_words

    assert keep_words("承诺目标") == '<span class="word">承诺目标</span>'
    assert keep_words("平均每运行日增益（点估计）") == '<span class="word">平均每运行日增益</span><wbr><span class="word">（点估计）</span>'
    assert keep_words("Days <counted>") == '<span class="word">Days</span> <span class="word">&lt;counted&gt;</span>'
