"""Auditor bundles: signed vouchers, gateway public keys, contract terms and invoice lines in one ZIP file.

Layout of a bundle (schema ``valuegate/bundle/v1``), every file UTF-8:

- ``manifest.json``: schema, contract id, creation time, the number of
  vouchers (``vouchers``), the revision number and terms digest of
  ``contract.json``, the earlier revisions the bundle carries
  (``revisions``), and the SHA-256 of every other file, so that a
  truncated or swapped file is noticed.
- ``contract.json``: the contract terms (anchors, prices, caps, floors,
  settlement mode, currency, rounding) of the revision in force.
  No signature covers this file: its digest (SHA-256 over its RFC 8785
  canonical form) must match the digest on the signed contract or invoice.
- ``contracts/<id>/revision-<n>.json``: each earlier revision of the contract
  that a document of the bundle was priced with, in the same form as
  ``contract.json``. The manifest lists each with its revision number and
  terms digest, so that a document priced before an amendment is checked
  against the terms it recorded, not against the revision in force.
- ``vouchers.jsonl``: one signed voucher a line, ordered by gateway and
  sequence. It contains every voucher of each gateway from the first to the last
  sequence the bundle needs, so that the chain can be followed without gaps.
- ``keys.json``: each gateway's Ed25519 public keys (multibase and did:key)
  with the period in which each key was valid. A key that replaced an
  earlier one carries the rotation statement the earlier key signed
  (``rotation``) and the first sequence it signs (``fromSeq``), so that
  only the gateway's first key needs a check against the plant's records.
- ``invoices.json``: invoices, credit notes and debit notes with their lines.
  Each line lists the voucher ids it was priced from, and the non-routine
  exclusions that took days out. Each document records the digest of the
  contract terms it was priced with, the number of that revision
  (``contract_revision``, when the cloud knows it) and when it was issued
  (``issued_at``).
- ``stored.json``: when the cloud stored each voucher (``stored_at``) and
  whether its re-computation from telemetry agreed (``reproduced``: true,
  false or null while not yet checked). With ``issued_at`` it shows which
  vouchers a document must have billed, and which arrived after it.
- ``adjustments.json``: the contract's non-routine adjustments with their
  reasons, who recorded them and when.
- ``records/<machine>.jsonl``: the per-minute records (schema
  ``valuegate/minute/v1``) of one machine, one RFC 8785 canonical record a
  line, ordered by minute: every minute of each voucher's period and of each
  anchor's baseline period that the cloud stored. The manifest lists each
  file with its machine and record count (``records``), so that a verifier
  can rebuild every evidence root and recompute the day's figures and the
  baseline. A bundle built without records has no such files.
- ``GUIDE.en.md`` and ``GUIDE.zh-CN.md``: how to check the bundle offline.

Nothing in a bundle is secret. It lets an auditor re-verify every voucher
with any eddsa-jcs-2022 implementation and re-price every line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from valuegate.cloud.bundle_members import BundleError, Members, check_manifest, check_record_list, load_json, read_bundle_members
from valuegate.cloud.bundle_writer import BundleWriter, json_bytes
from valuegate.cloud.signature import canonical_fast
from valuegate.edge.protocol.canonical import content_digest

__all__ = (
    "BUNDLE_SCHEMA",
    "BundleError",
    "Bundle",
    "GatewayKey",
    "StoredVoucher",
    "document_record",
    "adjustment_record",
    "revision_file",
    "record_file",
    "record_names",
    "start_bundle",
    "build_bundle",
    "write_bundle",
    "read_bundle",
    "guide_text",
)

BUNDLE_SCHEMA = "valuegate/bundle/v1"
_MEMBERS = ("contract.json", "vouchers.jsonl", "keys.json", "invoices.json", "adjustments.json")
_GUIDES = ("GUIDE.en.md", "GUIDE.zh-CN.md")
# The members the checks parse; revision files join them from the manifest.
_PARSED = frozenset({"manifest.json", *_MEMBERS, "stored.json", *_GUIDES})


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """One public key of a gateway and the period in which it signed vouchers (ISO instants, open when None)."""

    gateway: str
    public_key_multibase: str
    valid_from: str | None = None
    valid_to: str | None = None
    from_seq: int | None = None
    until_seq: int | None = None
    rotation: Mapping[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "publicKeyMultibase": self.public_key_multibase,
            "id": f"did:key:{self.public_key_multibase}",
            "validFrom": self.valid_from,
            "validTo": self.valid_to,
            "fromSeq": self.from_seq,
            "untilSeq": self.until_seq,
            "rotation": None if self.rotation is None else dict(self.rotation),
        }


@dataclass(frozen=True, slots=True)
class StoredVoucher:
    """When the cloud stored one voucher, and whether its re-computation from telemetry agreed (None: not yet checked)."""

    voucher_id: str
    stored_at: str
    reproduced: bool | None = None

    def record(self) -> dict[str, Any]:
        return {"voucher_id": self.voucher_id, "stored_at": self.stored_at, "reproduced": self.reproduced}


@dataclass(frozen=True, slots=True)
class Bundle:
    """The parsed contents of a bundle.

    ``revisions`` are the manifest's entries of earlier contract revisions, and
    ``revision_terms`` maps each of their files that the bundle contains to its parsed JSON.
    ``digests`` holds ``sha256:<hex>`` of every member read, and ``outside``
    names each member that was not read because it leaves the bundle, with the reason.
    ``record_list`` is the manifest's list of record files and ``record_data``
    each listed file the bundle contains: a file on disk for a member under
    ``records/`` (open it with :func:`open_member`), its bytes otherwise.
    Call :meth:`close` when done, to remove the record files unpacked from a ZIP file.
    """

    manifest: dict[str, Any]
    contract: dict[str, Any]
    vouchers: list[dict[str, Any]]
    keys: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]
    guides: dict[str, str]
    stored: list[dict[str, Any]] | None = None
    revisions: list[dict[str, Any]] = field(default_factory=list)
    revision_terms: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    outside: dict[str, str] = field(default_factory=dict)
    record_list: list[dict[str, Any]] = field(default_factory=list)
    record_data: dict[str, bytes | Path] = field(default_factory=dict)
    members: Members | None = None

    def close(self) -> None:
        if self.members is not None:
            self.members.close()


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def document_record(document: Any) -> dict[str, Any]:
    """Serialize a settlement ``Document`` (invoice or note) as the bundle and exports carry it."""
    lines = []
    for line in document.lines:
        charge = line.charge
        lines.append(
            {
                "anchor": line.anchor,
                "period_first": line.period_first.isoformat(),
                "period_last": line.period_last.isoformat(),
                "price_kind": charge.kind,
                "mode": charge.mode,
                "unit_price": str(charge.unit_price),
                "quantity": str(charge.quantity),
                "days": charge.days,
                "cap_applied": charge.cap_applied,
                "floor_applied": charge.floor_applied,
                "amount": str(line.amount),
                "previously_billed": _money(line.previously_billed),
                "recomputed": _money(line.recomputed),
                "voucher_ids": list(charge.voucher_ids),
                "excluded": [{"voucher_id": vid, "reason": reason} for vid, reason in line.excluded],
            }
        )
    return {
        "number": document.number,
        "kind": document.kind,
        "period_first": document.period.first.isoformat(),
        "period_last": document.period.last.isoformat(),
        "currency": document.currency,
        "corrects": document.corrects,
        "contract_digest": document.contract_digest,
        "total": str(document.total),
        "lines": lines,
    }


def adjustment_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """Serialize a stored non-routine adjustment row as bundles and packages carry it."""

    def text(value: Any) -> Any:
        return value.isoformat() if hasattr(value, "isoformat") else value

    return {
        "id": row["id"],
        "kind": row["kind"],
        "anchor": row["anchor_id"],
        "first_date": text(row["first_date"]),
        "last_date": text(row["last_date"]),
        "reason": row["reason"],
        "created_by": row["created_by"],
        "created_at": text(row["created_at"]),
        # Withdrawn: from this instant on the adjustment excludes nothing; documents issued before still apply it.
        "withdrawn_at": text(row.get("withdrawn_at")),
        "withdrawn_by": row.get("withdrawn_by"),
        "withdraw_reason": row.get("withdraw_reason"),
    }


def guide_text(language: str) -> str:
    """Return the offline-verification guide shipped in every bundle, in ``en`` or ``zh-CN``."""
    name = f"guide.{language}.md"
    try:
        return resources.files("valuegate.cloud.web").joinpath("templates", "bundle", name).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"no bundle guide for language {language!r}; available: en, zh-CN") from exc


def revision_file(contract_id: str, revision: int) -> str:
    """Return the bundle path of one earlier contract revision, ``contracts/<id>/revision-<n>.json``.

    The id is percent-encoded, so that a slash or a dot-only id cannot add or
    climb a folder when the ZIP file is unpacked.
    """
    return f"contracts/{_path_segment(contract_id)}/revision-{revision}.json"


def record_file(machine: str, *, hashed: bool = False) -> str:
    """Return the bundle path of one machine's minute records, ``records/<machine>.jsonl``, percent-encoded like :func:`revision_file`.

    With ``hashed`` the name ends in ``~`` and 12 hex digits of the id's SHA-256, as a long id's name always does,
    so that ids that differ only in case get names that no unpacking tool writes over each other.
    """
    return f"records/{_path_segment(machine, hashed=hashed)}.jsonl"


# Unpacking tools refuse names longer than 255 bytes; a percent-encoded CJK character takes 9.
_MAX_SEGMENT = 120


def _path_segment(name: str, *, hashed: bool = False) -> str:
    segment = quote(name, safe="-_.~")
    if not segment.strip("."):
        segment = segment.replace(".", "%2E")
    if len(segment) > _MAX_SEGMENT or hashed:
        short = ""
        for char in name:
            if len(short) + len(quote(char, safe="-_.~")) > _MAX_SEGMENT - 13:
                break
            short += quote(char, safe="-_.~")
        segment = f"{short}~{hashlib.sha256(name.encode('utf-8')).hexdigest()[:12]}"
    return segment


def record_names(machines: Iterable[str]) -> dict[str, str]:
    """Return the record file name of each machine; ids that differ only in case get hashed names (see :func:`record_file`)."""
    machines = list(machines)
    folded = [record_file(machine).casefold() for machine in machines]
    return {machine: record_file(machine, hashed=folded.count(record_file(machine).casefold()) > 1) for machine in machines}


def start_bundle(
    *,
    contract: Mapping[str, Any],
    vouchers: Iterable[Mapping[str, Any]],
    keys: Sequence[GatewayKey],
    documents: Sequence[Mapping[str, Any]],
    created_at: str,
    adjustments: Sequence[Mapping[str, Any]] = (),
    stored: Sequence[StoredVoucher] | None = None,
    revision: int | None = None,
    revisions: Mapping[int, Mapping[str, Any]] | None = None,
) -> tuple[BundleWriter, dict[str, Any]]:
    """Write every member but the record files and the manifest; return the writer and the manifest without its file list.

    Add record files through :meth:`BundleWriter.record_file`, then pass the manifest to :meth:`BundleWriter.finish`.
    See :func:`build_bundle` for the parts.
    """
    earlier = dict(revisions or {})
    if revision is not None and revision in earlier:
        raise BundleError(f"revision {revision} is the revision in force and goes into contract.json; pass only earlier revisions in revisions")

    def order(document: Mapping[str, Any]) -> tuple[str, int]:
        subject = document.get("credentialSubject", {})
        return (str(subject.get("gateway")), int(subject.get("seq", 0)))

    # Compact separators keep each voucher on one line; the proof covers the canonical form, not these bytes.
    voucher_lines = [json.dumps(doc, ensure_ascii=False, separators=(",", ":")) for doc in sorted(vouchers, key=order)]
    files: dict[str, bytes] = {
        "contract.json": json_bytes(dict(contract)),
        "vouchers.jsonl": "".join(line + "\n" for line in voucher_lines).encode("utf-8"),
        "keys.json": json_bytes([key.record() for key in keys]),
        "invoices.json": json_bytes(list(documents)),
        "adjustments.json": json_bytes(list(adjustments)),
        "GUIDE.en.md": guide_text("en").encode("utf-8"),
        "GUIDE.zh-CN.md": guide_text("zh-CN").encode("utf-8"),
    }
    if stored is not None:
        files["stored.json"] = json_bytes([item.record() for item in sorted(stored, key=lambda item: item.voucher_id)])
    listed = []
    for number, terms in sorted(earlier.items()):
        name = revision_file(str(contract.get("id")), number)
        files[name] = json_bytes(dict(terms))
        listed.append({"revision": number, "file": name, "contract_digest": content_digest(dict(terms))})
    writer = BundleWriter()
    for name, data in sorted(files.items()):
        writer.add(name, data)
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "contract": contract.get("id"),
        "contract_digest": content_digest(dict(contract)),
        "contract_revision": revision,
        "revisions": listed,
        "tenant": contract.get("tenant"),
        "created_at": created_at,
        "vouchers": len(voucher_lines),
    }
    return writer, manifest


def build_bundle(*, records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, **parts: Any) -> bytes:
    """Return the bytes of a bundle ZIP; vouchers are written exactly as signed, one JSON document a line.

    ``parts`` are those of :func:`start_bundle`. ``stored`` lists when each
    voucher was stored. Without it the bundle has no ``stored.json``, so a
    verifier checks every document against every voucher. ``revision`` is
    the number of the revision in force (``contract``). ``revisions``
    contains, by number, each earlier revision that a document was priced
    with, and each goes into its own file (:func:`revision_file`).
    ``records`` maps each machine to its minute records, which go into
    :func:`record_file` ordered by minute. Without it the bundle has none.
    """
    writer, manifest = start_bundle(**parts)
    names = record_names(sorted(records or {}))
    for machine, name in names.items():
        ordered = sorted((records or {})[machine], key=lambda row: str(row["minute"]))
        with writer.record_file(machine, name) as file:
            file.write([canonical_fast(dict(row)) for row in ordered])
    return writer.finish(manifest)


def write_bundle(path: str | Path, **parts: Any) -> Path:
    """Build a bundle and write it to ``path``; see :func:`build_bundle` for the parts."""
    path = Path(path)
    path.write_bytes(build_bundle(**parts))
    return path


def read_bundle(path: str | Path, progress: Callable[[str], None] = lambda step: None) -> Bundle:
    """Read a bundle ZIP or its unpacked folder; ``progress`` hears of each member that is unpacked or hashed.

    Raises :class:`BundleError` when a member the checks read is missing,
    unreadable or leaves the bundle, or when ``manifest.json`` is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such file or folder; give the path of a bundle ZIP file or its unpacked folder")
    read = read_bundle_members(path, _PARSED, progress)
    try:
        return _parse_members(path, read)
    except BaseException:
        read.close()
        raise


