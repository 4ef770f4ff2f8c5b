"""Offline verification of an auditor bundle: voucher proofs, gateway keys, chains, invoice lines and the contract digest."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from valuegate.cloud.bundle import Bundle, file_digests, read_bundle
from valuegate.cloud.settlement.pricing import PricingError, VoucherValue, price_anchor, quantize_money
from valuegate.edge.protocol.canonical import CanonicalizationError, content_digest
from valuegate.edge.protocol.contract import Contract, ContractError, parse_contract
from valuegate.edge.protocol.voucher import VoucherError, parse_voucher, verify_voucher, voucher_hash

__all__ = ("Verdict", "Report", "verify_bundle")


@dataclass(slots=True)
class Verdict:
    """The outcome for one checked item: a file, a voucher or an invoice line; failed when any reason is listed."""

    subject: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "ok": self.ok, "reasons": self.reasons, "notes": self.notes}


@dataclass(slots=True)
class Report:
    """Every verdict of one bundle check, and the digest of the bundle's contract terms.

    ``contract_digest`` is SHA-256 over the RFC 8785 form of ``contract.json``
    (None when that file cannot be canonicalized). No signature covers
    ``contract.json``, so the auditor compares this digest with the one on
    the signed contract or invoice.
    """

    files: list[Verdict]
    vouchers: list[Verdict]
    lines: list[Verdict]
    documents: list[Verdict]
    contract_id: str | None = None
    contract_digest: str | None = None

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return (*self.files, *self.vouchers, *self.lines, *self.documents)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "contract": {"id": self.contract_id, "digest": self.contract_digest},
            "files": [v.as_dict() for v in self.files],
            "vouchers": [v.as_dict() for v in self.vouchers],
            "lines": [v.as_dict() for v in self.lines],
            "documents": [v.as_dict() for v in self.documents],
        }


def _instant(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _check_files(path: Path, bundle: Bundle) -> list[Verdict]:
    verdicts = []
    actual = file_digests(path)
    for name, expected in sorted(bundle.manifest.get("files", {}).items()):
        verdict = Verdict(name)
        if actual.get(name) != expected:
            verdict.reasons.append(f"SHA-256 {actual.get(name, 'missing')} differs from the manifest's {expected}")
        verdicts.append(verdict)
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
        verdict.notes.append(f"contract terms digest {terms_digest}; it must equal the digest on the signed contract or invoice")
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
        windows[key["gateway"]].append((key["publicKeyMultibase"], _instant(key.get("validFrom")), _instant(key.get("validTo"))))
    return windows


def _check_vouchers(bundle: Bundle, contract: Contract | None) -> tuple[list[Verdict], dict[str, VoucherValue], dict[str, Any]]:
    """Check each voucher's schema, proof and key, then each gateway's chain."""
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
        issued = _instant(claims.issued_at)
        keys = windows.get(claims.gateway, [])
        if not any(key == signer for key, _, _ in keys):
            verdict.reasons.append(f"signing key {signer or '?'} is not among the bundle's keys of gateway {claims.gateway}")
        elif not any(key == signer and (start is None or start <= issued) and (end is None or issued < end) for key, start, end in keys):
            verdict.reasons.append(f"signing key {signer} of gateway {claims.gateway} was not valid at {claims.issued_at}")
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


def _check_exclusion(verdict: Verdict, item: dict[str, Any], anchor: str, values: dict[str, VoucherValue], adjustments: dict[str, dict[str, Any]]) -> None:
    """Check that an excluded voucher is covered by the non-routine adjustment the line names."""
    vid, reason = item["voucher_id"], item["reason"]
    adjustment = adjustments.get(reason.removeprefix("nonroutine_adjustment:"))
    value = values.get(vid)
    if adjustment is None:
        verdict.reasons.append(f"voucher {vid} is excluded by {reason}, which is not in adjustments.json")
    elif value is not None and (adjustment["anchor"] not in (None, anchor) or not adjustment["first_date"] <= value.plant_date <= adjustment["last_date"]):
        verdict.reasons.append(f"voucher {vid} ({value.plant_date}) lies outside adjustment {adjustment['id']} ({adjustment['first_date']}..{adjustment['last_date']})")
    else:
        verdict.notes.append(f"{vid} excluded by adjustment {adjustment['id']}: {adjustment['reason']}")


def _check_line(contract: Contract, where: str, document: dict[str, Any], line: dict[str, Any], values: dict[str, VoucherValue],
                voucher_ok: dict[str, bool], billed: dict[tuple[str, str, str], Decimal], adjustments: dict[str, dict[str, Any]],
                contracts: dict[str, str]) -> Verdict:
    verdict = Verdict(where)
    anchor = line["anchor"]
    first, last = line["period_first"], line["period_last"]
    listed: list[VoucherValue] = []
    for vid in line["voucher_ids"]:
        value = values.get(vid)
        if value is None:
            verdict.reasons.append(f"voucher {vid} is not in the bundle")
            continue
        if not voucher_ok.get(vid, False):
            verdict.reasons.append(f"voucher {vid} failed verification")
        if contracts.get(vid) != contract.id:
            verdict.reasons.append(f"voucher {vid} is for contract {contracts.get(vid)!r}, not {contract.id!r}")
        if value.anchor != anchor or not first <= value.plant_date <= last:
            verdict.reasons.append(f"voucher {vid} is for {value.anchor} on {value.plant_date}, outside {anchor} {first}..{last}")
        listed.append(value)
    for item in line.get("excluded", []):
        _check_exclusion(verdict, item, anchor, values, adjustments)
    if verdict.reasons:
        return verdict

    try:
        charge = price_anchor(contract, anchor, [v for v in listed if v.anchor == anchor])
    except (PricingError, KeyError) as exc:
        verdict.reasons.append(f"cannot re-price: {exc}")
        return verdict
    amount = Decimal(line["amount"])
    key = (document.get("corrects") or document["number"], anchor, first)
    if document["kind"] == "invoice":
        if charge.amount != amount:
            verdict.reasons.append(f"amount {amount} differs from {charge.amount} re-priced from its vouchers")
    else:
        before = Decimal(line["previously_billed"])
        recomputed = Decimal(line["recomputed"])
        if charge.amount != recomputed:
            verdict.reasons.append(f"recomputed {recomputed} differs from {charge.amount} re-priced from its vouchers")
        if quantize_money(recomputed - before, contract.rounding) != amount:
            verdict.reasons.append(f"amount {amount} is not recomputed {recomputed} minus previously billed {before}")
        if key in billed and billed[key] != before:
            verdict.reasons.append(f"previously billed {before} differs from {billed[key]} billed by the earlier documents in this bundle")
    billed[key] = billed.get(key, Decimal(0)) + amount
    if set(charge.voucher_ids) != set(line["voucher_ids"]):
        verdict.reasons.append("the listed vouchers include days that do not count (not running or insufficient data)")
    verdict.notes.append(f"{charge.kind} {charge.quantity} x {charge.unit_price} ({charge.mode}) = {charge.amount} {contract.currency}")
    return verdict


def _check_documents(contract: Contract | None, terms_digest: str | None, documents: Iterable[dict[str, Any]], values: dict[str, VoucherValue],
                     voucher_ok: dict[str, bool], adjustments: dict[str, dict[str, Any]], contracts: dict[str, str]) -> tuple[list[Verdict], list[Verdict]]:
    """Check every line of every document, then each document's total, currency and recorded contract digest."""
    lines: list[Verdict] = []
    totals: list[Verdict] = []
    billed: dict[tuple[str, str, str], Decimal] = {}
    for document in documents:
        number = document["number"]
        for index, line in enumerate(document["lines"], start=1):
            where = f"{number} line {index} ({line['anchor']})"
            if contract is None:
                lines.append(Verdict(where, ["contract.json is invalid, so the line cannot be re-priced"]))
            else:
                lines.append(_check_line(contract, where, document, line, values, voucher_ok, billed, adjustments, contracts))

        verdict = Verdict(f"{number} ({document['kind']})")
        total = sum((Decimal(line["amount"]) for line in document["lines"]), Decimal(0))
        if total != Decimal(document["total"]):
            verdict.reasons.append(f"total {document['total']} differs from the sum of its lines {total}")
        if contract is not None and document.get("currency") != contract.currency:
            verdict.reasons.append(f"currency {document.get('currency')} differs from the contract's {contract.currency}")
        recorded = document.get("contract_digest")
        if recorded is None:
            verdict.reasons.append("the document records no contract digest, so nothing ties it to contract.json; compare the prices with the signed contract by hand")
        elif recorded != terms_digest:
            verdict.reasons.append(
                f"priced with contract terms {recorded}, but contract.json has {terms_digest}: contract.json was changed, "
                "or the contract was amended after this document; compare contract.json with the signed contract"
            )
        totals.append(verdict)
    return lines, totals


def verify_bundle(path: str | Path) -> Report:
    """Check every file, voucher and invoice line of the bundle at ``path``.

    Raises :class:`valuegate.cloud.bundle.BundleError` when the bundle cannot be read at all.
    """
    path = Path(path)
    bundle = read_bundle(path)
    files = _check_files(path, bundle)
    contract, terms_digest = _check_contract(bundle, files)

    vouchers, values, claims = _check_vouchers(bundle, contract)
    voucher_ok = {v.subject: v.ok for v in vouchers}
    adjustments = {str(item["id"]): item for item in bundle.adjustments}
    contracts = {vid: c.contract for vid, c in claims.items()}
    lines, documents = _check_documents(contract, terms_digest, bundle.documents, values, voucher_ok, adjustments, contracts)
    contract_id = bundle.contract.get("id") if isinstance(bundle.contract, dict) else None
    return Report(files, vouchers, lines, documents, contract_id=contract_id, contract_digest=terms_digest)
