"""Invoice exports: CSV totals, voucher ids and adjustments in both languages; PDF with a CJK font."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zlib
from decimal import Decimal

import pytest

from tests.settlement.test_invoice import FEB, MAR, TERMS, issue, march
from tests.settlement.test_pricing import day
from valuegate.cloud.bundle import document_record
from valuegate.cloud.settlement.export import csv_bytes, invoice_html, pdf_bytes
from valuegate.cloud.settlement.invoice import Exclusion, compute_run
from valuegate.cloud.web.i18n import translate
from valuegate.edge.protocol.contract import contract_digest

ADJUSTMENT = {
    "id": 7,
    "kind": "exclude_period",
    "anchor_id": "oee-line1",
    "first_date": dt.date(2024, 2, 5),
    "last_date": dt.date(2024, 2, 9),
    "reason": "一号线改造 line rebuild",
    "created_by": "csm-li",
    "created_at": dt.datetime(2024, 3, 2, 8, 0, tzinfo=dt.UTC),
}


def rows_of(documents):
    return [{"record": document_record(d), "status": "draft"} for d in documents]


def march_run():
    """February issued from 20 days; March brings 2 days of its own and a late 21 February."""
    values = [day(n, 1.5) for n in range(1, 21)]
    issued = issue(compute_run(TERMS, FEB, values, [], []))
    result = compute_run(TERMS, MAR, [*values, day(21, 1.5), march(1, 2.0, 30), march(2, 1.0, 31)], [], issued)
    return rows_of([result.invoice, *result.notes])


def pdf_objects(pdf: bytes) -> list[bytes]:
    """Return the PDF's bytes and every Flate stream decompressed, where font names are found."""
    parts = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            parts.append(zlib.decompress(match.group(1)))
        except zlib.error:
            continue
    return parts


