"""Fast RFC 8785 encoding and eddsa-jcs-2022 signing of vouchers, byte-identical to the protocol package.

``valuegate.edge.protocol`` canonicalizes with the pure-Python ``rfc8785``
package, which costs more than the Ed25519 signature itself. Vouchers hold
only strings, integers, booleans, null and floats rounded to six decimals,
and for those msgspec's sorted-key encoder gives the same bytes as RFC 8785
once each float is written the way ECMAScript writes numbers. Anything
outside that subset falls back to the protocol package: a float that would
need an exponent, an integer beyond 2**53, or a key at or above U+D800,
where UTF-16 and code point order differ. The tests compare both encoders
on seeded random documents.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import base58
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .protocol.canonical import canonicalize
from .protocol.keys import did_key, verification_method
from .protocol.proof import CRYPTOSUITE, PROOF_TYPE
from .protocol.voucher import MAX_SEQ, VC_CONTEXT, VOUCHER_TYPE, Claims, VoucherError, voucher_id

__all__ = ("canonical_bytes", "sign_voucher", "sign_and_hash", "chain_hash")

_ENCODER = msgspec.json.Encoder(order="sorted")
_SAFE_INTEGER = 2**53 - 1


class _Unsupported(Exception):
    pass


def _prepare(value: Any) -> Any:
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is dict:
        prepared = {}
        for key, item in value.items():
            if type(key) is not str or not (key.isascii() or max(map(ord, key)) < 0xD800):
                raise _Unsupported
            prepared[key] = _prepare(item)
        return prepared
    if kind is float:
        if not math.isfinite(value):
            raise _Unsupported
        if value.is_integer():
            if abs(value) > _SAFE_INTEGER:
                raise _Unsupported
            return int(value)  # ECMAScript writes 1200.0 as 1200 and -0.0 as 0
        text = repr(value)
        if "e" in text:
            raise _Unsupported
        return msgspec.Raw(text.encode("ascii"))
    if kind is int:
        if abs(value) > _SAFE_INTEGER:
            raise _Unsupported
        return value
    if kind is list or kind is tuple:
        return [_prepare(item) for item in value]
    raise _Unsupported


def canonical_bytes(document: Any) -> bytes:
    """Return the RFC 8785 canonical form of ``document``, the same bytes as :func:`protocol.canonical.canonicalize`."""
    try:
        prepared = _prepare(document)
    except _Unsupported:
        return canonicalize(document)
    return _ENCODER.encode(prepared)


def chain_hash(document: dict[str, Any]) -> str:
    """Return ``voucher_hash(document)``: SHA-256 over the canonical form, proof included."""
    return "sha256:" + hashlib.sha256(canonical_bytes(document)).hexdigest()


def sign_voucher(claims: Claims, private_key: Ed25519PrivateKey, *, method: str | None = None, issuer: str | None = None) -> dict[str, Any]:
    """Return the same signed document as :func:`protocol.voucher.build_voucher`, faster."""
    return sign_and_hash(claims, private_key, method=method, issuer=issuer)[0]


def sign_and_hash(
    claims: Claims, private_key: Ed25519PrivateKey, *, method: str | None = None, issuer: str | None = None
) -> tuple[dict[str, Any], str]:
    """Return the signed voucher and its chain hash, encoding the claims only once."""
    if not 1 <= claims.seq <= MAX_SEQ:
        raise VoucherError("schema", f"sequence {claims.seq} is outside 1..{MAX_SEQ}", voucher_id=claims.voucher_id)
    if claims.voucher_id != voucher_id(claims.gateway, claims.seq):
        raise VoucherError("schema", f"voucher_id {claims.voucher_id!r} must be '{claims.gateway}:{claims.seq}'", voucher_id=claims.voucher_id)
    public = private_key.public_key()
    document: dict[str, Any] = {
        "@context": [VC_CONTEXT],
        "type": ["VerifiableCredential", VOUCHER_TYPE],
        "id": f"urn:valuegate:voucher:{claims.voucher_id}",
        "issuer": issuer or did_key(public),
        "validFrom": claims.issued_at,
        "credentialSubject": msgspec.to_builtins(claims),
    }
    proof: dict[str, Any] = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": claims.issued_at,
        "verificationMethod": method or verification_method(public),
        "proofPurpose": "assertionMethod",
        "@context": [VC_CONTEXT],
    }
    try:
        prepared = _prepare(document)
        prepared_proof = _prepare(proof)
    except _Unsupported:
        document["proof"] = {**proof, "proofValue": _proof_value(private_key, canonicalize(proof), canonicalize(document))}
        return document, "sha256:" + hashlib.sha256(canonicalize(document)).hexdigest()

    proof["proofValue"] = _proof_value(private_key, _ENCODER.encode(prepared_proof), _ENCODER.encode(prepared))
    document["proof"] = proof
    prepared["proof"] = {**prepared_proof, "proofValue": proof["proofValue"]}
    return document, "sha256:" + hashlib.sha256(_ENCODER.encode(prepared)).hexdigest()


def _proof_value(private_key: Ed25519PrivateKey, proof_bytes: bytes, document_bytes: bytes) -> str:
    signed = hashlib.sha256(proof_bytes).digest() + hashlib.sha256(document_bytes).digest()
    return "z" + base58.b58encode(private_key.sign(signed)).decode("ascii")
