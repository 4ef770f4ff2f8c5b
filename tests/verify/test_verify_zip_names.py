"""`valuegate verify` on ZIP members whose names unpack to the same path as a listed or read file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.verify.bundles import revised_bundle
from tests.verify.test_verify_bundle import run_cli
from tests.verify.test_verify_revisions import REVISION_1, failures, node_failures, node_verify
from valuegate.cloud.bundle import BundleError
from valuegate.verify import verify_bundle

REPEATED = "the ZIP file has more than one member that unpacks to"


def priced_up(folder: Path, name: str) -> bytes:
    """Return the bytes of the contract file ``name`` with its price raised from 3,000 or 2,000 to 99,000."""
    terms = json.loads((folder / name).read_text(encoding="utf-8"))
    terms["anchors"][0]["price"]["amount"] = "99000"
    return json.dumps(terms).encode("utf-8")


@pytest.mark.parametrize(("extra", "target"), [
    ("./contract.json", "contract.json"),
    (".\\contract.json", "contract.json"),
    ("contract.json/", "contract.json"),
    ("contract.json/notes.txt", "contract.json"),
    ("CONTRACT.JSON", "contract.json"),
    ("contracts/C-1/./revision-1.json", REVISION_1),
    ("contracts\\C-1\\revision-1.json", REVISION_1),
    ("contracts//C-1/revision-1.json", REVISION_1),
])
def test_member_over_file_unreadable(tmp_path, extra, target):
    bundle = revised_bundle(tmp_path)
    with zipfile.ZipFile(bundle["zip"], "a") as archive:
        archive.writestr(extra, b"" if extra.endswith("/") else priced_up(bundle["folder"], target))

    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle["zip"])
    original = "contract.json" if target == "contract.json" else REVISION_1
    assert f"{REPEATED} {target} (members {original}, {extra});" in str(caught.value)
    result = run_cli(str(bundle["zip"]))
    assert result.exit_code == 2
    assert REPEATED in result.stderr


def test_member_names_read_as_unpacked(tmp_path):
    """A name that unpacks to a listed file is that file: no repeat, so the bundle is checked as the cloud built it."""
    bundle = revised_bundle(tmp_path)
    renamed = tmp_path / "renamed.zip"
    names = {"contract.json": "./contract.json", REVISION_1: "contracts\\C-1\\revision-1.json"}
    with zipfile.ZipFile(bundle["zip"]) as source, zipfile.ZipFile(renamed, "w") as target:
        # Folder entries that unpack to the same folder write nothing over a file.
        target.writestr("contracts/", b"")
        target.writestr("./contracts/", b"")
        for info in source.infolist():
            target.writestr(names.get(info.filename, info.filename), source.read(info))

    report = verify_bundle(renamed)
    assert report.ok, report.as_dict()
    assert report.unchecked == []
    # Revision 1's file was read under its unpacked name and priced May's invoice and its note.
    assert report.revisions[0]["file"] == REVISION_1
    assert report.revisions[0]["documents"] == [bundle["may"]["number"], bundle["debit"]["number"]]


@pytest.mark.peer
def test_unpacked_copy_fails_both(tmp_path, node_peers):
    bundle = revised_bundle(tmp_path)
    changed = priced_up(bundle["folder"], "contract.json")
    with zipfile.ZipFile(bundle["zip"], "a") as archive:
        archive.writestr("./contract.json", changed)
    assert run_cli(str(bundle["zip"])).exit_code == 2

    # Unpacking writes the later member over contract.json, which the ZIP check above refused to pass.
    unpacked = tmp_path / "unpacked-again"
    with zipfile.ZipFile(bundle["zip"]) as archive:
        archive.extractall(unpacked)
    assert (unpacked / "contract.json").read_bytes() == changed

    node = node_verify(node_peers, unpacked)
    assert node.returncode == 1, node.stdout + node.stderr
    assert run_cli(str(unpacked)).exit_code == 1
    assert set(node_failures(node.stdout)) == failures(verify_bundle(unpacked)) == {"contract.json"}
