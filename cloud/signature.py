"""Signature check of incoming vouchers: a fast RFC 8785 form with msgspec and Ed25519 with libsodium.

The reference ``rfc8785`` encoder is pure Python and dominates the ingest
cost. So the check canonicalizes with msgspec (sorted keys, floats written
by the RFC 8785 number rules). It verifies Ed25519 with libsodium (PyNaCl),
which takes about half the time of OpenSSL here. Any document the fast path
does not accept goes through
:func:`valuegate.edge.protocol.voucher.verify_voucher`, whose verdict is
final, so the fast path can only save time, never accept more.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from valuegate.edge.protocol.keys import KeyFormatError, public_key_from_verification_method, raw_public_key
from valuegate.edge.protocol.proof import CRYPTOSUITE, PROOF_TYPE
from valuegate.edge.protocol.voucher import VoucherError, verify_voucher

__all__ = ("canonical_fast", "voucher_hash_fast", "prepare_voucher", "encode_sorted", "verify_signature")

_SAFE = 2**53
_B58 = {char: index for index, char in enumerate("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")}


def _b58decode(text: str) -> bytes:
    """Decode base58btc (Bitcoin alphabet); raises ValueError on other characters."""
    number = 0
    try:
        for char in text:
            number = number * 58 + _B58[char]
    except KeyError as exc:
        raise ValueError(f"invalid base58 character {exc.args[0]!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


class _NotFast(Exception):
    """The document contains a value that the fast canonical form does not cover."""


def _es_number(value: float) -> bytes:
    # ECMAScript Number::toString, which RFC 8785 uses: repr() gives the same shortest
    # digits, but ECMAScript writes plain decimals for exponents -6..20 and no zero padding.
    if value == 0:
        return b"0"
    text = repr(value)
    if "e" not in text:
        return (text[:-2] if text.endswith(".0") else text).encode()
    mantissa, _, exponent = text.partition("e")
    power = int(exponent)
    if -7 < power < 21:
        return format(Decimal(text), "f").encode()
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}".encode()


def _float(value: float) -> Any:
    if not math.isfinite(value):
        raise _NotFast
    if value.is_integer():
        return int(value) if -_SAFE < value < _SAFE else msgspec.Raw(_es_number(value))
    # Between 1e-4 and 1e16 neither repr() nor ECMAScript uses an exponent, and msgspec
    # writes the same shortest digits, so the float can stay as it is.
    if 1e-4 <= abs(value) < 1e16:
        return value
    return msgspec.Raw(_es_number(value))


def _leaf(item: Any) -> Any:
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return item
    if kind is int:
        if -_SAFE < item < _SAFE:
            return item
        raise _NotFast
    if kind is float:
        return _float(item)
    return _prepare(item)


def _prepare(value: Any) -> Any:
    # Floats become their RFC 8785 text; dict keys must be ASCII, where code point
    # order equals the UTF-16 order that RFC 8785 sorts by. Values come from JSON,
    # so only dict, list, str, int, float, bool and None occur.
    kind = type(value)
    if kind is dict:
        out = {}
        for key, item in value.items():
            if not key.isascii():
                raise _NotFast
            out[key] = _leaf(item)
        return out
    if kind is list:
        return [_leaf(item) for item in value]
    return _leaf(value)


def _prepared(document: Any) -> Any | None:
    try:
        return _prepare(document)
    except _NotFast:
        return None


# Numbers of a voucher that parse_voucher has accepted can only sit in these claim fields, so
# the fast path prepares them and walks only the proof generically. A field added to the claims
# and missing here makes the fast path fail on it and the reference decide, which is slower but
# still right. A test compares this table with the Claims schema.
_NUMBER_FIELDS: dict[str, tuple[str, ...]] = {
    "reporting": ("value", "planned_busy_min", "run_min", "unplanned_downtime_min", "availability", "effectiveness", "quality", "oee"),
    "baseline": ("value", "days"),
    "delta": ("point", "low", "high", "confidence", "resamples", "seed"),
    "sufficiency": ("covered_min",),
    "evidence": ("records",),
}
_MACHINE_NUMBER_FIELDS = ("ideal_cycle_time_s",)


def _with_numbers(section: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Return ``section`` with the named numbers in canonical form, copying it only if one of them changes."""
    changed = None
    for name in fields:
        value = section[name]
        kind = type(value)
        # Most numbers already encode canonically: a fraction without exponent, or a safe integer.
        if kind is float and 1e-4 <= abs(value) < 1e16 and not value.is_integer():
            continue
        if kind is int and -_SAFE < value < _SAFE:
            continue
        if changed is None:
            changed = dict(section)
        changed[name] = _leaf(value)
    return section if changed is None else changed


