"""Bundles of an amended contract: each document is checked against the revision it was priced with, carried in the bundle."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import JUNE, MAY, oee_contract, revised_bundle
from tests.verify.test_verify_bundle import failed, rewrite, rewrite_manifest, run_cli
from tests.verify.test_verify_settled import approve
from valuegate.cloud.bundle import BundleError, build_bundle, revision_file
from valuegate.cloud.contracts import upload_contract
from valuegate.cloud.renewal.service import contract_bundle
from valuegate.edge.protocol.canonical import content_digest
from valuegate.edge.protocol.contract import Contract, contract_digest
from valuegate.verify import verify_bundle

REVISION_1 = "contracts/C-1/revision-1.json"
REVISION_2 = "contracts/C-1/revision-2.json"


def priced_at(amount: str) -> Contract:
    """Contract C-1 at ``amount`` CNY per OEE point per running day."""
    return oee_contract(anchor={"price": {"per": "oee_point_day", "amount": amount}})


async def amend(conn, contract: Contract) -> int:
    """Upload ``contract`` as the next revision, the way an administrator does; return its number."""
    row, created = await upload_contract(conn, "acme", json.dumps(msgspec.to_builtins(contract)), actor="user:admin")
    assert created
    return row["revision"]


async def amended_bundle(database: str, folder: Path) -> dict[str, Any]:
    """Price May at 2,000 (revision 1), June's run at 2,500 (revision 2), then amend to 3,000 (revision 3) and build the bundle.

    May's invoice bills its first four vouchers: 6 points x 2,000 = 12,000.00.
    The fifth voucher of May arrives after the amendment to revision 2, and
    June's run issues a debit note that re-prices May with revision 1, the
    revision of its invoice: 7.5 x 2,000 = 15,000.00, so the note bills
    3,000.00. June's own invoice is 0.00 (no vouchers in June) with revision 2.
    """
    key = Ed25519PrivateKey.generate()
    await seed(database, priced_at("2000"), key)
    chain = voucher_chain(key, 5)
    await ingest(database, chain[:4])
    async with await connect(database) as conn:
        await approve(conn, MAY)
        assert await amend(conn, priced_at("2500")) == 2
    await ingest(database, chain[4:])
    async with await connect(database) as conn:
        await approve(conn, JUNE)
        assert await amend(conn, priced_at("3000")) == 3
        body = await contract_bundle(conn, "acme", "C-1")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.zip").write_bytes(body)
    zipfile.ZipFile(folder / "bundle.zip").extractall(folder / "unpacked")
    documents = json.loads((folder / "unpacked" / "invoices.json").read_text(encoding="utf-8"))
    by_kind = {(d["kind"], d["period_first"]): d for d in documents}
    return {
        "zip": folder / "bundle.zip",
        "folder": folder / "unpacked",
        "may": by_kind[("invoice", "2024-05-01")],
        "debit": by_kind[("debit_note", "2024-05-01")],
        "june": by_kind[("invoice", "2024-06-01")],
        "digests": {n: contract_digest(priced_at(amount)) for n, amount in ((1, "2000"), (2, "2500"), (3, "3000"))},
    }


def failures(report) -> set[str]:
    """Failed subjects named as the Node.js verifier names them: files, document numbers and lines."""
    return ({v.subject for v in report.files if not v.ok} | {v.subject.split(" (")[0] for v in report.documents if not v.ok}
            | {v.subject for v in report.lines if not v.ok})


def node_verify(node_peers: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)


def node_failures(stdout: str) -> dict[str, str]:
    return {line[len("FAIL "):].split(": ", 1)[0]: line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("FAIL ")}


@pytest.mark.postgres
async def test_bundle_carries_every_priced_revision(database, tmp_path):
    bundle = await amended_bundle(database, tmp_path)
    folder, digests = bundle["folder"], bundle["digests"]
    may, debit, june = bundle["may"], bundle["debit"], bundle["june"]

    assert (may["total"], debit["total"], june["total"]) == ("12000.00", "3000.00", "0.00")
    assert (may["contract_revision"], debit["contract_revision"], june["contract_revision"]) == (1, 1, 2)
    assert (may["contract_digest"], debit["contract_digest"], june["contract_digest"]) == (digests[1], digests[1], digests[2])
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["contract_revision"] == 3
    assert manifest["contract_digest"] == digests[3]
    assert manifest["revisions"] == [
        {"revision": 1, "file": REVISION_1, "contract_digest": digests[1]},
        {"revision": 2, "file": REVISION_2, "contract_digest": digests[2]},
    ]
    for name in (REVISION_1, REVISION_2, "contract.json"):
        assert name in manifest["files"]
    # The files hold the terms as priced: 2,000 and 2,500 per point-day, and 3,000 in force.
    assert json.loads((folder / REVISION_1).read_text(encoding="utf-8"))["anchors"][0]["price"]["amount"] == "2000"
    assert json.loads((folder / REVISION_2).read_text(encoding="utf-8"))["anchors"][0]["price"]["amount"] == "2500"
    assert json.loads((folder / "contract.json").read_text(encoding="utf-8"))["anchors"][0]["price"]["amount"] == "3000"

    for path in (bundle["zip"], folder):
        report = verify_bundle(path)
        assert report.ok, report.as_dict()
    documents = {v.subject.split(" (")[0]: v for v in report.documents}
    # Revision 3 would re-price May to 22,500.00, but May keeps revision 1, so nothing is left to settle.
    assert documents[may["number"]].notes == [f"priced with contract revision 1 ({REVISION_1}, terms digest {digests[1]})"]
    assert documents[debit["number"]].notes == [f"priced with contract revision 1 ({REVISION_1}, terms digest {digests[1]})"]
    assert documents[june["number"]].notes == [f"priced with contract revision 2 ({REVISION_2}, terms digest {digests[2]})"]
    lines = {v.subject: v.notes[0] for v in report.lines}
    assert lines == {
        f"{may['number']} line 1 (line-oee)": "oee_point_day 6.0 x 2000 (point) = 12000.00 CNY",
        f"{debit['number']} line 1 (line-oee)": "oee_point_day 7.5 x 2000 (point) = 15000.00 CNY",
    }
    assert report.revisions == [
        {"revision": 1, "file": REVISION_1, "digest": digests[1], "documents": [may["number"], debit["number"]]},
        {"revision": 2, "file": REVISION_2, "digest": digests[2], "documents": [june["number"]]},
    ]

    result = run_cli(str(bundle["zip"]))
    assert result.exit_code == 0, result.stdout
    assert f"contract C-1 terms digest: {digests[3]} (revision 3, in force, contract.json)" in result.stdout
    assert f"contract C-1 revision 1 terms digest: {digests[1]} ({REVISION_1}, prices {may['number']}, {debit['number']})" in result.stdout
    assert f"contract C-1 revision 2 terms digest: {digests[2]} ({REVISION_2}, prices {june['number']})" in result.stdout
    assert f"        . priced with contract revision 1 ({REVISION_1}, terms digest {digests[1]})" in result.stdout
    as_json = json.loads(run_cli("--json", str(bundle["zip"])).stdout)
    assert as_json["contract"] == {"id": "C-1", "digest": digests[3], "revision": 3}
    assert as_json["revisions"] == report.revisions


@pytest.mark.postgres
async def test_tampered_revision_fails_naming_it(database, tmp_path):
    bundle = await amended_bundle(database, tmp_path)
    folder, digests, may, debit = bundle["folder"], bundle["digests"], bundle["may"], bundle["debit"]
    listed_sha = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"][REVISION_1]
    # Revision 1 lowered to 1,000 per point-day: May would re-price to 7.5 x 1,000 = 7,500.00.
    rewrite(folder, REVISION_1, '"amount": "2000"', '"amount": "1000"')
    forged = content_digest(json.loads((folder / REVISION_1).read_text(encoding="utf-8")))

    report = verify_bundle(folder)
    assert failed(report.files) == {REVISION_1: [
        f"SHA-256 sha256:{hashlib.sha256((folder / REVISION_1).read_bytes()).hexdigest()} differs from the manifest's {listed_sha}",
        f"contract terms digest {forged} differs from the manifest's {digests[1]} for revision 1: the file was changed or damaged after the bundle "
        "was built; ask the sender for the original bundle",
    ]}
    document_reason = (f"priced with contract terms {digests[1]}, but {REVISION_1} (contract revision 1) has terms digest {forged}: the file was "
                       "changed after the document was issued; compare it with the signed contract, or ask the sender for the original file")
    # The debit note against May was priced with revision 1 too, so it fails with the invoice.
    line_reason = f"cannot re-price: {REVISION_1} does not carry the contract terms {digests[1]} its document was priced with"
    assert failed(report.documents) == {f"{may['number']} (invoice)": [document_reason], f"{debit['number']} (debit_note)": [document_reason]}
    assert failed(report.lines) == {f"{may['number']} line 1 (line-oee)": [line_reason], f"{debit['number']} line 1 (line-oee)": [line_reason]}

    # With the manifest rewritten to match, only the digest the invoice recorded still catches the change.
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["revisions"][0]["contract_digest"] = forged
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    rewrite_manifest(folder)
    report = verify_bundle(folder)
    assert failed(report.files) == {}
    assert failed(report.documents) == {f"{may['number']} (invoice)": [document_reason], f"{debit['number']} (debit_note)": [document_reason]}
    assert list(failed(report.lines)) == [f"{may['number']} line 1 (line-oee)", f"{debit['number']} line 1 (line-oee)"]
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "FAIL (4 failed)" in result.stdout


@pytest.mark.postgres
async def test_missing_revision_fails_naming_it(database, tmp_path):
    bundle = await amended_bundle(database, tmp_path)
    folder, digests, may, debit = bundle["folder"], bundle["digests"], bundle["may"], bundle["debit"]
    listed_sha = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"][REVISION_1]
    (folder / REVISION_1).unlink()

    report = verify_bundle(folder)
    assert failed(report.files) == {REVISION_1: [f"missing from the bundle, though the manifest lists it with SHA-256 {listed_sha}; ask the sender for a complete bundle"]}
    missing = f"priced with {REVISION_1} (contract revision 1), which is missing from the bundle; ask the sender for a complete bundle"
    assert failed(report.documents) == {f"{may['number']} (invoice)": [missing], f"{debit['number']} (debit_note)": [missing]}
    cannot = [f"cannot re-price: {REVISION_1} (contract revision 1) is missing from the bundle"]
    assert failed(report.lines) == {f"{may['number']} line 1 (line-oee)": cannot, f"{debit['number']} line 1 (line-oee)": cannot}
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert (f"contract C-1 revision 1 terms digest: unknown, the file is missing or unreadable ({REVISION_1}, prices {may['number']}, {debit['number']})"
            in result.stdout)
    assert "FAIL (5 failed)" in result.stdout

    # Taken out of the manifest too, revision 1 is still not replaced by the revision in force.
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["revisions"] = manifest["revisions"][1:]
    del manifest["files"][REVISION_1]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = verify_bundle(folder)
    assert failed(report.files) == {}
    lacking = (f"priced with contract terms {digests[1]} (contract revision 1), but contract.json has {digests[3]} and no other revision in the bundle "
               "has them: contract.json was changed, or the bundle lacks the revision this document was priced with; compare contract.json with the "
               "signed contract, or ask the sender for a bundle that carries that revision")
    assert failed(report.documents) == {f"{may['number']} (invoice)": [lacking], f"{debit['number']} (debit_note)": [lacking]}
    cannot = [f"cannot re-price: the bundle does not carry the contract terms {digests[1]} its document was priced with"]
    assert failed(report.lines) == {f"{may['number']} line 1 (line-oee)": cannot, f"{debit['number']} line 1 (line-oee)": cannot}


@pytest.mark.postgres
@pytest.mark.peer
async def test_node_verifier_agrees_on_revisions(database, tmp_path, node_peers):
    bundle = await amended_bundle(database, tmp_path)
    folder, digests, may, debit, june = bundle["folder"], bundle["digests"], bundle["may"], bundle["debit"], bundle["june"]

    good = node_verify(node_peers, folder)
    assert good.returncode == 0, good.stdout + good.stderr
    out = good.stdout.splitlines()
    assert out[5:8] == [
        f"contract C-1 {digests[3]}",
        f"contract C-1 revision 1 {digests[1]} {REVISION_1} prices {may['number']}, {debit['number']}",
        f"contract C-1 revision 2 {digests[2]} {REVISION_2} prices {june['number']}",
    ]
    assert out[-1] == "checked 5 vouchers and 3 documents, 0 failed"

    rewrite(folder, REVISION_1, '"amount": "2000"', '"amount": "1000"')
    forged = content_digest(json.loads((folder / REVISION_1).read_text(encoding="utf-8")))
    tampered = node_verify(node_peers, folder)
    assert tampered.returncode == 1
    reasons = node_failures(tampered.stdout)
    revision_1_documents = {may["number"], f"{may['number']} line 1 (line-oee)", debit["number"], f"{debit['number']} line 1 (line-oee)"}
    assert set(reasons) == failures(verify_bundle(folder)) == {REVISION_1, *revision_1_documents}
    assert reasons[REVISION_1].endswith(f"terms digest {forged} differs from the manifest's {digests[1]}")
    assert reasons[may["number"]] == f"priced with contract terms {digests[1]}, but {REVISION_1} has {forged}"

    (folder / REVISION_1).unlink()
    missing = node_verify(node_peers, folder)
    assert missing.returncode == 1
    reasons = node_failures(missing.stdout)
    assert set(reasons) == failures(verify_bundle(folder)) == {REVISION_1, *revision_1_documents}
    assert reasons[REVISION_1] == "missing from the bundle, though the manifest lists it as revision 1"
    assert reasons[may["number"]] == f"priced with revision 1, but {REVISION_1} is missing from the bundle"
    assert missing.stdout.splitlines()[-1] == "checked 5 vouchers and 3 documents, 5 failed"


@pytest.mark.postgres
@pytest.mark.peer
async def test_undone_amendment_verifies(database, tmp_path, node_peers):
    """May priced with revision 1, then an amendment and its undoing: revision 3 has revision 1's terms, and the bundle passes."""
    key = Ed25519PrivateKey.generate()
    await seed(database, priced_at("2000"), key)
    await ingest(database, voucher_chain(key, 4))
    async with await connect(database) as conn:
        await approve(conn, MAY)
        assert await amend(conn, priced_at("2500")) == 2
        assert await amend(conn, priced_at("2000")) == 3
        body = await contract_bundle(conn, "acme", "C-1")
    (tmp_path / "bundle.zip").write_bytes(body)
    zipfile.ZipFile(tmp_path / "bundle.zip").extractall(tmp_path / "unpacked")
    manifest = json.loads((tmp_path / "unpacked" / "manifest.json").read_text(encoding="utf-8"))
    digest = contract_digest(priced_at("2000"))
    assert (manifest["contract_revision"], manifest["contract_digest"]) == (3, digest)
    assert manifest["revisions"] == [{"revision": 1, "file": REVISION_1, "contract_digest": digest}]

    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.as_dict()
    (may,) = report.documents
    assert may.notes == [f"priced with contract revision 1 ({REVISION_1}, terms digest {digest})"]
    result = node_verify(node_peers, tmp_path / "unpacked")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.peer
