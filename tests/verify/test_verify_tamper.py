"""`valuegate verify` against a vendor who edits its own bundle: dropped vouchers, removed notes, printed fields and re-signed vouchers."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.verify.bundles import ISSUED, signed_bundle
from tests.verify.test_verify_bundle import failed, rewrite, rewrite_manifest, run_cli
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.verify import verify_bundle


def documents_of(folder: Path) -> list[dict]:
    return json.loads((folder / "invoices.json").read_text(encoding="utf-8"))


def write_documents(folder: Path, documents: list[dict]) -> None:
    (folder / "invoices.json").write_text(json.dumps(documents, ensure_ascii=False, indent=2), encoding="utf-8")
    rewrite_manifest(folder)


def drop_voucher(folder: Path, vid: str) -> None:
    """Take ``vid`` off May's line and re-price what is left: 4 days x 1.5 points x 2,000 CNY."""
    documents = documents_of(folder)
    line = documents[0]["lines"][0]
    line["voucher_ids"].remove(vid)
    line.update(days=4, quantity="6.0", amount="12000.00")
    documents[0]["total"] = "12000.00"
    write_documents(folder, documents)


def forge_with_fresh_key(folder: Path) -> str:
    """Raise day 3 to 3.5 points, re-sign and re-link every voucher with a new key, put it in keys.json and re-price; return the new key."""
    forged = Ed25519PrivateKey.generate()
    documents = [json.loads(line) for line in (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()]
    prev = None
    signed = []
    for document in documents:
        claims = v.parse_voucher(json.dumps(document).encode())[1]
        delta = claims.delta
        if claims.seq == 3:
            delta = v.Delta(**{**{f: getattr(delta, f) for f in delta.__struct_fields__}, "point": 3.5})
        claims = v.Claims(**{**{f: getattr(claims, f) for f in claims.__struct_fields__}, "prev": prev, "delta": delta})
        signed.append(v.build_voucher(claims, forged))
        prev = v.voucher_hash(signed[-1])
    (folder / "vouchers.jsonl").write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in signed), encoding="utf-8")
    multibase = public_key_multibase(forged.public_key())
    keys = json.loads((folder / "keys.json").read_text(encoding="utf-8"))
    keys[0].update(publicKeyMultibase=multibase, id=f"did:key:{multibase}")
    (folder / "keys.json").write_text(json.dumps(keys), encoding="utf-8")
    # 1.5 x 4 + 3.5 = 9.5 points x 2,000 CNY
    documents = documents_of(folder)
    documents[0]["lines"][0].update(quantity="9.5", amount="19000.00")
    documents[0]["total"] = "19000.00"
    write_documents(folder, documents)
    return multibase


def node(script: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(script), str(folder)], capture_output=True, text=True, timeout=60)


