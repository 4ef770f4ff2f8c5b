"""The gateway's Ed25519 signing key on disk: creation, permission checks, rotation.

The key folder contains ``gateway.key`` (PKCS#8 PEM, mode 0600),
``gateway.key.json`` (the key's did:key and creation time, which the cloud
takes as the start of the key's validity) and ``rotations.json``, the
signed key-rotation statements in order. A rotation
first writes the next key as ``gateway.key.next`` and appends its statement,
then renames the file over ``gateway.key``; :func:`load_signing_key` finishes
a rotation that a crash interrupted between those steps.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .protocol.keyrotation import RotationError, build_rotation, parse_rotation
from .protocol.keys import public_key_multibase, verification_method

__all__ = (
    "KeyFileError",
    "KeyFiles",
    "SigningKey",
    "create_key",
    "load_signing_key",
    "rotate_key",
    "read_rotations",
    "export_public",
    "key_created",
)

KEY_FILE = "gateway.key"
NEXT_FILE = "gateway.key.next"
CREATED_FILE = "gateway.key.json"
ROTATIONS_FILE = "rotations.json"


class KeyFileError(RuntimeError):
    """The key file is missing, unreadable, or readable by other users; ``path`` names it."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class KeyFiles:
    """Paths of the key folder's files."""

    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / KEY_FILE

    @property
    def next(self) -> Path:
        return self.folder / NEXT_FILE

    @property
    def rotations(self) -> Path:
        return self.folder / ROTATIONS_FILE

    @property
    def created(self) -> Path:
        return self.folder / CREATED_FILE


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key and the did:key verification method that names it in proofs."""

    private_key: Ed25519PrivateKey
    verification_method: str

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> SigningKey:
        return cls(private_key, verification_method(private_key.public_key()))


def _pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_private(path: Path, private_key: Ed25519PrivateKey, *, replace: bool) -> None:
    """Write ``private_key`` to ``path`` with mode 0600 from the first byte, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; use `valuegate keys rotate` to replace a key", path=path) from exc
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(_pem(private_key))
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read_private(path: Path) -> Ed25519PrivateKey:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        msg = f"key file {path} not found; create one with `valuegate keys new` (with --replace-lost after an earlier rotation)"
        raise KeyFileError(msg, path=path) from exc
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        msg = f"key file {path} has mode {mode:04o}, so other users can read it; run `chmod 600 {path}` and start again"
        raise KeyFileError(msg, path=path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}; check that the agent's user may read it", path=path) from exc
    except (ValueError, TypeError) as exc:
        # The library's message points at its FAQ, so the message names the operator's next step instead.
        msg = (
            f"key file {path} is not a readable PEM private key ({type(exc).__name__}); restore it from your backup, "
            "or move it aside and create a new key with `valuegate keys new --replace-lost`, then register its public key with the cloud"
        )
        raise KeyFileError(msg, path=path) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} contains a {type(key).__name__}, not an Ed25519 key; create one with `valuegate keys new`", path=path)
    return key


def read_rotations(folder: Path) -> list[dict[str, Any]]:
    """Return the signed rotation statements of the key folder, oldest first."""
    path = KeyFiles(folder).rotations
    if not path.exists():
        return []
    try:
        statements = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}", path=path) from exc
    if not isinstance(statements, list):
        raise KeyFileError(f"{path} must hold a JSON list of rotation statements", path=path)
    return statements


def _write_rotations(folder: Path, statements: list[dict[str, Any]]) -> None:
    path = KeyFiles(folder).rotations
    staging = path.with_suffix(".tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(statements, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    _fsync_folder(folder)


def _utc_now_s() -> str:
    # Whole seconds, cut down as the agent cuts issued_at, so that no voucher of the key is stamped before it.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_created(folder: Path, method: str, created: str) -> None:
    path = KeyFiles(folder).created
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps({"verification_method": method, "created": created}), encoding="utf-8")
    os.replace(staging, path)


