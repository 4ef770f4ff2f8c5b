"""Invoice exports: CSV (UTF-8 with BOM, for spreadsheet programs) and PDF (WeasyPrint), in zh-CN or English.

Both list every line of the run's documents with the voucher ids behind it,
and every non-routine adjustment of the contract with its reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from valuegate.cloud.web.i18n import translate
from valuegate.cloud.web.templating import render

__all__ = ("CSV_COLUMNS", "anchor_titles", "csv_bytes", "invoice_html", "pdf_bytes")

CSV_COLUMNS = (
    "record",
    "document",
    "kind",
    "corrects",
    "period_first",
    "period_last",
    "anchor",
    "anchor_id",
    "price_kind",
    "mode",
    "unit_price",
    "quantity",
    "days",
    "previously_billed",
    "recomputed",
    "amount",
    "currency",
    "cap_applied",
    "floor_applied",
    "voucher_ids",
    "excluded",
    "note",
    "contract_digest",
)


def _yes_no(language: str, value: bool) -> str:
    return translate(language, "common.yes" if value else "common.no")


def anchor_titles(contract: Any, language: str) -> dict[str, str]:
    """Return the title of each value anchor of ``contract`` in ``language``, by anchor id (empty without a contract)."""
    if contract is None:
        return {}
    return {anchor.id: anchor.title.get(language, anchor.id) for anchor in contract.anchors}


def csv_bytes(documents: Sequence[dict[str, Any]], adjustments: Sequence[dict[str, Any]], language: str, *, contract: Any = None) -> bytes:
    """Return the CSV of a run: one row per line, a total row per document, one row per adjustment.

    A line names its value anchor by the title in ``contract`` (the id where there is none) and by its id in a column of its own.

    ``documents`` are stored document rows whose ``record`` is the bundle form;
    amounts stay plain decimals (``60000.00``) so that a spreadsheet sums them exactly.
    Line and total rows end with the digest of the contract terms the document
    was priced with (empty for documents computed before it was recorded).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([translate(language, f"csv.{column}") for column in CSV_COLUMNS])
    titles = anchor_titles(contract, language)

    for row in documents:
        record = row["record"]
        kind = translate(language, f"kind.{record['kind']}")
        terms = record.get("contract_digest") or ""
        for line in record["lines"]:
            writer.writerow(
                [
                    translate(language, "record.line"),
                    record["number"],
                    kind,
                    record["corrects"] or "",
                    line["period_first"],
                    line["period_last"],
                    titles.get(line["anchor"], line["anchor"]),
                    line["anchor"],
                    translate(language, f"price.{line['price_kind']}"),
                    translate(language, f"mode.{line['mode']}"),
                    line["unit_price"],
                    line["quantity"],
                    line["days"],
                    line["previously_billed"] or "",
                    line["recomputed"] or "",
                    line["amount"],
                    record["currency"],
                    _yes_no(language, line["cap_applied"]),
                    _yes_no(language, line["floor_applied"]),
                    " ".join(line["voucher_ids"]),
                    " ".join(item["voucher_id"] for item in line["excluded"]),
                    "",
                    terms,
                ]
            )
        writer.writerow(
            [translate(language, "record.total"), record["number"], kind, record["corrects"] or "", record["period_first"], record["period_last"]]
            + [""] * 9
            + [record["total"], record["currency"], "", "", "", "", translate(language, f"status.{row['status']}"), terms]
        )

    for adjustment in adjustments:
        note = translate(language, "csv.adjustment_note", reason=adjustment["reason"], by=adjustment["created_by"], at=adjustment["created_at"].isoformat())
        anchor = adjustment["anchor_id"]
        writer.writerow(
            [translate(language, "record.adjustment"), f"NRA-{adjustment['id']}", translate(language, f"adjustment.{adjustment['kind']}"), "",
             adjustment["first_date"].isoformat(), adjustment["last_date"].isoformat(),
             titles.get(anchor, anchor) if anchor else translate(language, "adjustment.all_anchors"), anchor or ""]
            + [""] * 13
            + [note, ""]
        )
    return buffer.getvalue().encode("utf-8-sig")


def invoice_html(
    *, run: dict[str, Any], documents: Sequence[dict[str, Any]], adjustments: Sequence[dict[str, Any]], contract: Any, language: str
) -> str:
    """Render the printable HTML of a run: each document with its lines, vouchers and the adjustments."""
    return render(
        "settlement/invoice_pdf.html", language, run=run, documents=documents, adjustments=adjustments, contract=contract,
        titles=anchor_titles(contract, language),
    )


def pdf_bytes(**parts: Any) -> bytes:
    """Render a run as PDF with WeasyPrint; see :func:`invoice_html` for the parts."""
    from weasyprint import HTML

    return HTML(string=invoice_html(**parts)).write_pdf()
