"""Gateway keys of a bundle: rotation statements checked, and the first key of each gateway named for an out-of-band check.

``keys.json`` is written by the vendor's cloud, like ``contract.json``. A
voucher signature proves only that the key in ``keys.json`` signed it. A key
that replaced an earlier one can carry the rotation statement the earlier
key signed. Once those statements verify, only each gateway's first key needs
a comparison with the key the plant recorded at commissioning.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from valuegate.cloud.bundle import Bundle
from valuegate.edge.protocol.contract import Contract
from valuegate.edge.protocol.keyrotation import RotationError, parse_rotation, verify_rotation

__all__ = ("COMPARE_KEY", "check_keys", "expected_signer")

COMPARE_KEY = (
    "compare it with the key recorded at commissioning (`valuegate keys export-public` on the gateway, "
    "or its retained status message); a key the vendor's cloud made up signs just as validly"
)


def _multibase(method: str) -> str:
    return method.removeprefix("did:key:").partition("#")[0]


def _window(record: dict[str, Any], first: int | None = None, until: int | None = None) -> str:
    """Describe a key's validity and sequences; ``first`` and ``until`` override the record's own range when given."""
    first = first or record.get("fromSeq") or 1
    until = until if until is not None else record.get("untilSeq")
    if until is not None and until < first:
        seqs = f"signs no sequence: replaced from sequence {until + 1}"
    else:
        seqs = f"sequences {first}..{'' if until is None else until}"
    return f"valid {record.get('validFrom') or 'open'}..{record.get('validTo') or 'open'}, {seqs}"


def _signed_seqs(bundle: Bundle) -> dict[tuple[str, str], list[int]]:
    """Return the sequences of the bundle's vouchers per gateway and signing key (multibase), as the vouchers claim them."""
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for document in bundle.vouchers:
        subject = document.get("credentialSubject") if isinstance(document, dict) else None
        issuer = document.get("issuer") if isinstance(document, dict) else None
        if isinstance(subject, dict) and isinstance(issuer, str) and isinstance(subject.get("seq"), int):
            seqs[(str(subject.get("gateway")), _multibase(issuer))].append(subject["seq"])
    return seqs


def _replacement_ranges(records: list[dict[str, Any]], signed: dict[tuple[str, str], list[int]]) -> tuple[dict[str, int | None], dict[str, int]]:
    """Return the first sequence of each replacement key (None when unknown) and the last sequence of each key a replacement ended.

    A replacement key is a key without a rotation statement registered after
    the gateway's first key, as after `valuegate keys new --replace-lost`.
    keys.json gives it no sequence range, so its first sequence is the lowest
    one it signed in this bundle, and each earlier key with an open range ends
    just before it.
    """
    firsts: dict[str, int | None] = {}
    lasts: dict[str, int] = {}
    plain = [record for record in records if record.get("rotation") is None]
    for index, record in enumerate(records):
        if record.get("rotation") is not None or record is plain[0]:
            continue
        seqs = signed.get((record["gateway"], record["publicKeyMultibase"]))
        first = record.get("fromSeq") or (min(seqs) if seqs else None)
        firsts[record["publicKeyMultibase"]] = first
        if first is None:
            continue
        for earlier in records[:index]:
            if earlier.get("untilSeq") is None and (earlier.get("fromSeq") or 1) < first:
                lasts.setdefault(earlier["publicKeyMultibase"], first - 1)
    return firsts, lasts


def _check_rotation(record: dict[str, Any], known: set[str], contract: Contract | None) -> tuple[list[str], Any]:
    """Check the rotation statement carried by a key record; return the reasons it fails and its claims."""
    statement = record["rotation"]
    try:
        claims = parse_rotation(statement)
    except RotationError as exc:
        return [f"rotation statement: {exc}"], None
    reasons = []
    check = verify_rotation(statement)
    if not check.ok:
        reasons.append(f"rotation statement: {check.reason}")
    if _multibase(claims.next_key) != record["publicKeyMultibase"]:
        reasons.append(f"rotation statement names next key {_multibase(claims.next_key)}, not this key")
    if claims.gateway != record["gateway"]:
        reasons.append(f"rotation statement is for gateway {claims.gateway!r}, not {record['gateway']!r}")
    if contract is not None and claims.tenant != contract.tenant:
        reasons.append(f"rotation statement is for tenant {claims.tenant!r}, not the contract's {contract.tenant!r}")
    if _multibase(claims.previous_key) not in known:
        reasons.append(f"the previous key {_multibase(claims.previous_key)} that signed the rotation is not a key of gateway {record['gateway']} in keys.json")
    if record.get("fromSeq") is not None and record["fromSeq"] != claims.from_seq:
        reasons.append(f"fromSeq {record['fromSeq']} differs from the statement's from_seq {claims.from_seq}")
    return reasons, claims


