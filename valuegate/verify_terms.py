"""Contract terms of a bundle: contract.json, the earlier revisions it carries, and the terms each document was priced with.

A contract can be amended after an invoice was issued. The invoice then
records the digest of an earlier revision, and the bundle carries that
revision in ``contracts/<id>/revision-<n>.json``. Every document is re-priced
with the terms whose digest it recorded. A document whose terms the bundle
lacks, or whose revision file was changed, fails: it is never re-priced with
the revision in force instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from valuegate.cloud.bundle import Bundle
from valuegate.edge.protocol.canonical import CanonicalizationError, content_digest
from valuegate.edge.protocol.contract import Contract, ContractError, parse_contract

__all__ = ("Terms", "Priced", "check_revisions", "priced_with")


@dataclass(frozen=True, slots=True)
class Terms:
    """One set of contract terms in the bundle: ``contract.json`` (the revision in force) or an earlier revision's file."""

    file: str
    revision: int | None
    listed_digest: str | None
    """The terms digest the manifest gives for this file."""
    digest: str | None
    """SHA-256 over the RFC 8785 form of the file as found; None when the file is missing or cannot be canonicalized."""
    contract: Contract | None
    present: bool = True

    @property
    def label(self) -> str:
        return self.file if self.revision is None else f"{self.file} (contract revision {self.revision})"


@dataclass(frozen=True, slots=True)
class Priced:
    """The terms a document was priced with, or why the bundle cannot show them.

    ``reason`` fails the document, ``line_reason`` fails each of its lines
    (they cannot be re-priced), and ``note`` names the revision it was priced with.
    """

    contract: Contract | None
    terms: Terms | None = None
    note: str | None = None
    reason: str | None = None
    line_reason: str | None = None


def _entry_revision(entry: dict[str, Any]) -> int | None:
    number = entry.get("revision")
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def check_revisions(bundle: Bundle, files: list[Any], in_force: Contract | None) -> list[Terms]:
    """Check each earlier revision the manifest lists: present, digest as listed, readable terms of the same contract.

    The findings go on the file's verdict in ``files``; a verdict is added for
    a revision the manifest lists only under ``revisions``.
    """
    from valuegate.verify import Verdict

    found: list[Terms] = []
    for entry in bundle.revisions:
        name = entry["file"]
        number = _entry_revision(entry)
        listed = entry.get("contract_digest")
        verdict = next((v for v in files if v.subject == name), None)
        if verdict is None:
            verdict = Verdict(name, [f"listed as contract revision {number} but not among the manifest's files; ask the sender for a complete bundle"])
            files.append(verdict)
        if name not in bundle.revision_terms:
            if not verdict.reasons:
                verdict.reasons.append(f"missing from the bundle, though the manifest lists it as contract revision {number}; ask the sender for a complete bundle")
            found.append(Terms(name, number, listed, None, None, present=False))
            continue

        data = bundle.revision_terms[name]
        digest: str | None = None
        try:
            digest = content_digest(data)
        except CanonicalizationError as exc:
            verdict.reasons.append(str(exc))
        if digest is not None and digest != listed:
            verdict.reasons.append(
                f"contract terms digest {digest} differs from the manifest's {listed} for revision {number}: the file was changed or damaged "
                "after the bundle was built; ask the sender for the original bundle"
            )
        contract: Contract | None = None
        try:
            contract = parse_contract(data, file=name)
        except ContractError as exc:
            verdict.reasons.append(str(exc))
        if contract is not None and in_force is not None and (contract.id, contract.tenant) != (in_force.id, in_force.tenant):
            verdict.reasons.append(f"holds contract {contract.id!r} of tenant {contract.tenant!r}, but contract.json holds {in_force.id!r} of {in_force.tenant!r}")
            contract = None
        if digest is not None:
            verdict.notes.append(f"contract revision {number} terms digest {digest}; it must equal the digest on the signed contract revision {number}")
        found.append(Terms(name, number, listed, digest, contract))
    return found


def _source(record: dict[str, Any], candidates: list[Terms]) -> Terms | None:
    """Find the terms a document names: by its revision number when it records one, otherwise by its digest."""
    number = record.get("contract_revision")
    if isinstance(number, int) and not isinstance(number, bool):
        by_number = next((t for t in candidates if t.revision == number), None)
        if by_number is not None:
            return by_number
    recorded = record.get("contract_digest")
    return next((t for t in candidates if t.digest == recorded), None) or next((t for t in candidates if t.listed_digest == recorded), None)


def priced_with(record: dict[str, Any], in_force: Terms, earlier: list[Terms]) -> Priced:
    """Return the terms the document ``record`` was priced with, checked against the digest it recorded."""
    recorded = record.get("contract_digest")
    if recorded is None:
        # Documents issued before digests were recorded are re-priced with contract.json, and fail so that someone compares by hand.
        return Priced(in_force.contract, in_force, reason="the document records no contract digest, so nothing ties it to contract.json; "
                      "compare the prices with the signed contract by hand")

    source = _source(record, [in_force, *earlier])
    if source is None:
        number = record.get("contract_revision")
        named = f" (contract revision {number})" if number is not None else ""
        return Priced(
            None,
            reason=f"priced with contract terms {recorded}{named}, but contract.json has {in_force.digest} and no other revision in the bundle has them: "
            "contract.json was changed, or the bundle lacks the revision this document was priced with; compare contract.json with the signed "
            "contract, or ask the sender for a bundle that carries that revision",
            line_reason=f"cannot re-price: the bundle does not carry the contract terms {recorded} its document was priced with",
        )
    if not source.present:
        return Priced(
            None, source,
            reason=f"priced with {source.label}, which is missing from the bundle; ask the sender for a complete bundle",
            line_reason=f"cannot re-price: {source.label} is missing from the bundle",
        )
    if source.digest != recorded:
        return Priced(
            None, source,
            reason=f"priced with contract terms {recorded}, but {source.label} has terms digest {source.digest}: the file was changed after "
            f"the document was issued; compare it with the signed contract, or ask the sender for the original file",
            line_reason=f"cannot re-price: {source.file} does not carry the contract terms {recorded} its document was priced with",
        )
    if source.contract is None:
        return Priced(
            None, source,
            reason=f"priced with {source.label}, which does not hold valid contract terms (see its verdict under files)",
            line_reason=f"cannot re-price: {source.file} does not hold valid contract terms",
        )

    if source is in_force:
        described = "the terms in force" if source.revision is None else f"contract revision {source.revision}, the revision in force"
    else:
        described = f"contract revision {source.revision}"
    return Priced(source.contract, source, note=f"priced with {described} ({source.file}, terms digest {recorded})")
