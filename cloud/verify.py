"""Checks a voucher passes before the chain: schema, timestamps, topic, gateway registry, key and signature.

The signature check canonicalizes with msgspec (sorted keys, floats written by
the RFC 8785 number rules) because the reference ``rfc8785`` encoder is pure
Python and dominates the ingest cost, and it verifies Ed25519 with libsodium
(PyNaCl), which takes about half the time of OpenSSL here. Any document the fast path does not
accept goes through :func:`valuegate.edge.protocol.voucher.verify_voucher`,
whose verdict is final, so the fast path can only save time, never accept
more.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
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
from valuegate.edge.protocol.voucher import Claims, VoucherError, parse_voucher, verify_voucher, voucher_hash

__all__ = (
    "Topic",
    "GatewayInfo",
    "KeyInfo",
    "CheckedVoucher",
    "PendingVoucher",
    "parse_topic",
    "canonical_fast",
    "voucher_hash_fast",
    "verify_signature",
    "parse_instant",
    "precheck_voucher",
    "check_voucher",
)


@dataclass(frozen=True, slots=True)
class Topic:
    """The parts of ``valuegate/v1/{tenant}/{site}/{gateway}/{kind}``."""

    tenant: str
    site: str
    gateway: str
    kind: str

    def reply(self, kind: str) -> str:
        return f"valuegate/v1/{self.tenant}/{self.site}/{self.gateway}/{kind}"


def parse_topic(topic: str) -> Topic | None:
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "valuegate" or parts[1] != "v1" or not all(parts[2:]):
        return None
    return Topic(parts[2], parts[3], parts[4], parts[5])


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A registered gateway key as the checks need it."""

    key_id: int
    public_key: str
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    revoked_at: dt.datetime | None
    from_seq: int | None = None
    until_seq: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """A registered gateway: its tenant, site, the site's time zone and its keys."""

    gateway_id: str
    tenant_id: str
    site_id: str
    time_zone: str
    keys: tuple[KeyInfo, ...]


@dataclass(frozen=True, slots=True)
class PendingVoucher:
    """A voucher that passed every check short of the signature, whose :meth:`check` verifies the proof and computes the hash.

    Storage calls ``check`` one voucher at a time, so the worker verifies the
    next voucher while the database writes the rows already sent.
    """

    document: dict[str, Any]
    claims: Claims
    key_id: int
    period_start: dt.datetime
    period_end: dt.datetime
    issued_at: dt.datetime
    payload: bytes

    def check(self) -> CheckedVoucher:
        """Verify the proof and compute the chain hash. Raise ``VoucherError('signature_invalid')`` if the proof fails."""
        document = self.document
        prepared = _prepared_voucher(document)
        fast = verify_signature(document, prepared)
        encoded = _encode(prepared) if fast else None
        digest = "sha256:" + hashlib.sha256(encoded).hexdigest() if encoded is not None else voucher_hash(document)
        return CheckedVoucher(document, self.claims, self.key_id, self.period_start, self.period_end, self.issued_at, self.payload, digest)


@dataclass(frozen=True, slots=True)
class CheckedVoucher(PendingVoucher):
    """A voucher that passed every check short of the chain, with its chain hash."""

    hash: str

    def check(self) -> CheckedVoucher:
        """Return the voucher itself: storage takes checked and pending vouchers alike."""
        return self


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
# still right; a test compares this table with the Claims schema.
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


def _prepared_voucher(document: dict[str, Any]) -> dict[str, Any] | None:
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
    encoded = _encode(subject)
    if encoded is None:
        return None
    prepared["credentialSubject"] = msgspec.Raw(encoded)
    return prepared


def _encode(prepared: Any) -> bytes | None:
    try:
        return msgspec.json.encode(prepared, order="sorted")
    except (UnicodeEncodeError, msgspec.EncodeError):
        return None


def canonical_fast(document: Any) -> bytes:
    """Return the RFC 8785 form of ``document``; falls back to ``rfc8785`` where msgspec would differ."""
    prepared = _prepared(document)
    encoded = _encode(prepared) if prepared is not None else None
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
    config_bytes, unsecured_bytes = _encode(config), _encode(unsecured)
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


def parse_instant(value: Any, field: str, voucher_id: str | None = None) -> dt.datetime:
    """Parse an RFC 3339 timestamp that must carry a zone; a naive one is rejected."""
    if not isinstance(value, str):
        raise VoucherError("schema", f"{field} must be an RFC 3339 timestamp string, got {value!r}", voucher_id=voucher_id)
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise VoucherError("schema", f"{field} {value!r} is not an RFC 3339 timestamp", voucher_id=voucher_id) from exc
    if stamp.tzinfo is None:
        msg = f"{field} {value!r} has no time zone; timestamps must end in Z or carry an offset"
        raise VoucherError("naive_timestamp", msg, voucher_id=voucher_id)
    return stamp


