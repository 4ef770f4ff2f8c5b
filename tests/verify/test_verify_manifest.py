"""Both verifiers on malformed manifests, JSON errors, revision numbers written as 2.0, and the manifest's voucher count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.verify.bundles import revised_bundle
from tests.verify.test_verify_bundle import failed, rewrite, rewrite_manifest, run_cli
from tests.verify.test_verify_revisions import REVISION_1, failures, node_failures, node_verify
from valuegate.verify import verify_bundle


def edit_manifest(folder: Path, field: str, value: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest[field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def unreadable_in_both(node_peers: Path, folder: Path) -> tuple[str, str]:
    """Run both verifiers, check that each exits 2 with one error line, and return their error lines."""
    python = run_cli(str(folder))
    assert python.exit_code == 2, python.output
    node = node_verify(node_peers, folder)
    assert node.returncode == 2, node.stdout + node.stderr
    assert node.stdout == ""
    assert len(node.stderr.strip().splitlines()) == 1
    return python.stderr.strip(), node.stderr.strip()


@pytest.mark.parametrize("value", [{}, "", 0, False, {"1": REVISION_1}])
def test_revisions_not_list_unreadable(tmp_path, value):
    folder = revised_bundle(tmp_path)["folder"]
    edit_manifest(folder, "revisions", value)
    result = run_cli(str(folder))
    assert result.exit_code == 2
    assert f"manifest.json has an invalid revisions list ({value!r})" in result.stderr


@pytest.mark.peer
@pytest.mark.parametrize("value", [{}, "", 0, False])
def test_node_revisions_not_list(tmp_path, node_peers, value):
    folder = revised_bundle(tmp_path)["folder"]
    edit_manifest(folder, "revisions", value)
    python, node = unreadable_in_both(node_peers, folder)
    assert "manifest.json has an invalid revisions list" in python
    assert node == f"error: manifest.json has an invalid revisions list ({json.dumps(value)})"


@pytest.mark.peer
@pytest.mark.parametrize("schema", ["valuegate/bundle/v9", None])
def test_unknown_schema_is_unreadable(tmp_path, node_peers, schema):
    folder = revised_bundle(tmp_path)["folder"]
    edit_manifest(folder, "schema", schema)
    python, node = unreadable_in_both(node_peers, folder)
    assert f"unknown bundle schema {schema!r}; this verifier reads 'valuegate/bundle/v1'" in python
    assert node == f"error: unknown bundle schema {json.dumps(schema)} in manifest.json; this verifier reads valuegate/bundle/v1"


@pytest.mark.peer
@pytest.mark.parametrize(("name", "text", "shown"), [
    ("manifest.json", "{not json", "manifest.json is not valid JSON: "),
    ("manifest.json", "\ufeff{}", "manifest.json is not valid JSON: "),
    ("invoices.json", "[{", "invoices.json is not valid JSON: "),
    ("keys.json", "", "keys.json is not valid JSON: "),
    (REVISION_1, "{", f"{REVISION_1} is not valid JSON: "),
])
def test_json_errors_name_the_file(tmp_path, node_peers, name, text, shown):
    folder = revised_bundle(tmp_path)["folder"]
    (folder / name).write_text(text, encoding="utf-8")
    python, node = unreadable_in_both(node_peers, folder)
    assert f"{name} is not valid UTF-8 JSON" in python
    assert node.startswith(f"error: {shown}")


@pytest.mark.peer
def test_json_errors_name_the_voucher_line(tmp_path, node_peers):
    folder = revised_bundle(tmp_path)["folder"]
    lines = (folder / "vouchers.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]
    (folder / "vouchers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    python, node = unreadable_in_both(node_peers, folder)
    assert "vouchers.jsonl line 3 is not valid UTF-8 JSON" in python
    assert node.startswith("error: vouchers.jsonl line 3 is not valid JSON: ")


@pytest.mark.peer
def test_manifest_not_utf8_is_unreadable(tmp_path, node_peers):
    folder = revised_bundle(tmp_path)["folder"]
    (folder / "manifest.json").write_bytes(b'{"schema": "valuegate/bundle/v1\xff"}')
    python, node = unreadable_in_both(node_peers, folder)
    assert "manifest.json is not valid UTF-8 JSON" in python
    assert node == "error: manifest.json is not valid UTF-8"


@pytest.mark.peer
@pytest.mark.parametrize("written", ["1.0", "1e0", "1E+0"])
def test_document_revision_fraction_fails(tmp_path, node_peers, written):
    """Python's json reads 1.0 as a float, which names no revision; the Node verifier reads the raw text to agree."""
    bundle = revised_bundle(tmp_path)
    folder, may = bundle["folder"], bundle["may"]
    rewrite(folder, "invoices.json", '"contract_revision": 1,', f'"contract_revision": {written},')
    rewrite_manifest(folder)

    report = verify_bundle(folder)
    reasons = failed(report.documents)[f"{may['number']} (invoice)"]
    assert reasons[0].startswith(f"records contract_revision {float(written)}, which is not a whole number")
    node = node_verify(node_peers, folder)
    assert node.returncode == 1
    assert node_failures(node.stdout) == {may["number"]: f"contract_revision {written} is not a whole number"}
    assert failures(report) == {may["number"]}


