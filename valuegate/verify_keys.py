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


def _window(record: dict[str, Any]) -> str:
    seqs = f"sequences {record.get('fromSeq') or 1}..{record.get('untilSeq') or ''}"
    return f"valid {record.get('validFrom') or 'open'}..{record.get('validTo') or 'open'}, {seqs}"


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
    for gateway, records in sorted(by_gateway.items()):
        known = {record["publicKeyMultibase"] for record in records}
        firsts: list[str] = []
        rotations: list[Any] = []
        summary: list[dict[str, Any]] = []
        all_ok = True
        for record in records:
            multibase = record["publicKeyMultibase"]
            verdict = Verdict(f"{gateway} key did:key:{multibase}")
            rotated = record.get("rotation") is not None
            if rotated:
                reasons, claims = _check_rotation(record, known, contract)
                verdict.reasons += reasons
                if reasons or claims is None:
                    all_ok = False
                else:
                    rotations.append(claims)
                    verdict.notes.append(f"introduced by a rotation statement signed by the previous key did:key:{_multibase(claims.previous_key)}, "
                                         f"from sequence {claims.from_seq}: signature verified ({_window(record)})")
            else:
                firsts.append(multibase)
                verdict.notes.append(f"first key of {gateway} ({_window(record)}): {COMPARE_KEY}")
            verdicts.append(verdict)
            summary.append({
                "id": f"did:key:{multibase}",
                "key_id": f"did:key:{multibase}#{multibase}",
                "publicKeyMultibase": multibase,
                "validFrom": record.get("validFrom"),
                "validTo": record.get("validTo"),
                "fromSeq": record.get("fromSeq"),
                "untilSeq": record.get("untilSeq"),
                "introduced_by": "rotation" if rotated else None,
                "compare_out_of_band": not rotated,
            })
        gateways.append({"gateway": gateway, "keys": summary})

        if len(firsts) != 1 or not all_ok or not rotations:
            continue
        # Follow the statements from the first key: each continues from the key in force before it.
        schedule = [(1, firsts[0])]
        for claims in sorted(rotations, key=lambda c: c.from_seq):
            previous = _multibase(claims.previous_key)
            if previous != schedule[-1][1] or claims.from_seq <= schedule[-1][0]:
                verdict = next(v for v in verdicts if v.subject == f"{gateway} key did:key:{_multibase(claims.next_key)}")
                verdict.reasons.append(f"rotation from sequence {claims.from_seq} continues from {previous}, but {schedule[-1][1]} was in force")
                break
            schedule.append((claims.from_seq, _multibase(claims.next_key)))
        else:
            schedules[gateway] = schedule
    return verdicts, gateways, schedules


def expected_signer(schedule: list[tuple[int, str]], seq: int) -> str:
    """Return the key that the rotation statements give for sequence ``seq``."""
    return [key for first, key in schedule if first <= seq][-1]
