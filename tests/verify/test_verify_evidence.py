"""Evidence in bundles: minute records the edge pipeline wrote travel in the bundle, and the offline verifier recomputes each voucher from them."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from valuegate.cloud.bundle import GatewayKey, StoredVoucher, build_bundle, record_file
from valuegate.edge import keys
from valuegate.verify import verify_bundle
from valuegate.verify_evidence import NO_RECORDS

from .test_evidence_guide import CONTRACT, MACHINES, issue_vouchers


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict], str]:
    folder = tmp_path_factory.mktemp("evidence")
    vouchers, export = issue_vouchers(folder)
    return vouchers, export, keys.export_public(folder / "keys")["public_key_multibase"]


def by_machine(export: list[dict]) -> dict[str, list[dict]]:
    """Return the export's records per machine, in time order."""
    return {machine: sorted((record for record in export if record["machine"] == machine), key=lambda r: r["minute"]) for machine in MACHINES}


def without_last_record(issued: tuple) -> dict[str, list[dict]]:
    """Return every record except filler-9's last one of the second voucher's day."""
    records = by_machine(issued[1])
    period = issued[0][1]["credentialSubject"]["period"]
    last = max(i for i, r in enumerate(records["filler-9"]) if period["start"] <= r["minute"] < period["end"])
    del records["filler-9"][last]
    return records


def bundle(folder: Path, issued: tuple, *, records: dict | None = None, reproduced: bool | None = True, **changes: object) -> Path:
    """Write a bundle of the issued vouchers with the given records (all of them by default) and return its path."""
    vouchers, export, public = issued
    path = folder / "bundle.zip"
    changes.setdefault("contract", CONTRACT)
    path.write_bytes(build_bundle(
        vouchers=vouchers, keys=[GatewayKey("gw-1", public)], documents=[], created_at="2026-04-01T00:00:00Z",
        stored=[StoredVoucher(v["credentialSubject"]["voucher_id"], "2026-03-31T00:00:00Z", reproduced) for v in vouchers],
        records=by_machine(export) if records is None else records, **changes,
    ))  # fmt: skip
    return path


def rewrite(path: Path, name: str, data: bytes, *, digest: bool = True) -> Path:
    """Unpack the bundle, replace one member, and (with ``digest``) list its new SHA-256 in the manifest."""
    import hashlib

    folder = path.parent / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    (folder / name).write_bytes(data)
    if digest:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"][name] = "sha256:" + hashlib.sha256(data).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_records_recompute_every_voucher(tmp_path: Path, issued: tuple) -> None:
    report = verify_bundle(bundle(tmp_path, issued))

    assert report.ok, [(v.subject, v.reasons) for v in report.verdicts if not v.ok]
    assert report.evidence.recomputed == 2
    assert report.evidence.records == len(issued[1])
    assert report.as_dict()["evidence"] == {"files": 2, "records": len(issued[1]), "recomputed": 2, "not_checked": 0, "failed": 0}


