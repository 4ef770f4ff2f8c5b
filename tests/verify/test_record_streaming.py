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
    assert message.startswith(f"{path}: cannot unpack records/filler-10.jsonl (")
    # The folder named is the temporary folder the auditor chose, not the removed subfolder inside it.
    assert f"bytes unpacked) into the temporary folder {scratch}: there is no room left." in message
    assert "set TMPDIR to a writable folder with more free space" in message
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
    """A manifest may name a record file anywhere in the bundle; such a member is read as a stream and checked the same way."""
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

    assert read_bundle(folder).record_data["evidence/filler-9.jsonl"] == folder.resolve() / "evidence" / "filler-9.jsonl"
    report = verify_bundle(folder)
    assert report.ok, [(v.subject, v.reasons) for v in report.verdicts if not v.ok]
    assert report.evidence.recomputed == 2
    assert report.evidence.records == len(issued[1])


def test_progress_names_each_record_file_and_voucher(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    steps: list[str] = []
    report = verify_bundle(bundle(tmp_path, issued), progress=steps.append)
    assert report.ok
    names = [entry["file"] for entry in json.loads(zipfile.ZipFile(bundle(tmp_path, issued)).read("manifest.json"))["records"]]
    assert sorted(steps[:2]) == sorted(f"unpacking {name}" for name in names)
    assert steps[2:] == [f"reading record file 1 of 2 ({names[0]})", f"reading record file 2 of 2 ({names[1]})",
                         "recomputing voucher 1 of 2", "recomputing voucher 2 of 2"]


def test_cli_prints_progress_only_for_long_checks(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from valuegate.verify_cli import _Progress

    quiet = _Progress()
    quiet("reading record file 1 of 9 (records/m.jsonl)")
    quiet.close()
    assert capsys.readouterr() == ("", "")
    # One long step still shows: the ticker repeats it with the time so far.
    chatty = _Progress(every_s=0.05)
    chatty("recomputing voucher 3 of 40")
    time.sleep(0.3)
    chatty.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("verify: recomputing voucher 3 of 40 (") and line.endswith(" s)") for line in lines)


def test_unlisted_member_is_hashed_not_held(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    """A member no check reads is only hashed as a stream, whatever its size; a member the checks parse has a size limit."""
    import hashlib

    path = bundle(tmp_path, issued)
    junk = b"a" * 3_000_000
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("junk/readme.txt", junk)
    read = read_bundle(path)
    try:
        assert "junk/readme.txt" not in read.members.data
        assert read.digests["junk/readme.txt"] == "sha256:" + hashlib.sha256(junk).hexdigest()
    finally:
        read.close()
    assert verify_bundle(path).ok


def test_oversized_parsed_member_is_refused(tmp_path: Path, issued: tuple, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = bundle(tmp_path, issued)
    monkeypatch.setattr(bundle_members, "MAX_HELD", 100)
    with pytest.raises(BundleError, match=r"(GUIDE\.en\.md|contract\.json) is too large: it unpacks to [\d,]+ bytes, more than the 100-byte limit for a file the checks parse"):
        read_bundle(path)
    assert list(scratch.iterdir()) == []


def _patch_member(path: Path, name: str, *, flags: int | None = None, method: int | None = None, damage: bool = False) -> Path:
    """Rewrite one member's header fields (general purpose flags, compression method) in place, or damage its compressed data."""
    import struct

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    local = info.header_offset
    central = next(index for index in range(len(data)) if data.startswith(b"PK\x01\x02", index)
                   and data[index + 46:index + 46 + len(name)] == name.encode())
    for offset, base in ((6, local), (8, central)):
        if flags is not None:
            struct.pack_into("<H", data, base + offset, struct.unpack_from("<H", data, base + offset)[0] | flags)
        if method is not None:
            struct.pack_into("<H", data, base + offset + 2, method)
    if damage:
        name_length, extra_length = struct.unpack_from("<HH", data, local + 26)
        start = local + 30 + name_length + extra_length
        data[start:start + 8] = b"\xff" * 8
    out = path.with_name(f"patched-{flags}-{method}-{damage}.zip")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(("change", "why"), [
    ({"flags": 0x1}, "it is encrypted, and a bundle as the cloud builds it never is"),
    ({"method": 99}, "it uses compression method 99, which this verifier cannot unpack; the cloud uses Deflate (8)"),
    ({"damage": True}, "its compressed data is damaged"),
])
@pytest.mark.parametrize("member", ["records/filler-10.jsonl", "vouchers.jsonl"])
def test_unreadable_member_is_named(tmp_path: Path, issued: tuple, scratch: Path, change: dict, why: str, member: str) -> None:
    from typer.testing import CliRunner

    from valuegate.cli import app

    patched = _patch_member(bundle(tmp_path, issued), member, **change)
    result = CliRunner().invoke(app, ["verify", str(patched)])
    assert result.exit_code == 2, result.output
    assert f"error: {patched}: cannot read {member}: {why}" in " ".join(result.output.split())
    assert list(scratch.iterdir()) == []


def test_unusable_tmpdir_is_named(tmp_path: Path, issued: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python would quietly unpack into /tmp instead, the folder an auditor set TMPDIR to avoid."""
    path = bundle(tmp_path, issued)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(BundleError, match=f"invalid TMPDIR {tmp_path / 'missing'}: it is not a writable folder"):
        read_bundle(path)


def test_negative_record_count_is_malformed(tmp_path: Path, issued: tuple, scratch: Path) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest["records"][0]["records"] = -5
    folder = rewrite(path, "manifest.json", json.dumps(manifest).encode(), digest=False)
    with pytest.raises(BundleError, match="manifest.json has an invalid records list"):
        read_bundle(folder)


def test_sigterm_removes_unpacked_records(tmp_path: Path, issued: tuple) -> None:
    """A check stopped with SIGTERM (a closed terminal sends SIGHUP) removes its unpacked records, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = bundle(tmp_path, issued)
    spool = tmp_path / "spool"
    spool.mkdir()
    # The records are unpacked first; the evidence check is held so that the signal lands while they are on disk.
    script = (
        "import time, valuegate.verify as verify\n"
        "verify.check_evidence = lambda *args, **kwargs: time.sleep(60)\n"
        "from valuegate.cli import app\n"
        f"app(['verify', {str(path)!r}])\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(spool)}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not list(spool.glob("valuegate-bundle-*/*.jsonl")):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the records were never unpacked"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM
    assert list(spool.iterdir()) == []
