"""Invoice lines of a bundle re-derived from its vouchers: amounts, printed fields, completeness and missing notes.

The settlement engine (:func:`valuegate.cloud.settlement.invoice.compute_lines`)
prices a period from every billable voucher stored when the run is approved,
minus the days that non-routine adjustments recorded by then take out. A
voucher that arrives after its period was invoiced, or an adjustment recorded
after it, is settled by a credit or debit note of the next run. These checks
replay that rule with the bundle's ``stored_at`` of each voucher, the
``created_at`` of each adjustment and the ``issued_at`` of each document. A
time the bundle does not carry counts as "before every document", so an older
bundle is held to every voucher it contains. An invoice is priced with the
contract revision in force when its run ran, and every note against it with
that same revision, so a later amendment never re-prices an issued period.
Each document is re-priced with the terms it recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from valuegate.cloud.settlement.invoice import BillingPeriod, Exclusion, InvoiceError, Line, compute_lines
from valuegate.cloud.settlement.pricing import Charge, PricingError, VoucherValue, price_anchor, quantize_money
from valuegate.edge.protocol.contract import Contract
from valuegate.verify_terms import Priced

__all__ = ("Ledger", "instant", "check_documents")


def instant(value: Any) -> dt.datetime | None:
    """Parse an ISO 8601 instant (``Z`` or an offset); None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


@dataclass(slots=True)
class Ledger:
    """Bundle contents that the line checks read: the verified vouchers of the contract, and when each was stored.

    ``contract`` is the revision in force; a document is re-priced with the revision it recorded instead.
    """

    contract: Contract
    values: dict[str, VoucherValue]
    voucher_ok: dict[str, bool]
    contracts: dict[str, str]
    adjustments: dict[str, dict[str, Any]]
    stored_at: dict[str, dt.datetime | None]
    reproduced: dict[str, bool | None]

    def billable(self, when: dt.datetime | None) -> list[VoucherValue]:
        """Vouchers the engine would bill at ``when``: verified, of this contract, not disproved, stored by then."""
        return [
            value for vid, value in self.values.items()
            if self.voucher_ok.get(vid, False) and self.contracts.get(vid) == self.contract.id and self.reproduced.get(vid) is not False
            and (when is None or self.stored_at.get(vid) is None or self.stored_at[vid] <= when)
        ]

    def exclusions(self, when: dt.datetime | None) -> list[Exclusion]:
        """Non-routine adjustments in force at ``when`` (recorded by then, not withdrawn by then), as the engine applies them."""
        found = []
        for item in self.adjustments.values():
            created, withdrawn = instant(item.get("created_at")), instant(item.get("withdrawn_at"))
            if withdrawn is not None and (when is None or withdrawn <= when):
                continue
            if when is None or created is None or created <= when:
                found.append(Exclusion(item["id"], item.get("anchor"), item["first_date"], item["last_date"], item.get("reason", "")))
        return found

    def expected(self, anchor: str, first: str, last: str, when: dt.datetime | None, terms: Contract | None = None) -> Line | None:
        """Return the line the engine computes for ``anchor`` over ``first..last`` from what was recorded by ``when``, with ``terms`` or the revision in force."""
        period = BillingPeriod(dt.date.fromisoformat(first), dt.date.fromisoformat(last))
        lines = compute_lines(self.contract if terms is None else terms, period, self.billable(when), self.exclusions(when))
        return next((line for line in lines if line.anchor == anchor), None)


@dataclass(slots=True)
class _Document:
    record: dict[str, Any]
    issued: dt.datetime | None
    order: int
    priced: Priced

    @property
    def chain(self) -> str:
        """The number of the invoice this document bills or corrects."""
        return self.record.get("corrects") or self.record["number"]

    def line(self, anchor: str) -> dict[str, Any] | None:
        return next((line for line in self.record["lines"] if line["anchor"] == anchor), None)


def _later(documents: Sequence[_Document], current: _Document) -> list[_Document]:
    """Documents of the same invoice's chain issued after ``current``."""
    return [d for d in documents if d.chain == current.chain and d.order > current.order]


