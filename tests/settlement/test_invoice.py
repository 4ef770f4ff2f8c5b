"""Invoice runs: deterministic numbers, lines from vouchers, exclusions and notes for late vouchers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal

import pytest

from tests.settlement.test_pricing import contract, day
from valuegate.cloud.bundle import document_record
from valuegate.cloud.settlement.invoice import BillingPeriod, Exclusion, InvoiceError, IssuedDocument, compute_run
from valuegate.edge.protocol.contract import contract_digest

FEB = BillingPeriod(dt.date(2024, 2, 1), dt.date(2024, 2, 29))
MAR = BillingPeriod(dt.date(2024, 3, 1), dt.date(2024, 3, 31))
TERMS = contract({"per": "oee_point_day", "amount": "2000"})


def march(n: int, point: float, seq: int):
    return dataclasses.replace(day(n, point, seq=seq), plant_date=f"2024-03-{n:02d}")


def issue(result) -> list[IssuedDocument]:
    """Turn a run's documents into the issued records the store would keep."""
    documents = [result.invoice, *result.notes]
    return [
        IssuedDocument(
            d.number,
            d.kind,
            d.period,
            {line.anchor: line.amount for line in d.lines},
            {line.anchor: line.voucher_ids for line in d.lines},
            d.corrects,
        )
        for d in documents
    ]


def test_run_bills_the_period_from_its_vouchers():
    values = [day(n, 1.5) for n in range(1, 21)] + [march(1, 3.0, 40)]
    result = compute_run(TERMS, FEB, values, [], [])
    assert result.invoice.total == Decimal("60000.00")
    assert result.invoice.lines[0].voucher_ids == tuple(f"gw1:{n}" for n in range(1, 21))
    assert result.invoice.number.startswith("INV-20240201-")
    assert result.notes == ()


def test_rerun_gives_same_number_and_totals():
    values = [day(n, 1.5) for n in range(1, 21)]
    first = compute_run(TERMS, FEB, values, [], [])
    second = compute_run(TERMS, FEB, list(reversed(values)), [], [])
    assert second.invoice.number == first.invoice.number
    assert second.invoice.total == first.invoice.total
    assert second.digest == first.digest
    other = compute_run(contract({"per": "oee_point_day", "amount": "2000"}), MAR, values, [], [])
    assert other.invoice.number != first.invoice.number


def test_late_voucher_gives_debit_note_next_run():
    values = [day(n, 1.5) for n in range(1, 21)]
    february = compute_run(TERMS, FEB, values, [], [])
    issued = issue(february)

    late = day(21, 1.5)
    march_run = compute_run(TERMS, MAR, [*values, late, march(1, 2.0, 30)], [], issued)
    assert march_run.invoice.total == Decimal("4000.00")
    (note,) = march_run.notes
    assert note.kind == "debit_note"
    assert note.corrects == february.invoice.number
    assert note.total == Decimal("3000.00")
    assert note.lines[0].previously_billed == Decimal("60000.00")
    assert note.lines[0].recomputed == Decimal("63000.00")
    assert note.lines[0].added_vouchers == ("gw1:21",)
    # The issued invoice itself is untouched by the later run.
    assert issued[0].amounts == {"oee-line1": Decimal("60000.00")}


def test_reissued_day_gives_credit_note():
    values = [day(n, 1.5) for n in range(1, 21)]
    issued = issue(compute_run(TERMS, FEB, values, [], []))
    corrected = day(1, 0.5, seq=77)
    march_run = compute_run(TERMS, MAR, [*values, corrected], [], issued)
    (note,) = march_run.notes
    assert note.kind == "credit_note"
    assert note.total == Decimal("-2000.00")
    assert note.lines[0].removed_vouchers == ("gw1:1",)
    assert note.lines[0].added_vouchers == ("gw1:77",)


