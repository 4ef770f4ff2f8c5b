"""Builders of auditor bundles from real signed vouchers, shared by the verification and renewal tests."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import voucher_chain
from valuegate.cloud.bundle import GatewayKey, adjustment_record, document_record, write_bundle
from valuegate.cloud.settlement.invoice import BillingPeriod, Exclusion, IssuedDocument, compute_run
from valuegate.cloud.settlement.pricing import VoucherValue
from valuegate.edge.protocol.contract import Contract, parse_contract
from valuegate.edge.protocol.keys import public_key_multibase

MAY = BillingPeriod(dt.date(2024, 5, 1), dt.date(2024, 5, 31))
JUNE = BillingPeriod(dt.date(2024, 6, 1), dt.date(2024, 6, 30))


def oee_contract(**terms: Any) -> Contract:
    """Return contract C-1 of tenant acme: one OEE anchor at 2,000 CNY per point per running day."""
    anchor = {
        "id": "line-oee",
        "scope": ["m-1"],
        "metric": "oee_points",
        "baseline": {"first_date": "2024-04-01", "last_date": "2024-04-14", "min_days": 10},
        "reporting": {"first_date": "2024-05-01", "last_date": "2024-12-31"},
        "price": {"per": "oee_point_day", "amount": "2000"},
        "target": 1.2,
        "title": {"en": "Line 1 OEE", "zh-CN": "一号线 OEE"},
    }
    anchor.update(terms.pop("anchor", {}))
    data = {
        "schema": "valuegate/contract/v1",
        "id": "C-1",
        "tenant": "acme",
        "customer": "ACME Bottling",
        "start": "2024-04-01",
        "end": "2024-12-31",
        "anchors": [anchor],
        **terms,
    }
    return parse_contract(data)


def issued_records(result) -> list[IssuedDocument]:
    return [
        IssuedDocument(d.number, d.kind, d.period, {l.anchor: l.amount for l in d.lines}, {l.anchor: l.voucher_ids for l in d.lines}, d.corrects)
        for d in (result.invoice, *result.notes)
    ]


REBUILD = {
    "id": 7, "kind": "exclude_period", "anchor_id": "line-oee", "first_date": dt.date(2024, 5, 8), "last_date": dt.date(2024, 5, 8),
    "reason": "一号线改造 line rebuild", "created_by": "user:csm", "created_at": dt.datetime(2024, 5, 20, tzinfo=dt.UTC),
}


def signed_bundle(folder: Path, *, days: int = 5, late: bool = False, rebuild: bool = False) -> dict[str, Any]:
    """Write ``bundle.zip`` and its unpacked folder for ``days`` signed vouchers and their May invoice.

    With ``late``, one more voucher for 31 May arrives after May was issued and
    June's run carries a debit note for it. With ``rebuild``, a non-routine
    adjustment takes 8 May (voucher gw-1:3) out of settlement.
    """
    key = Ed25519PrivateKey.generate()
    contract = oee_contract()
    vouchers = voucher_chain(key, days)
    values = [VoucherValue.from_claims(doc["credentialSubject"]) for doc in vouchers]
    exclusions = [Exclusion(REBUILD["id"], REBUILD["anchor_id"], "2024-05-08", "2024-05-08", REBUILD["reason"])] if rebuild else []
    may = compute_run(contract, MAY, values, exclusions, [])
    documents = [document_record(may.invoice)]
    if late:
        from tests.factories import make_claims
        from valuegate.edge.protocol import voucher as v

        claims = make_claims(seq=days + 1, prev=v.voucher_hash(vouchers[-1]), plant_date=dt.date(2024, 5, 31), point=2.25, low=1.0)
        vouchers.append(v.build_voucher(claims, key))
        values.append(VoucherValue.from_claims(vouchers[-1]["credentialSubject"]))
        june = compute_run(contract, JUNE, values, exclusions, issued_records(may))
        documents += [document_record(note) for note in june.notes]

    path = write_bundle(
        folder / "bundle.zip",
        contract=msgspec.to_builtins(contract),
        vouchers=vouchers,
        keys=[GatewayKey("gw-1", public_key_multibase(key.public_key()), "2024-01-01T00:00:00Z", None)],
        documents=documents,
        created_at="2024-06-01T00:00:00Z",
        adjustments=[adjustment_record(REBUILD)] if rebuild else [],
    )
    unpacked = folder / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(unpacked)
    return {"zip": path, "folder": unpacked, "key": key, "vouchers": vouchers, "documents": documents, "contract": contract}
