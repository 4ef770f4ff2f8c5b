"""Value-realization vouchers: the claims schema, signing, parsing and chain hashing.

A voucher is a W3C Verifiable Credential whose ``credentialSubject`` contains
the claims below, secured with an eddsa-jcs-2022 Data Integrity proof. The
edge measures; prices live in the cloud's contract and never in a voucher.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .canonical import CanonicalizationError, content_digest
from .keys import did_key
from .proof import ProofCheck, sign_document, verify_document

__all__ = (
    "SCHEMA",
    "VC_CONTEXT",
    "VOUCHER_TYPE",
    "MAX_SEQ",
    "VoucherError",
    "Period",
    "Metric",
    "Reporting",
    "Baseline",
    "Delta",
    "Sufficiency",
    "MachineRef",
    "Evidence",
    "Claims",
    "voucher_id",
    "build_voucher",
    "voucher_hash",
    "parse_voucher",
    "verify_voucher",
)

SCHEMA = "valuegate/voucher/v1"
VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
VOUCHER_TYPE = "ValueRealizationVoucher"
# Sequence numbers stay within the I-JSON safe integer range so that every
# JSON implementation reads them exactly (RFC 8785 rejects larger integers).
MAX_SEQ = 2**53 - 1

MetricName = Literal["oee_points", "availability_points", "unplanned_downtime_rate"]
Quantity = Literal["oee_points", "availability_points", "avoided_downtime_min"]


class VoucherError(ValueError):
    """A voucher payload is not acceptable; ``code`` is a stable reason key for metrics and the API."""

    def __init__(self, code: str, message: str, *, voucher_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.voucher_id = voucher_id


class _Claim(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    pass


class Period(_Claim):
    """Reporting window: UTC instants bounding one plant day, and that day in the plant's zone."""

    start: str
    end: str
    plant_date: str
    time_zone: str


class Metric(_Claim):
    """The anchor's normalized metric: its name, unit, and whether higher or lower is better."""

    name: MetricName
    unit: str
    better: Literal["higher", "lower"]


class Reporting(_Claim):
    """The reporting day's KPIs (ISO 22400-2) summed over the anchor's machines; ratios are null without a denominator."""

    value: float | None
    planned_busy_min: float
    run_min: float
    unplanned_downtime_min: float
    availability: float | None
    effectiveness: float | None
    quality: float | None
    oee: float | None
    running_day: bool


class Baseline(_Claim):
    """The baseline the day is compared with: mean normalized metric over its covered days."""

    value: float | None
    days: int
    first_date: str
    last_date: str
    digest: str


class Delta(_Claim):
    """Value realized on the day, with a block-bootstrap interval; zero when the day claims nothing."""

    quantity: Quantity
    point: float
    low: float
    high: float
    confidence: float
    method: str
    resamples: int
    seed: int


class Sufficiency(_Claim):
    """Whether the day had enough data to claim value, and why not when it had too little."""

    ok: bool
    reasons: list[str]
    covered_min: float


class MachineRef(_Claim):
    """One machine in the voucher's scope: the tag map that produced its numbers and its time source."""

    id: str
    mapping_hash: str
    time_source: Literal["plc", "gateway"]
    ideal_cycle_time_s: float | None


class Evidence(_Claim):
    """Merkle root (RFC 6962, SHA-256) over the canonical per-minute records the day was computed from."""

    merkle_root: str
    records: int
    record_schema: str


class Claims(_Claim):
    """The ``credentialSubject`` of a voucher."""

    schema: str
    voucher_id: str
    tenant: str
    site: str
    gateway: str
    seq: int
    prev: str | None
    contract: str
    anchor: str
    machines: list[MachineRef]
    period: Period
    metric: Metric
    reporting: Reporting
    baseline: Baseline
    delta: Delta
    sufficiency: Sufficiency
    evidence: Evidence
    issued_at: str


