"""Invoice exports: CSV (UTF-8 with BOM, for spreadsheet programs) and PDF (WeasyPrint), in zh-CN or English.

Both list every line of the run's documents with the voucher ids behind it,
every non-routine adjustment of the contract with its reason, and the
vouchers of the period that a gap in their gateway's chain keeps from billing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valuegate.cloud.actors import actor_label
from valuegate.cloud.web.i18n import format_date, translate
from valuegate.cloud.web.templating import render
from valuegate.edge.protocol.contract import contract_digest

__all__ = ("CSV_COLUMNS", "PricedTerms", "anchor_titles", "csv_bytes", "gap_note", "id_list", "invoice_html", "money_step", "pdf_bytes", "priced_terms")

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


def csv_bytes(documents: Sequence[dict[str, Any]], adjustments: Sequence[dict[str, Any]], language: str, *, contract: Any = None,
              run: Mapping[str, Any] | None = None) -> bytes:
    """Return the CSV of a run: one row per line, a total row per document, one row per adjustment.

    Instants in notes are shown in the display time zone with their offset, as on the pages; plant dates stay ISO dates.

    With the stored ``run``, one more row per gateway names the period's vouchers that a chain gap keeps from billing.

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
        created_by = actor_label(adjustment["created_by"], adjustment.get("created_by_name"), language)
        note = translate(language, "csv.adjustment_note", reason=adjustment["reason"], by=created_by, at=format_date(adjustment["created_at"], language))
        if adjustment.get("withdrawn_at") is not None:
            withdrawn_by = actor_label(adjustment["withdrawn_by"], adjustment.get("withdrawn_by_name"), language)
            note += translate(language, "csv.adjustment_withdrawn", by=withdrawn_by, at=format_date(adjustment["withdrawn_at"], language),
                              reason=adjustment["withdraw_reason"])
        anchor = adjustment["anchor_id"]
        writer.writerow(
            [translate(language, "record.adjustment"), f"NRA-{adjustment['id']}", translate(language, f"adjustment.{adjustment['kind']}"), "",
             adjustment["first_date"].isoformat(), adjustment["last_date"].isoformat(),
             titles.get(anchor, anchor) if anchor else translate(language, "adjustment.all_anchors"), anchor or ""]
            + [""] * 13
            + [note, ""]
        )
    for gap in (run or {}).get("gap_waiting") or ():
        note = gap_note(gap, language)
        writer.writerow(
            [translate(language, "record.gap_waiting"), run["invoice_number"], "", "", run["period_first"].isoformat(), run["period_last"].isoformat()]
            + [""] * 15
            + [note, ""]
        )
    return buffer.getvalue().encode("utf-8-sig")


def gap_note(gap: Mapping[str, Any], language: str) -> str:
    """Render a run's note on one gateway's vouchers that wait behind a chain gap: which sequences are missing, why, and what waits.

    ``gap`` is an entry of the run's ``gap_waiting`` (see :func:`~valuegate.cloud.settlement.gaps.gap_waiting`).
    """
    if "missing_first" in gap:
        first, last = gap["missing_first"], gap["missing_last"]
        missing = translate(language, "gap.missing_one" if first == last else "gap.missing_range", first=first, last=last)
        codes = translate(language, "reason.list_comma").join(gap["missing_codes"])
        rejected = gap["missing_rejected"]
        if not rejected:
            cause = translate(language, "gap.cause_none")
        elif rejected == last - first + 1:
            cause = translate(language, "gap.cause_rejected", codes=codes)
        else:
            cause = translate(language, "gap.cause_some", count=rejected, codes=codes)
    else:
        # A run computed before runs stored the missing sequences records only where they start.
        missing, cause = translate(language, "gap.missing_from", first=gap["stored_through"] + 1), ""
    return translate(language, "run.gap_waiting", gateway=gap["gateway"], missing=missing, cause=cause, count=gap["vouchers"],
                     first=gap["first_seq"], last=gap["last_seq"])


@dataclass(frozen=True, slots=True)
class PricedTerms:
    """The contract terms one document was priced with, as its section of the PDF names them; None where unknown."""

    revision: int | None
    digest: str | None
    settlement: str | None


def priced_terms(documents: Sequence[dict[str, Any]], *, run: Mapping[str, Any], contract: Any = None,
                 revisions: Mapping[int, Any] | None = None) -> dict[str, PricedTerms]:
    """Return, by document number, the revision, terms digest and settlement mode each document was priced with.

    A note against an invoice of an earlier revision was priced with that
    revision, not with the run's. Records stored before they named their
    revision were priced with their run's. ``revisions`` maps revision numbers
    to parsed terms. Without the terms of a document's revision, its mode is
    that of ``contract`` when the digests match, or else the one mode that all
    its lines share.
    """
    known = dict(revisions or {})
    terms = {}
    for row in documents:
        record = row["record"]
        revision = record.get("contract_revision") or run.get("contract_revision")
        digest = record.get("contract_digest")
        parsed = known.get(revision) if revision is not None else None
        if parsed is None and contract is not None and digest is not None and contract_digest(contract) == digest:
            parsed = contract
        modes = {line["mode"] for line in record["lines"]}
        if parsed is not None:
            settlement = parsed.settlement
        elif len(modes) == 1:
            settlement = modes.pop()
        else:
            settlement = None
        terms[record["number"]] = PricedTerms(revision, digest, settlement)
    return terms


def money_step(total: str) -> str:
    """Return the rounding step that a stored document total was rounded to, such as ``0.01`` for ``60000.00``.

    Settlement rounds every amount of a document to the step of the contract
    revision it was priced with, so the total's decimal places are that step's.
    Pages show the document's unit prices with the same places.
    """
    places = max(0, -int(Decimal(total).as_tuple().exponent))
    return str(Decimal(1).scaleb(-places))


# U+2060 WORD JOINER: no line break on either side, and no glyph, so the PDF's text is the same without it.
_WORD_JOINER = "\u2060"


def id_list(ids: Iterable[str]) -> str:
    """Join voucher ids with spaces for the PDF, so that a line breaks only between ids and never after a hyphen inside one.

    One text run per list lays out about four times faster in WeasyPrint than one ``white-space: nowrap``
    element per id, which a year's invoice with 18,250 ids needed (see docs/benchmarks.md).
    """
    return " ".join(voucher_id.replace("-", "-" + _WORD_JOINER) for voucher_id in ids)


def invoice_html(
    *, run: dict[str, Any], documents: Sequence[dict[str, Any]], adjustments: Sequence[dict[str, Any]], contract: Any, language: str,
    revisions: Mapping[int, Any] | None = None, in_force: int | None = None,
) -> str:
    """Render the printable HTML of a run: each document with the terms it was priced with, its lines and vouchers, then the adjustments.

    ``revisions`` are the parsed contract revisions the documents name, and
    ``in_force`` the number of ``contract``, so that a document priced with an
    earlier revision names the one in force.
    """
    return render(
        "settlement/invoice_pdf.html", language, run=run, documents=documents, adjustments=adjustments, contract=contract,
        titles=anchor_titles(contract, language), terms=priced_terms(documents, run=run, contract=contract, revisions=revisions), in_force=in_force,
        gap_notes=[gap_note(gap, language) for gap in run.get("gap_waiting") or ()], id_list=id_list, money_step=money_step,
    )


def pdf_bytes(**parts: Any) -> bytes:
    """Render a run as PDF with WeasyPrint; see :func:`invoice_html` for the parts."""
    from weasyprint import HTML

    return HTML(string=invoice_html(**parts)).write_pdf()