def _find_key(gateway: GatewayInfo, issuer: str, issued_at: dt.datetime, now: dt.datetime, vid: str) -> KeyInfo:
    multibase = issuer.removeprefix("did:key:")
    key = next((k for k in gateway.keys if k.public_key == multibase), None)
    if key is None:
        raise VoucherError("key_unknown", f"key {multibase} is not registered for gateway {gateway.gateway_id!r}; register it first", voucher_id=vid)
    if key.revoked_at is not None and key.revoked_at <= now:
        raise VoucherError("key_revoked", f"key {key.key_id} of gateway {gateway.gateway_id!r} was revoked at {key.revoked_at.isoformat()}", voucher_id=vid)
    seq = int(vid.rpartition(":")[2])
    if (key.from_seq is not None and seq < key.from_seq) or (key.until_seq is not None and seq > key.until_seq):
        msg = f"key {key.key_id} signs sequences {key.from_seq or 1}..{key.until_seq or 'on'} of gateway {gateway.gateway_id!r} after a rotation, not {seq}"
        raise VoucherError("key_not_valid", msg, voucher_id=vid)
    if issued_at < key.valid_from or (key.valid_until is not None and issued_at >= key.valid_until):
        until = key.valid_until.isoformat() if key.valid_until else "open end"
        msg = f"voucher issued at {issued_at.isoformat()} lies outside key {key.key_id}'s validity {key.valid_from.isoformat()} .. {until}"
        raise VoucherError("key_not_valid", msg, voucher_id=vid)
    return key


def precheck_voucher(
    payload: bytes,
    topic: Topic,
    gateways: dict[str, GatewayInfo],
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
) -> PendingVoucher:
    """Run every check short of the signature; raise :class:`VoucherError` with a stable code on the first failure."""
    try:
        document, claims = parse_voucher(payload)
    except VoucherError as exc:
        # JSON has no NaN or infinity literals; a number beyond the float range is the one way to write one.
        if exc.code == "invalid_json" and "out of range" in str(exc):
            raise VoucherError("non_finite", f"payload contains a number beyond the float range: {exc}") from exc
        raise
    vid = claims.voucher_id

    issued_at = parse_instant(claims.issued_at, "issued_at", vid)
    period_start = parse_instant(claims.period.start, "period.start", vid)
    period_end = parse_instant(claims.period.end, "period.end", vid)
    parse_instant(document.get("validFrom"), "validFrom", vid)
    parse_instant(document["proof"].get("created") if isinstance(document.get("proof"), dict) else None, "proof.created", vid)
    latest = now + clock_skew
    for field, stamp in (("issued_at", issued_at), ("period.end", period_end)):
        if stamp > latest:
            msg = f"{field} {stamp.isoformat()} lies in the future beyond the allowed clock skew of {clock_skew.total_seconds():.0f} s"
            raise VoucherError("future_timestamp", msg, voucher_id=vid)
    if period_end <= period_start:
        raise VoucherError("schema", f"period.end {claims.period.end} is not after period.start {claims.period.start}", voucher_id=vid)

    if (claims.tenant, claims.site, claims.gateway) != (topic.tenant, topic.site, topic.gateway):
        msg = f"voucher names {claims.tenant}/{claims.site}/{claims.gateway} but arrived on {topic.tenant}/{topic.site}/{topic.gateway}"
        raise VoucherError("topic_mismatch", msg, voucher_id=vid)
    gateway = gateways.get(claims.gateway)
    if gateway is None or (gateway.tenant_id, gateway.site_id) != (claims.tenant, claims.site):
        msg = f"gateway {claims.gateway!r} is not registered under tenant {claims.tenant!r}, site {claims.site!r}"
        raise VoucherError("gateway_unknown", msg, voucher_id=vid)

    issuer = document.get("issuer")
    if not isinstance(issuer, str):
        raise VoucherError("schema", "issuer must be a did:key string", voucher_id=vid)
    key = _find_key(gateway, issuer, issued_at, now, vid)
    return PendingVoucher(document, claims, key.key_id, period_start, period_end, issued_at, payload)


def check_voucher(
    payload: bytes,
    topic: Topic,
    gateways: dict[str, GatewayInfo],
    *,
    now: dt.datetime,
    clock_skew: dt.timedelta,
) -> CheckedVoucher:
    """Run every check that needs no chain state, signature included; raise :class:`VoucherError` on the first failure."""
    return precheck_voucher(payload, topic, gateways, now=now, clock_skew=clock_skew).check()
