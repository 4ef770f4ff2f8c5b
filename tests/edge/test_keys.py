"""Gateway key files: creation mode, permission refusal, rotation statements and the key in force per sequence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.edge import keys
from valuegate.edge.protocol.keyrotation import RotationError, build_rotation, key_for_seq, verify_rotation
from valuegate.edge.protocol.keys import public_key_from_verification_method, verification_method


def test_new_key_has_mode_0600(tmp_path: Path) -> None:
    key = keys.create_key(tmp_path / "keys")
    mode = (tmp_path / "keys" / "gateway.key").stat().st_mode & 0o777
    assert mode == 0o600
    assert key.verification_method.startswith("did:key:z6Mk")


def test_new_key_refuses_to_overwrite(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    with pytest.raises(keys.KeyFileError, match="already exists"):
        keys.create_key(tmp_path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    keys.create_key(tmp_path)
    path = tmp_path / "gateway.key"
    os.chmod(path, mode)
    with pytest.raises(keys.KeyFileError) as caught:
        keys.load_signing_key(tmp_path)
    assert f"{mode:04o}" in str(caught.value)
    assert f"chmod 600 {path}" in str(caught.value)
    assert caught.value.path == path


def test_missing_key_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(keys.KeyFileError, match="valuegate keys new"):
        keys.load_signing_key(tmp_path)


def test_corrupt_key_names_the_way_out(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    path = tmp_path / "gateway.key"
    path.write_bytes(path.read_bytes()[:40])  # cut off, as a full disk or a bad copy leaves it
    with pytest.raises(keys.KeyFileError) as caught:
        keys.load_signing_key(tmp_path)
    assert str(caught.value).startswith(f"key file {path} is not a readable PEM private key (ValueError); restore it from your backup")
    assert "valuegate keys new" in str(caught.value)
    assert "cryptography.io" not in str(caught.value)


def test_rotation_chain_names_key_per_sequence(tmp_path: Path) -> None:
    first = keys.create_key(tmp_path)
    one = keys.rotate_key(tmp_path, tenant="t", site="s", gateway="g", from_seq=11, created="2026-01-01T00:00:00Z")
    second = keys.load_signing_key(tmp_path)
    two = keys.rotate_key(tmp_path, tenant="t", site="s", gateway="g", from_seq=25, created="2026-02-01T00:00:00Z")
    third = keys.load_signing_key(tmp_path)

    assert len({first.verification_method, second.verification_method, third.verification_method}) == 3
    assert verify_rotation(one).ok
    assert verify_rotation(two).ok
    statements = keys.read_rotations(tmp_path)
    assert statements == [one, two]
    assert key_for_seq(first.verification_method, statements, 1) == first.verification_method
    assert key_for_seq(first.verification_method, statements, 10) == first.verification_method
    assert key_for_seq(first.verification_method, statements, 11) == second.verification_method
    assert key_for_seq(first.verification_method, statements, 24) == second.verification_method
    assert key_for_seq(first.verification_method, statements, 25) == third.verification_method
    assert (tmp_path / "gateway.key").stat().st_mode & 0o777 == 0o600


def test_rotation_signed_by_wrong_key_fails(tmp_path: Path) -> None:
    first = keys.create_key(tmp_path)
    stranger = Ed25519PrivateKey.generate()
    forged = build_rotation(stranger, Ed25519PrivateKey.generate(), tenant="t", site="s", gateway="g", from_seq=5, created="2026-01-01T00:00:00Z")
    assert verify_rotation(forged).ok  # well-formed and signed by the key it names...
    with pytest.raises(RotationError, match="continues from"):
        key_for_seq(first.verification_method, [forged], 6)  # ...but not by the key in force


def test_rotation_tampered_next_key_fails(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    statement = keys.rotate_key(tmp_path, tenant="t", site="s", gateway="g", from_seq=3, created="2026-01-01T00:00:00Z")
    statement["credentialSubject"]["next_key"] = verification_method(Ed25519PrivateKey.generate().public_key())
    check = verify_rotation(statement)
    assert not check.ok
    assert check.reason == "signature invalid"


def test_interrupted_rotation_is_finished_on_load(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    statement = keys.rotate_key(tmp_path, tenant="t", site="s", gateway="g", from_seq=2, created="2026-01-01T00:00:00Z")
    current = (tmp_path / "gateway.key").read_bytes()
    # Put the files back as a crash between appending the statement and the rename leaves them.
    os.rename(tmp_path / "gateway.key", tmp_path / "gateway.key.next")
    (tmp_path / "gateway.key").write_bytes(b"stale")
    os.chmod(tmp_path / "gateway.key", 0o600)
    loaded = keys.load_signing_key(tmp_path)
    assert loaded.verification_method == statement["credentialSubject"]["next_key"]
    assert (tmp_path / "gateway.key").read_bytes() == current
    assert not (tmp_path / "gateway.key.next").exists()


def test_unannounced_next_key_is_discarded(tmp_path: Path) -> None:
    first = keys.create_key(tmp_path)
    keys._write_private(tmp_path / "gateway.key.next", Ed25519PrivateKey.generate(), replace=True)
    assert keys.load_signing_key(tmp_path).verification_method == first.verification_method
    assert not (tmp_path / "gateway.key.next").exists()


def test_export_public_holds_no_private_key(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    exported = keys.export_public(tmp_path)
    public = public_key_from_verification_method(exported["verification_method"])
    assert exported["public_key_multibase"] in exported["verification_method"]
    assert public is not None
    assert "PRIVATE" not in repr(exported)


def test_creation_time_recorded(tmp_path: Path) -> None:
    first = keys.create_key(tmp_path)
    created = keys.export_public(tmp_path)["created"]
    assert created == keys.key_created(tmp_path, first.verification_method)
    assert created is not None
    keys.rotate_key(tmp_path, tenant="t", site="s", gateway="g", from_seq=3, created="2026-02-01T00:00:00Z")
    second = keys.load_signing_key(tmp_path)
    assert keys.export_public(tmp_path)["created"] == "2026-02-01T00:00:00Z"
    # The file names one key only, so the earlier key's time is gone.
    assert keys.key_created(tmp_path, first.verification_method) is None

    # Without gateway.key.json, as in a folder made before it existed, the rotation statement still dates the key.
    (tmp_path / "gateway.key.json").unlink()
    assert keys.key_created(tmp_path, second.verification_method) == "2026-02-01T00:00:00Z"


def test_creation_time_unknown_is_none(tmp_path: Path) -> None:
    keys.create_key(tmp_path)
    (tmp_path / "gateway.key.json").write_text("{not json", encoding="utf-8")
    assert keys.export_public(tmp_path)["created"] is None


def test_signer_loads_replacement_without_rotations(tmp_path: Path) -> None:
    """`keys new --replace-lost` on a gateway that never rotated writes only a new key file; the running signer must use it."""
    from valuegate.edge.issuer import VoucherSigner

    folder = tmp_path / "keys"
    first = keys.create_key(folder)
    signer = VoucherSigner(folder, tenant="acme", site="s", gateway="gw-1")
    signer.before_sign(1)
    assert signer.key.verification_method == first.verification_method

    os.replace(folder / "gateway.key", tmp_path / "lost.key")
    signer.before_sign(2)
    assert signer.key.verification_method == first.verification_method
    assert signer.key_changes == 0

    replacement = keys.create_key(folder, replace_lost=True)
    signer.before_sign(3)
    assert signer.key.verification_method == replacement.verification_method != first.verification_method
    assert signer.key_changes == 1