def test_record_files_are_canonical_and_ordered(tmp_path: Path, issued: tuple) -> None:
    with zipfile.ZipFile(bundle(tmp_path, issued)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        lines = archive.read(record_file("filler-10")).splitlines()

    assert [entry["machine"] for entry in manifest["records"]] == ["filler-10", "filler-9"]
    assert manifest["records"][0]["file"] == "records/filler-10.jsonl"
    assert manifest["records"][0]["records"] == len(lines)
    minutes = [json.loads(line)["minute"] for line in lines]
    assert minutes == sorted(minutes)
    assert all(line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() for line in lines)


def test_bundle_without_records_notes_each_voucher(tmp_path: Path, issued: tuple) -> None:
    report = verify_bundle(bundle(tmp_path, issued, records={}))

    assert report.ok
    assert [NO_RECORDS in v.notes for v in report.vouchers] == [True, True]
    assert report.evidence.not_checked == 2
    assert report.evidence.recomputed == 0


def test_changed_baseline_record_fails_both_days(tmp_path: Path, issued: tuple) -> None:
    records = by_machine(issued[1])
    records["filler-10"][0] = {**records["filler-10"][0], "produced": records["filler-10"][0]["produced"] + 50}

    report = verify_bundle(bundle(tmp_path, issued, records=records))

    for verdict in report.vouchers:
        assert len(verdict.reasons) >= 1
        assert verdict.reasons[0].startswith("baseline recomputed from the records of 2026-03-27..2026-03-28 is ")


def test_changed_record_fails_its_day(tmp_path: Path, issued: tuple) -> None:
    vouchers = issued[0]
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-9")).splitlines(keepends=True)
    last_day = vouchers[1]["credentialSubject"]["period"]
    index = next(i for i, line in enumerate(lines) if json.loads(line)["minute"] >= last_day["start"])
    record = json.loads(lines[index])
    record["produced"] += 1
    lines[index] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    report = verify_bundle(rewrite(path, record_file("filler-9"), b"".join(lines)))

    first, second = report.vouchers
    assert first.ok
    assert not second.ok
    assert second.reasons[0].startswith(f"evidence: the bundle's {vouchers[1]['credentialSubject']['evidence']['records']} records of filler-10, filler-9")
    assert report.evidence.failed == 1


@pytest.mark.parametrize(
    ("reproduced", "hint"),
    [
        (True, "records were removed from the bundle or never stored: ask the vendor for the complete records"),
        (None, "stored.json says the cloud had not reproduced it yet, so its records may have been still arriving: ask the vendor for a later bundle"),
    ],
)
def test_missing_record_fails_voucher(tmp_path: Path, issued: tuple, reproduced: bool | None, hint: str) -> None:
    """A missing record fails its voucher whatever the unsigned stored.json records. The hint depends on that file."""
    claims = issued[0][1]["credentialSubject"]

    report = verify_bundle(bundle(tmp_path, issued, records=without_last_record(issued), reproduced=reproduced))

    assert report.vouchers[0].ok
    assert report.vouchers[1].reasons == [
        f"evidence: the bundle carries {claims['evidence']['records'] - 1} of the {claims['evidence']['records']} records of filler-10, filler-9 "
        f"in {claims['period']['start']}..{claims['period']['end']} that the voucher commits to; {hint}"
    ]
    assert report.evidence.failed == 1


def test_no_baseline_records_fail(tmp_path: Path, issued: tuple) -> None:
    """Without any record of the baseline period the counterfactual cannot be checked, so each voucher fails."""
    reporting_start = issued[0][0]["credentialSubject"]["period"]["start"]
    records = {machine: [r for r in rows if r["minute"] >= reporting_start] for machine, rows in by_machine(issued[1]).items()}

    report = verify_bundle(bundle(tmp_path, issued, records=records))

    for verdict in report.vouchers:
        assert verdict.reasons == ["baseline: the bundle's records of 2026-03-27..2026-03-28 cover 0 of the 1 days it needs, the voucher claims 2"]
    assert report.evidence.failed == 2


def test_short_baseline_records_fail(tmp_path: Path, issued: tuple) -> None:
    """Five minutes of each baseline day are too few to count that day, so the baseline has none of the one day it needs."""
    reporting_start = issued[0][0]["credentialSubject"]["period"]["start"]
    records = {}
    for machine, rows in by_machine(issued[1]).items():
        baseline = [r for r in rows if r["minute"] < reporting_start]
        records[machine] = baseline[:5] + [r for r in rows if r["minute"] >= reporting_start]

    report = verify_bundle(bundle(tmp_path, issued, records=records))

    for verdict in report.vouchers:
        assert verdict.reasons == ["baseline: the bundle's records of 2026-03-27..2026-03-28 cover 0 of the 1 days it needs, the voucher claims 2"]
    assert report.evidence.failed == 2


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "line 1 is not valid JSON"),
        (b'{"machine":"filler-10"}', "line 1 is not a valuegate/minute/v1 record"),
    ],
)
def test_bad_record_line_fails_file(tmp_path: Path, issued: tuple, line: bytes, reason: str) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(record_file("filler-10"))

    report = verify_bundle(rewrite(path, record_file("filler-10"), line + b"\n" + data))

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert verdict.reasons[0].startswith(reason)
    assert not report.ok