def test_issued_notes_count_as_billed():
    values = [day(n, 1.5) for n in range(1, 21)]
    issued = issue(compute_run(TERMS, FEB, values, [], []))
    with_late = [*values, day(21, 1.5)]
    issued += issue(compute_run(TERMS, MAR, with_late, [], issued))[1:]
    april = BillingPeriod(dt.date(2024, 4, 1), dt.date(2024, 4, 30))
    assert compute_run(TERMS, april, with_late, [], issued).notes == ()


def test_cap_already_reached_gives_no_note():
    capped = contract({"per": "oee_point_day", "amount": "2000"}, cap="60000")
    values = [day(n, 1.5) for n in range(1, 21)]
    issued = issue(compute_run(capped, FEB, values, [], []))
    assert compute_run(capped, MAR, [*values, day(21, 1.5)], [], issued).notes == ()


def test_exclusion_takes_days_out():
    rebuild = Exclusion(7, "oee-line1", "2024-02-05", "2024-02-09", "line 1 rebuild")
    result = compute_run(TERMS, FEB, [day(n, 1.5) for n in range(1, 21)], [rebuild], [])
    line = result.invoice.lines[0]
    assert line.amount == Decimal("45000.00")
    assert line.excluded == tuple((f"gw1:{n}", "nonroutine_adjustment:7") for n in range(5, 10))
    assert "gw1:5" not in line.voucher_ids


def test_overlapping_period_is_rejected():
    issued = issue(compute_run(TERMS, FEB, [day(1, 1.0)], [], []))
    overlap = BillingPeriod(dt.date(2024, 2, 15), dt.date(2024, 3, 15))
    with pytest.raises(InvoiceError, match="overlaps invoice"):
        compute_run(TERMS, overlap, [day(1, 1.0)], [], issued)


def test_reversed_period_is_rejected():
    with pytest.raises(InvoiceError, match="before it starts"):
        BillingPeriod(dt.date(2024, 3, 1), dt.date(2024, 2, 1))


def test_empty_invoice_total_has_the_rounding_places():
    result = compute_run(TERMS, FEB, [], [], [])
    assert result.invoice.lines == ()
    assert str(result.invoice.total) == "0.00"
    assert document_record(result.invoice)["total"] == "0.00"
    yen = contract({"per": "oee_point_day", "amount": "2000"}, rounding="1")
    assert str(compute_run(yen, FEB, [], [], []).invoice.total) == "0"


def test_empty_run_digest_names_terms_and_period():
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    february = compute_run(TERMS, FEB, [], [], [])
    assert february.digest != empty
    assert compute_run(TERMS, MAR, [], [], []).digest != february.digest
    dearer = contract({"per": "oee_point_day", "amount": "2500"})
    assert compute_run(dearer, FEB, [], [], []).digest != february.digest


def test_note_for_unbilled_anchor_shows_zero_billed():
    # February was issued without any voucher; a late 3 February voucher bills 1.5 x 2,000 in a debit note.
    issued = issue(compute_run(TERMS, FEB, [], [], []))
    (note,) = compute_run(TERMS, MAR, [day(3, 1.5)], [], issued).notes
    assert str(note.lines[0].previously_billed) == "0.00"
    assert str(note.lines[0].recomputed) == "3000.00"
    record = document_record(note)
    assert record["lines"][0]["previously_billed"] == "0.00"
    assert record["total"] == "3000.00"


def test_documents_record_the_contract_digest():
    values = [day(n, 1.5) for n in range(1, 21)]
    february = compute_run(TERMS, FEB, values, [], [])
    (note,) = compute_run(TERMS, MAR, [*values, day(21, 1.5)], [], issue(february)).notes
    assert february.invoice.contract_digest == contract_digest(TERMS)
    assert note.contract_digest == contract_digest(TERMS)
    assert document_record(february.invoice)["contract_digest"] == contract_digest(TERMS)
    dearer = contract({"per": "oee_point_day", "amount": "2500"})
    assert compute_run(dearer, FEB, values, [], []).invoice.contract_digest != contract_digest(TERMS)
