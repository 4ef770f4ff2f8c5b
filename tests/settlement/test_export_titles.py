"""Invoice CSV and PDF name each value anchor by its title in the document's language and keep its id beside it."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from tests.settlement.test_export import ADJUSTMENT, march_run, parse
from tests.settlement.test_invoice_pdf import RUN
from tests.settlement.test_pricing import contract
from valuegate.cloud.settlement.export import csv_bytes, pdf_bytes

TITLED = contract({"per": "oee_point_day", "amount": "2000"}, title={"zh-CN": "一号线 OEE", "en": "Line 1 OEE"})
# Column names, then the record kinds of a line and of an adjustment.
HEADERS = {
    "zh-CN": ("记录类型", "价值锚点", "锚点 ID", "明细行", "非常规调整"),
    "en": ("Record", "Value anchor", "Anchor id", "line", "non-routine adjustment"),
}
TITLES = {"zh-CN": "一号线 OEE", "en": "Line 1 OEE"}


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_csv_lines_show_title_and_id(language: str) -> None:
    record, anchor, anchor_id, line, adjusted = HEADERS[language]
    rows = parse(csv_bytes(march_run(), [ADJUSTMENT], language, contract=TITLED))
    lines = [row for row in rows if row[record] == line]
    assert len(lines) == 2
    assert {row[anchor] for row in lines} == {TITLES[language]}
    assert {row[anchor_id] for row in lines} == {"oee-line1"}
    (adjustment,) = [row for row in rows if row[record] == adjusted]
    assert (adjustment[anchor], adjustment[anchor_id]) == (TITLES[language], "oee-line1")


def test_csv_without_contract_shows_the_id() -> None:
    rows = parse(csv_bytes(march_run(), [], "en"))
    assert {(row["Value anchor"], row["Anchor id"]) for row in rows if row["Record"] == "line"} == {("oee-line1", "oee-line1")}


def test_csv_adjustment_of_all_anchors_has_no_id() -> None:
    rows = parse(csv_bytes(march_run(), [{**ADJUSTMENT, "anchor_id": None}], "en", contract=TITLED))
    (adjustment,) = [row for row in rows if row["Record"] == "non-routine adjustment"]
    assert (adjustment["Value anchor"], adjustment["Anchor id"]) == ("All value anchors", "")


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_pdf_line_shows_title_then_id(language: str) -> None:
    pdf = pdf_bytes(run=RUN, documents=march_run(), adjustments=[ADJUSTMENT], contract=TITLED, language=language)
    text = " ".join(" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages)
    # Both invoice lines and the adjustment row: the title, then the id in small type.
    assert text.count(f"{TITLES[language]} oee-line1") == 3
