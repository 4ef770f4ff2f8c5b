"""Key-rotation statements: the previous gateway key signs the next one (eddsa-jcs-2022).

A gateway signs its vouchers with one Ed25519 key at a time. When the key
is rotated, the previous key signs a statement naming the next key and
the first voucher sequence the next key signs (``from_seq``). A verifier
that trusts the gateway's first key follows the statements in order and
so knows, for every sequence number, which key must have signed it; the
hash chain of the vouchers runs on across the rotation unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .canonical import CanonicalizationError
from .keys import did_key, verification_method
from .proof import ProofCheck, sign_document, verify_document
from .voucher import MAX_SEQ, VC_CONTEXT

__all__ = (
    "ROTATION_SCHEMA",
    "ROTATION_TYPE",
    "RotationError",
    "RotationClaims",
    "build_rotation",
    "parse_rotation",
    "verify_rotation",
    "key_for_seq",
)

ROTATION_SCHEMA = "valuegate/keyrotation/v1"
ROTATION_TYPE = "KeyRotationStatement"


class RotationError(ValueError):
    """A key-rotation statement is malformed, badly signed, or breaks the sequence of keys."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RotationClaims(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """The ``credentialSubject`` of a key-rotation statement."""

    schema: str
    tenant: str
    site: str
    gateway: str
    previous_key: str
    next_key: str
    from_seq: int
    created: str


class _Document(msgspec.Struct, forbid_unknown_fields=True, rename={"context": "@context"}):
    context: list[str]
    type: list[str]
    id: str
    issuer: str
    validFrom: str
    credentialSubject: RotationClaims
    proof: dict[str, Any]


def build_rotation(
    previous: Ed25519PrivateKey,
    next_key: Ed25519PrivateKey,
    *,
    tenant: str,
    site: str,
    gateway: str,
    from_seq: int,
    created: str,
) -> dict[str, Any]:
    """Sign, with ``previous``, the statement that ``next_key`` signs vouchers from ``from_seq`` on."""
    if not 1 <= from_seq <= MAX_SEQ:
        raise RotationError("schema", f"from_seq {from_seq} is outside 1..{MAX_SEQ}")
    previous_method = verification_method(previous.public_key())
    next_method = verification_method(next_key.public_key())
    if previous_method == next_method:
        raise RotationError("same_key", "the next key equals the previous key; generate a new key")
    claims = RotationClaims(
        schema=ROTATION_SCHEMA,
        tenant=tenant,
        site=site,
        gateway=gateway,
        previous_key=previous_method,
        next_key=next_method,
        from_seq=from_seq,
        created=created,
    )
    document = {
        "@context": [VC_CONTEXT],
        "type": ["VerifiableCredential", ROTATION_TYPE],
        "id": f"urn:valuegate:key-rotation:{gateway}:{from_seq}",
        "issuer": did_key(previous.public_key()),
        "validFrom": created,
        "credentialSubject": msgspec.to_builtins(claims),
    }
    try:
        return sign_document(document, previous, created=created)
    except CanonicalizationError as exc:
        raise RotationError("schema", str(exc)) from exc


def parse_rotation(document: Any) -> RotationClaims:
    """Check the shape and schema version of a statement and return its claims (the proof is not checked)."""
    if not isinstance(document, dict):
        raise RotationError("schema", f"statement is a JSON {type(document).__name__}, expected an object")
    subject = document.get("credentialSubject")
    schema = subject.get("schema") if isinstance(subject, dict) else None
    if schema != ROTATION_SCHEMA:
        raise RotationError("schema_version", f"unknown key-rotation schema {schema!r}; this reader accepts {ROTATION_SCHEMA!r}")
    try:
        parsed = msgspec.convert(document, _Document)
    except msgspec.ValidationError as exc:
        raise RotationError("schema", f"statement does not match {ROTATION_SCHEMA}: {exc}") from exc
    if ROTATION_TYPE not in parsed.type or parsed.context[:1] != [VC_CONTEXT]:
        raise RotationError("schema", f"document is not a {ROTATION_TYPE} credential")
    if not 1 <= parsed.credentialSubject.from_seq <= MAX_SEQ:
        raise RotationError("schema", f"from_seq {parsed.credentialSubject.from_seq} is outside 1..{MAX_SEQ}")
    return parsed.credentialSubject


def verify_rotation(document: dict[str, Any]) -> ProofCheck:
    """Verify that the statement is signed by the key it names as ``previous_key``."""
    try:
        claims = parse_rotation(document)
    except RotationError as exc:
        return ProofCheck(False, str(exc))
    check = verify_document(document)
    if not check.ok:
        return check
    if check.verification_method != claims.previous_key:
        return ProofCheck(False, "the statement is not signed by the previous key it names", check.verification_method)
    if document.get("issuer") != claims.previous_key.partition("#")[0]:
        return ProofCheck(False, "issuer does not match the previous key", check.verification_method)
    return check


def key_for_seq(first_key: str, statements: Sequence[dict[str, Any]], seq: int) -> str:
    """Return the verification method that must have signed voucher ``seq``.

    ``first_key`` is the verification method the verifier trusts for the
    gateway from sequence 1; ``statements`` are its rotation statements in
    any order. Each one must verify, continue from the key in force before
    it, and start at a higher sequence than the one before; otherwise
    :class:`RotationError` names the first statement that breaks the chain.
    """
    chain = sorted(statements, key=lambda document: parse_rotation(document).from_seq)
    current = first_key
    last_from = 0
    for document in chain:
        claims = parse_rotation(document)
        check = verify_rotation(document)
        if not check.ok:
            raise RotationError("signature", f"rotation to {claims.next_key} from seq {claims.from_seq}: {check.reason}")
        if claims.previous_key != current:
            msg = f"rotation from seq {claims.from_seq} continues from {claims.previous_key}, but {current} was in force"
            raise RotationError("chain", msg)
        if claims.from_seq <= last_from:
            raise RotationError("chain", f"two rotations take effect at seq {claims.from_seq}")
        if claims.from_seq > seq:
            break
        current = claims.next_key
        last_from = claims.from_seq
    return current