def _check_exclusion(reasons: list[str], notes: list[str], item: dict[str, Any], anchor: str, ledger: Ledger) -> None:
    """Check that an excluded voucher is covered by the non-routine adjustment the line names."""
    vid, reason = item["voucher_id"], item["reason"]
    adjustment = ledger.adjustments.get(reason.removeprefix("nonroutine_adjustment:"))
    value = ledger.values.get(vid)
    if adjustment is None:
        reasons.append(f"voucher {vid} is excluded by {reason}, which is not in adjustments.json")
    elif value is not None and (adjustment["anchor"] not in (None, anchor) or not adjustment["first_date"] <= value.plant_date <= adjustment["last_date"]):
        reasons.append(f"voucher {vid} ({value.plant_date}) lies outside adjustment {adjustment['id']} ({adjustment['first_date']}..{adjustment['last_date']})")
    else:
        notes.append(f"{vid} excluded by adjustment {adjustment['id']}: {adjustment['reason']}")


def _printed_fields(reasons: list[str], line: dict[str, Any], charge: Charge) -> None:
    """The fields the PDF and CSV show must be the ones re-computed from the listed vouchers."""
    expected: dict[str, tuple[Any, Any]] = {
        "price_kind": (line.get("price_kind"), charge.kind),
        "mode": (line.get("mode"), charge.mode),
        "unit_price": (line.get("unit_price"), charge.unit_price),
        "quantity": (line.get("quantity"), charge.quantity),
        "days": (line.get("days"), charge.days),
        "cap_applied": (line.get("cap_applied"), charge.cap_applied),
        "floor_applied": (line.get("floor_applied"), charge.floor_applied),
    }
    for name, (printed, recomputed) in expected.items():
        if isinstance(recomputed, Decimal):
            try:
                same = printed is not None and Decimal(str(printed)) == recomputed
            except ArithmeticError:
                same = False
        else:
            same = printed == recomputed
        if not same:
            reasons.append(f"{name} {printed} differs from {recomputed} recomputed from its vouchers")


def _completeness(reasons: list[str], notes: list[str], doc: _Document, line: dict[str, Any], ledger: Ledger, documents: Sequence[_Document]) -> None:
    """Check that each voucher the engine would have billed at issue is listed or excluded, and that no excluded one is billed."""
    anchor = line["anchor"]
    try:
        expected = ledger.expected(anchor, line["period_first"], line["period_last"], doc.issued, doc.priced.contract)
    except (PricingError, InvoiceError, KeyError) as exc:
        reasons.append(f"cannot recompute the period: {exc}")
        return
    if expected is None:
        return
    listed = set(line["voucher_ids"])
    excluded = {item["voucher_id"] for item in line.get("excluded", [])}
    later = [later_line for d in _later(documents, doc) if (later_line := d.line(anchor)) is not None]
    for vid in expected.voucher_ids:
        if vid in listed or vid in excluded:
            continue
        date = ledger.values[vid].plant_date
        if any(vid in other["voucher_ids"] or vid in {i["voucher_id"] for i in other.get("excluded", [])} for other in later):
            notes.append(f"voucher {vid} ({date}) is missing here but a later note of {doc.chain} bills it")
        else:
            reasons.append(f"voucher {vid} ({date}) lies in the line's period but is neither billed nor excluded")
    adjustment_of = dict(expected.excluded)
    for vid in sorted(listed & set(adjustment_of)):
        adjustment = ledger.adjustments.get(adjustment_of[vid].removeprefix("nonroutine_adjustment:"), {})
        if later and vid not in later[-1]["voucher_ids"]:
            notes.append(f"voucher {vid} is billed here but a later note of {doc.chain} takes it out")
            continue
        reasons.append(
            f"bills voucher {vid} ({ledger.values[vid].plant_date}), which adjustment {adjustment.get('id')} recorded at "
            f"{adjustment.get('created_at')} excludes; no later note in the bundle corrects it"
        )


