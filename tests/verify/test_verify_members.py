"""`valuegate verify` on bundle members the manifest does not list, names that leave the bundle, and malformed manifests."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import pytest

from tests.verify.bundles import revised_bundle
from tests.verify.test_verify_bundle import failed, run_cli
from tests.verify.test_verify_revisions import REVISION_1, failures, node_failures, node_verify
from valuegate.cloud.bundle import BundleError
from valuegate.verify import UNLISTED, verify_bundle

REVISION_7 = "contracts/C-1/revision-7.json"
REVISION_9 = "contracts/C-1/revision-9.json"
ASK = "ask the sender for a bundle as the cloud built it"
CLIMBS = f"not read: it is a name that is absolute or climbs with '..', so unpacking it writes outside the bundle folder; {ASK}"


def unchecked(report) -> dict[str, list[str]]:
    return {v.subject: v.notes for v in report.files if not v.checked}


def node_notes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("NOTE ")]


def test_unlisted_revision_file_is_noted(tmp_path):
    bundle = revised_bundle(tmp_path)
    folder = bundle["folder"]
    (folder / REVISION_9).write_text('{"id": "C-1"}', encoding="utf-8")

    report = verify_bundle(folder)
    assert report.ok, report.as_dict()
    assert unchecked(report) == {REVISION_9: [UNLISTED]}
    # The unlisted file prices nothing: May and its note stay priced with revision 1.
    assert report.revisions[0]["documents"] == [bundle["may"]["number"], bundle["debit"]["number"]]

    result = run_cli(str(folder))
    assert result.exit_code == 0, result.stdout
    assert f"  NOTE  {REVISION_9}\n        . {UNLISTED}\n" in result.stdout
    assert result.stdout.strip().endswith("PASS: 5 vouchers, 3 documents with 2 invoice lines; 1 file not listed in the manifest, not checked")
    as_json = json.loads(run_cli("--json", str(folder)).stdout)
    assert {"subject": REVISION_9, "ok": True, "checked": False, "reasons": [], "notes": [UNLISTED]} in as_json["files"]


def test_renamed_revision_names_both_files(tmp_path):
    bundle = revised_bundle(tmp_path)
    folder, may, debit = bundle["folder"], bundle["may"], bundle["debit"]
    listed_sha = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"][REVISION_1]
    (folder / REVISION_1).rename(folder / REVISION_7)

    report = verify_bundle(folder)
    assert failed(report.files) == {REVISION_1: [f"missing from the bundle, though the manifest lists it with SHA-256 {listed_sha}; ask the sender for a complete bundle"]}
    assert unchecked(report) == {REVISION_7: [UNLISTED]}
    missing = f"priced with {REVISION_1} (contract revision 1), which is missing from the bundle; ask the sender for a complete bundle"
    assert failed(report.documents) == {f"{may['number']} (invoice)": [missing], f"{debit['number']} (debit_note)": [missing]}
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert f"  FAIL  {REVISION_1}\n" in result.stdout
    assert f"  NOTE  {REVISION_7}\n" in result.stdout


def test_unlisted_read_file_fails(tmp_path):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest["files"]["keys.json"]
    del manifest["files"]["GUIDE.en.md"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    report = verify_bundle(folder)
    assert failed(report.files) == {"keys.json": [f"not listed in the manifest, though the checks read it; {ASK}"]}
    # No check reads the guide, so leaving it out of the manifest changes no verdict.
    assert unchecked(report) == {"GUIDE.en.md": [UNLISTED]}
    assert run_cli(str(folder)).exit_code == 1


def test_zip_names_leaving_bundle_fail(tmp_path):
    path = revised_bundle(tmp_path)["zip"]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("../../evil.txt", "climbs two folders")
        archive.writestr("/tmp/abs-evil.txt", "absolute")
        archive.writestr("contracts\\..\\..\\win-evil.txt", "climbs with backslashes")
        link = zipfile.ZipInfo("link.txt")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr(REVISION_9, "{}")

    report = verify_bundle(path)
    assert failed(report.files) == {
        "../../evil.txt": [CLIMBS],
        "/tmp/abs-evil.txt": [CLIMBS],
        "contracts\\..\\..\\win-evil.txt": [CLIMBS],
        "link.txt": [f"not read: it is a symbolic link to /etc/passwd, which unpacking tools may follow outside the bundle folder; {ASK}"],
    }
    assert unchecked(report) == {REVISION_9: [UNLISTED]}
    assert all(v.ok for v in (*report.vouchers, *report.lines, *report.documents))
    result = run_cli(str(path))
    assert result.exit_code == 1
    assert "  FAIL  ../../evil.txt\n" in result.stdout
    assert "  FAIL  /tmp/abs-evil.txt\n" in result.stdout
    assert "FAIL (4 failed)" in result.stdout


def test_symlink_leaving_folder_fails(tmp_path):
    folder = revised_bundle(tmp_path)["folder"]
    (tmp_path / "outside.txt").write_text("outside the bundle", encoding="utf-8")
    os.symlink("../outside.txt", folder / "notes.txt")
    os.symlink(tmp_path / "missing.txt", folder / "dangling.txt")
    # A link that stays inside the folder is read like any other file.
    os.symlink("GUIDE.en.md", folder / "README.md")

    report = verify_bundle(folder)
    assert failed(report.files) == {
        "notes.txt": [f"not read: it is a symbolic link to ../outside.txt, outside the bundle folder; {ASK}"],
        "dangling.txt": [f"not read: it is a symbolic link to {tmp_path / 'missing.txt'}, which cannot be followed; {ASK}"],
    }
    assert unchecked(report) == {"README.md": [UNLISTED]}
    result = run_cli(str(folder))
    assert result.exit_code == 1
    assert "  FAIL  notes.txt\n" in result.stdout


def test_symlinked_required_member_unreadable(tmp_path):
    folder = revised_bundle(tmp_path)["folder"]
    copy = tmp_path / "keys.json"
    copy.write_bytes((folder / "keys.json").read_bytes())
    (folder / "keys.json").unlink()
    os.symlink(copy, folder / "keys.json")

    with pytest.raises(BundleError, match=f"keys.json is a symbolic link to {copy}, outside the bundle folder; it was not read"):
        verify_bundle(folder)
    result = run_cli(str(folder))
    assert result.exit_code == 2
    assert "keys.json is a symbolic link" in result.stderr


@pytest.mark.parametrize(("field", "value", "message"), [
    ("revisions", {"1": REVISION_1}, "manifest.json has an invalid revisions list ({'1': 'contracts/C-1/revision-1.json'})"),
    ("revisions", "contracts", "manifest.json has an invalid revisions list ('contracts')"),
    ("revisions", [{"file": REVISION_1, "revision": "1", "contract_digest": "sha256:00"}], "manifest.json has an invalid revisions list"),
    ("files", [REVISION_1], "manifest.json has an invalid files map (['contracts/C-1/revision-1.json'])"),
    ("contract_revision", "3", "manifest.json has an invalid contract_revision '3'"),
])
def test_malformed_manifest_is_unreadable(tmp_path, field, value, message):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest[field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = run_cli(str(folder))
    assert result.exit_code == 2
    assert message in result.stderr


def test_repeated_revision_number_is_unreadable(tmp_path):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["revisions"][1]["revision"] = 3
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = run_cli(str(folder))
    assert result.exit_code == 2
    assert "manifest.json gives contract revision 3 to more than one file" in result.stderr


@pytest.mark.peer
def test_node_verifier_agrees_on_members(tmp_path, node_peers):
    bundle = revised_bundle(tmp_path / "extra")
    folder = bundle["folder"]
    (folder / REVISION_9).write_text("{}", encoding="utf-8")
    extra = node_verify(node_peers, folder)
    assert extra.returncode == 0, extra.stdout + extra.stderr
    assert node_notes(extra.stdout) == [f"NOTE {REVISION_9}: not listed in the manifest; not checked"]
    assert verify_bundle(folder).ok

    (folder / REVISION_1).rename(folder / REVISION_7)
    renamed = node_verify(node_peers, folder)
    assert renamed.returncode == 1
    assert set(node_failures(renamed.stdout)) == failures(verify_bundle(folder)) == {
        REVISION_1, bundle["may"]["number"], f"{bundle['may']['number']} line 1 (line-oee)",
        bundle["debit"]["number"], f"{bundle['debit']['number']} line 1 (line-oee)"}
    assert f"NOTE {REVISION_7}: not listed in the manifest; not checked" in node_notes(renamed.stdout)

    folder = revised_bundle(tmp_path / "linked")["folder"]
    (tmp_path / "linked" / "outside.txt").write_text("outside the bundle", encoding="utf-8")
    os.symlink("../outside.txt", folder / "notes.txt")
    linked = node_verify(node_peers, folder)
    assert linked.returncode == 1
    assert node_failures(linked.stdout) == {"notes.txt": "symbolic link to ../outside.txt leaves the bundle folder; not read"}
    assert failures(verify_bundle(folder)) == {"notes.txt"}

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    del manifest["files"]["keys.json"]
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    unlisted = node_verify(node_peers, folder)
    assert unlisted.returncode == 1
    assert set(node_failures(unlisted.stdout)) == failures(verify_bundle(folder)) == {"notes.txt", "keys.json"}

    (folder / "keys.json").unlink()
    os.symlink(tmp_path / "linked" / "outside.txt", folder / "keys.json")
    unreadable = node_verify(node_peers, folder)
    assert unreadable.returncode == 2
    assert unreadable.stderr.strip() == f"error: keys.json is a symbolic link to {tmp_path / 'linked' / 'outside.txt'}, outside the bundle folder"
    assert run_cli(str(folder)).exit_code == 2


@pytest.mark.peer
@pytest.mark.parametrize(("field", "value"), [
    ("revisions", {"1": REVISION_1}),
    ("revisions", "contracts"),
    ("revisions", [None]),
    ("revisions", [{"file": REVISION_1, "revision": "1", "contract_digest": "sha256:00"}]),
    ("files", [REVISION_1]),
    ("contract_revision", "3"),
])
def test_node_verifier_rejects_malformed_manifest(tmp_path, node_peers, field, value):
    folder = revised_bundle(tmp_path)["folder"]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest[field] = value
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = node_verify(node_peers, folder)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    # One line naming the field, not a stack trace.
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: manifest.json has an invalid {field.replace('files', 'files map').replace('revisions', 'revisions list')}")
    assert run_cli(str(folder)).exit_code == 2


@pytest.mark.peer
def test_node_verifier_broken_json_one_line(tmp_path, node_peers):
    folder = revised_bundle(tmp_path)["folder"]
    (folder / "invoices.json").write_text("[{", encoding="utf-8")
    result = node_verify(node_peers, folder)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert "    at " not in result.stderr
    assert run_cli(str(folder)).exit_code == 2
