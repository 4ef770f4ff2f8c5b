"""Checks a voucher passes before the chain: schema, timestamps, topic, gateway registry, key and signature.

The signature itself is checked by :mod:`valuegate.cloud.signature`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from valuegate.edge.protocol.voucher import Claims, VoucherError, parse_voucher, voucher_hash

from .signature import encode_sorted, prepare_voucher, verify_signature

__all__ = (
    "UNKNOWN_KEY_ADVICE",
    "Topic",
    "GatewayInfo",
    "KeyInfo",
    "CheckedVoucher",
    "PendingVoucher",
    "parse_topic",
    "parse_instant",
    "key_text",
    "mismatch_reason",
    "precheck_voucher",
    "check_voucher",
    "signed_claims",
)

# Maximum length of a public key that a rejection reason shows whole (see key_text).
_KEY_TEXT_MAX = 64
UNKNOWN_KEY_ADVICE = (
    "if it is the gateway's own key, register it with `valuegate cloud admin key-add -c cloud.yaml TENANT GATEWAY KEY_FILE` "
    "(the file of `valuegate keys export-public`); otherwise another client publishes on this gateway's topic, so check the broker's access rules"
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
        prepared = prepare_voucher(document)
        fast = verify_signature(document, prepared)
        encoded = encode_sorted(prepared) if fast else None
        digest = "sha256:" + hashlib.sha256(encoded).hexdigest() if encoded is not None else voucher_hash(document)
        return CheckedVoucher(document, self.claims, self.key_id, self.period_start, self.period_end, self.issued_at, self.payload, digest)


@dataclass(frozen=True, slots=True)
class CheckedVoucher(PendingVoucher):
    """A voucher that passed every check short of the chain, with its chain hash."""

    hash: str

    def check(self) -> CheckedVoucher:
        """Return the voucher itself: storage takes checked and pending vouchers alike."""
        return self


def mismatch_reason(kind: str, named: tuple[str, str, str], topic: Topic) -> str:
    """Describe a message whose tenant, site or gateway ids differ from its topic's, naming only the topic's ids.

    The reason is shown to the topic's tenant, and the message may name another tenant's ids.
    """
    fields = [field for field, own, other in zip(("tenant", "site", "gateway"), (topic.tenant, topic.site, topic.gateway), named, strict=True) if own != other]
    listed = fields[0] if len(fields) == 1 else f"{', '.join(fields[:-1])} and {fields[-1]}"
    return (f"{kind} names another {listed} than its topic {topic.tenant}/{topic.site}/{topic.gateway}; "
            "check tenant, site and gateway in the gateway's configuration")  # fmt: skip


def key_text(multibase: str) -> str:
    """Return a public key as rejection reasons show it: whole, so that it can be compared with the gateway's key.

    An Ed25519 key in multibase form has 48 characters. The value comes from
    the message, so one longer than ``_KEY_TEXT_MAX`` is cut, with its length.
    """
    if len(multibase) <= _KEY_TEXT_MAX:
        return multibase
    return f"{multibase[:16]}... ({len(multibase)} characters)"


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
        msg = f"the voucher is signed by key {key_text(multibase)}, which is not registered for gateway {gateway.gateway_id!r}; {UNKNOWN_KEY_ADVICE}"
        raise VoucherError("key_unknown", msg, voucher_id=vid)
    if key.revoked_at is not None and key.revoked_at <= now:
        raise VoucherError("key_revoked", f"key {key.key_id} of gateway {gateway.gateway_id!r} was revoked at {key.revoked_at.isoformat()}", voucher_id=vid)
    seq = int(vid.rpartition(":")[2])
    if (key.from_seq is not None and seq < key.from_seq) or (key.until_seq is not None and seq > key.until_seq):
        first = key.from_seq or 1
        if key.until_seq is not None and key.until_seq < first:
            signs = f"signs no sequence (replaced from sequence {key.until_seq + 1})"
        else:
            signs = f"signs sequences {first}..{'on' if key.until_seq is None else key.until_seq}"
        msg = f"key {key.key_id} {signs} of gateway {gateway.gateway_id!r} after a rotation, not {seq}"
        raise VoucherError("key_not_valid", msg, voucher_id=vid)
    if issued_at < key.valid_from or (key.valid_until is not None and issued_at >= key.valid_until):
        until = key.valid_until.isoformat() if key.valid_until else "open end"
        msg = f"voucher issued at {issued_at.isoformat()} lies outside key {key.key_id}'s validity {key.valid_from.isoformat()} .. {until}"
        if issued_at < key.valid_from:
            # Typical after a key registered with the default start (now) while the agent already signed with it.
            msg += (
                f"; when the gateway signed it before the key was registered, move the key's start to its creation time "
                f"(`created` in `valuegate keys export-public`) with `valuegate cloud admin key-valid-from -c cloud.yaml {gateway.tenant_id} "
                f"{gateway.gateway_id} {key.key_id} CREATED` or POST /api/v1/gateways/{gateway.gateway_id}/keys/{key.key_id}/valid-from, "
                "and the next resend stores it"
            )
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
        raise VoucherError("topic_mismatch", mismatch_reason("voucher", (claims.tenant, claims.site, claims.gateway), topic), voucher_id=vid)
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


def signed_claims(payload: bytes, topic: Topic, gateways: dict[str, GatewayInfo], *, now: dt.datetime) -> Claims | None:
    """Return the claims of a voucher whose proof verifies under an unrevoked key of its topic's gateway, or None.

    Used for rejected vouchers: only such claims may tie a rejection to a
    contract, because anyone who can publish on the topic can write any claims.
    A key outside its validity window or sequence range still counts, because
    only the gateway has its private key.
    """
    try:
        document, claims = parse_voucher(payload)
    except VoucherError:
        return None
    gateway = gateways.get(topic.gateway)
    if gateway is None or (claims.tenant, claims.site, claims.gateway) != (gateway.tenant_id, gateway.site_id, gateway.gateway_id):
        return None
    if (topic.tenant, topic.site) != (gateway.tenant_id, gateway.site_id):
        return None
    issuer = document.get("issuer")
    multibase = issuer.removeprefix("did:key:") if isinstance(issuer, str) else None
    if not any(key.public_key == multibase and (key.revoked_at is None or key.revoked_at > now) for key in gateway.keys):
        return None
    try:
        verify_signature(document)
    except VoucherError:
        return None
    return claims
