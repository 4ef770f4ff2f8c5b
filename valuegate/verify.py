"""Offline verification of an auditor bundle: voucher proofs, gateway keys, chains, invoice lines and the contract revisions' digests."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valuegate.cloud.bundle import Bundle, read_bundle
from valuegate.cloud.settlement.pricing import PricingError, VoucherValue
from valuegate.edge.protocol.canonical import CanonicalizationError, content_digest
from valuegate.edge.protocol.contract import Contract, ContractError, parse_contract
from valuegate.edge.protocol.voucher import VoucherError, parse_voucher, verify_voucher, voucher_hash
from valuegate.verify_evidence import EvidenceSummary, Progress, check_evidence
from valuegate.verify_keys import check_keys, expected_signer
from valuegate.verify_lines import Ledger, check_documents, instant
from valuegate.verify_terms import Terms, check_revisions, priced_with

__all__ = ("Verdict", "Report", "verify_bundle", "UNLISTED")

# Members the checks read, so each must be listed in the manifest. Other unlisted members only get a note.
_READ = ("contract.json", "vouchers.jsonl", "keys.json", "invoices.json", "adjustments.json", "stored.json")
UNLISTED = "not listed in the manifest; not checked"


@dataclass(slots=True)
class Verdict:
    """The outcome for one item: a file, a voucher or an invoice line; failed when any reason is listed.

    ``checked`` is False for a file the manifest does not list and no check
    reads: it neither passes nor fails, and its notes state why.
    """

    subject: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "ok": self.ok, "checked": self.checked, "reasons": self.reasons, "notes": self.notes}


@dataclass(slots=True)
class Report:
    """Every verdict of one bundle check, the digests of the bundle's contract terms and each gateway's keys.

    ``contract_digest`` is SHA-256 over the RFC 8785 form of ``contract.json``
    (None when that file cannot be canonicalized), the revision in force.
    ``revisions`` lists each earlier revision the bundle carries, with its
    file, digest and the documents priced with it. No signature covers these
    files or ``keys.json``, so the auditor compares each digest with the one
    on the signed contract or invoice, and each gateway's first key in
    ``gateways`` with the key the plant recorded at commissioning.
    """

    files: list[Verdict]
    keys: list[Verdict]
    vouchers: list[Verdict]
    lines: list[Verdict]
    documents: list[Verdict]
    contract_id: str | None = None
    contract_digest: str | None = None
    gateways: list[dict[str, Any]] = field(default_factory=list)
    contract_revision: int | None = None
    revisions: list[dict[str, Any]] = field(default_factory=list)
    evidence: EvidenceSummary = field(default_factory=EvidenceSummary)

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return (*self.files, *self.keys, *self.vouchers, *self.lines, *self.documents)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def unchecked(self) -> list[Verdict]:
        """Files the manifest does not list and no check reads."""
        return [v for v in self.files if not v.checked]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "contract": {"id": self.contract_id, "digest": self.contract_digest, "revision": self.contract_revision},
            "revisions": self.revisions,
            "evidence": self.evidence.as_dict(),
            "gateways": self.gateways,
            "files": [v.as_dict() for v in self.files],
            "keys": [v.as_dict() for v in self.keys],
            "vouchers": [v.as_dict() for v in self.vouchers],
            "lines": [v.as_dict() for v in self.lines],
            "documents": [v.as_dict() for v in self.documents],
        }


def _check_files(bundle: Bundle) -> list[Verdict]:
    """Compare each listed file with its SHA-256 and vouchers.jsonl with the manifest's voucher count, fail each member that leaves the bundle, and note each unlisted one."""
    verdicts = [
        Verdict(name, [f"not read: it is {reason}; ask the sender for a bundle as the cloud built it"])
        for name, reason in sorted(bundle.outside.items())
    ]
    listed = bundle.manifest.get("files", {})
    actual = bundle.digests
    for name, expected in sorted(listed.items()):
        if name in bundle.outside:
            continue
        verdict = Verdict(name)
        if name not in actual:
            verdict.reasons.append(f"missing from the bundle, though the manifest lists it with SHA-256 {expected}; ask the sender for a complete bundle")
        elif actual[name] != expected:
            verdict.reasons.append(f"SHA-256 {actual[name]} differs from the manifest's {expected}")
        verdicts.append(verdict)

    # A revision or record file listed only under revisions or records fails in check_revisions or check_evidence.
    own_lists = {entry["file"] for entry in bundle.revisions} | {entry["file"] for entry in bundle.record_list}
    for name in sorted(set(actual) - set(listed) - own_lists - {"manifest.json"}):
        if name in _READ:
            verdicts.append(Verdict(name, ["not listed in the manifest, though the checks read it; ask the sender for a bundle as the cloud built it"]))
        else:
            verdicts.append(Verdict(name, notes=[UNLISTED], checked=False))

    # read_bundle has checked that the count is a whole number or None; a bundle built before it was recorded has none.
    count = bundle.manifest.get("vouchers")
    if count is not None and count != len(bundle.vouchers):
        verdict = next((v for v in verdicts if v.subject == "vouchers.jsonl"), None)
        if verdict is None:
            verdict = Verdict("vouchers.jsonl")
            verdicts.append(verdict)
        verdict.reasons.append(f"contains {len(bundle.vouchers)} vouchers, but the manifest gives {count}: vouchers were added or removed after "
                               "the bundle was built; ask the sender for a bundle as the cloud built it")
    return verdicts


