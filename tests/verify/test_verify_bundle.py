"""`valuegate verify`: bundles of real signed vouchers pass, and every kind of tampering fails."""

from __future__ import annotations

import hashlib
import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.verify.bundles import signed_bundle
from valuegate.edge.protocol.canonical import content_digest
from valuegate.edge.protocol.contract import contract_digest
from valuegate.verify import verify_bundle


def run_cli(*args: str):
    """Run `verify` as the root command line registers it, on an app of its own so that other layers cannot break it."""
    import typer
    from typer.testing import CliRunner

    from valuegate import verify_cli

    app = typer.Typer()
    app.callback()(lambda: None)
    verify_cli.register(app)
    return CliRunner().invoke(app, ["verify", *args])


def rewrite(folder: Path, name: str, old: str, new: str, count: int = 1) -> None:
    path = folder / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= count, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def failed(verdicts) -> dict[str, list[str]]:
    return {v.subject: v.reasons for v in verdicts if not v.ok}


def keys_of(folder: Path) -> str:
    return json.loads((folder / "keys.json").read_text())[0]["publicKeyMultibase"]


def rewrite_manifest(folder: Path) -> None:
    """Record the files' new SHA-256 in the manifest, as anyone who changes a bundle can."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for name in manifest["files"]:
        manifest["files"][name] = "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def forge_price(folder: Path) -> None:
    """Raise the price in contract.json from 2,000 to 2,500 and re-price the invoice to match: 7.5 points x 2,500."""
    rewrite(folder, "contract.json", '"amount": "2000"', '"amount": "2500"')
    rewrite(folder, "invoices.json", '"amount": "15000.00"', '"amount": "18750.00"')
    rewrite(folder, "invoices.json", '"unit_price": "2000"', '"unit_price": "2500"')
    rewrite(folder, "invoices.json", '"total": "15000.00"', '"total": "18750.00"')
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["contract_digest"] = content_digest(json.loads((folder / "contract.json").read_text(encoding="utf-8")))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    rewrite_manifest(folder)


def test_valid_bundle_passes(tmp_path):
    bundle = signed_bundle(tmp_path)
    for path in (bundle["zip"], bundle["folder"]):
        report = verify_bundle(path)
        assert report.ok, report.as_dict()
        assert [v.subject for v in report.vouchers] == [f"gw-1:{n}" for n in range(1, 6)]
    # 5 days x 1.5 points x 2,000 CNY
    assert bundle["documents"][0]["total"] == "15000.00"
    assert report.lines[0].notes == ["oee_point_day 7.5 x 2000 (point) = 15000.00 CNY"]


def test_cli_prints_verdicts_and_exit_status(tmp_path):
    bundle = signed_bundle(tmp_path)
    result = run_cli(str(bundle["zip"]))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "PASS  gw-1:3" in result.stdout
    assert "PASS  INV-20240501-" in result.stdout
    assert result.stdout.strip().endswith("PASS: 5 vouchers, 1 document with 1 invoice line")
    as_json = run_cli("--json", str(bundle["zip"]))
    assert as_json.exit_code == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert [v["subject"] for v in report["vouchers"]] == [f"gw-1:{n}" for n in range(1, 6)]


def test_one_changed_byte_fails(tmp_path):
    bundle = signed_bundle(tmp_path)
    folder = bundle["folder"]
    # Voucher 3 claims 1.6 points instead of 1.5.
    lines = (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()
    assert '"point":1.5' in lines[2]
    lines[2] = lines[2].replace('"point":1.5', '"point":1.6')
    (folder / "vouchers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = verify_bundle(folder)
    bad = failed(report.vouchers)
    assert sorted(bad) == ["gw-1:3", "gw-1:4"]
    assert bad["gw-1:3"] == ["proof: signature invalid"]
    assert bad["gw-1:4"] == ["chain: prev " + json.loads(lines[3])["credentialSubject"]["prev"] + " is not the hash of gw-1:3"]
    assert "vouchers.jsonl" in failed(report.files)
    assert any("gw-1:3 failed verification" in r for r in failed(report.lines)[next(iter(failed(report.lines)))])
    # The document's note blames the failed vouchers for the gap, not data recorded after it.
    assert report.documents[0].notes[-1] == "line line-oee: 15000.00 is billed, but without the vouchers that failed verification (gw-1:3, gw-1:4) the bundle re-prices the period to 9000.00"

    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "FAIL  gw-1:3" in result.stdout


def test_gap_in_chain_fails(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    lines = (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()
    (folder / "vouchers.jsonl").write_text("\n".join(lines[:2] + lines[3:]) + "\n", encoding="utf-8")
    report = verify_bundle(folder)
    bad = failed(report.vouchers)
    assert bad == {"gw-1:4": ["chain: gap in gw-1 between sequence 2 and 4"]}
    assert any("voucher gw-1:3 is not in the bundle" in reasons for reasons in failed(report.lines).values())


def test_unknown_signing_key_fails(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    keys = json.loads((folder / "keys.json").read_text())
    (tmp_path / "other").mkdir()
    other = signed_bundle(tmp_path / "other")["folder"]
    keys[0]["publicKeyMultibase"] = json.loads((other / "keys.json").read_text())[0]["publicKeyMultibase"]
    (folder / "keys.json").write_text(json.dumps(keys))
    bad = failed(verify_bundle(folder).vouchers)
    assert sorted(bad) == [f"gw-1:{n}" for n in range(1, 6)]
    assert "is not among the bundle's keys of gateway gw-1" in bad["gw-1:1"][0]


def test_key_outside_validity_fails(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    rewrite(folder, "keys.json", '"validTo": null', '"validTo": "2024-05-09T00:00:00Z"')
    bad = failed(verify_bundle(folder).vouchers)
    # Voucher n is issued at 2024-05-(6+n)T00:00Z and validTo is exclusive, so 3, 4 and 5 fall outside.
    assert sorted(bad) == ["gw-1:3", "gw-1:4", "gw-1:5"]
    assert bad["gw-1:3"] == [f"signing key {keys_of(folder)} of gateway gw-1 was not valid at 2024-05-09T00:00:00Z"]


def test_tampered_invoice_line_fails(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    rewrite(folder, "invoices.json", '"amount": "15000.00"', '"amount": "15000.01"')
    report = verify_bundle(folder)
    assert report.vouchers and all(v.ok for v in report.vouchers)
    (line_reasons,) = failed(report.lines).values()
    assert line_reasons == ["amount 15000.01 differs from 15000.00 re-priced from its vouchers"]
    (total_reasons,) = failed(report.documents).values()
    assert total_reasons == ["total 15000.00 differs from the sum of its lines 15000.01"]


def test_debit_note_for_late_voucher_verifies(tmp_path):
    bundle = signed_bundle(tmp_path, late=True)
    invoice, july, note = bundle["documents"]
    assert (july["kind"], july["total"], july["lines"]) == ("invoice", "0.00", [])
    assert note["kind"] == "debit_note"
    assert note["corrects"] == invoice["number"]
    # 31 May adds 2.25 points x 2,000 CNY.
    assert Decimal(note["total"]) == Decimal("4500.00")
    report = verify_bundle(bundle["zip"])
    assert report.ok, report.as_dict()

    rewrite(bundle["folder"], "invoices.json", '"previously_billed": "15000.00"', '"previously_billed": "14000.00"')
    bad = failed(verify_bundle(bundle["folder"]).lines)
    assert any("is not recomputed 19500.00 minus previously billed 14000.00" in r for reasons in bad.values() for r in reasons)


def test_exclusion_needs_its_adjustment(tmp_path):
    bundle = signed_bundle(tmp_path, rebuild=True)
    line = bundle["documents"][0]["lines"][0]
    # 4 counted days x 1.5 points x 2,000 CNY; 8 May is out.
    assert line["amount"] == "12000.00"
    assert line["excluded"] == [{"voucher_id": "gw-1:3", "reason": "nonroutine_adjustment:7"}]
    report = verify_bundle(bundle["zip"])
    assert report.ok, report.as_dict()
    assert "gw-1:3 excluded by adjustment 7: 一号线改造 line rebuild" in report.lines[0].notes

    (bundle["folder"] / "adjustments.json").write_text("[]")
    bad = failed(verify_bundle(bundle["folder"]).lines)
    assert any("excluded by nonroutine_adjustment:7, which is not in adjustments.json" in r for reasons in bad.values() for r in reasons)


def test_voucher_of_other_contract_fails_line(tmp_path):
    bundle = signed_bundle(tmp_path)
    folder = bundle["folder"]
    rewrite(folder, "contract.json", '"id": "C-1"', '"id": "C-2"')
    # The invoice must record the changed terms, or its lines are not re-priced at all.
    changed = content_digest(json.loads((folder / "contract.json").read_text(encoding="utf-8")))
    rewrite(folder, "invoices.json", f'"contract_digest": "{contract_digest(bundle["contract"])}"', f'"contract_digest": "{changed}"')
    bad = failed(verify_bundle(folder).lines)
    (reasons,) = [r for s, r in bad.items() if "line 1" in s]
    assert "voucher gw-1:1 is for contract 'C-1', not 'C-2'" in reasons


def test_contract_digest_printed_and_recorded(tmp_path):
    bundle = signed_bundle(tmp_path)
    expected = contract_digest(bundle["contract"])
    report = verify_bundle(bundle["zip"])
    assert report.contract_digest == expected
    assert bundle["documents"][0]["contract_digest"] == expected
    manifest = json.loads((bundle["folder"] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["contract_digest"] == expected
    result = run_cli(str(bundle["zip"]))
    assert f"contract C-1 terms digest: {expected}" in result.stdout
    assert "compare it with the digest printed on the signed contract or invoice" in result.stdout
    assert run_cli("--json", str(bundle["zip"])).stdout.count(expected) >= 1
    assert json.loads(run_cli("--json", str(bundle["zip"])).stdout)["contract"] == {"id": "C-1", "digest": expected, "revision": None}


def test_forged_price_fails_on_recorded_digest(tmp_path):
    bundle = signed_bundle(tmp_path)
    folder = bundle["folder"]
    signed_digest = contract_digest(bundle["contract"])
    forge_price(folder)

    report = verify_bundle(folder)
    assert report.vouchers and all(v.ok for v in report.vouchers)
    assert all(v.ok for v in report.files)
    # The invoice still records the digest of the terms it was really priced with, which the bundle no longer
    # carries: its line is not re-priced with the forged contract.json instead.
    assert failed(report.lines) == {report.lines[0].subject: [f"cannot re-price: the bundle does not carry the contract terms {signed_digest} its document was priced with"]}
    (reasons,) = failed(report.documents).values()
    assert reasons == [
        f"priced with contract terms {signed_digest}, but contract.json has {report.contract_digest} and no other revision in the bundle has them: "
        "contract.json was changed, or the bundle lacks the revision this document was priced with; compare contract.json with the signed "
        "contract, or ask the sender for a bundle that carries that revision"
    ]
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "FAIL (2 failed)" in result.stdout

    # A forger who also rewrites the recorded digest passes every in-bundle check; only the
    # comparison with the digest on the signed paper contract or invoice can catch it.
    rewrite(folder, "invoices.json", f'"contract_digest": "{signed_digest}"', f'"contract_digest": "{report.contract_digest}"')
    rewrite_manifest(folder)
    rewritten = verify_bundle(folder)
    assert rewritten.ok, rewritten.as_dict()
    assert rewritten.contract_digest != signed_digest
    assert rewritten.lines[0].notes == ["oee_point_day 7.5 x 2500 (point) = 18750.00 CNY"]


def test_manifest_contract_digest_must_match(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["contract_digest"] = "sha256:" + "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    report = verify_bundle(folder)
    assert failed(report.files) == {"contract.json": [f"digest {report.contract_digest} differs from the manifest's contract digest sha256:{'0' * 64}"]}


def test_document_without_digest_fails(tmp_path):
    folder = signed_bundle(tmp_path)["folder"]
    documents = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    del documents[0]["contract_digest"]
    (folder / "invoices.json").write_text(json.dumps(documents), encoding="utf-8")
    rewrite_manifest(folder)
    (reasons,) = failed(verify_bundle(folder).documents).values()
    assert reasons == ["the document records no contract digest, so nothing ties it to contract.json; compare the prices with the signed contract by hand"]


def test_counts_each_file_and_line_once(tmp_path):
    bundle = signed_bundle(tmp_path, late=True)
    report = verify_bundle(bundle["zip"])
    subjects = [v.subject for v in report.files]
    assert subjects.count("contract.json") == 1
    assert sorted(subjects) == sorted(["GUIDE.en.md", "GUIDE.zh-CN.md", "adjustments.json", "contract.json", "invoices.json", "keys.json", "stored.json", "vouchers.jsonl"])
    invoice, july, note = bundle["documents"]
    assert [v.subject for v in report.lines] == [f"{invoice['number']} line 1 (line-oee)", f"{note['number']} line 1 (line-oee)"]
    assert [v.subject for v in report.documents] == [f"{invoice['number']} (invoice)", f"{july['number']} (invoice)", f"{note['number']} (debit_note)"]
    result = run_cli(str(bundle["zip"]))
    assert result.stdout.count("  PASS  contract.json") == 1
    assert result.stdout.strip().endswith("PASS: 6 vouchers, 3 documents with 2 invoice lines")


def test_unreadable_bundle_exits_2(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    result = run_cli(str(tmp_path / "junk.zip"))
    assert result.exit_code == 2
    assert "cannot read the bundle" in result.stderr
    missing = run_cli(str(tmp_path / "nothing.zip"))
    assert missing.exit_code == 2
    assert "no such file or folder" in missing.stderr


@pytest.mark.peer
def test_node_verifier_agrees(tmp_path, node_peers):
    """A second implementation (Node.js crypto + npm canonicalize) re-derives every hash and signature."""
    bundle = signed_bundle(tmp_path)
    folder = bundle["folder"]
    script = node_peers / "verify_bundle.js"
    good = subprocess.run(["node", str(script), str(folder)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    out = good.stdout.splitlines()
    assert out[:5] == [f"PASS gw-1:{n}" for n in range(1, 6)]
    # The same contract digest from RFC 8785 and SHA-256 in another language.
    assert out[5] == f"contract C-1 {verify_bundle(folder).contract_digest}"
    assert out[6].startswith("PASS INV-20240501-")

    lines = (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"point":1.5', '"point":1.6')
    (folder / "vouchers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = subprocess.run(["node", str(script), str(folder)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    out = bad.stdout.splitlines()
    assert out[2] == "FAIL gw-1:3: proof: signature invalid"
    assert out[3] == "FAIL gw-1:4: chain: prev is not the hash of sequence 3"
    # The invoice line listing vouchers 3 and 4 fails with them.
    assert out[7] == out[6].split(":")[0].replace("PASS", "FAIL") + " line 1 (line-oee): voucher gw-1:3 failed verification; voucher gw-1:4 failed verification"
    # The edited file no longer matches the manifest's SHA-256, in both verifiers.
    changed = [line for line in out if line.startswith("FAIL vouchers.jsonl: SHA-256 ")]
    assert len(changed) == 1
    assert out[-1] == "checked 5 vouchers and 1 documents, 4 failed"
    report = verify_bundle(folder)
    assert report.ok is False
    assert [v.subject for v in report.files if not v.ok] == ["vouchers.jsonl"]

    forge_price(folder)
    forged = subprocess.run(["node", str(script), str(folder)], capture_output=True, text=True, timeout=60)
    assert forged.stdout.splitlines()[5] == f"contract C-1 {verify_bundle(folder).contract_digest}"
    assert forged.stdout.splitlines()[6].startswith("FAIL INV-20240501-")
    assert forged.stdout.splitlines()[6].endswith("which neither contract.json nor a revision file of the bundle carries")
    # The line is not re-priced with the forged contract.json instead of the terms its invoice recorded.
    assert forged.stdout.splitlines()[7].endswith(" line 1 (line-oee): cannot re-price: the contract terms "
                                                  f"{contract_digest(bundle['contract'])} of its document are not in the bundle")


@pytest.mark.peer
@pytest.mark.parametrize(
    ("old", "new", "node_reason"),
    [
        ('"last_date": "2024-04-14"', '"last_date": "2024-03-14"', "anchors[0].baseline ends (2024-03-14) before it starts (2024-04-01)"),
        ('"min_days": 10', '"min_days": 0', "anchors[0].baseline.min_days is 0, not a whole number of at least 1"),
        ('"per": "oee_point_day"', '"per": "avoided_minute"', "anchors[0].price.per avoided_minute bills unplanned_downtime_rate, but the anchor measures oee_points"),
        ('"end": "2024-12-31"', '"end": "2024-03-31"', "the contract ends (2024-03-31) before it starts (2024-04-01)"),
        ('"rounding": "0.01"', '"rounding": "0.05"', 'rounding "0.05" is not a positive power of ten such as 0.01'),
        ('"first_date": "2024-05-01"', '"first_date": "2024-04-10"', "anchors[0].reporting starts (2024-04-10) before the baseline ends (2024-04-14)"),
        ('"last_date": "2024-12-31"', '"last_date": "2025-01-31"', "anchors[0].reporting 2024-05-01 .. 2025-01-31 lies outside the contract term 2024-04-01 .. 2024-12-31"),
        ('"amount": "2000"', '"amount": "-5"', "anchors[0].price.amount -5 is not above zero"),
        ('"cap": null', '"cap": "-1"', "anchors[0].cap -1 is negative"),
        ('"cap": null|"floor": null', '"cap": "10"|"floor": "20.5"', "anchors[0].floor 20.5 lies above the cap 10"),
    ],
    ids=[
        "baseline-reversed", "min-days-zero", "price-for-other-metric", "term-reversed", "rounding-not-power-of-ten",
        "reporting-overlaps-baseline", "reporting-outside-term", "price-not-positive", "cap-negative", "floor-above-cap",
    ],
)
def test_both_verifiers_fail_invalid_terms(tmp_path, node_peers, old: str, new: str, node_reason: str) -> None:
    """contract.json with invalid terms fails in both verifiers, even with every digest rewritten to match it."""
    folder = signed_bundle(tmp_path)["folder"]
    # "|" separates edits that must all be made, such as a cap and a floor.
    for before, after in zip(old.split("|"), new.split("|"), strict=True):
        rewrite(folder, "contract.json", before, after)
    digest = content_digest(json.loads((folder / "contract.json").read_text(encoding="utf-8")))
    documents = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    for document in documents:
        document["contract_digest"] = digest
    (folder / "invoices.json").write_text(json.dumps(documents, indent=2), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["contract_digest"] = digest
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    rewrite_manifest(folder)

    report = verify_bundle(folder)
    assert "contract.json" in failed(report.files), report.as_dict()
    result = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL contract.json: ")]
    assert any(node_reason in line.split(": ", 1)[1].split("; ") for line in failures), failures