def prepare_voucher(document: dict[str, Any]) -> dict[str, Any] | None:
    """Prepare a voucher that ``parse_voucher`` accepted, touching only the fields that can hold numbers."""
    try:
        subject = dict(document["credentialSubject"])
        subject["seq"] = _leaf(subject["seq"])
        for part, fields in _NUMBER_FIELDS.items():
            subject[part] = _with_numbers(subject[part], fields)
        subject["machines"] = [_with_numbers(machine, _MACHINE_NUMBER_FIELDS) for machine in subject["machines"]]
        prepared = dict(document)
        prepared["proof"] = _prepare(document["proof"])
    except _NotFast:
        return None
    # The subject is most of the document, so it is encoded once for both the signed form and the chain hash.
    encoded = encode_sorted(subject)
    if encoded is None:
        return None
    prepared["credentialSubject"] = msgspec.Raw(encoded)
    return prepared


def encode_sorted(prepared: Any) -> bytes | None:
    try:
        return msgspec.json.encode(prepared, order="sorted")
    except (UnicodeEncodeError, msgspec.EncodeError):
        return None


def canonical_fast(document: Any) -> bytes:
    """Return the RFC 8785 form of ``document``; falls back to ``rfc8785`` where msgspec would differ."""
    prepared = _prepared(document)
    encoded = encode_sorted(prepared) if prepared is not None else None
    return encoded if encoded is not None else rfc8785.dumps(document)


def voucher_hash_fast(document: dict[str, Any]) -> str:
    """Return the chain hash (``sha256:`` over the canonical form, proof included), as ``voucher_hash`` does."""
    return "sha256:" + hashlib.sha256(canonical_fast(document)).hexdigest()


@lru_cache(maxsize=4096)
def _public_key(method: str) -> VerifyKey:
    key: Ed25519PublicKey = public_key_from_verification_method(method)
    return VerifyKey(raw_public_key(key))


def _fast_signature_ok(document: dict[str, Any], prepared: dict[str, Any] | None) -> bool:
    proof = document.get("proof")
    if prepared is None or not isinstance(proof, dict) or proof.get("type") != PROOF_TYPE or proof.get("cryptosuite") != CRYPTOSUITE:
        return False
    method, value = proof.get("verificationMethod"), proof.get("proofValue")
    if not isinstance(method, str) or not isinstance(value, str) or not value.startswith("z"):
        return False
    if method.partition("#")[0] != document.get("issuer"):
        return False
    config = {k: v for k, v in prepared["proof"].items() if k != "proofValue"}
    unsecured = {k: v for k, v in prepared.items() if k != "proof"}
    if "@context" in config and proof.get("@context") != document.get("@context"):
        return False
    config_bytes, unsecured_bytes = encode_sorted(config), encode_sorted(unsecured)
    if config_bytes is None or unsecured_bytes is None:
        return False
    try:
        key = _public_key(method)
        signature = _b58decode(value[1:])
        key.verify(hashlib.sha256(config_bytes).digest() + hashlib.sha256(unsecured_bytes).digest(), signature)
    except (BadSignatureError, KeyFormatError, ValueError, TypeError):
        return False
    return True


def verify_signature(document: dict[str, Any], prepared: dict[str, Any] | None = None) -> bool:
    """Raise ``VoucherError('signature_invalid')`` unless the eddsa-jcs-2022 proof verifies and names the issuer.

    Return True when the fast path verified it: then the fast canonical form of
    the document is its RFC 8785 form, because the signature covers exactly those bytes.
    """
    if _fast_signature_ok(document, prepared if prepared is not None else _prepared(document)):
        return True
    check = verify_voucher(document)
    if not check.ok:
        vid = document.get("credentialSubject", {}).get("voucher_id")
        raise VoucherError("signature_invalid", f"voucher proof does not verify: {check.reason}", voucher_id=vid)
    return False