def _check_contract(bundle: Bundle, files: list[Verdict]) -> tuple[Contract | None, str | None]:
    """Parse contract.json and take its digest; the findings go on the file's own verdict, not a second one."""
    verdict = next((v for v in files if v.subject == "contract.json"), None)
    if verdict is None:
        verdict = Verdict("contract.json", ["contract.json is not listed in the manifest"])
        files.append(verdict)

    terms_digest: str | None = None
    try:
        terms_digest = content_digest(bundle.contract)
    except CanonicalizationError as exc:
        verdict.reasons.append(str(exc))
    else:
        revision = bundle.manifest.get("contract_revision")
        in_force = "" if revision is None else f" of revision {revision}, the revision in force"
        verdict.notes.append(f"contract terms digest {terms_digest}{in_force}; it must equal the digest on the signed contract or invoice")
    listed = bundle.manifest.get("contract_digest")
    if listed is not None and listed != terms_digest:
        verdict.reasons.append(f"digest {terms_digest} differs from the manifest's contract digest {listed}")

    try:
        contract = parse_contract(bundle.contract, file="contract.json")
    except ContractError as exc:
        contract = None
        verdict.reasons.append(str(exc))
    return contract, terms_digest


def _key_windows(bundle: Bundle) -> dict[str, list[tuple[str, dt.datetime | None, dt.datetime | None]]]:
    windows: dict[str, list[tuple[str, dt.datetime | None, dt.datetime | None]]] = defaultdict(list)
    for key in bundle.keys:
        windows[key["gateway"]].append((key["publicKeyMultibase"], instant(key.get("validFrom")), instant(key.get("validTo"))))
    return windows


def _check_vouchers(bundle: Bundle, contract: Contract | None,
                    schedules: dict[str, list[tuple[int, str]]]) -> tuple[list[Verdict], dict[str, VoucherValue], dict[str, Any]]:
    """Check each voucher's schema, proof and key (the one the rotation statements give for its sequence, when they do), then each gateway's chain."""
    verdicts: list[Verdict] = []
    values: dict[str, VoucherValue] = {}
    claims_by_id: dict[str, Any] = {}
    chains: dict[str, list[tuple[int, dict[str, Any], Verdict]]] = defaultdict(list)
    windows = _key_windows(bundle)

    for index, document in enumerate(bundle.vouchers, start=1):
        try:
            _, claims = parse_voucher(json.dumps(document).encode("utf-8"))
        except VoucherError as exc:
            verdicts.append(Verdict(f"vouchers.jsonl line {index}", [f"{exc.code}: {exc}"]))
            continue
        verdict = Verdict(claims.voucher_id)
        verdicts.append(verdict)

        proof = verify_voucher(document)
        if not proof.ok:
            verdict.reasons.append(f"proof: {proof.reason}")
        signer = (proof.verification_method or "").partition("#")[0].removeprefix("did:key:")
        issued = instant(claims.issued_at)
        keys = windows.get(claims.gateway, [])
        if not any(key == signer for key, _, _ in keys):
            verdict.reasons.append(f"signing key {signer or '?'} is not among the bundle's keys of gateway {claims.gateway}")
        elif not any(key == signer and (start is None or start <= issued) and (end is None or issued < end) for key, start, end in keys):
            verdict.reasons.append(f"signing key {signer} of gateway {claims.gateway} was not valid at {claims.issued_at}")
        elif claims.gateway in schedules and signer != (due := expected_signer(schedules[claims.gateway], claims.seq)):
            verdict.reasons.append(f"signed by {signer}, but the rotation statements give key {due} for sequence {claims.seq}")
        if contract is not None and claims.tenant != contract.tenant:
            verdict.reasons.append(f"tenant {claims.tenant!r} differs from the contract's {contract.tenant!r}")

        chains[claims.gateway].append((claims.seq, document, verdict))
        claims_by_id[claims.voucher_id] = claims
        try:
            values[claims.voucher_id] = VoucherValue.from_claims(claims)
        except PricingError as exc:
            verdict.reasons.append(str(exc))

    # Chain: consecutive sequence numbers, each prev the hash of the one before.
    for gateway, chain in chains.items():
        chain.sort(key=lambda item: item[0])
        previous: tuple[int, dict[str, Any]] | None = None
        for seq, document, verdict in chain:
            prev = document["credentialSubject"]["prev"]
            if previous is None:
                if seq == 1 and prev is not None:
                    verdict.reasons.append("chain: sequence 1 must have prev null")
                elif seq > 1:
                    verdict.notes.append(f"chain of {gateway} starts at sequence {seq} in this bundle")
            elif seq == previous[0]:
                verdict.reasons.append(f"chain: sequence {seq} of {gateway} appears twice")
            elif seq != previous[0] + 1:
                verdict.reasons.append(f"chain: gap in {gateway} between sequence {previous[0]} and {seq}")
            elif prev != voucher_hash(previous[1]):
                verdict.reasons.append(f"chain: prev {prev} is not the hash of {gateway}:{previous[0]}")
            previous = (seq, document)
    return verdicts, values, claims_by_id


