"""Invoice runs computed from verified vouchers: deterministic numbers, lines, credit and debit notes.

This module is pure: the store reads vouchers, non-routine adjustments and
issued documents from PostgreSQL and hands them here. The same contract,
period and inputs always give the same numbers and totals.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from valuegate.edge.protocol.contract import contract_digest

from .pricing import Charge, VoucherValue, price_anchor, quantize_money

if TYPE_CHECKING:
    from valuegate.edge.protocol.contract import Contract

__all__ = (
    "InvoiceError",
    "BillingPeriod",
    "Exclusion",
    "Line",
    "Document",
    "IssuedDocument",
    "RunResult",
    "invoice_number",
    "note_number",
    "inputs_digest",
    "split_excluded",
    "compute_lines",
    "compute_run",
)

DocumentKind = Literal["invoice", "credit_note", "debit_note"]


class InvoiceError(ValueError):
    """An invoice run cannot be computed; the message names the value and what to do.

    ``code`` is stable and ``params`` are the values the message names, so that a user interface can show it in another language.
    """

    def __init__(self, message: str, *, code: str = "invalid_period", params: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.params = dict(params or {})


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    """Plant-local calendar dates of one billing period, both inclusive."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.last < self.first:
            msg = f"billing period ends {self.last} before it starts {self.first}; give first <= last"
            raise InvoiceError(msg, code="reversed_period", params={"variant": "billing", "first": self.first.isoformat(), "last": self.last.isoformat()})

    def contains(self, plant_date: str) -> bool:
        return self.first.isoformat() <= plant_date <= self.last.isoformat()

    @property
    def label(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A non-routine adjustment that takes an anchor's days (or every anchor's) out of settlement."""

    id: int
    anchor: str | None
    first_date: str
    last_date: str
    reason: str

    def covers(self, value: VoucherValue) -> bool:
        in_scope = self.anchor is None or self.anchor == value.anchor
        return in_scope and self.first_date <= value.plant_date <= self.last_date


@dataclass(frozen=True, slots=True)
class Line:
    """One anchor's amount in a document, with the vouchers behind it and those left out."""

    anchor: str
    period_first: dt.date
    period_last: dt.date
    charge: Charge
    amount: Decimal
    excluded: tuple[tuple[str, str], ...] = ()
    previously_billed: Decimal | None = None
    recomputed: Decimal | None = None
    added_vouchers: tuple[str, ...] = ()
    removed_vouchers: tuple[str, ...] = ()

    @property
    def voucher_ids(self) -> tuple[str, ...]:
        return self.charge.voucher_ids


@dataclass(frozen=True, slots=True)
class Document:
    """An invoice, credit note or debit note as computed by a run.

    ``rounding`` is the contract's money step, so that the total of a document
    without lines reads ``0.00`` like any other. ``contract_digest`` is the
    digest of the contract terms the document was priced with (see
    :func:`~valuegate.edge.protocol.contract.contract_digest`), and
    ``contract_revision`` the number of that revision when the caller knows it.
    """

    number: str
    kind: DocumentKind
    period: BillingPeriod
    currency: str
    lines: tuple[Line, ...]
    corrects: str | None = None
    rounding: str = "0.01"
    contract_digest: str | None = None
    contract_revision: int | None = None

    @property
    def total(self) -> Decimal:
        return quantize_money(sum((line.amount for line in self.lines), Decimal(0)), self.rounding)


@dataclass(frozen=True, slots=True)
class IssuedDocument:
    """A document already issued, as much of it as corrections need: amounts and vouchers per anchor.

    ``contract`` and ``contract_revision`` are the terms an invoice was priced
    with. Notes against the invoice price its period with those terms, so a
    later contract revision never re-prices an issued period. None means the
    terms of the run that corrects it.
    """

    number: str
    kind: DocumentKind
    period: BillingPeriod
    amounts: Mapping[str, Decimal]
    vouchers: Mapping[str, tuple[str, ...]]
    corrects: str | None = None
    contract: Contract | None = None
    contract_revision: int | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """A run's invoice for its period and the notes correcting earlier issued invoices."""

    invoice: Document
    notes: tuple[Document, ...]
    digest: str
    exclusions: tuple[Exclusion, ...] = field(default=())


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:10].upper()


