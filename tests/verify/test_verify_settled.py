"""Bundles the cloud builds after real invoice runs in PostgreSQL: a late voucher, an adjustment after approval, and their notes verify."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import JULY, JUNE, MAY, oee_contract
from tests.verify.test_verify_bundle import failed, rewrite_manifest
from valuegate.cloud.renewal.service import contract_bundle
from valuegate.cloud.settlement import store as settlement
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.verify import verify_bundle

pytestmark = pytest.mark.postgres


async def approve(conn, period) -> dict:
    run = await settlement.run_invoice(conn, "acme", "C-1", period, actor="user:fin")
    return await settlement.approve_run(conn, "acme", run["id"], actor="user:fin-lead")


async def seeded_may(database) -> tuple[Ed25519PrivateKey, list[dict]]:
    """Store five vouchers of May and issue May's invoice; return the gateway key and the vouchers."""
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(), key)
    chain = voucher_chain(key, 5)
    await ingest(database, chain)
    async with await connect(database) as conn:
        await approve(conn, MAY)
    return key, chain


async def test_settled_bundle_with_late_notes(database, tmp_path):
    key, chain = await seeded_may(database)
    async with await connect(database) as conn:
        # Recorded after May was issued: June's run credits 8 May.
        await settlement.add_adjustment(conn, "acme", "C-1", anchor_id="line-oee", first_date=dt.date(2024, 5, 8), last_date=dt.date(2024, 5, 8),
                                        reason="一号线改造 line rebuild", actor="user:csm")
        await approve(conn, JUNE)
    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=2.25, low=1.0), key)
    await ingest(database, [late])
    async with await connect(database) as conn:
        await approve(conn, JULY)
        body = await contract_bundle(conn, "acme", "C-1")
    (tmp_path / "bundle.zip").write_bytes(body)
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(tmp_path / "bundle.zip").extractall(folder)

    documents = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    # Ordered by issue time, then number: each later run's note comes before its own empty invoice.
    assert [(d["kind"], d["total"]) for d in documents] == [
        ("invoice", "15000.00"), ("credit_note", "-3000.00"), ("invoice", "0.00"), ("debit_note", "4500.00"), ("invoice", "0.00")]
    assert all(d["issued_at"] for d in documents)
    stored = {item["voucher_id"]: item for item in json.loads((folder / "stored.json").read_text(encoding="utf-8"))}
    assert sorted(stored) == [f"gw-1:{n}" for n in range(1, 7)]
    # The late voucher was stored after June's run was issued, and the others before May's.
    assert stored["gw-1:6"]["stored_at"] > documents[1]["issued_at"]
    assert stored["gw-1:5"]["stored_at"] < documents[0]["issued_at"]

    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.as_dict()
    registered = public_key_multibase(key.public_key())
    assert [k["id"] for k in report.gateways[0]["keys"]] == [f"did:key:{registered}"]

    # Taking June's credit note out makes the May invoice fail.
    may, credit, june, debit, july = documents
    (folder / "invoices.json").write_text(json.dumps([may, june, debit, july]), encoding="utf-8")
    rewrite_manifest(folder)
    bad = failed(verify_bundle(folder).documents)
    assert list(bad) == [f"{may['number']} (invoice)"]
    assert "a credit or debit note is missing" in bad[f"{may['number']} (invoice)"][0]


@pytest.mark.peer
async def test_node_verifier_passes_settled_bundle(database, tmp_path, node_peers):
    key, chain = await seeded_may(database)
    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=-0.5, low=-1.0), key)
    await ingest(database, [late])
    async with await connect(database) as conn:
        await approve(conn, JUNE)
        body = await contract_bundle(conn, "acme", "C-1")
    (tmp_path / "bundle.zip").write_bytes(body)
    zipfile.ZipFile(tmp_path / "bundle.zip").extractall(tmp_path / "unpacked")
    result = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(tmp_path / "unpacked")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # May's invoice, June's invoice and the credit note for 31 May (-0.5 points).
    assert result.stdout.splitlines()[-1] == "checked 6 vouchers and 3 documents, 0 failed"
    assert verify_bundle(tmp_path / "bundle.zip").ok