def _check_contract_owns_vouchers(contract: Contract | None, claims: dict[str, Any], files: list[Verdict]) -> None:
    """Fail contract.json when no signed voucher names its contract: the id was changed, which would turn the per-contract checks off."""
    if contract is None or not claims or any(c.contract == contract.id for c in claims.values()):
        return
    verdict = next((v for v in files if v.subject == "contract.json"), None)
    if verdict is None:
        verdict = Verdict("contract.json")
        files.append(verdict)
    named = ", ".join(sorted({repr(c.contract) for c in claims.values()}))
    verdict.reasons.append(f"names contract {contract.id!r}, but no voucher of the bundle belongs to it (they name {named}); "
                           "ask the sender for a bundle as the cloud built it")


def _note_stored(bundle: Bundle, vouchers: list[Verdict]) -> None:
    """Show, on each voucher, when the cloud stored it and a re-computation that disagreed (such a voucher is not billed)."""
    stored = {str(item.get("voucher_id")): item for item in bundle.stored or [] if isinstance(item, dict)}
    for verdict in vouchers:
        item = stored.get(verdict.subject)
        if item is None:
            continue
        if item.get("reproduced") is False:
            verdict.notes.append(f"stored {item.get('stored_at')}; the cloud's re-computation from telemetry disagreed, so it is not billed; "
                                 "ask the vendor for the telemetry of that day")


def verify_bundle(path: str | Path, progress: Progress | None = None) -> Report:
    """Check every file, voucher and invoice line of the bundle at ``path``; ``progress`` hears of each record file and voucher as it is checked.

    Raises :class:`valuegate.cloud.bundle.BundleError` when the bundle cannot be read at all.
    """
    bundle = read_bundle(Path(path), progress or (lambda step: None))
    try:
        return _verify(bundle, progress or (lambda step: None))
    finally:
        bundle.close()


def _verify(bundle: Bundle, progress: Progress) -> Report:
    files = _check_files(bundle)
    contract, terms_digest = _check_contract(bundle, files)
    # read_bundle has checked that contract_revision is a whole number or None.
    in_force = Terms("contract.json", bundle.manifest.get("contract_revision"), bundle.manifest.get("contract_digest"), terms_digest, contract)
    earlier = check_revisions(bundle, files, contract)
    priced = [priced_with(record, in_force, earlier) for record in bundle.documents]

    keys, gateways, signers = check_keys(bundle, contract)
    vouchers, values, claims = _check_vouchers(bundle, contract, signers)
    _note_stored(bundle, vouchers)
    _check_contract_owns_vouchers(contract, claims, files)
    evidence = check_evidence(bundle, contract, claims, vouchers, files, progress)
    voucher_ok = {v.subject: v.ok for v in vouchers}
    ledger = None
    if contract is not None:
        stored = {str(item.get("voucher_id")): item for item in bundle.stored or [] if isinstance(item, dict)}
        ledger = Ledger(
            contract=contract,
            values=values,
            voucher_ok=voucher_ok,
            contracts={vid: c.contract for vid, c in claims.items()},
            adjustments={str(item["id"]): item for item in bundle.adjustments},
            stored_at={vid: instant(item.get("stored_at")) for vid, item in stored.items()},
            reproduced={vid: item.get("reproduced") for vid, item in stored.items()},
        )
    lines, documents = check_documents(ledger, bundle.documents, priced)
    contract_id = bundle.contract.get("id") if isinstance(bundle.contract, dict) else None
    revisions = [
        {"revision": terms.revision, "file": terms.file, "digest": terms.digest,
         "documents": [record.get("number") for record, used in zip(bundle.documents, priced, strict=True) if used.terms is terms]}
        for terms in earlier
    ]
    return Report(files, keys, vouchers, lines, documents, contract_id=contract_id, contract_digest=terms_digest, gateways=gateways,
                  contract_revision=in_force.revision, revisions=revisions, evidence=evidence)