def parse(data: bytes) -> list[dict[str, str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def test_csv_totals_add_up_english():
    rows = parse(csv_bytes(march_run(), [ADJUSTMENT], "en"))
    lines = [r for r in rows if r["Record"] == "line"]
    totals = {r["Document"]: Decimal(r["Amount"]) for r in rows if r["Record"] == "total"}
    assert len(totals) == 2
    for number, total in totals.items():
        assert sum(Decimal(r["Amount"]) for r in lines if r["Document"] == number) == total
    invoice_line, note_line = lines
    # March: (2.0 + 1.0) x 2,000; the note adds 21 February's 1.5 x 2,000.
    assert invoice_line["Amount"] == "6000.00"
    assert invoice_line["Voucher ids"] == "gw1:30 gw1:31"
    assert note_line["Document kind"] == "Debit note"
    assert note_line["Amount"] == "3000.00"
    assert note_line["Previously billed"] == "60000.00"
    assert "gw1:21" in note_line["Voucher ids"].split()
    (adjustment,) = [r for r in rows if r["Record"] == "non-routine adjustment"]
    assert adjustment["Document"] == "NRA-7"
    assert "line rebuild" in adjustment["Note"]
    assert "csm-li" in adjustment["Note"]


def test_csv_speaks_chinese_by_key():
    rows = parse(csv_bytes(march_run(), [ADJUSTMENT], "zh-CN"))
    assert list(rows[0])[:3] == ["记录类型", "单据编号", "单据类型"]
    assert {r["单据类型"] for r in rows if r["记录类型"] == "合计"} == {"发票", "借项通知单"}
    assert [r["单据编号"] for r in rows if r["记录类型"] == "非常规调整"] == ["NRA-7"]
    assert rows[0]["计价方式"] == "按 OEE 点·运行日计价"


def test_excluded_vouchers_listed():
    rebuild = Exclusion(7, "oee-line1", "2024-02-05", "2024-02-09", "rebuild")
    result = compute_run(TERMS, FEB, [day(n, 1.5) for n in range(1, 21)], [rebuild], [])
    (line,) = [r for r in parse(csv_bytes(rows_of([result.invoice]), [ADJUSTMENT], "en")) if r["Record"] == "line"]
    assert line["Excluded vouchers"] == "gw1:5 gw1:6 gw1:7 gw1:8 gw1:9"
    assert line["Amount"] == "45000.00"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_pdf_embeds_cjk_font(language):
    run = {"invoice_number": "INV-1", "period_first": dt.date(2024, 3, 1), "period_last": dt.date(2024, 3, 31), "status": "draft",
           "approved_by": None, "approved_at": None, "inputs_digest": "sha256:00"}
    pdf = pdf_bytes(run=run, documents=march_run(), adjustments=[ADJUSTMENT], contract=TERMS, language=language)
    assert pdf.startswith(b"%PDF-")
    assert any(b"NotoSansCJK" in part for part in pdf_objects(pdf))


RUN = {"invoice_number": "INV-1", "period_first": dt.date(2024, 2, 1), "period_last": dt.date(2024, 2, 29), "status": "draft",
       "approved_by": None, "approved_at": None, "inputs_digest": "sha256:00"}


def test_csv_carries_contract_digest():
    terms = contract_digest(TERMS)
    rows = parse(csv_bytes(march_run(), [ADJUSTMENT], "en"))
    assert list(rows[0])[-1] == "Contract terms digest"
    assert {r["Contract terms digest"] for r in rows if r["Record"] in ("line", "total")} == {terms}
    assert [r["Contract terms digest"] for r in rows if r["Record"] == "non-routine adjustment"] == [""]
    assert list(parse(csv_bytes(march_run(), [], "zh-CN"))[0])[-1] == "合同条款摘要"


@pytest.mark.parametrize(("language", "total", "hint"), [("zh-CN", "¥0.00", "这些文件不在任何网关签名的覆盖范围内"), ("en", "CNY 0.00", "which no gateway signature covers")])
def test_empty_invoice_prints_rounded_total_and_digest(language, total, hint):
    empty = compute_run(TERMS, FEB, [], [], [])
    documents = rows_of([empty.invoice])
    (row,) = [r for r in parse(csv_bytes(documents, [], language)) if r[list(r)[0]] != translate(language, "record.line")]
    assert row[translate(language, "csv.amount")] == "0.00"
    html = invoice_html(run=RUN, documents=documents, adjustments=[], contract=TERMS, language=language)
    assert f'<td class="num">{total}</td>' in html
    assert f'<td class="vouchers">{contract_digest(TERMS)}</td>' in html
    assert hint in html


@pytest.mark.parametrize(
    ("language", "withdrawn", "printed"),
    # The printed time is in the cloud's display zone, which other tests set: UTC or UTC+8 here.
    [("en", r"; withdrawn by csm-wang at 2024-03-05 (09:30 UTC|17:30 UTC\+8): wrong line", r"Withdrawn by csm-wang, 2024-03-05 (09:30 UTC|17:30 UTC\+8): wrong line"),
     ("zh-CN", r"；已由 csm-wang 于 2024年3月5日 (09:30（UTC）|17:30（UTC\+8）)撤销：wrong line", r"已由 csm-wang 于 2024年3月5日 (09:30（UTC）|17:30（UTC\+8）)撤销：wrong line")],
)
def test_withdrawn_adjustment_marked(language, withdrawn, printed):
    gone = {**ADJUSTMENT, "withdrawn_at": dt.datetime(2024, 3, 5, 9, 30, tzinfo=dt.UTC), "withdrawn_by": "csm-wang", "withdraw_reason": "wrong line"}
    rows = [r for r in csv.reader(io.StringIO(csv_bytes(march_run(), [ADJUSTMENT, gone], language).decode("utf-8-sig")))]
    notes = [row[-2] for row in rows if row[1] == "NRA-7"]
    assert len(notes) == 2
    assert not re.search(withdrawn + "$", notes[0])
    assert re.search(withdrawn + "$", notes[1]), notes[1]
    html = invoice_html(run=RUN, documents=march_run(), adjustments=[gone], contract=TERMS, language=language)
    assert re.search(printed, html), html