def test_dropped_voucher_fails_naming_it(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    drop_voucher(folder, "gw-1:3")
    report = verify_bundle(folder)
    assert all(v.ok for v in (*report.files, *report.vouchers, *report.documents))
    (subject, reasons), = failed(report.lines).items()
    assert subject.endswith("line 1 (line-oee)")
    assert reasons == ["voucher gw-1:3 (2024-05-08) lies in the line's period but is neither billed nor excluded"]
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "- voucher gw-1:3 (2024-05-08) lies in the line's period but is neither billed nor excluded" in result.stdout


def test_billed_excluded_voucher_fails(tmp_path):
    folder = signed_bundle(tmp_path, rebuild=True)["folder"]
    documents = documents_of(folder)
    line = documents[0]["lines"][0]
    line["excluded"] = []
    line["voucher_ids"] = sorted([*line["voucher_ids"], "gw-1:3"])
    line.update(days=5, quantity="7.5", amount="15000.00")
    documents[0]["total"] = "15000.00"
    write_documents(folder, documents)
    (reasons,) = failed(verify_bundle(folder).lines).values()
    assert reasons == ["bills voucher gw-1:3 (2024-05-08), which adjustment 7 recorded at 2024-05-20T00:00:00+00:00 excludes; no later note in the bundle corrects it"]


def test_removed_credit_note_fails(tmp_path):
    bundle = signed_bundle(tmp_path, credit=True)
    folder = bundle["folder"]
    may, june, note = bundle["documents"]
    # The adjustment came after May was invoiced: June's run credits 8 May, 1.5 points x 2,000 CNY.
    assert (note["kind"], note["corrects"], note["total"]) == ("credit_note", may["number"], "-3000.00")
    assert "gw-1:3" in may["lines"][0]["voucher_ids"]
    report = verify_bundle(folder)
    assert report.ok, report.as_dict()

    write_documents(folder, [may, june])
    report = verify_bundle(folder)
    assert all(v.ok for v in report.lines)
    assert failed(report.documents) == {f"{may['number']} (invoice)": [
        f"line line-oee: the vouchers and adjustments recorded before {june['number']} was issued (2024-07-01T08:00:00+00:00) re-price "
        f"the period to 12000.00, but {may['number']} and its notes in the bundle bill 15000.00; a credit or debit note is missing"
    ]}
    assert run_cli(str(folder)).exit_code == 1


def test_late_voucher_billed_by_note(tmp_path):
    bundle = signed_bundle(tmp_path, late=True, credit=True)
    may, june, credit, july, debit = bundle["documents"]
    assert [d["kind"] for d in bundle["documents"]] == ["invoice", "invoice", "credit_note", "invoice", "debit_note"]
    assert "gw-1:6" not in may["lines"][0]["voucher_ids"]
    assert "gw-1:6" in debit["lines"][0]["voucher_ids"]
    # 31 May adds 2.25 points x 2,000 CNY.
    assert debit["total"] == "4500.00"
    assert verify_bundle(bundle["zip"]).ok

    # Without July's debit note the late voucher, stored after every run, is only waiting for the next one.
    folder = bundle["folder"]
    write_documents(folder, [may, june, credit])
    report = verify_bundle(folder)
    assert report.ok, report.as_dict()
    (may_verdict,) = [d for d in report.documents if d.subject.startswith(may["number"])]
    assert may_verdict.notes == [f"priced with the terms in force (contract.json, terms digest {may['contract_digest']})",
                                 f"line line-oee: everything in the bundle re-prices the period to 16500.00 with the terms of {may['number']}, 12000.00 is "
                                 "billed; what was recorded after the last document is settled by the next invoice run"]

    # With July's invoice kept, July's run should have billed it: the debit note is missing.
    write_documents(folder, [may, june, credit, july])
    (reasons,) = failed(verify_bundle(folder).documents).values()
    assert reasons[0].startswith(f"line line-oee: the vouchers and adjustments recorded before {july['number']} was issued ({ISSUED['july'].replace('Z', '+00:00')})")
    assert reasons[0].endswith("re-price the period to 16500.00, but " + may["number"] + " and its notes in the bundle bill 12000.00; a credit or debit note is missing")


@pytest.mark.parametrize(("name", "old", "new", "reason"), [
    ("quantity", '"quantity": "7.5"', '"quantity": "8"', "quantity 8 differs from 7.5 recomputed from its vouchers"),
    ("mode", '"mode": "point"', '"mode": "lower_bound"', "mode lower_bound differs from point recomputed from its vouchers"),
    ("days", '"days": 5', '"days": 4', "days 4 differs from 5 recomputed from its vouchers"),
    ("unit_price", '"unit_price": "2000"', '"unit_price": "2500"', "unit_price 2500 differs from 2000 recomputed from its vouchers"),
    ("price_kind", '"price_kind": "oee_point_day"', '"price_kind": "target_met"', "price_kind target_met differs from oee_point_day recomputed from its vouchers"),
])
def test_printed_field_must_match(tmp_path, name, old, new, reason):
    folder = signed_bundle(tmp_path)["folder"]
    rewrite(folder, "invoices.json", old, new)
    rewrite_manifest(folder)
    (reasons,) = failed(verify_bundle(folder).lines).values()
    assert reasons == [reason], name
    assert run_cli(str(folder)).exit_code == 1


def test_resigned_bundle_passes_but_prints_the_forged_key(tmp_path):
    bundle = signed_bundle(tmp_path)
    folder = bundle["folder"]
    registered = public_key_multibase(bundle["key"].public_key())
    honest = run_cli(str(folder))
    assert f"gateway gw-1 first key: did:key:{registered} (key id did:key:{registered}#{registered}, valid 2024-01-01T00:00:00Z..open)" in honest.stdout
    assert "compare it with the key recorded at commissioning (`valuegate keys export-public` on the gateway" in honest.stdout

    forged = forge_with_fresh_key(folder)
    report = verify_bundle(folder)
    # Every signature and the re-pricing pass, so only the printed key shows the forgery.
    assert report.ok, report.as_dict()
    assert report.gateways == [{"gateway": "gw-1", "keys": [{
        "id": f"did:key:{forged}", "key_id": f"did:key:{forged}#{forged}", "publicKeyMultibase": forged, "validFrom": "2024-01-01T00:00:00Z",
        "validTo": None, "fromSeq": None, "untilSeq": None, "introduced_by": None, "compare_out_of_band": True, "firstSeq": 1, "lastSeq": None}]}]
    result = run_cli(str(folder))
    assert result.exit_code == 0
    assert f"gateway gw-1 first key: did:key:{forged} " in result.stdout
    assert registered not in result.stdout
    assert json.loads(run_cli("--json", str(folder)).stdout)["gateways"][0]["keys"][0]["id"] == f"did:key:{forged}"


def test_rotation_statement_is_verified(tmp_path):
    bundle = signed_bundle(tmp_path, rotate_at=4)
    first, following = (key.public_key_multibase for key in bundle["keys"])
    report = verify_bundle(bundle["zip"])
    assert report.ok, report.as_dict()
    assert [(k["id"], k["compare_out_of_band"]) for k in report.gateways[0]["keys"]] == [(f"did:key:{first}", True), (f"did:key:{following}", False)]
    result = run_cli(str(bundle["zip"]))
    assert f"gateway gw-1 next key: did:key:{following} (from sequence 4; the rotation statement signed by the key before it verified)" in result.stdout

    # A rotation statement the previous key did not sign.
    folder = bundle["folder"]
    keys = json.loads((folder / "keys.json").read_text(encoding="utf-8"))
    proof = keys[1]["rotation"]["proof"]
    proof["proofValue"] = proof["proofValue"][:-4] + ("1111" if not proof["proofValue"].endswith("1111") else "2222")
    (folder / "keys.json").write_text(json.dumps(keys), encoding="utf-8")
    bad = failed(verify_bundle(folder).keys)
    assert list(bad) == [f"gw-1 key did:key:{following}"]
    assert bad[f"gw-1 key did:key:{following}"][0].startswith("rotation statement: ")


def test_voucher_signed_by_retired_key_fails(tmp_path):
    bundle = signed_bundle(tmp_path, rotate_at=4)
    folder = bundle["folder"]
    first, following = (key.public_key_multibase for key in bundle["keys"])
    # The first key may not sign sequence 5 once the rotation moved to the next key at 4.
    keys = json.loads((folder / "keys.json").read_text(encoding="utf-8"))
    keys[0]["untilSeq"] = None
    (folder / "keys.json").write_text(json.dumps(keys), encoding="utf-8")
    lines = (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()
    claims = v.parse_voucher(lines[4].encode())[1]
    lines[4] = json.dumps(v.build_voucher(claims, bundle["key"]), separators=(",", ":"))
    (folder / "vouchers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rewrite_manifest(folder)
    assert failed(verify_bundle(folder).vouchers) == {"gw-1:5": [f"signed by {first}, but the rotation statements give key {following} for sequence 5"]}


@pytest.mark.peer
def test_node_verifier_catches_the_same_tampering(tmp_path, node_peers):
    """The Node.js verifier re-prices lines, checks completeness, notes and printed fields, and prints the first key."""
    script = node_peers / "verify_bundle.js"
    honest = signed_bundle(tmp_path / "honest", late=True, credit=True)
    good = node(script, honest["folder"])
    assert good.returncode == 0, good.stdout + good.stderr
    registered = public_key_multibase(honest["key"].public_key())
    assert f"key gw-1 first did:key:{registered} valid 2024-01-01T00:00:00Z..open" in good.stdout.splitlines()
    assert good.stdout.splitlines()[-1] == "checked 6 vouchers and 5 documents, 0 failed"

    cases = {
        "drop": (lambda f: drop_voucher(f, "gw-1:3"), "voucher gw-1:3 (2024-05-08) lies in the line's period but is neither billed nor excluded"),
        "quantity": (lambda f: (rewrite(f, "invoices.json", '"quantity": "7.5"', '"quantity": "8"'), rewrite_manifest(f)), "quantity 8 differs from 7.5"),
        "mode": (lambda f: (rewrite(f, "invoices.json", '"mode": "point"', '"mode": "lower_bound"'), rewrite_manifest(f)), "mode lower_bound differs from point"),
    }
    for name, (tamper, reason) in cases.items():
        folder = signed_bundle(tmp_path / name)["folder"]
        tamper(folder)
        result = node(script, folder)
        assert result.returncode == 1, (name, result.stdout)
        assert reason in result.stdout, (name, result.stdout)

    folder = signed_bundle(tmp_path / "credit", credit=True)["folder"]
    may, june, _ = documents_of(folder)
    write_documents(folder, [may, june])
    result = node(script, folder)
    assert result.returncode == 1
    assert f"FAIL {may['number']}: line line-oee: re-prices to 12000.00 at {june['number']}, but 15000.00 is billed; a credit or debit note is missing" in result.stdout

    folder = signed_bundle(tmp_path / "forged")["folder"]
    forged = forge_with_fresh_key(folder)
    result = node(script, folder)
    assert result.returncode == 0, result.stdout
    assert f"key gw-1 first did:key:{forged} valid 2024-01-01T00:00:00Z..open" in result.stdout.splitlines()

    folder = signed_bundle(tmp_path / "rotated", rotate_at=4)["folder"]
    result = node(script, folder)
    assert result.returncode == 0, result.stdout
    assert any(line.startswith("key gw-1 next did:key:") and line.endswith("from sequence 4: rotation statement verified") for line in result.stdout.splitlines())


def test_zip_with_repeated_member_is_unreadable(tmp_path):
    """A second member under the same name would let a reader check one copy while another program shows the other."""
    path = signed_bundle(tmp_path)["zip"]
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("invoices.json", "[]")
    result = run_cli(str(path))
    assert result.exit_code == 2
    assert "the ZIP file has more than one member that unpacks to invoices.json (members invoices.json, invoices.json)" in result.output


def test_deeply_nested_json_is_unreadable(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    (folder / "adjustments.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = run_cli(str(folder))
    assert result.exit_code == 2
    assert "adjustments.json nests JSON too deeply to read" in result.output
