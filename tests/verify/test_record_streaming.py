"""Record files are read as streams: unpacked from a ZIP file into the temporary folder, checked line by line and read back a day at a time."""

from __future__ import annotations

import errno
import json
import tempfile
import zipfile
from pathlib import Path

import pytest

from valuegate.cloud import bundle_members
from valuegate.cloud.bundle import BundleError, read_bundle, record_file
from valuegate.verify import verify_bundle

from . import test_verify_evidence as evidence

bundle, rewrite = evidence.bundle, evidence.rewrite
issued = evidence.issued  # a module-scoped fixture: two vouchers of two fillers and their records


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of the test's own, so that what the verifier leaves there can be seen."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_zip_records_are_unpacked_to_disk_and_removed(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    path = bundle(tmp_path, issued)
    read = read_bundle(path)
    sources = [read.record_data[record_file(machine)] for machine in ("filler-9", "filler-10")]
    assert all(isinstance(source, Path) and source.parent.parent == scratch for source in sources)
    with zipfile.ZipFile(path) as archive:
        assert [source.read_bytes() for source in sources] == [archive.read(record_file(m)) for m in ("filler-9", "filler-10")]
    read.close()
    assert list(scratch.iterdir()) == []

    report = verify_bundle(path)
    assert report.ok and report.evidence.recomputed == 2
    assert list(scratch.iterdir()) == []


def test_folder_records_are_read_in_place(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(record_file("filler-9"))
    folder = rewrite(path, record_file("filler-9"), data)
    read = read_bundle(folder)
    assert read.record_data[record_file("filler-9")] == folder.resolve() / record_file("filler-9")
    assert list(scratch.iterdir()) == []
    assert verify_bundle(folder).evidence.recomputed == 2


def test_no_room_to_unpack_names_tmpdir(tmp_path: Path, issued: tuple, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk cannot be made here, so the copy fails as a full disk makes it fail."""
    path = bundle(tmp_path, issued)
    real_copy = bundle_members._copy

    def full_disk(source, target):  # noqa: ANN001, ANN202
        if target is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, target)

    monkeypatch.setattr(bundle_members, "_copy", full_disk)
    with pytest.raises(BundleError) as caught:
        verify_bundle(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: no room left in {scratch}")
    assert "records/filler-10.jsonl" in message
    assert "set TMPDIR to a folder with more free space" in message
    assert list(scratch.iterdir()) == []


def test_overlong_line_fails_and_the_rest_is_read(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(record_file("filler-10"))
    lines = data.split(b"\n")
    count = len(lines) - 1  # the file ends with a newline
    padded = b"\n".join([*lines[:3], b" " * 20_000, *lines[3:]])

    report = verify_bundle(rewrite(path, record_file("filler-10"), padded))

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert verdict.reasons[0] == "line 4 is longer than 8,192 bytes, far more than a record takes, so it was not read"
    assert verdict.reasons[1].startswith(f"contains {count + 1} records, but the manifest gives {count}")
    assert report.evidence.records == len(issued[1])
    # Every record around the long line was read back, so both vouchers still rebuild their roots and figures.
    assert report.evidence.recomputed == 2


def test_record_file_outside_the_records_folder_is_read(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    """A manifest may name a record file anywhere in the bundle; such a member is read into memory and checked the same way."""
    path = bundle(tmp_path, issued)
    folder = path.parent / "moved"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    (folder / "evidence").mkdir()
    (folder / record_file("filler-9")).rename(folder / "evidence" / "filler-9.jsonl")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["evidence/filler-9.jsonl"] = manifest["files"].pop(record_file("filler-9"))
    for entry in manifest["records"]:
        if entry["machine"] == "filler-9":
            entry["file"] = "evidence/filler-9.jsonl"
    (folder / "manifest.json").write_text(json.dumps(manifest))

    assert isinstance(read_bundle(folder).record_data["evidence/filler-9.jsonl"], bytes)
    report = verify_bundle(folder)
    assert report.ok, [(v.subject, v.reasons) for v in report.verdicts if not v.ok]
    assert report.evidence.recomputed == 2
    assert report.evidence.records == len(issued[1])


def test_progress_names_each_record_file_and_voucher(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    steps: list[str] = []
    report = verify_bundle(bundle(tmp_path, issued), progress=steps.append)
    assert report.ok
    names = [entry["file"] for entry in json.loads(zipfile.ZipFile(bundle(tmp_path, issued)).read("manifest.json"))["records"]]
    assert steps == [f"reading record file 1 of 2 ({names[0]})", f"reading record file 2 of 2 ({names[1]})",
                     "recomputing voucher 1 of 2", "recomputing voucher 2 of 2"]


def test_cli_prints_progress_only_for_long_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from valuegate.verify_cli import _Progress

    quiet, chatty = _Progress(), _Progress(every_s=0)
    quiet("reading record file 1 of 9 (records/m.jsonl)")
    chatty("recomputing voucher 3 of 40")
    assert capsys.readouterr() == ("", "verify: recomputing voucher 3 of 40\n")
