"""Key rotations in auditor bundles: a rotation before the first voucher verifies in both verifiers, a broken chain of keys fails in both."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims
from tests.verify.bundles import oee_contract
from valuegate.cloud.bundle import GatewayKey, write_bundle
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keyrotation import build_rotation
from valuegate.edge.protocol.keys import public_key_multibase
from valuegate.verify import verify_bundle

FIRST_VALID = "2024-01-01T00:00:00Z"
# Vouchers are issued at the end of each plant day from 6 May. Each rotation is made before the voucher it starts at.
ROTATED_AT = {1: "2024-05-01T09:00:00Z", 5: "2024-05-09T12:00:00Z"}


def signed(signers: dict[int, Ed25519PrivateKey], days: int) -> list[dict[str, Any]]:
    """Sign vouchers 1..days, one per plant day from 6 May, each with the key ``signers`` gives for the highest sequence not above it."""
    documents: list[dict[str, Any]] = []
    prev = None
    for seq in range(1, days + 1):
        key = signers[max(first for first in signers if first <= seq)]
        claims = make_claims(seq=seq, prev=prev, plant_date=dt.date(2024, 5, 5) + dt.timedelta(days=seq))
        documents.append(v.build_voucher(claims, key))
        prev = v.voucher_hash(documents[-1])
    return documents


def multibase(key: Ed25519PrivateKey) -> str:
    return public_key_multibase(key.public_key())


def statement(previous: Ed25519PrivateKey, following: Ed25519PrivateKey, from_seq: int, created: str | None = None) -> dict[str, Any]:
    return build_rotation(previous, following, tenant="acme", site="plant-1", gateway="gw-1", from_seq=from_seq, created=created or ROTATED_AT[from_seq])


def keys_bundle(folder: Path, keys: list[GatewayKey], vouchers: list[dict[str, Any]]) -> Path:
    """Write the bundle of contract C-1 with ``keys``, ``vouchers`` and no invoice, and return its unpacked folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_bundle(folder / "bundle.zip", contract=msgspec.to_builtins(oee_contract()), vouchers=vouchers, keys=keys,
                        documents=[], created_at="2024-08-02T00:00:00Z")
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder / "unpacked")
    return folder / "unpacked"


def node(script: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(script), str(folder)], capture_output=True, text=True, timeout=60)


def failed_keys(folder: Path) -> dict[str, list[str]]:
    return {verdict.subject: verdict.reasons for verdict in verify_bundle(folder).keys if not verdict.ok}


def failed_vouchers(folder: Path) -> dict[str, list[str]]:
    return {verdict.subject: verdict.reasons for verdict in verify_bundle(folder).vouchers if not verdict.ok}


@pytest.mark.postgres
async def test_cloud_bundle_rotated_at_sequence_one(database, tmp_path, node_peers):
    """Keys made and rotated by the gateway's key folder, registered and used by the cloud, exported by the renewal package's bundle."""
    from tests.settlement.seed import connect, ingest, seed
    from valuegate.cloud import store
    from valuegate.cloud.renewal.service import contract_bundle
    from valuegate.edge.keys import create_key, load_signing_key, rotate_key

    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    first = create_key(folder).private_key
    await seed(database, oee_contract(), first)
    # Commissioning: the key is replaced before the gateway issued any voucher, so the rotation starts at sequence 1.
    at_one = rotate_key(folder, tenant="acme", site="plant-1", gateway="gw-1", from_seq=1, created=ROTATED_AT[1])
    second = load_signing_key(folder).private_key
    async with await connect(database) as conn:
        await store.register_rotation(conn, "acme", "gw-1", at_one)
    early = signed({1: second}, 4)
    await ingest(database, early)
    at_five = rotate_key(folder, tenant="acme", site="plant-1", gateway="gw-1", from_seq=5, created=ROTATED_AT[5])
    third = load_signing_key(folder).private_key
    async with await connect(database) as conn:
        await store.register_rotation(conn, "acme", "gw-1", at_five)
    vouchers = signed({1: second, 5: third}, 6)
    assert vouchers[:4] == early
    await ingest(database, vouchers[4:])
    async with await connect(database) as conn:
        archive = await contract_bundle(conn, "acme", "C-1", created_at=dt.datetime(2024, 8, 2, tzinfo=dt.UTC))
    (tmp_path / "bundle.zip").write_bytes(archive)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(io.BytesIO(archive)).extractall(unpacked)

    keys = json.loads((unpacked / "keys.json").read_text(encoding="utf-8"))
    ranges = [(k["publicKeyMultibase"], k["fromSeq"], k["untilSeq"], k["rotation"] is not None) for k in keys]
    assert ranges == [(multibase(first), None, 0, False), (multibase(second), 1, 4, True), (multibase(third), 5, None, True)]

    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.as_dict()
    assert [verdict.subject for verdict in report.vouchers] == [f"gw-1:{seq}" for seq in range(1, 7)]
    assert [(k["id"], k["compare_out_of_band"]) for k in report.gateways[0]["keys"]] == [
        (f"did:key:{multibase(first)}", True), (f"did:key:{multibase(second)}", False), (f"did:key:{multibase(third)}", False),
    ]
    first_notes = next(verdict.notes for verdict in report.keys if verdict.subject == f"gw-1 key did:key:{multibase(first)}")
    assert "signs no sequence: replaced from sequence 1" in first_notes[0]

    result = node(node_peers / "verify_bundle.js", unpacked)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"key gw-1 next did:key:{multibase(second)} from sequence 1: rotation statement verified" in lines
    assert f"key gw-1 next did:key:{multibase(third)} from sequence 5: rotation statement verified" in lines
    assert lines[-1] == "checked 6 vouchers and 0 documents, 0 failed"