def invoice_number(tenant: str, contract_id: str, period: BillingPeriod) -> str:
    """Return the invoice number of a contract's period, the same for every run of that period."""
    return f"INV-{period.first:%Y%m%d}-{_short_hash(tenant, contract_id, period.label)}"


def note_number(kind: DocumentKind, run_invoice: str, corrected: str) -> str:
    """Return the number of the note that the run of ``run_invoice`` issues against ``corrected``."""
    prefix = "CN" if kind == "credit_note" else "DN"
    return f"{prefix}-{_short_hash(run_invoice, corrected)}"


def inputs_digest(values: Iterable[VoucherValue], exclusions: Iterable[Exclusion], *, contract_digest: str = "", period: BillingPeriod | None = None) -> str:
    """Return a digest of what a run read: the contract terms, the period, the voucher ids and gains, and the exclusions.

    The terms and the period come first, so that a run without any voucher
    still gets a digest of its own rather than the SHA-256 of empty input.
    """
    rows = [f"c {contract_digest}", f"p {period.label if period is not None else ''}"]
    rows += sorted(f"v {v.voucher_id} {v.anchor} {v.plant_date} {v.point} {v.low} {v.running_day} {v.sufficient}" for v in values)
    rows += sorted(f"x {x.id} {x.anchor} {x.first_date} {x.last_date}" for x in exclusions)
    return "sha256:" + hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def split_excluded(values: Iterable[VoucherValue], exclusions: Sequence[Exclusion]) -> tuple[list[VoucherValue], list[tuple[VoucherValue, Exclusion]]]:
    """Split vouchers into those settlement prices and those a non-routine adjustment takes out, each with the first adjustment covering it."""
    priced: list[VoucherValue] = []
    excluded: list[tuple[VoucherValue, Exclusion]] = []
    for value in values:
        exclusion = next((x for x in exclusions if x.covers(value)), None)
        if exclusion is None:
            priced.append(value)
        else:
            excluded.append((value, exclusion))
    return priced, excluded


def compute_lines(contract: Contract, period: BillingPeriod, values: Sequence[VoucherValue], exclusions: Sequence[Exclusion]) -> list[Line]:
    """Price every priced anchor of ``contract`` over the vouchers of ``period``.

    Vouchers outside the period are ignored; those inside a non-routine
    exclusion are listed on the line but not priced. An anchor without any
    voucher in the period gets no line.
    """
    lines: list[Line] = []
    for anchor in contract.anchors:
        if anchor.price is None:
            continue
        in_period = [v for v in values if v.anchor == anchor.id and period.contains(v.plant_date)]
        if not in_period:
            continue

        priced, left_out = split_excluded(in_period, exclusions)
        excluded = [(value.voucher_id, f"nonroutine_adjustment:{exclusion.id}") for value, exclusion in left_out]
        charge = price_anchor(contract, anchor.id, priced)
        lines.append(Line(anchor.id, period.first, period.last, charge, charge.amount, tuple(sorted(excluded))))
    return lines