@pytest.mark.peer
def test_repeated_key_keeps_last_value(tmp_path, node_peers):
    """Both JSON readers keep the last of repeated keys, so a whole number after 1.0 names revision 1."""
    folder = revised_bundle(tmp_path)["folder"]
    rewrite(folder, "invoices.json", '"contract_revision": 1,', '"contract_revision": 1.0, "contract_revision": 1,')
    rewrite_manifest(folder)
    assert verify_bundle(folder).ok
    node = node_verify(node_peers, folder)
    assert node.returncode == 0, node.stdout


@pytest.mark.peer
@pytest.mark.parametrize(("old", "new", "message"), [
    ('"contract_revision": 3,', '"contract_revision": 3.0,', "manifest.json has an invalid contract_revision 3.0"),
    ('"revision": 1\n', '"revision": 1.0\n', "manifest.json has an invalid revisions list"),
    ('"vouchers": 5\n', '"vouchers": 5.0\n', "manifest.json has an invalid vouchers count 5.0"),
    ('"vouchers": 5\n', '"vouchers": "5"\n', "manifest.json has an invalid vouchers count"),
], ids=["contract_revision", "revision", "vouchers", "vouchers-text"])
def test_manifest_fraction_unreadable(tmp_path, node_peers, old, new, message):
    folder = revised_bundle(tmp_path)["folder"]
    rewrite(folder, "manifest.json", old, new)
    python, node = unreadable_in_both(node_peers, folder)
    assert message in python
    assert node.startswith(f"error: {message}")


@pytest.mark.peer
def test_voucher_count_differs_from_manifest(tmp_path, node_peers):
    folder = revised_bundle(tmp_path)["folder"]
    edit_manifest(folder, "vouchers", 4)

    report = verify_bundle(folder)
    assert failed(report.files) == {"vouchers.jsonl": [
        "contains 5 vouchers, but the manifest gives 4: vouchers were added or removed after the bundle was built; "
        "ask the sender for a bundle as the cloud built it"]}
    assert run_cli(str(folder)).exit_code == 1
    node = node_verify(node_peers, folder)
    assert node.returncode == 1
    assert node_failures(node.stdout) == {"vouchers.jsonl": "contains 5 vouchers, but the manifest gives 4"}

    # A bundle built before the manifest carried the count is not held to one.
    edit_manifest(folder, "vouchers", None)
    assert verify_bundle(folder).ok
    assert node_verify(node_peers, folder).returncode == 0


@pytest.mark.peer
@pytest.mark.parametrize("name", ["../contract.json", "/tmp/revision-1.json", "contracts\\..\\..\\revision-1.json", "C:/revision-1.json"])
def test_revision_file_outside_unreadable(tmp_path, node_peers, name):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["revisions"][0]["file"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    python, node = unreadable_in_both(node_peers, folder)
    assert f"manifest.json lists revision file {name!r}, a name that is absolute or climbs with '..', outside the bundle" in python
    assert node == f"error: manifest.json lists revision file {json.dumps(name)} outside the bundle"
