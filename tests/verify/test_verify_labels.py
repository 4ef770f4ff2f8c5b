"""`valuegate verify` on contract revision labels: a document's revision number against its digest, and the manifest's labels against the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.verify.bundles import revised_bundle
from tests.verify.test_verify_bundle import failed, rewrite_manifest, run_cli
from tests.verify.test_verify_revisions import REVISION_1, REVISION_2, failures, node_failures, node_verify
from valuegate.verify import verify_bundle

ASK = "Ask the vendor which contract revision priced the document."


def record_revision(folder: Path, value: object) -> None:
    """Write ``value`` as the contract_revision of May's invoice (the first document), SHA-256 in the manifest updated."""
    documents = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    documents[0]["contract_revision"] = value
    (folder / "invoices.json").write_text(json.dumps(documents), encoding="utf-8")
    rewrite_manifest(folder)


def swap_labels(folder: Path) -> None:
    """Give revision 1's file the label 2 and revision 2's file the label 1 in the manifest; the files stay as built."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    first, second = manifest["revisions"]
    first["revision"], second["revision"] = second["revision"], first["revision"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_unknown_revision_number_fails(tmp_path):
    bundle = revised_bundle(tmp_path)
    folder, may, digests = bundle["folder"], bundle["may"], bundle["digests"]
    record_revision(folder, 99)

    report = verify_bundle(folder)
    assert failed(report.documents) == {f"{may['number']} (invoice)": [
        f"records contract revision 99, but its terms digest {digests[1]} is that of {REVISION_1}, which the manifest labels contract revision 1. "
        f"The bundle carries no contract revision 99. {ASK}"]}
    # The digest still ties the lines to revision 1: 6 points x 2,000 CNY.
    assert failed(report.lines) == {}
    assert report.lines[0].notes[0] == "oee_point_day 6.0 x 2000 (point) = 12000.00 CNY"
    (may_verdict,) = [v for v in report.documents if v.subject.startswith(may["number"])]
    assert may_verdict.notes[0] == f"lines re-priced with {REVISION_1}, the file with the terms digest {digests[1]} the document records"
    assert failed(report.files) == {}
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "FAIL (1 failed)" in result.stdout


@pytest.mark.parametrize(("value", "shown"), [("1", '"1"'), (1.5, "1.5"), (True, "true"), ([1], "[1]")])
def test_non_integer_revision_fails_naming_it(tmp_path, value, shown):
    bundle = revised_bundle(tmp_path)
    folder, may, digests = bundle["folder"], bundle["may"], bundle["digests"]
    record_revision(folder, value)

    report = verify_bundle(folder)
    assert failed(report.documents) == {f"{may['number']} (invoice)": [
        f"records contract_revision {shown}, which is not a whole number, so it names no contract revision. "
        f"Its terms digest {digests[1]} is that of {REVISION_1}, which the manifest labels contract revision 1. {ASK}"]}
    assert failed(report.lines) == {}
    assert run_cli(str(folder)).exit_code == 1


def test_non_integer_revision_unknown_digest(tmp_path):
    bundle = revised_bundle(tmp_path)
    folder, may, digests = bundle["folder"], bundle["may"], bundle["digests"]
    documents = json.loads((folder / "invoices.json").read_text(encoding="utf-8"))
    documents[0].update(contract_revision="1", contract_digest="sha256:" + "0" * 64)
    (folder / "invoices.json").write_text(json.dumps(documents), encoding="utf-8")
    rewrite_manifest(folder)

    reasons = failed(verify_bundle(folder).documents)[f"{may['number']} (invoice)"]
    assert reasons[0] == f'records contract_revision "1", which is not a whole number, so it names no contract revision. No file has its terms digest. {ASK}'
    assert reasons[1].startswith(f"priced with contract terms sha256:{'0' * 64}, but contract.json has {digests[3]} and no other revision in the bundle has them")
    assert len(reasons) == 2


def test_swapped_labels_name_the_mismatch(tmp_path):
    bundle = revised_bundle(tmp_path)
    folder, digests = bundle["folder"], bundle["digests"]
    may, debit, june = bundle["may"], bundle["debit"], bundle["june"]
    swap_labels(folder)

    report = verify_bundle(folder)
    assert failed(report.files) == {
        REVISION_1: ["the manifest labels it contract revision 2, but its file name gives revision 1: the manifest's revision labels do not match "
                     "the files; ask the sender for the original bundle"],
        REVISION_2: ["the manifest labels it contract revision 1, but its file name gives revision 2: the manifest's revision labels do not match "
                     "the files; ask the sender for the original bundle"],
    }
    may_reason = (f"records contract revision 1, but its terms digest {digests[1]} is that of {REVISION_1}, which the manifest labels contract "
                  f"revision 2. The manifest's contract revision 1 is {REVISION_2}, with terms digest {digests[2]}. {ASK}")
    run_reason = (f"records contract revision 2, but its terms digest {digests[2]} is that of {REVISION_2}, which the manifest labels contract "
                  f"revision 1. The manifest's contract revision 2 is {REVISION_1}, with terms digest {digests[1]}. {ASK}")
    assert failed(report.documents) == {
        f"{may['number']} (invoice)": [may_reason],
        f"{june['number']} (invoice)": [run_reason],
        f"{debit['number']} (debit_note)": [may_reason],
    }
    every = [reason for verdict in report.verdicts for reason in verdict.reasons]
    assert not any("was changed" in reason for reason in every), every
    # Revision 1's file still prices May and its note, the documents whose digest it has: 6 and 7.5 points x 2,000.
    assert failed(report.lines) == {}
    assert [v.notes[0] for v in report.lines] == ["oee_point_day 6.0 x 2000 (point) = 12000.00 CNY", "oee_point_day 7.5 x 2000 (point) = 15000.00 CNY"]


def test_revision_file_of_other_contract(tmp_path):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    moved = "contracts/C-2/revision-1.json"
    (folder / "contracts" / "C-2").mkdir()
    (folder / REVISION_1).rename(folder / moved)
    manifest["revisions"][0]["file"] = moved
    manifest["files"][moved] = manifest["files"].pop(REVISION_1)
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    assert failed(verify_bundle(folder).files) == {
        moved: [f"the manifest labels it contract revision 1, but that revision's file is named {REVISION_1}; ask the sender for the original bundle"]}


@pytest.mark.peer
def test_node_verifier_agrees_on_labels(tmp_path, node_peers):
    bundle = revised_bundle(tmp_path / "number")
    folder, may, digests = bundle["folder"], bundle["may"], bundle["digests"]
    for value, reason in [
        (99, f"records revision 99, but its terms digest {digests[1]} is that of {REVISION_1} (revision 1 in the manifest)"),
        ("1", 'contract_revision "1" is not a whole number'),
        (1.5, "contract_revision 1.5 is not a whole number"),
    ]:
        record_revision(folder, value)
        result = node_verify(node_peers, folder)
        assert result.returncode == 1, (value, result.stdout + result.stderr)
        assert node_failures(result.stdout) == {may["number"]: reason}
        assert failures(verify_bundle(folder)) == {may["number"]}

    bundle = revised_bundle(tmp_path / "swapped")
    folder = bundle["folder"]
    swap_labels(folder)
    result = node_verify(node_peers, folder)
    assert result.returncode == 1
    reasons = node_failures(result.stdout)
    assert set(reasons) == failures(verify_bundle(folder)) == {REVISION_1, REVISION_2, bundle["may"]["number"], bundle["june"]["number"], bundle["debit"]["number"]}
    assert reasons[REVISION_1] == f"the manifest labels it revision 2, but that revision's file is {REVISION_2}"
    assert reasons[bundle["may"]["number"]] == f"records revision 1, but its terms digest {digests[1]} is that of {REVISION_1} (revision 2 in the manifest)"
    assert result.stdout.splitlines()[-1] == "checked 5 vouchers and 3 documents, 5 failed"
