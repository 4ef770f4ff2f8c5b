"""Invoice PDF content, read back with pypdf: document numbers, each line's voucher ids and amounts, the debit note and the adjustment."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from pypdf import PdfReader

from tests.settlement.test_export import ADJUSTMENT, TERMS, march_run
from valuegate.cloud.settlement.export import pdf_bytes

RUN = {
    "invoice_number": "INV-1",
    "period_first": dt.date(2024, 3, 1),
    "period_last": dt.date(2024, 3, 31),
    "status": "draft",
    "approved_by": None,
    "approved_at": None,
    "inputs_digest": "sha256:00",
}
# Words of each language that the checks below look for.
WORDS = {
    "en": {"vouchers": "Voucher ids: ", "total": "Total", "money": "CNY {}", "note": "Debit note", "corrects": "Corrects invoice",
           "adjustments": "Non-routine adjustments", "period": "2024-02-05 – 2024-02-09", "capital": "",
           "title": "Outcome-based invoice This document is not a Chinese VAT invoice (fapiao)"},
    "zh-CN": {"vouchers": "凭证编号：", "total": "合计", "money": "¥{}", "note": "借项通知单", "corrects": "更正发票",
              "adjustments": "非常规调整", "period": "2024年2月5日 – 2024年2月9日", "capital": " 大写：人民币{}",
              "title": "按效果计费结算单 本结算单不是增值税发票；增值税发票按合同另行开具"},
}


def pdf_text(language: str) -> tuple[str, list[dict]]:
    """Return the March run's PDF text with runs of white space made one space, and the run's documents."""
    documents = march_run()
    pdf = pdf_bytes(run=RUN, documents=documents, adjustments=[ADJUSTMENT], contract=TERMS, language=language)
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return " ".join(text.split()), documents


def section(text: str, start: str, end: str) -> str:
    """Return the text from ``start`` up to the next ``end`` after it."""
    assert start in text, f"{start!r} not in the PDF text"
    tail = text.split(start, 1)[1]
    assert end in tail, f"{end!r} not after {start!r}"
    return tail.split(end, 1)[0]


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_invoice_line_lists_vouchers_and_amount(language):
    text, documents = pdf_text(language)
    words = WORDS[language]
    invoice = section(text, documents[0]["record"]["number"], words["total"])
    # March: 30 and 31 March at 2.0 and 1.0 OEE points, x 2,000 CNY = 6,000.00.
    # The label's colon is full width in Chinese, "ids: " in English.
    assert f"{words['vouchers']}gw1:30 gw1:31" in invoice
    assert words["money"].format("2,000") in invoice
    assert words["money"].format("6,000.00") in invoice
    assert f"{words['total']}{words['capital'].format('陆仟元整')} {words['money'].format('6,000.00')}" in text


@pytest.mark.parametrize(("language", "contract"), [("zh-CN", "合同 c-1（c-1） 结算期"), ("en", "Contract c-1 (c-1) Billing period")])
def test_contract_id_in_language_brackets(language, contract):
    text, _ = pdf_text(language)
    assert contract in text


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_title_says_it_is_no_vat_invoice(language):
    text, _ = pdf_text(language)
    assert text.startswith(WORDS[language]["title"])


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_debit_note_shows_late_voucher_and_difference(language):
    text, documents = pdf_text(language)
    words = WORDS[language]
    note_number = documents[1]["record"]["number"]
    assert f"{words['note']} {note_number}" in text
    note = section(text, note_number, words["total"])
    assert f"{words['corrects']} {documents[1]['record']['corrects']}" in note
    # February billed 20 days x 1.5 points x 2,000 = 60,000.00; the late 21 February makes it 63,000.00.
    money = words["money"].format
    assert f"{money('60,000.00')} {money('63,000.00')} {money('3,000.00')}" in note
    listed = note.split(words["vouchers"], 1)[1].split()
    assert listed == [f"gw1:{n}" for n in range(1, 22)]
    assert f"{words['total']}{words['capital'].format('叁仟元整')} {money('3,000.00')}" in text


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_adjustment_appears_with_reason(language):
    text, _ = pdf_text(language)
    words = WORDS[language]
    adjustments = text.split(words["adjustments"], 1)[1]
    assert f"NRA-7 oee-line1 {words['period']} 一号线改造 line rebuild csm-li" in adjustments


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_long_id_lists_wrap_between_ids(language):
    """A year's line lists hundreds of ids: lines wrap only between ids, never after the hyphen inside one."""
    documents = march_run()
    line = documents[0]["record"]["lines"][0]
    ids = [f"gw-line-{number % 3}:{1000 + number}" for number in range(400)]
    line["voucher_ids"] = ids
    line["excluded"] = [{"voucher_id": "gw-line-9:7", "reason": "line rebuild"}]
    pdf = pdf_bytes(run=RUN, documents=documents, adjustments=[ADJUSTMENT], contract=TERMS, language=language)
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    # The Chinese label ends in a full-width colon with no space before the first id.
    tokens = text.replace("：", "： ").split()
    assert "\u2060" not in text
    # The list takes many printed lines, so a break inside an id would split one of them into two tokens.
    assert text.count("\n") > 40
    missing = [voucher_id for voucher_id in ids if voucher_id not in tokens]
    assert missing == []
    assert "gw-line-9:7" in tokens
    assert not any(token.endswith("-") for token in tokens)