def test_record_of_other_machine_fails_file(tmp_path: Path, issued: tuple) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        stranger = archive.read(record_file("filler-9")).splitlines(keepends=True)[0]
        data = archive.read(record_file("filler-10"))

    report = verify_bundle(rewrite(path, record_file("filler-10"), stranger + data))

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert verdict.reasons[0] == "line 1 is a record of machine 'filler-9', but the file holds machine 'filler-10'"
    assert verdict.reasons[1].startswith("contains ")
    assert verdict.reasons[1].endswith(" records, but the manifest gives " + str(len(data.splitlines())) + "; ask the vendor for a bundle as the cloud built it")


def test_record_file_without_digest_fails(tmp_path: Path, issued: tuple) -> None:
    path = bundle(tmp_path, issued)
    folder = rewrite(path, "manifest.json", b"", digest=False)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    del manifest["files"][record_file("filler-9")]
    (folder / "manifest.json").write_text(json.dumps(manifest))

    report = verify_bundle(folder)

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-9")]
    assert verdict.reasons == ["listed under records but without a SHA-256 under files; ask the vendor for a bundle as the cloud built it"]
    assert verdict.checked


@pytest.mark.peer
def test_node_verifier_rebuilds_roots(tmp_path: Path, issued: tuple, node_peers: Path) -> None:
    """The second verifier (Node.js crypto and npm canonicalize) rebuilds the same roots from the same record files."""
    path = bundle(tmp_path, issued)
    folder = tmp_path / "good"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
        lines = archive.read(record_file("filler-9")).splitlines(keepends=True)

    good = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)

    assert good.returncode == 0, good.stdout + good.stderr
    assert f"evidence: 2 roots rebuilt from {len(issued[1])} records, 0 failed" in good.stdout.splitlines()

    period = issued[0][1]["credentialSubject"]["period"]
    index = next(i for i, line in enumerate(lines) if period["start"] <= json.loads(line)["minute"] < period["end"])
    record = json.loads(lines[index])
    record["reject"] += 1
    lines[index] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    changed = rewrite(path, record_file("filler-9"), b"".join(lines))

    bad = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(changed)], capture_output=True, text=True, timeout=60)

    assert bad.returncode == 1
    (failed,) = [line for line in bad.stdout.splitlines() if line.startswith("FAIL gw-1:")]
    assert failed.startswith("FAIL gw-1:2: evidence: ")
    assert issued[0][1]["credentialSubject"]["evidence"]["merkle_root"] in failed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: {**r, "minute": "yesterday"}, "has the minute 'yesterday', which is no UTC minute written YYYY-MM-DDTHH:MM:00Z"),
        (lambda r: {**r, "produced": 2**60}, "cannot be read as a record: "),
        (lambda r: {**r, "minute": r["minute"].replace(":00Z", ":30Z")}, "has the minute "),
    ],
    ids=["minute-text", "integer-too-large", "minute-not-whole"],
)
def test_unreadable_record_fails_line(tmp_path: Path, issued: tuple, change, reason: str) -> None:
    """A record the verifier cannot place or hash fails its line with a message, not a traceback."""
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)
    lines[0] = json.dumps(change(json.loads(lines[0])), sort_keys=True, separators=(",", ":")).encode() + b"\n"

    report = verify_bundle(rewrite(path, record_file("filler-10"), b"".join(lines)))

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert verdict.reasons[0].startswith("line 1 " + reason), verdict.reasons[0]
    assert not report.ok