def _parse_members(path: Path, read: Members) -> Bundle:
    members, outside = read.data, read.outside
    for name in ("manifest.json", *_MEMBERS, "stored.json"):
        if name in outside:
            raise BundleError(f"{path}: {name} is {outside[name]}; it was not read. Ask the sender for a bundle as the cloud built it")
    missing = [name for name in ("manifest.json", *_MEMBERS) if name not in members]
    if missing:
        raise BundleError(f"{path}: the bundle lacks {', '.join(missing)}; ask the sender for a complete bundle")

    manifest = load_json(path, "manifest.json", members["manifest.json"])
    if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
        schema = manifest.get("schema") if isinstance(manifest, dict) else None
        raise BundleError(f"{path}: unknown bundle schema {schema!r}; this verifier reads {BUNDLE_SCHEMA!r}")

    revisions = check_manifest(path, manifest)
    record_list = check_record_list(path, manifest)
    revision_terms = {item["file"]: load_json(path, item["file"], members[item["file"]]) for item in revisions if item["file"] in members}

    vouchers = []
    for number, line in enumerate(members["vouchers.jsonl"].decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            vouchers.append(load_json(path, f"vouchers.jsonl line {number}", line.encode("utf-8")))
    return Bundle(
        manifest=manifest,
        contract=load_json(path, "contract.json", members["contract.json"]),
        vouchers=vouchers,
        keys=load_json(path, "keys.json", members["keys.json"]),
        documents=load_json(path, "invoices.json", members["invoices.json"]),
        adjustments=load_json(path, "adjustments.json", members["adjustments.json"]),
        guides={name: members[name].decode("utf-8", errors="replace") for name in _GUIDES if name in members},
        stored=load_json(path, "stored.json", members["stored.json"]) if "stored.json" in members else None,
        revisions=revisions,
        revision_terms=revision_terms,
        digests={**{name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in members.items()}, **read.digests},
        outside=outside,
        record_list=record_list,
        record_data={item["file"]: read.files.get(item["file"], members.get(item["file"], b"")) for item in record_list
                     if item["file"] in members or item["file"] in read.files},
        members=read,
    )