def key_created(folder: Path, method: str) -> str | None:
    """Return when the key ``method`` was created, from ``gateway.key.json`` or its rotation statement; None when neither records it."""
    try:
        record = json.loads(KeyFiles(folder).created.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("verification_method") == method and isinstance(record.get("created"), str):
        return record["created"]
    for statement in reversed(read_rotations(folder)):
        try:
            claims = parse_rotation(statement)
        except RotationError:
            continue
        if claims.next_key == method:
            return claims.created
    return None


def create_key(folder: Path, *, replace_lost: bool = False) -> SigningKey:
    """Create the gateway's first key; raises :class:`KeyFileError` when one exists.

    With ``replace_lost``, a gateway whose key file is gone gets a new key,
    also after earlier rotations. The operator moved the old key aside
    because it was lost, damaged or compromised. No old key can sign for the
    new one, so the rotation statements are kept under a dated name. The
    cloud accepts the new key only after an administrator registers it.
    """
    files = KeyFiles(folder)
    rotated = files.rotations.exists() and read_rotations(folder)
    if rotated and not replace_lost:
        raise KeyFileError(
            f"{files.rotations} already records rotations; use `valuegate keys rotate`, or, when the key is lost, "
            "`valuegate keys new --replace-lost`",
            path=files.rotations,
        )
    if replace_lost and files.key.exists():
        raise KeyFileError(
            f"key file {files.key} exists; use `valuegate keys rotate` to replace a working key, or move the file aside "
            "first when it is damaged or compromised",
            path=files.key,
        )
    if rotated:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        os.replace(files.rotations, files.folder / f"rotations.replaced-{stamp}.json")
    private_key = Ed25519PrivateKey.generate()
    created = _utc_now_s()
    _write_private(files.key, private_key, replace=False)
    key = SigningKey.of(private_key)
    _write_created(folder, key.verification_method, created)
    _fsync_folder(folder)
    return key


def check_key_file(folder: Path) -> bool:
    """Return whether the folder has a key file, raising :class:`KeyFileError` when it cannot be used; changes nothing."""
    files = KeyFiles(folder)
    if not files.key.exists():
        return False
    _read_private(files.key)
    return True


def load_signing_key(folder: Path) -> SigningKey:
    """Load the current key, finishing a rotation that stopped between its steps."""
    files = KeyFiles(folder)
    if files.next.exists():
        pending = _read_private(files.next)
        statements = read_rotations(folder)
        announced = parse_rotation(statements[-1]).next_key if statements else None
        if announced == verification_method(pending.public_key()):
            os.replace(files.next, files.key)
            _fsync_folder(folder)
        else:
            # The statement was never written, so no voucher can name this key.
            files.next.unlink()
    return SigningKey.of(_read_private(files.key))


def rotate_key(folder: Path, *, tenant: str, site: str, gateway: str, from_seq: int, created: str) -> dict[str, Any]:
    """Replace the key with a new one announced by a statement the old key signs; return the statement."""
    files = KeyFiles(folder)
    previous = load_signing_key(folder)
    next_key = Ed25519PrivateKey.generate()
    statement = build_rotation(previous.private_key, next_key, tenant=tenant, site=site, gateway=gateway, from_seq=from_seq, created=created)

    statements = read_rotations(folder)
    if statements and parse_rotation(statements[-1]).from_seq >= from_seq:
        last = parse_rotation(statements[-1]).from_seq
        raise KeyFileError(f"the last rotation already takes effect at seq {last}; issue a voucher before rotating again", path=files.rotations)
    _write_private(files.next, next_key, replace=True)
    _write_rotations(folder, [*statements, statement])
    os.replace(files.next, files.key)
    _write_created(folder, verification_method(next_key.public_key()), created)
    _fsync_folder(folder)
    return statement


def export_public(folder: Path) -> dict[str, Any]:
    """Return the public part of the key folder: the current key, its did:key, its creation time and the rotation statements.

    ``created`` is None for a key made before ``keys new`` recorded it.
    """
    key = load_signing_key(folder)
    public = key.private_key.public_key()
    return {
        "verification_method": key.verification_method,
        "public_key_multibase": public_key_multibase(public),
        "created": key_created(folder, key.verification_method),
        "rotations": read_rotations(folder),
    }