def test_non_canonical_line_fails(tmp_path: Path, issued: tuple) -> None:
    """A line whose content is right but whose bytes are not the JCS form fails, because the guide lets auditors hash lines as they are."""
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)
    lines[3] = json.dumps(json.loads(lines[3])).encode() + b"\r\n"

    report = verify_bundle(rewrite(path, record_file("filler-10"), b"".join(lines)))

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert verdict.reasons == ["line 4 is not in RFC 8785 canonical form (keys sorted, no spaces), so hashing the line as the auditor guide says gives another leaf"]


def test_line_reasons_are_capped(tmp_path: Path, issued: tuple) -> None:
    """A manifest that names the wrong machine fails every line, but only the first 20 are listed."""
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    manifest["records"][0]["machine"], manifest["records"][1]["machine"] = manifest["records"][1]["machine"], manifest["records"][0]["machine"]
    folder = rewrite(path, "manifest.json", json.dumps(manifest).encode(), digest=False)

    report = verify_bundle(folder)

    (verdict,) = [v for v in report.files if v.subject == record_file("filler-10")]
    assert len(verdict.reasons) == 21
    assert verdict.reasons[-1].endswith(" more lines fail like those above")


def node_verify(node_peers: Path, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)


@pytest.mark.peer
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda lines: [b"null\n", *lines], "FAIL records/filler-10.jsonl: line 1 is not a JSON object"),
        (lambda lines: [json.dumps(json.loads(lines[0])).encode() + b"\n", *lines[1:]], "FAIL records/filler-10.jsonl: line 1 is not in RFC 8785 canonical form"),
        (lambda lines: [b"\xff\xfe\n", *lines], "FAIL records/filler-10.jsonl: cannot be read: records/filler-10.jsonl is not valid UTF-8"),
        (lambda lines: [lines[1], lines[0], *lines[2:]], "FAIL records/filler-10.jsonl: line 2 (minute "),
    ],
    ids=["null", "not-canonical", "not-utf8", "out-of-order"],
)
def test_node_verifier_fails_bad_record_file(tmp_path: Path, issued: tuple, node_peers: Path, damage, expected: str) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)

    result = node_verify(node_peers, rewrite(path, record_file("filler-10"), b"".join(damage(lines))))

    assert result.returncode == 1, result.stdout + result.stderr
    assert any(line.startswith(expected) for line in result.stdout.splitlines()), result.stdout


@pytest.mark.peer
def test_node_verifier_fails_missing_record(tmp_path: Path, issued: tuple, node_peers: Path) -> None:
    """As in valuegate verify, a missing record fails its voucher whatever stored.json records."""
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle(tmp_path, issued, records=without_last_record(issued), reproduced=None)) as archive:
        archive.extractall(folder)

    result = node_verify(node_peers, folder)

    assert result.returncode == 1
    claimed = issued[0][1]["credentialSubject"]["evidence"]["records"]
    assert f"FAIL gw-1:2: evidence: the bundle carries {claimed - 1} of the {claimed} records the voucher commits to" in result.stdout.splitlines()


@pytest.mark.peer
def test_node_verifier_reads_bundle_without_records(tmp_path: Path, issued: tuple, node_peers: Path) -> None:
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle(tmp_path, issued, records={})) as archive:
        archive.extractall(folder)
    manifest = json.loads((folder / "manifest.json").read_text())

    result = node_verify(node_peers, folder)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "evidence: the bundle carries no minute records, so no root was rebuilt" in result.stdout.splitlines()
    manifest["records"] = {}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    malformed = node_verify(node_peers, folder)
    assert malformed.returncode == 2
    assert malformed.stderr.strip() == "error: manifest.json has an invalid records list; each entry needs a machine, a file and a records count"


