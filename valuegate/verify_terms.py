"""Contract terms of a bundle: contract.json, the earlier revisions it carries, and the terms each document was priced with.

A contract can be amended after an invoice was issued. The invoice then
records the digest of an earlier revision, and the bundle carries that
revision in ``contracts/<id>/revision-<n>.json``. Every document is re-priced
with the terms whose digest it recorded. A document whose terms the bundle
lacks, or whose revision file was changed, fails: it is never re-priced with
the revision in force instead. A document whose recorded revision number
disagrees with its digest fails too, and its lines are re-priced with the
terms the digest names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from valuegate.cloud.bundle import Bundle, revision_file
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

    @property
    def labelled(self) -> str:
        """The file and the revision number the manifest gives it, for messages about mismatched labels."""
        return self.file if self.revision is None else f"{self.file}, which the manifest labels contract revision {self.revision}"


@dataclass(frozen=True, slots=True)
class Priced:
    """The terms a document was priced with, or why the bundle cannot show them.

    ``reasons`` fail the document, ``line_reason`` fails each of its lines
    (they cannot be re-priced), and ``note`` names the revision it was priced
    with. A document can fail while its lines are re-priced, when only its
    revision number disagrees with the digest it recorded.
    """

    contract: Contract | None
    terms: Terms | None = None
    note: str | None = None
    reasons: tuple[str, ...] = ()
    line_reason: str | None = None


_REVISION_NAME = re.compile(r"contracts/[^/]+/revision-(\d+)\.json")


def _label_reason(name: str, number: int, contract_id: Any) -> str | None:
    """Return why the file ``name`` does not carry the revision ``number`` the manifest gives it, judged by its name; None when it does."""
    expected = revision_file(str(contract_id), number)
    if name == expected:
        return None
    named = _REVISION_NAME.fullmatch(name)
    if named is not None and int(named.group(1)) != number:
        return (f"the manifest labels it contract revision {number}, but its file name gives revision {named.group(1)}: the manifest's revision "
                "labels do not match the files; ask the sender for the original bundle")
    return f"the manifest labels it contract revision {number}, but that revision's file is named {expected}; ask the sender for the original bundle"


def check_revisions(bundle: Bundle, files: list[Any], in_force: Contract | None) -> list[Terms]:
    """Check each earlier revision the manifest lists: present, digest as listed, readable terms of the same contract.

    The findings go on the file's verdict in ``files``; a verdict is added for
    a revision the manifest lists only under ``revisions``.
    """
    from valuegate.verify import Verdict

    contract_id = bundle.contract.get("id") if isinstance(bundle.contract, dict) else None
    found: list[Terms] = []
    for entry in bundle.revisions:
        # read_bundle has checked that each entry has a file, a whole revision number and a digest.
        name = entry["file"]
        number = entry["revision"]
        listed = entry["contract_digest"]
        verdict = next((v for v in files if v.subject == name), None)
        if verdict is None:
            verdict = Verdict(name, [f"listed as contract revision {number} but not among the manifest's files; ask the sender for a complete bundle"])
            files.append(verdict)
        mislabelled = _label_reason(name, number, contract_id)
        if mislabelled is not None:
            verdict.reasons.append(mislabelled)
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


_ASK = "Ask the vendor which contract revision priced the document."


def _by_digest(recorded: Any, candidates: list[Terms], number: Any) -> Terms | None:
    """Find the terms with the digest a document recorded: as found in the bundle, or else as the manifest lists it.

    Revisions can share terms, for example when an amendment is undone. Among
    those, the one with the revision number the document recorded is taken.
    """
    for matching in ([t for t in candidates if t.digest == recorded], [t for t in candidates if t.listed_digest == recorded]):
        if matching:
            return next((t for t in matching if t.revision == number), matching[0])
    return None


def _revision_reason(record: dict[str, Any], candidates: list[Terms], by_digest: Terms | None) -> tuple[Terms | None, str | None]:
    """Return the terms the document's revision number names, and why that number disagrees with its digest (None when it agrees)."""
    number = record.get("contract_revision")
    if number is None:
        return None, None
    recorded = record.get("contract_digest")
    found = f"Its terms digest {recorded} is that of {by_digest.labelled}." if by_digest is not None else "No file has its terms digest."
    if not isinstance(number, int) or isinstance(number, bool):
        return None, f"records contract_revision {json.dumps(number, ensure_ascii=False)}, which is not a whole number, so it names no contract revision. {found} {_ASK}"
    by_number = next((t for t in candidates if t.revision == number), None)
    if by_digest is None or by_digest is by_number or (by_number is None and by_digest.revision is None):
        # The two agree, or there is nothing to compare: contract.json without a revision number in the manifest may be any revision.
        return by_number, None
    carried = (f"The manifest's contract revision {number} is {by_number.file}, with terms digest {by_number.digest or by_number.listed_digest}."
               if by_number is not None else f"The bundle carries no contract revision {number}.")
    return by_number, f"records contract revision {number}, but its terms digest {recorded} is that of {by_digest.labelled}. {carried} {_ASK}"


