"""Evidence digest: the Merkle root over minute records against a recursive RFC 6962 reference."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from tests.factories import minute_records
from valuegate.edge.protocol.evidence import EMPTY_ROOT, evidence_digest, leaf_hash, merkle_root


def _reference_root(leaves: list[bytes]) -> bytes:
    # RFC 6962 section 2.1, written recursively as the RFC states it.
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return hashlib.sha256(b"\x01" + _reference_root(leaves[:split]) + _reference_root(leaves[split:])).digest()


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 31, 33, 100])
def test_root_matches_rfc6962_reference(count: int) -> None:
    records = minute_records("m-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), count)
    root, size = evidence_digest(records)
    assert size == count
    assert root == "sha256:" + _reference_root([leaf_hash(r) for r in records]).hex()


def test_leaf_hash_covers_canonical_json() -> None:
    record = minute_records("m-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 1)[0]
    canonical = json.dumps(
        {k: getattr(record, k) for k in sorted(record.__struct_fields__)}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert leaf_hash(record) == hashlib.sha256(b"\x00" + canonical).digest()


def test_two_records_known_root() -> None:
    first, second = {"a": 1}, {"a": 2}
    expected = hashlib.sha256(
        b"\x01" + hashlib.sha256(b'\x00{"a":1}').digest() + hashlib.sha256(b'\x00{"a":2}').digest()
    ).hexdigest()
    assert evidence_digest([first, second]) == ("sha256:" + expected, 2)


def test_order_and_content_change_the_root() -> None:
    records = minute_records("m-1", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 4)
    root, _ = evidence_digest(records)
    assert evidence_digest(list(reversed(records)))[0] != root
    changed = list(records)
    changed[2] = minute_records("m-1", dt.datetime(2024, 1, 1, 0, 2, tzinfo=dt.UTC), 1, running_ms=49_999)[0]
    assert evidence_digest(changed)[0] != root


def test_empty_evidence() -> None:
    assert evidence_digest([]) == (EMPTY_ROOT, 0)
    assert merkle_root([]) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