class _Document(msgspec.Struct, forbid_unknown_fields=True, rename={"context": "@context"}):
    context: list[str]
    type: list[str]
    id: str
    issuer: str
    validFrom: str
    credentialSubject: Claims
    proof: dict[str, Any]


def voucher_id(gateway: str, seq: int) -> str:
    return f"{gateway}:{seq}"


def build_voucher(claims: Claims, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign ``claims`` as a voucher document; the proof's ``created`` is the claims' ``issued_at``."""
    if not 1 <= claims.seq <= MAX_SEQ:
        msg = f"sequence {claims.seq} is outside 1..{MAX_SEQ}"
        raise VoucherError("schema", msg, voucher_id=claims.voucher_id)
    if claims.voucher_id != voucher_id(claims.gateway, claims.seq):
        msg = f"voucher_id {claims.voucher_id!r} must be '{claims.gateway}:{claims.seq}'"
        raise VoucherError("schema", msg, voucher_id=claims.voucher_id)
    document = {
        "@context": [VC_CONTEXT],
        "type": ["VerifiableCredential", VOUCHER_TYPE],
        "id": f"urn:valuegate:voucher:{claims.voucher_id}",
        "issuer": did_key(private_key.public_key()),
        "validFrom": claims.issued_at,
        "credentialSubject": msgspec.to_builtins(claims),
    }
    try:
        return sign_document(document, private_key, created=claims.issued_at)
    except CanonicalizationError as exc:
        raise VoucherError("non_finite", str(exc), voucher_id=claims.voucher_id) from exc


def voucher_hash(document: dict[str, Any]) -> str:
    """Return the chain hash of a signed voucher: SHA-256 over its canonical form, proof included."""
    return content_digest(document)


def parse_voucher(payload: bytes) -> tuple[dict[str, Any], Claims]:
    """Decode a voucher payload strictly: valid JSON, known schema version, every field typed.

    Raises :class:`VoucherError` with code ``invalid_json``, ``schema_version``
    or ``schema``; nothing is half-read.
    """
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError as exc:
        raise VoucherError("invalid_json", f"payload is not valid JSON (NaN and infinities are invalid too): {exc}") from exc
    if not isinstance(raw, dict):
        raise VoucherError("schema", f"payload is a JSON {type(raw).__name__}, expected an object")
    subject = raw.get("credentialSubject")
    schema = subject.get("schema") if isinstance(subject, dict) else None
    vid = subject.get("voucher_id") if isinstance(subject, dict) and isinstance(subject.get("voucher_id"), str) else None
    if schema != SCHEMA:
        msg = f"unknown voucher schema version {schema!r}; this service reads {SCHEMA!r}"
        raise VoucherError("schema_version", msg, voucher_id=vid)
    try:
        document = msgspec.convert(raw, _Document)
    except msgspec.ValidationError as exc:
        raise VoucherError("schema", f"voucher does not match {SCHEMA}: {exc}", voucher_id=vid) from exc
    claims = document.credentialSubject
    if VOUCHER_TYPE not in document.type or document.context[:1] != [VC_CONTEXT]:
        raise VoucherError("schema", f"document is not a {VOUCHER_TYPE} credential", voucher_id=vid)
    if not 1 <= claims.seq <= MAX_SEQ or claims.voucher_id != voucher_id(claims.gateway, claims.seq):
        msg = f"voucher_id {claims.voucher_id!r} does not match gateway {claims.gateway!r} and seq {claims.seq}"
        raise VoucherError("schema", msg, voucher_id=vid)
    return raw, claims


def verify_voucher(document: dict[str, Any]) -> ProofCheck:
    """Verify the voucher's proof and that its issuer is the key that signed it."""
    check = verify_document(document)
    if check.ok and check.verification_method is not None:
        if check.verification_method.partition("#")[0] != document.get("issuer"):
            return ProofCheck(False, "issuer does not match the proof's verification method", check.verification_method)
    return check