def test_records_outside_every_period_are_noted(tmp_path: Path, issued: tuple) -> None:
    """Records that no voucher day or baseline period covers pass no check, and the record file notes how many there are."""
    vouchers, export, _ = issued
    baseline_start = "2026-03-26T23:00:00Z"  # midnight of 27 March in Berlin, the first baseline day
    last_end = vouchers[1]["credentialSubject"]["period"]["end"]
    outside = {machine: sum(1 for r in rows if not baseline_start <= r["minute"] < last_end) for machine, rows in by_machine(export).items()}
    assert all(count > 0 for count in outside.values()), outside

    report = verify_bundle(bundle(tmp_path, issued))

    assert report.ok
    for machine, count in outside.items():
        (verdict,) = [v for v in report.files if v.subject == record_file(machine)]
        assert verdict.notes == [f"{count} records lie outside every voucher day and baseline period of this contract, so no check reads them"]


@pytest.mark.peer
@pytest.mark.parametrize(
    ("change", "python_reason", "node_reason"),
    [
        (lambda r: {**r, "extra": 1}, "is not a valuegate/minute/v1 record", "has the fields "),
        (lambda r: {**r, "stops": "2"}, "is not a valuegate/minute/v1 record", "has a field that is not a whole number"),
        (lambda r: {**r, "reasons": {"17": 1.5}}, "is not a valuegate/minute/v1 record", "has a field that is not a whole number"),
        (lambda r: {**r, "reasons": {"\ud800": 1}}, "is not valid JSON", "contains a lone UTF-16 surrogate"),
    ],
    ids=["extra-field", "string-count", "float-reason", "lone-surrogate"],
)
def test_both_verifiers_reject_malformed_record(tmp_path: Path, issued: tuple, node_peers: Path, change, python_reason: str, node_reason: str) -> None:
    """A malformed record fails its file in both verifiers, also outside every voucher day, where no root would catch it."""
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)
    lines[-1] = json.dumps(change(json.loads(lines[-1])), sort_keys=True, separators=(",", ":")).encode() + b"\n"
    folder = rewrite(path, record_file("filler-10"), b"".join(lines))

    (verdict,) = [v for v in verify_bundle(folder).files if v.subject == record_file("filler-10")]
    result = node_verify(node_peers, folder)

    assert verdict.reasons[0].startswith(f"line {len(lines)} {python_reason}"), verdict.reasons
    assert result.returncode == 1
    assert f"FAIL records/filler-10.jsonl: line {len(lines)} {node_reason}" in result.stdout, result.stdout


def test_renamed_contract_fails(tmp_path: Path, issued: tuple) -> None:
    """Renaming the contract in contract.json would make every voucher look foreign and skip its checks, so it fails."""
    report = verify_bundle(bundle(tmp_path, issued, contract={**CONTRACT, "id": "c-other"}))

    (verdict,) = [v for v in report.files if v.subject == "contract.json"]
    assert verdict.reasons == ["names contract 'c-other', but no voucher of the bundle belongs to it (they name 'c-evidence'); "
                               "ask the sender for a bundle as the cloud built it"]


def test_record_file_left_out_of_records_list_fails(tmp_path: Path, issued: tuple) -> None:
    """A record file still in the bundle after its records list was removed fails, instead of making the bundle look record-free."""
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    del manifest["records"]
    folder = rewrite(path, "manifest.json", json.dumps(manifest).encode(), digest=False)

    report = verify_bundle(folder)

    for machine in MACHINES:
        (verdict,) = [v for v in report.files if v.subject == record_file(machine)]
        assert verdict.reasons == ["a record file that the manifest's records list does not name, so no check reads its records; "
                                   "ask the vendor for a bundle as the cloud built it"]
        assert verdict.checked


def test_empty_line_and_padding_fail(tmp_path: Path, issued: tuple) -> None:
    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)
    count = len(lines)

    gap = verify_bundle(rewrite(path, record_file("filler-10"), b"".join([lines[0], b"\n", *lines[1:]])))
    padded = verify_bundle(rewrite(path, record_file("filler-10"), b"".join(lines) + b"\n" * (8192 * count)))

    (verdict,) = [v for v in gap.files if v.subject == record_file("filler-10")]
    assert verdict.reasons[0] == "line 2 is empty"
    (verdict,) = [v for v in padded.files if v.subject == record_file("filler-10")]
    assert verdict.reasons == [f"is {len(b''.join(lines)) + 8192 * count:,} bytes, more than 8,192 for each of the {count} records the manifest "
                               "gives, so it was not read; ask the vendor for a bundle as the cloud built it"]