def _check_line(doc: _Document, index: int, line: dict[str, Any], ledger: Ledger, documents: Sequence[_Document],
                billed: dict[tuple[str, str, str], Decimal]) -> tuple[list[str], list[str]]:
    contract = doc.priced.contract
    if contract is None:
        return [doc.priced.line_reason or "cannot re-price: the contract terms of its document are not in the bundle"], []
    reasons: list[str] = []
    notes: list[str] = []
    anchor = line["anchor"]
    first, last = line["period_first"], line["period_last"]
    listed: list[VoucherValue] = []
    for vid in line["voucher_ids"]:
        value = ledger.values.get(vid)
        if value is None:
            reasons.append(f"voucher {vid} is not in the bundle")
            continue
        if not ledger.voucher_ok.get(vid, False):
            reasons.append(f"voucher {vid} failed verification")
        if ledger.contracts.get(vid) != contract.id:
            reasons.append(f"voucher {vid} is for contract {ledger.contracts.get(vid)!r}, not {contract.id!r}")
        if value.anchor != anchor or not first <= value.plant_date <= last:
            reasons.append(f"voucher {vid} is for {value.anchor} on {value.plant_date}, outside {anchor} {first}..{last}")
        listed.append(value)
    for item in line.get("excluded", []):
        _check_exclusion(reasons, notes, item, anchor, ledger)
    if reasons:
        return reasons, notes

    try:
        charge = price_anchor(contract, anchor, [v for v in listed if v.anchor == anchor])
    except (PricingError, KeyError) as exc:
        return [f"cannot re-price: {exc}"], notes
    record = doc.record
    amount = Decimal(line["amount"])
    key = (doc.chain, anchor, first)
    if record["kind"] == "invoice":
        if charge.amount != amount:
            reasons.append(f"amount {amount} differs from {charge.amount} re-priced from its vouchers")
    else:
        before = Decimal(line["previously_billed"])
        recomputed = Decimal(line["recomputed"])
        if charge.amount != recomputed:
            reasons.append(f"recomputed {recomputed} differs from {charge.amount} re-priced from its vouchers")
        if quantize_money(recomputed - before, contract.rounding) != amount:
            reasons.append(f"amount {amount} is not recomputed {recomputed} minus previously billed {before}")
        if key in billed and billed[key] != before:
            reasons.append(f"previously billed {before} differs from {billed[key]} billed by the earlier documents in this bundle")
    billed[key] = billed.get(key, Decimal(0)) + amount
    if set(charge.voucher_ids) != set(line["voucher_ids"]):
        reasons.append("the listed vouchers include days that do not count (not running or insufficient data)")
    _printed_fields(reasons, line, charge)
    _completeness(reasons, notes, doc, line, ledger, documents)
    notes.insert(0, f"{charge.kind} {charge.quantity} x {charge.unit_price} ({charge.mode}) = {charge.amount} {contract.currency}")
    return reasons, notes


def _billed_so_far(chain: Sequence[_Document], anchor: str, when: dt.datetime | None, rounding: str) -> Decimal:
    amounts = [Decimal(line["amount"]) for d in chain if when is None or (d.issued is not None and d.issued <= when)
               for line in d.record["lines"] if line["anchor"] == anchor]
    return quantize_money(sum(amounts, Decimal(0)), rounding)


def _check_corrections(invoice: _Document, documents: Sequence[_Document], ledger: Ledger) -> tuple[list[str], list[str]]:
    """Return the failure reasons and notes for an invoice that later runs must correct when its period re-prices differently.

    An invoice must have a line for each priced anchor with vouchers in its
    period when it was issued. Each later run must leave the invoice and its
    notes adding up to what the period re-prices to with the vouchers and
    adjustments recorded by then. Otherwise a credit or debit note is
    missing. The period is always re-priced with the terms the invoice
    recorded, whatever revision a later run priced its own period with. What
    was recorded after the last document is only noted, because the next run settles it.
    """
    reasons: list[str] = []
    notes: list[str] = []
    terms = invoice.priced.contract
    if terms is None:
        # The invoice's own verdict already fails: the bundle lacks the terms it was priced with.
        return reasons, notes
    number = invoice.record["number"]
    first, last = invoice.record["period_first"], invoice.record["period_last"]
    chain = [d for d in documents if d.chain == number]
    later_runs = sorted({d.issued for d in documents if d.issued is not None and invoice.issued is not None and d.issued > invoice.issued})
    # The first document of each later run names that run in messages: its invoice, or its first note when it issued none.
    run_documents = {when: min((d for d in documents if d.issued == when), key=lambda d: (d.record["kind"] != "invoice", d.order)) for when in later_runs}
    priced = sorted(a.id for a in terms.anchors if a.price is not None)
    for anchor in priced:
        try:
            own = ledger.expected(anchor, first, last, invoice.issued, terms)
            if own is not None and invoice.line(anchor) is None and not any(d.line(anchor) for d in chain):
                reasons.append(f"no line for anchor {anchor}, though vouchers {', '.join(own.voucher_ids) or 'of it'} lie in the period")
            if invoice.issued is None:
                continue
            failed = False
            for when, run_document in run_documents.items():
                line = ledger.expected(anchor, first, last, when, terms)
                now = quantize_money(line.amount if line is not None else Decimal(0), terms.rounding)
                before = _billed_so_far(chain, anchor, when, terms.rounding)
                if now != before:
                    run = run_document.record["number"]
                    reasons.append(f"line {anchor}: the vouchers and adjustments recorded before {run} was issued ({when.isoformat()}) re-price the period "
                                   f"to {now}, but {number} and its notes in the bundle bill {before}; a credit or debit note is missing")
                    failed = True
                    break
            line = ledger.expected(anchor, first, last, None, terms)
            now = quantize_money(line.amount if line is not None else Decimal(0), terms.rounding)
            before = _billed_so_far(chain, anchor, None, terms.rounding)
            billed = {vid for document in chain for item in document.record["lines"] if item["anchor"] == anchor for vid in item.get("voucher_ids", [])}
            rejected = sorted(vid for vid in billed if not ledger.voucher_ok.get(vid, False))
            if not failed and now != before and rejected:
                notes.append(f"line {anchor}: {before} is billed, but without the vouchers that failed verification ({', '.join(rejected)}) "
                             f"the bundle re-prices the period to {now}")
            elif not failed and now != before:
                notes.append(f"line {anchor}: everything in the bundle re-prices the period to {now} with the terms of {number}, {before} is billed; "
                             "what was recorded after the last document is settled by the next invoice run")
        except (PricingError, InvoiceError, KeyError) as exc:
            reasons.append(f"cannot recompute line {anchor}: {exc}")
    return reasons, notes