def three_keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey, Ed25519PrivateKey]:
    return Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


def records(first: Ed25519PrivateKey, rotations: list[tuple[Ed25519PrivateKey, dict[str, Any]]], first_until: int | None) -> list[GatewayKey]:
    """The keys.json records of a gateway: the first key, then each key a rotation statement introduced, as the cloud registers them."""
    keys = [GatewayKey("gw-1", multibase(first), FIRST_VALID, None, None, first_until)]
    for index, (key, document) in enumerate(rotations):
        from_seq = document["credentialSubject"]["from_seq"]
        until = rotations[index + 1][1]["credentialSubject"]["from_seq"] - 1 if index + 1 < len(rotations) else None
        keys.append(GatewayKey("gw-1", multibase(key), document["credentialSubject"]["created"], None, from_seq, until, document))
    return keys


def test_first_key_replaced_before_signing(tmp_path):
    first, second, third = three_keys()
    keys = records(first, [(second, statement(first, second, 1)), (third, statement(second, third, 5))], 0)
    folder = keys_bundle(tmp_path, keys, signed({1: second, 5: third}, 6))
    report = verify_bundle(folder)
    assert report.ok, report.as_dict()


def test_replaced_first_key_signing_fails(tmp_path):
    first, second, third = three_keys()
    keys = records(first, [(second, statement(first, second, 1)), (third, statement(second, third, 5))], 0)
    folder = keys_bundle(tmp_path, keys, signed({1: first, 2: second, 5: third}, 6))
    assert failed_vouchers(folder) == {"gw-1:1": [f"signed by {multibase(first)}, but the rotation statements give key {multibase(second)} for sequence 1"]}


def test_rotation_by_replaced_key_fails(tmp_path):
    """The first key was replaced at sequence 1, so a statement it signs for sequence 5 does not continue the chain."""
    first, second, third = three_keys()
    keys = records(first, [(second, statement(first, second, 1)), (third, statement(first, third, 5))], 0)
    folder = keys_bundle(tmp_path, keys, signed({1: second, 5: third}, 6))
    assert failed_keys(folder) == {
        f"gw-1 key did:key:{multibase(third)}": [f"rotation from sequence 5 continues from {multibase(first)}, but {multibase(second)} was in force"],
    }
    # Without a schedule of keys, each voucher is only checked against the bundle's keys and their windows.
    assert failed_vouchers(folder) == {}


def test_two_rotations_at_sequence_one_fail(tmp_path):
    """The gateway rejects a second rotation before its next voucher, because the key in force at that sequence would be ambiguous."""
    first, second, third = three_keys()
    keys = records(first, [(second, statement(first, second, 1)), (third, statement(second, third, 1, "2024-05-02T09:00:00Z"))], 0)
    folder = keys_bundle(tmp_path, keys, signed({1: third}, 3))
    assert failed_keys(folder) == {f"gw-1 key did:key:{multibase(third)}": ["two rotations take effect at sequence 1"]}


def test_rotation_by_outside_key_fails(tmp_path):
    first, second, _ = three_keys()
    outsider = Ed25519PrivateKey.generate()
    keys = records(first, [(second, statement(outsider, second, 1))], 0)
    folder = keys_bundle(tmp_path, keys, signed({1: second}, 3))
    assert failed_keys(folder) == {
        f"gw-1 key did:key:{multibase(second)}": [f"the previous key {multibase(outsider)} that signed the rotation is not a key of gateway gw-1 in keys.json"],
    }


def test_until_seq_mismatch_fails(tmp_path):
    """keys.json is not signed, so a first key whose untilSeq reaches past the rotation that replaced it fails."""
    first, second, _ = three_keys()
    keys = records(first, [(second, statement(first, second, 1))], 3)
    folder = keys_bundle(tmp_path, keys, signed({1: second}, 3))
    assert failed_keys(folder) == {
        f"gw-1 key did:key:{multibase(first)}": ["untilSeq 3 differs from 0, the sequence before the rotation statement's from_seq 1"],
    }