def test_machine_ids_get_distinct_short_file_names(tmp_path: Path, issued: tuple) -> None:
    """Ids that differ only in case, or that are long, still give record files that unpack side by side."""
    rows = by_machine(issued[1])["filler-9"][:3]
    long_id = "灌装机" * 20
    records = {**by_machine(issued[1]), "Filler-9": [{**r, "machine": "Filler-9"} for r in rows], long_id: [{**r, "machine": long_id} for r in rows]}

    path = bundle(tmp_path, issued, records=records)
    report = verify_bundle(path)

    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.startswith("records/")]
    assert len({name.casefold() for name in names}) == len(names) == 4
    assert all(len(name.encode()) <= 255 for name in names)
    assert report.ok, [(v.subject, v.reasons) for v in report.verdicts if not v.ok]


@pytest.mark.peer
def test_node_verifier_rejects_bundle_tricks(tmp_path: Path, issued: tuple, node_peers: Path) -> None:
    """The second verifier fails the same tricks: a renamed contract, a record file left out of the list, a bad voucher line, a minute Date.parse would move."""
    renamed = tmp_path / "renamed"
    with zipfile.ZipFile(bundle(tmp_path, issued, contract={**CONTRACT, "id": "c-other"})) as archive:
        archive.extractall(renamed)
    assert "FAIL contract.json: names contract c-other, but no voucher of the bundle belongs to it" in node_verify(node_peers, renamed).stdout

    path = bundle(tmp_path, issued)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        lines = archive.read(record_file("filler-10")).splitlines(keepends=True)
    del manifest["records"]
    unlisted = node_verify(node_peers, rewrite(path, "manifest.json", json.dumps(manifest).encode(), digest=False))
    assert "FAIL records/filler-10.jsonl: a record file that the manifest's records list does not name, so no check reads its records" in unlisted.stdout

    folder = tmp_path / "voucher-line"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    (folder / "vouchers.jsonl").write_bytes(b"null\n" + (folder / "vouchers.jsonl").read_bytes())
    bad_line = node_verify(node_peers, folder)
    assert bad_line.returncode == 1, bad_line.stderr
    assert "FAIL vouchers.jsonl line 1: not a voucher (no credentialSubject object)" in bad_line.stdout

    record = json.loads(lines[-1])
    record["minute"] = record["minute"][:11] + "24:00:00Z"
    lines[-1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    moved = node_verify(node_peers, rewrite(path, record_file("filler-10"), b"".join(lines)))
    assert f"FAIL records/filler-10.jsonl: line {len(lines)} has the minute " in moved.stdout


def test_cli_prints_evidence_line(tmp_path: Path, issued: tuple) -> None:
    """The command's evidence line counts record files too, so unreadable files do not read as a bundle without records."""
    from typer.testing import CliRunner

    from valuegate.cli import app

    path = bundle(tmp_path, issued)
    good = CliRunner().invoke(app, ["verify", str(path)])
    with zipfile.ZipFile(path) as archive:
        data = archive.read(record_file("filler-10"))
    padded = CliRunner().invoke(app, ["verify", str(rewrite(path, record_file("filler-10"), data + b"\n" * (8192 * len(data.splitlines()))))])

    assert good.exit_code == 0, good.output
    assert f"evidence: 2 vouchers recomputed from {len(issued[1])} minute records in 2 record files, 0 failed, 0 not checked" in good.output.splitlines()
    assert padded.exit_code == 1
    assert any(line.startswith("evidence: 0 vouchers recomputed from ") and " in 2 record files, 2 failed" in line for line in padded.output.splitlines())