def _check_ranges(records: list[dict[str, Any]], rotations: list[Any], verdict_of: dict[str, Any]) -> None:
    """Fail a key whose ``untilSeq`` in keys.json is not the sequence before the first verified rotation that replaced it."""
    replaced: dict[str, Any] = {}
    for claims in sorted(rotations, key=lambda c: c.from_seq):
        replaced.setdefault(_multibase(claims.previous_key), claims)
    for previous, claims in replaced.items():
        until = next((record.get("untilSeq") for record in records if record["publicKeyMultibase"] == previous), None)
        if until is not None and until != claims.from_seq - 1:
            verdict_of[previous].reasons.append(
                f"untilSeq {until} differs from {claims.from_seq - 1}, the sequence before the rotation statement's from_seq {claims.from_seq}"
            )


def check_keys(bundle: Bundle, contract: Contract | None) -> tuple[list[Any], list[dict[str, Any]], dict[str, list[tuple[int, str]]]]:
    """Return a verdict per key, each gateway's keys for the report, and per gateway the key that must sign from each sequence on.

    The schedule is given only for a gateway with one first key whose
    rotation statements all verify and follow each other.
    """
    from valuegate.verify import Verdict

    by_gateway: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in bundle.keys:
        by_gateway[record["gateway"]].append(record)
    verdicts: list[Verdict] = []
    gateways: list[dict[str, Any]] = []
    schedules: dict[str, list[tuple[int, str]]] = {}
    signed = _signed_seqs(bundle)
    for gateway, records in sorted(by_gateway.items()):
        known = {record["publicKeyMultibase"] for record in records}
        replacement_first, replaced_last = _replacement_ranges(records, signed)
        firsts: list[str] = []
        rotations: list[Any] = []
        summary: list[dict[str, Any]] = []
        all_ok = True
        verdict_of: dict[str, Verdict] = {}
        for record in records:
            multibase = record["publicKeyMultibase"]
            verdict = verdict_of[multibase] = Verdict(f"{gateway} key did:key:{multibase}")
            rotated = record.get("rotation") is not None
            replacement = multibase in replacement_first
            first_seq, last_seq = replacement_first.get(multibase), replaced_last.get(multibase)
            window = _window(record, first_seq, last_seq)
            if replacement and first_seq is None:
                window = f"valid {record.get('validFrom') or 'open'}..{record.get('validTo') or 'open'}"
            if rotated:
                reasons, claims = _check_rotation(record, known, contract)
                verdict.reasons += reasons
                if reasons or claims is None:
                    all_ok = False
                else:
                    rotations.append(claims)
                    verdict.notes.append(f"introduced by a rotation statement signed by the previous key did:key:{_multibase(claims.previous_key)}, "
                                         f"from sequence {claims.from_seq}: signature verified ({window})")
            elif replacement:
                firsts.append(multibase)
                start = f"from sequence {first_seq}" if first_seq is not None else "signing no voucher in this bundle"
                verdict.notes.append(f"replacement key of {gateway}, registered without a rotation statement after a lost key, "
                                     f"{start} ({window}): {COMPARE_KEY}")
            else:
                firsts.append(multibase)
                verdict.notes.append(f"first key of {gateway} ({window}): {COMPARE_KEY}")
            if last_seq is not None:
                verdict.notes.append(f"replaced from sequence {last_seq + 1} by a key registered without a rotation statement")
            verdicts.append(verdict)
            introduced_by = None
            if rotated:
                introduced_by = "rotation"
            elif replacement:
                introduced_by = "replacement"
            summary.append({
                "id": f"did:key:{multibase}",
                "key_id": f"did:key:{multibase}#{multibase}",
                "publicKeyMultibase": multibase,
                "validFrom": record.get("validFrom"),
                "validTo": record.get("validTo"),
                "fromSeq": record.get("fromSeq"),
                "untilSeq": record.get("untilSeq"),
                "introduced_by": introduced_by,
                "compare_out_of_band": not rotated,
                # The range the key signs: keys.json's, closed or started by a replacement key where keys.json leaves it open.
                "firstSeq": first_seq if replacement else record.get("fromSeq") or 1,
                "lastSeq": last_seq if last_seq is not None else record.get("untilSeq"),
            })
        gateways.append({"gateway": gateway, "keys": summary})

        _check_ranges(records, rotations, verdict_of)
        if len(firsts) != 1 or not all_ok or not rotations:
            continue
        # Follow the statements from the first key, each continuing from the key in force before it. A rotation
        # made before the first voucher takes effect at sequence 1, so the first key may sign no sequence at all.
        schedule = [(1, firsts[0])]
        last_from = 0
        for claims in sorted(rotations, key=lambda c: c.from_seq):
            previous, reason = _multibase(claims.previous_key), None
            if previous != schedule[-1][1]:
                reason = f"rotation from sequence {claims.from_seq} continues from {previous}, but {schedule[-1][1]} was in force"
            elif claims.from_seq <= last_from:
                reason = f"two rotations take effect at sequence {claims.from_seq}"
            if reason is not None:
                verdict_of[_multibase(claims.next_key)].reasons.append(reason)
                break
            schedule.append((claims.from_seq, _multibase(claims.next_key)))
            last_from = claims.from_seq
        else:
            schedules[gateway] = schedule
    return verdicts, gateways, schedules


def expected_signer(schedule: list[tuple[int, str]], seq: int) -> str:
    """Return the key that the rotation statements give for sequence ``seq``."""
    return [key for first, key in schedule if first <= seq][-1]