def _correction(contract: Contract, issued: IssuedDocument, billed: Mapping[str, Decimal], vouchers: Mapping[str, tuple[str, ...]],
                values: Sequence[VoucherValue], exclusions: Sequence[Exclusion]) -> list[Line]:
    """Return the lines by which the recomputed period differs from what was billed for it so far."""
    recomputed = {line.anchor: line for line in compute_lines(contract, issued.period, values, exclusions)}
    lines: list[Line] = []
    for anchor in sorted(set(recomputed) | set(billed)):
        line = recomputed.get(anchor)
        # Quantized, so that a period billed nothing before shows 0.00 rather than 0.
        now = quantize_money(line.amount if line is not None else Decimal(0), contract.rounding)
        before = quantize_money(billed.get(anchor, Decimal(0)), contract.rounding)
        difference = quantize_money(now - before, contract.rounding)
        if difference == 0:
            continue
        if line is None:
            charge = price_anchor(contract, anchor, [])
            line = Line(anchor, issued.period.first, issued.period.last, charge, now)
        old = set(vouchers.get(anchor, ()))
        new = set(line.voucher_ids)
        lines.append(
            Line(
                anchor,
                issued.period.first,
                issued.period.last,
                line.charge,
                difference,
                line.excluded,
                previously_billed=before,
                recomputed=now,
                added_vouchers=tuple(sorted(new - old)),
                removed_vouchers=tuple(sorted(old - new)),
            )
        )
    return lines


def compute_run(
    contract: Contract,
    period: BillingPeriod,
    values: Sequence[VoucherValue],
    exclusions: Sequence[Exclusion],
    issued: Sequence[IssuedDocument],
    *,
    revision: int | None = None,
) -> RunResult:
    """Compute the invoice of ``period`` and a note for each earlier issued invoice whose amount changed.

    ``contract`` is the revision in force (number ``revision``), and it prices
    the new period. ``values`` are every verified voucher of the contract, late
    ones included. ``issued`` are the issued invoices of other periods and the
    notes already issued against them. Each note prices its period with the
    terms its invoice was priced with (:attr:`IssuedDocument.contract`), so a
    note follows only from late vouchers, re-issued days and adjustments,
    never from an amendment.
    """
    number = invoice_number(contract.tenant, contract.id, period)
    terms = contract_digest(contract)
    invoice_lines = tuple(compute_lines(contract, period, values, exclusions))
    invoice = Document(number, "invoice", period, contract.currency, invoice_lines, rounding=contract.rounding, contract_digest=terms,
                       contract_revision=revision)

    # Sum what each earlier invoice billed per anchor, its issued notes included.
    originals = sorted((d for d in issued if d.kind == "invoice" and d.number != number), key=lambda d: (d.period.first, d.number))
    for original in originals:
        if original.period.first <= period.last and period.first <= original.period.last:
            msg = f"period {period.label} overlaps invoice {original.number} ({original.period.label}); choose a period that does not overlap an issued invoice"
            params = {"first": period.first.isoformat(), "last": period.last.isoformat(), "invoice": original.number,
                      "invoice_first": original.period.first.isoformat(), "invoice_last": original.period.last.isoformat()}
            raise InvoiceError(msg, code="period_overlaps_invoice", params=params)
    notes: list[Document] = []
    for original in originals:
        billed = dict(original.amounts)
        vouchers = {anchor: tuple(ids) for anchor, ids in original.vouchers.items()}
        for note in (d for d in issued if d.corrects == original.number):
            for anchor, amount in note.amounts.items():
                billed[anchor] = billed.get(anchor, Decimal(0)) + amount
            vouchers.update(note.vouchers)

        priced_with = original.contract or contract
        priced_revision = original.contract_revision if original.contract is not None else revision
        lines = _correction(priced_with, original, billed, vouchers, values, exclusions)
        if not lines:
            continue
        total = sum((line.amount for line in lines), Decimal(0))
        kind: DocumentKind = "credit_note" if total < 0 else "debit_note"
        notes.append(
            Document(note_number(kind, number, original.number), kind, original.period, priced_with.currency, tuple(lines),
                     corrects=original.number, rounding=priced_with.rounding, contract_digest=contract_digest(priced_with),
                     contract_revision=priced_revision)
        )

    digest = inputs_digest(values, exclusions, contract_digest=terms, period=period)
    return RunResult(invoice, tuple(notes), digest, tuple(exclusions))