def priced_with(record: dict[str, Any], in_force: Terms, earlier: list[Terms]) -> Priced:
    """Return the terms the document ``record`` was priced with, checked against the digest and revision number it recorded."""
    recorded = record.get("contract_digest")
    if recorded is None:
        # Documents issued before digests were recorded are re-priced with contract.json, and fail so that someone compares by hand.
        return Priced(in_force.contract, in_force, reasons=("the document records no contract digest, so nothing ties it to contract.json; "
                      "compare the prices with the signed contract by hand",))

    candidates = [in_force, *earlier]
    by_digest = _by_digest(recorded, candidates, record.get("contract_revision"))
    by_number, mismatch = _revision_reason(record, candidates, by_digest)
    # The digest is what ties a document to its prices, so a disagreeing revision number does not pick the terms.
    source = by_digest if mismatch is not None else by_number or by_digest
    reasons = () if mismatch is None else (mismatch,)
    if source is None:
        number = record.get("contract_revision")
        named = f" (contract revision {number})" if isinstance(number, int) and not isinstance(number, bool) else ""
        return Priced(
            None,
            reasons=(*reasons, f"priced with contract terms {recorded}{named}, but contract.json has {in_force.digest} and no other revision in the bundle "
                     "has them: contract.json was changed, or the bundle lacks the revision this document was priced with; compare contract.json with "
                     "the signed contract, or ask the sender for a bundle that carries that revision"),
            line_reason=f"cannot re-price: the bundle does not carry the contract terms {recorded} its document was priced with",
        )
    if not source.present:
        return Priced(
            None, source,
            reasons=(*reasons, f"priced with {source.label}, which is missing from the bundle; ask the sender for a complete bundle"),
            line_reason=f"cannot re-price: {source.label} is missing from the bundle",
        )
    if source.digest != recorded:
        return Priced(
            None, source,
            reasons=(*reasons, f"priced with contract terms {recorded}, but {source.label} has terms digest {source.digest}: the file was changed after "
                     f"the document was issued; compare it with the signed contract, or ask the sender for the original file"),
            line_reason=f"cannot re-price: {source.file} does not carry the contract terms {recorded} its document was priced with",
        )
    if source.contract is None:
        return Priced(
            None, source,
            reasons=(*reasons, f"priced with {source.label}, which does not hold valid contract terms (see its verdict under files)"),
            line_reason=f"cannot re-price: {source.file} does not hold valid contract terms",
        )

    if mismatch is not None:
        return Priced(source.contract, source, note=f"lines re-priced with {source.file}, the file with the terms digest {recorded} the document records",
                      reasons=reasons)
    if source is in_force:
        described = "the terms in force" if source.revision is None else f"contract revision {source.revision}, the revision in force"
    else:
        described = f"contract revision {source.revision}"
    return Priced(source.contract, source, note=f"priced with {described} ({source.file}, terms digest {recorded})")