def test_from_seq_mismatch_fails(tmp_path):
    first, second, _ = three_keys()
    keys = records(first, [(second, statement(first, second, 1))], 0)
    keys[1] = dataclasses.replace(keys[1], from_seq=2)
    folder = keys_bundle(tmp_path, keys, signed({1: second}, 3))
    assert failed_keys(folder) == {f"gw-1 key did:key:{multibase(second)}": ["fromSeq 2 differs from the statement's from_seq 1"]}


@pytest.mark.peer
def test_node_verifier_rotations(tmp_path, node_peers):
    script = node_peers / "verify_bundle.js"
    first, second, third = three_keys()
    good = records(first, [(second, statement(first, second, 1)), (third, statement(second, third, 5))], 0)
    result = node(script, keys_bundle(tmp_path / "good", good, signed({1: second, 5: third}, 6)))
    assert result.returncode == 0, result.stdout + result.stderr

    result = node(script, keys_bundle(tmp_path / "first-signs", good, signed({1: first, 2: second, 5: third}, 6)))
    assert result.returncode == 1
    assert f"FAIL gw-1:1: signed by {multibase(first)}, but the rotation statements give key {multibase(second)} for sequence 1" in result.stdout

    stale = records(first, [(second, statement(first, second, 1)), (third, statement(first, third, 5))], 0)
    result = node(script, keys_bundle(tmp_path / "stale", stale, signed({1: second, 5: third}, 6)))
    assert result.returncode == 1
    assert f"FAIL key gw-1: rotation from sequence 5 continues from {multibase(first)}, but {multibase(second)} was in force" in result.stdout

    twice = records(first, [(second, statement(first, second, 1)), (third, statement(second, third, 1, "2024-05-02T09:00:00Z"))], 0)
    result = node(script, keys_bundle(tmp_path / "twice", twice, signed({1: third}, 3)))
    assert result.returncode == 1
    assert "FAIL key gw-1: two rotations take effect at sequence 1" in result.stdout

    widened = records(first, [(second, statement(first, second, 1))], 3)
    result = node(script, keys_bundle(tmp_path / "widened", widened, signed({1: second}, 3)))
    assert result.returncode == 1
    assert f"FAIL key gw-1 did:key:{multibase(first)}: untilSeq 3 differs from 0, the sequence before the rotation statement's from_seq 1" in result.stdout

    shifted = records(first, [(second, statement(first, second, 1))], 0)
    shifted[1] = dataclasses.replace(shifted[1], from_seq=2)
    result = node(script, keys_bundle(tmp_path / "shifted", shifted, signed({1: second}, 3)))
    assert result.returncode == 1
    assert f"FAIL key gw-1 did:key:{multibase(second)}: fromSeq 2 differs from the statement's from_seq 1" in result.stdout


def test_replacement_key_labelled(tmp_path):
    """A key registered after a lost one, with no rotation statement: labelled a replacement from its first sequence, ending the key before it."""
    from tests.verify.test_verify_bundle import run_cli

    first, second, third = three_keys()
    keys = records(first, [(second, statement(first, second, 3, "2024-05-07T12:00:00Z"))], 2)
    keys.append(GatewayKey("gw-1", multibase(third), "2024-05-10T00:00:00Z", None, None, None))
    folder = keys_bundle(tmp_path, keys, signed({1: first, 3: second, 5: third}, 6))
    report = verify_bundle(folder)
    assert report.ok, report.as_dict()
    summary = {key["publicKeyMultibase"]: key for key in report.gateways[0]["keys"]}
    assert summary[multibase(third)]["introduced_by"] == "replacement"
    assert summary[multibase(third)]["compare_out_of_band"] is True
    assert (summary[multibase(third)]["firstSeq"], summary[multibase(third)]["lastSeq"]) == (5, None)
    assert (summary[multibase(second)]["firstSeq"], summary[multibase(second)]["lastSeq"]) == (3, 4)
    assert (summary[multibase(first)]["firstSeq"], summary[multibase(first)]["lastSeq"]) == (1, 2)
    notes = {verdict.subject: verdict.notes for verdict in report.keys}
    assert notes[f"gw-1 key did:key:{multibase(third)}"][0].startswith("replacement key of gw-1, registered without a rotation statement after a lost key, from sequence 5")
    assert "sequences 3..4" in notes[f"gw-1 key did:key:{multibase(second)}"][0]
    assert "replaced from sequence 5 by a key registered without a rotation statement" in notes[f"gw-1 key did:key:{multibase(second)}"]

    result = run_cli(str(folder))
    assert result.exit_code == 0, result.output
    assert f"gateway gw-1 replacement key: did:key:{multibase(third)} " in result.stdout
    assert "valid 2024-05-10T00:00:00Z..open, sequences 5..; registered without a rotation statement, after a lost key)" in result.stdout
    assert f"gateway gw-1 next key: did:key:{multibase(second)} (from sequence 3, until sequence 4;" in result.stdout
    assert result.stdout.count(" first key: ") == 1