def test_note_repriced_with_later_revision_fails(tmp_path, node_peers):
    bundle = revised_bundle(tmp_path, repriced=True)
    folder, digests, may, debit, june = bundle["folder"], bundle["digests"], bundle["may"], bundle["debit"], bundle["june"]
    assert (debit["total"], debit["contract_digest"]) == ("6750.00", digests[2])

    report = verify_bundle(folder)
    reasons = failed(report.documents)
    assert set(reasons) == {f"{may['number']} (invoice)", f"{debit['number']} (debit_note)"}
    assert reasons[f"{debit['number']} (debit_note)"] == [
        f"records contract revision 2 and was priced with contract terms {digests[2]}, but the invoice it corrects, {may['number']}, was priced "
        f"with {digests[1]}: a note must price its period with the terms of that invoice, so this note re-priced an issued period with a later "
        "contract revision; ask the vendor why the terms changed"]
    # May re-prices with revision 1 to 7.5 x 2,000 = 15,000.00, but May and its note bill 12,000.00 + 6,750.00.
    assert reasons[f"{may['number']} (invoice)"] == [
        f"line line-oee: the vouchers and adjustments recorded before {june['number']} was issued (2024-07-01T08:00:00+00:00) re-price the period "
        f"to 15000.00, but {may['number']} and its notes in the bundle bill 18750.00; a credit or debit note is missing"]
    # The note's own line adds up with the terms it recorded.
    assert failed(report.lines) == {}

    node = node_verify(node_peers, folder)
    assert node.returncode == 1
    node_reasons = node_failures(node.stdout)
    assert set(node_reasons) == failures(report) == {may["number"], debit["number"]}
    assert node_reasons[debit["number"]] == f"priced with {digests[2]}, but the invoice it corrects, {may['number']}, with {digests[1]}"


def test_revision_file_stays_in_its_folder():
    assert revision_file("C-1", 1) == REVISION_1
    # A slash or a dot-only contract id must not add or climb a folder when the ZIP file is unpacked.
    assert revision_file("plant/2024", 2) == "contracts/plant%2F2024/revision-2.json"
    assert revision_file("..", 3) == "contracts/%2E%2E/revision-3.json"


def test_bundle_rejects_revision_in_force():
    terms = msgspec.to_builtins(priced_at("3000"))
    with pytest.raises(BundleError, match="revision 3 is the revision in force and goes into contract.json"):
        build_bundle(contract=terms, vouchers=[], keys=[], documents=[], created_at="2024-08-02T00:00:00Z", revision=3, revisions={3: terms})
