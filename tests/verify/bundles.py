"""Builders of auditor bundles from real signed vouchers, shared by the verification and renewal tests."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import voucher_chain
from valuegate.cloud.bundle import GatewayKey, StoredVoucher, adjustment_record, document_record, write_bundle
from valuegate.cloud.settlement.invoice import BillingPeriod, Exclusion, IssuedDocument, compute_run
from valuegate.cloud.settlement.pricing import VoucherValue
from valuegate.edge.protocol.canonical import content_digest
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


def issued_records(result, terms: Contract | None = None, revision: int | None = None) -> list[IssuedDocument]:
    """Return a run's documents as the store keeps them once issued; ``terms`` (revision ``revision``) priced its invoice."""
    return [
        IssuedDocument(d.number, d.kind, d.period, {l.anchor: l.amount for l in d.lines}, {l.anchor: l.voucher_ids for l in d.lines}, d.corrects,
                       contract=terms if d.kind == "invoice" else None, contract_revision=revision if d.kind == "invoice" else None)
        for d in (result.invoice, *result.notes)
    ]


REBUILD = {
    "id": 7, "kind": "exclude_period", "anchor_id": "line-oee", "first_date": dt.date(2024, 5, 8), "last_date": dt.date(2024, 5, 8),
    "reason": "一号线改造 line rebuild", "created_by": "user:csm", "created_at": dt.datetime(2024, 5, 20, tzinfo=dt.UTC),
}
JULY = BillingPeriod(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
# When each run was approved: May's invoice, then June's run, then July's run.
ISSUED = {"may": "2024-06-01T08:00:00Z", "june": "2024-07-01T08:00:00Z", "july": "2024-08-01T08:00:00Z"}
LATE_STORED = "2024-07-05T09:30:00Z"
# Between May's invoice and June's run.
AFTER_MAY_STORED = "2024-06-15T09:30:00Z"
REBUILD_AFTER_MAY = dt.datetime(2024, 6, 10, tzinfo=dt.UTC)


def _stored_at(document: dict[str, Any]) -> str:
    """Stored an hour after the gateway issued it."""
    issued = dt.datetime.fromisoformat(document["credentialSubject"]["issued_at"].replace("Z", "+00:00"))
    return (issued + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rotated_chain(key: Ed25519PrivateKey, days: int, rotate_at: int) -> tuple[list[dict[str, Any]], list[GatewayKey]]:
    """Sign vouchers 1..rotate_at-1 with ``key`` and the rest with a next key that ``key`` introduced by a rotation statement."""
    from tests.factories import make_claims
    from valuegate.edge.protocol import voucher as v
    from valuegate.edge.protocol.keyrotation import build_rotation

    following = Ed25519PrivateKey.generate()
    statement = build_rotation(key, following, tenant="acme", site="plant-1", gateway="gw-1", from_seq=rotate_at, created="2024-05-08T12:00:00Z")
    vouchers: list[dict[str, Any]] = []
    prev = None
    for seq in range(1, days + 1):
        claims = make_claims(seq=seq, prev=prev, plant_date=dt.date(2024, 5, 5) + dt.timedelta(days=seq))
        vouchers.append(v.build_voucher(claims, key if seq < rotate_at else following))
        prev = v.voucher_hash(vouchers[-1])
    keys = [
        GatewayKey("gw-1", public_key_multibase(key.public_key()), "2024-01-01T00:00:00Z", None, None, rotate_at - 1),
        GatewayKey("gw-1", public_key_multibase(following.public_key()), "2024-05-08T12:00:00Z", None, rotate_at, None, statement),
    ]
    return vouchers, keys


def signed_bundle(folder: Path, *, days: int = 5, late: bool = False, rebuild: bool = False, credit: bool = False,
                  rotate_at: int | None = None, stored: bool = True) -> dict[str, Any]:
    """Write ``bundle.zip`` and its unpacked folder for ``days`` signed vouchers and their May invoice, as the product settles them.

    With ``rebuild``, a non-routine adjustment recorded before May was
    invoiced takes 8 May (voucher gw-1:3) out of settlement. With ``credit``,
    the same adjustment is recorded after May's invoice, and June's run
    issues a credit note for it. With ``late``, one more voucher for 31 May
    is stored after June's run and July's run issues a debit note for it.
    With ``rotate_at``, the gateway's key is rotated at that sequence. Each
    run also issues its own (empty) invoice; ``stored`` writes stored.json
    and each document's ``issued_at``. The bundle records no contract
    revision numbers, like bundles built before they carried earlier
    revisions, so these tests also show that such bundles still verify.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    contract = oee_contract()
    if rotate_at is None:
        vouchers = voucher_chain(key, days)
        keys = [GatewayKey("gw-1", public_key_multibase(key.public_key()), "2024-01-01T00:00:00Z", None)]
    else:
        vouchers, keys = _rotated_chain(key, days, rotate_at)
    values = [VoucherValue.from_claims(doc["credentialSubject"]) for doc in vouchers]
    adjustment = dict(REBUILD, created_at=REBUILD_AFTER_MAY) if credit else REBUILD
    exclusion = [Exclusion(REBUILD["id"], REBUILD["anchor_id"], "2024-05-08", "2024-05-08", REBUILD["reason"])] if rebuild or credit else []

    may = compute_run(contract, MAY, values, exclusion if rebuild else [], [])
    runs = [("may", may)]
    issued = issued_records(may)
    if credit:
        june = compute_run(contract, JUNE, values, exclusion, issued)
        runs.append(("june", june))
        issued += issued_records(june)
    stored_at = {doc["credentialSubject"]["voucher_id"]: _stored_at(doc) for doc in vouchers}
    if late:
        from tests.factories import make_claims
        from valuegate.edge.protocol import voucher as v

        claims = make_claims(seq=days + 1, prev=v.voucher_hash(vouchers[-1]), plant_date=dt.date(2024, 5, 31), point=2.25, low=1.0)
        signer = key if rotate_at is None else None
        assert signer is not None, "a late voucher after a rotation is not built here"
        vouchers.append(v.build_voucher(claims, signer))
        values.append(VoucherValue.from_claims(vouchers[-1]["credentialSubject"]))
        stored_at[claims.voucher_id] = LATE_STORED
        runs.append(("july", compute_run(contract, JULY, values, exclusion, issued)))

    documents = []
    for name, run in runs:
        for document in (run.invoice, *run.notes):
            record = document_record(document)
            if stored:
                record["issued_at"] = ISSUED[name]
            documents.append(record)
    path = write_bundle(
        folder / "bundle.zip",
        contract=msgspec.to_builtins(contract),
        vouchers=vouchers,
        keys=keys,
        documents=documents,
        created_at="2024-08-02T00:00:00Z",
        adjustments=[adjustment_record(adjustment)] if rebuild or credit else [],
        stored=[StoredVoucher(vid, at, True) for vid, at in stored_at.items()] if stored else None,
    )
    unpacked = folder / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(unpacked)
    return {"zip": path, "folder": unpacked, "key": key, "vouchers": vouchers, "documents": documents, "contract": contract, "keys": keys}


def revised_bundle(folder: Path, *, repriced: bool = False) -> dict[str, Any]:
    """Write ``bundle.zip`` and its unpacked folder for an amended contract, priced without a database.

    May is invoiced with revision 1 (2,000 CNY per point-day) from its first
    four vouchers: 6 points x 2,000 = 12,000.00. The fifth voucher of May is
    stored after that invoice, and June's run, priced with revision 2 (2,500),
    issues a debit note that re-prices May with revision 1, the revision of
    its invoice: 7.5 x 2,000 = 15,000.00, so the note bills 3,000.00. June's
    own invoice is 0.00 with revision 2. Revision 3 (3,000) is in force when
    the bundle is built, so revisions 1 and 2 go into
    ``contracts/C-1/revision-<n>.json``. With ``repriced``, June's note
    re-prices May with revision 2 instead (7.5 x 2,500 = 18,750.00, so the
    note bills 6,750.00), which settlement never does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    vouchers = voucher_chain(key, 5)
    values = [VoucherValue.from_claims(doc["credentialSubject"]) for doc in vouchers]
    terms = {n: oee_contract(anchor={"price": {"per": "oee_point_day", "amount": amount}}) for n, amount in ((1, "2000"), (2, "2500"), (3, "3000"))}

    may = compute_run(terms[1], MAY, values[:4], [], [], revision=1)
    june = compute_run(terms[2], JUNE, values, [], issued_records(may) if repriced else issued_records(may, terms[1], 1), revision=2)
    stored_at = {doc["credentialSubject"]["voucher_id"]: _stored_at(doc) for doc in vouchers}
    stored_at[values[4].voucher_id] = AFTER_MAY_STORED
    documents = []
    for run, issued in ((may, ISSUED["may"]), (june, ISSUED["june"])):
        for document in (run.invoice, *run.notes):
            documents.append({**document_record(document), "issued_at": issued, "contract_revision": document.contract_revision})
    path = write_bundle(
        folder / "bundle.zip",
        contract=msgspec.to_builtins(terms[3]),
        vouchers=vouchers,
        keys=[GatewayKey("gw-1", public_key_multibase(key.public_key()), "2024-01-01T00:00:00Z", None)],
        documents=documents,
        created_at="2024-08-02T00:00:00Z",
        stored=[StoredVoucher(vid, at, True) for vid, at in stored_at.items()],
        revision=3,
        revisions={n: msgspec.to_builtins(terms[n]) for n in (1, 2)},
    )
    unpacked = folder / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(unpacked)
    by_kind = {(d["kind"], d["period_first"]): d for d in documents}
    return {
        "zip": path,
        "folder": unpacked,
        "may": by_kind[("invoice", "2024-05-01")],
        "debit": by_kind[("debit_note", "2024-05-01")],
        "june": by_kind[("invoice", "2024-06-01")],
        "digests": {n: content_digest(msgspec.to_builtins(contract)) for n, contract in terms.items()},
    }