def _note_terms_reason(note: _Document, documents: Sequence[_Document]) -> str | None:
    """Return why a note was priced with other terms than the invoice it corrects; None when they agree or the invoice is absent."""
    invoice = next((d for d in documents if d.record["kind"] == "invoice" and d.record["number"] == note.record.get("corrects")), None)
    if invoice is None or invoice.record.get("contract_digest") == note.record.get("contract_digest"):
        return None
    revision = note.record.get("contract_revision")
    recorded = f"records contract revision {revision} and " if isinstance(revision, int) and not isinstance(revision, bool) else ""
    return (f"{recorded}was priced with contract terms {note.record.get('contract_digest')}, but the invoice it corrects, {invoice.record['number']}, "
            f"was priced with {invoice.record.get('contract_digest')}: a note must price its period with the terms of that invoice, so this note "
            "re-priced an issued period with a later contract revision; ask the vendor why the terms changed")


def check_documents(ledger: Ledger | None, records: Sequence[dict[str, Any]], priced: Sequence[Priced]) -> tuple[list[Any], list[Any]]:
    """Check every line of every document, then each document's total, currency, contract terms and corrections.

    ``priced`` gives, for each record, the terms it was priced with (see :func:`valuegate.verify_terms.priced_with`).
    """
    from valuegate.verify import Verdict

    documents = sorted((_Document(r, instant(r.get("issued_at")), i, terms) for i, (r, terms) in enumerate(zip(records, priced, strict=True))),
                       key=lambda d: (d.issued is None, d.issued or dt.datetime.min.replace(tzinfo=dt.UTC), d.order))
    for position, doc in enumerate(documents):
        doc.order = position
    lines: list[Verdict] = []
    totals: list[Verdict] = []
    billed: dict[tuple[str, str, str], Decimal] = {}
    for doc in documents:
        record = doc.record
        number = record["number"]
        for index, line in enumerate(record["lines"], start=1):
            verdict = Verdict(f"{number} line {index} ({line['anchor']})")
            if ledger is None:
                verdict.reasons.append("contract.json is invalid, so the line cannot be re-priced")
            else:
                verdict.reasons, verdict.notes = _check_line(doc, index, line, ledger, documents, billed)
            lines.append(verdict)

        verdict = Verdict(f"{number} ({record['kind']})")
        total = sum((Decimal(line["amount"]) for line in record["lines"]), Decimal(0))
        if total != Decimal(record["total"]):
            verdict.reasons.append(f"total {record['total']} differs from the sum of its lines {total}")
        terms = doc.priced.contract
        if ledger is not None and terms is not None and record.get("currency") != terms.currency:
            verdict.reasons.append(f"currency {record.get('currency')} differs from the contract's {terms.currency}")
        verdict.reasons += doc.priced.reasons
        if record["kind"] != "invoice" and (reason := _note_terms_reason(doc, documents)) is not None:
            verdict.reasons.append(reason)
        if doc.priced.note is not None:
            verdict.notes.append(doc.priced.note)
        if ledger is not None and record["kind"] == "invoice":
            reasons, notes = _check_corrections(doc, documents, ledger)
            verdict.reasons += reasons
            verdict.notes += notes
        totals.append(verdict)
    return lines, totals
