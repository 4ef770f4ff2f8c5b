"""The fast canonical encoder and voucher signer against the protocol package, on seeded random documents."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.edge.issuer import claims_from
from valuegate.edge.jcs import canonical_bytes, chain_hash, sign_and_hash, sign_voucher
from valuegate.edge.protocol.canonical import canonicalize
from valuegate.edge.protocol.voucher import build_voucher, voucher_hash

from .helpers import synthetic_body

SPECIAL_FLOATS = [0.0, -0.0, 1.0, 1200.0, 0.1, 1e-4, 1e-7, 1.5e-5, 123456.789012, 1e16, 1e21, 2.0**53, 2.0**60, -3.25, 5e-324, 1.7976931348623157e308]


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randint(0, 7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(SPECIAL_FLOATS + [round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))])
    if kind == 1:
        return rng.choice([0, -1, 2**53 - 1, -(2**53 - 1), rng.randint(-(10**9), 10**9)])
    if kind == 2:
        return "".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0xFFFF), rng.randint(0x10000, 0x10FFFF)])) for _ in range(rng.randint(0, 6)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return round(rng.uniform(0, 100), 6)
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [str(random_value(rng, 9)) if rng.random() < 0.3 else rng.choice(["a", "b", "Z", "\u00e9", "\ue000", "\U0001f527"]) for _ in range(rng.randint(0, 5))]
    return {key: random_value(rng, depth + 1) for key in keys}


@pytest.mark.parametrize("seed", range(20))
def test_canonical_bytes_equal_rfc8785(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        document = {"root": random_value(rng)}
        assert canonical_bytes(document) == canonicalize(document)


@pytest.mark.parametrize("seed", range(5))
def test_fast_voucher_equals_protocol_voucher(seed: int) -> None:
    rng = random.Random(seed)
    key = Ed25519PrivateKey.generate()
    body = synthetic_body("2026-03-01")
    body["reporting"]["oee"] = round(rng.random(), 6)
    body["delta"]["point"] = round(rng.uniform(-20, 20), 6)
    body["delta"]["low"] = rng.choice([0.0, -0.0, 1e-5, 12.5])
    body["sufficiency"]["reasons"] = ["planned busy time 12.0 min is below the minimum of 30 min", "\u6545\u969c \U0001f527"]
    claims = claims_from(body, tenant="acme", site="suzhou", gateway="gw-1", seq=rng.randint(1, 10**6), prev="sha256:" + "ab" * 32, issued_at="2026-03-02T00:05:00Z")
    fast = sign_voucher(claims, key)
    reference = build_voucher(claims, key)
    assert fast == reference
    assert chain_hash(fast) == voucher_hash(reference)
    document, digest = sign_and_hash(claims, key)
    assert document == reference
    assert digest == voucher_hash(reference)


def test_fast_voucher_falls_back_for_exponents() -> None:
    key = Ed25519PrivateKey.generate()
    body = synthetic_body("2026-03-01")
    body["delta"]["low"] = 1e-7  # ECMAScript writes 1e-7; the fast path leaves such numbers to rfc8785
    claims = claims_from(body, tenant="acme", site="suzhou", gateway="gw-1", seq=3, prev=None, issued_at="2026-03-02T00:05:00Z")
    document, digest = sign_and_hash(claims, key)
    assert document == build_voucher(claims, key)
    assert digest == voucher_hash(document)
