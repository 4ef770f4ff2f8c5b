"""Vouchers: signing, strict parsing, chain hashes, and a check by a second implementation (Node.js)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from valuegate.edge.protocol import voucher as v

PEERS = Path(__file__).resolve().parent.parent / "peers"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _encode(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


def test_signed_voucher_verifies(key: Ed25519PrivateKey) -> None:
    document = v.build_voucher(make_claims(seq=1, prev=None), key)
    parsed, claims = v.parse_voucher(_encode(document))
    assert v.verify_voucher(parsed).ok
    assert claims.voucher_id == "gw-1:1"
    assert document["proof"]["cryptosuite"] == "eddsa-jcs-2022"


def test_every_claim_is_covered_by_the_proof(key: Ed25519PrivateKey) -> None:
    document = v.build_voucher(make_claims(seq=1, prev=None), key)
    tampered = json.loads(json.dumps(document))
    tampered["credentialSubject"]["delta"]["point"] = 1.6
    assert not v.verify_voucher(tampered).ok
    tampered = json.loads(json.dumps(document))
    tampered["credentialSubject"]["machines"][0]["id"] = "m-2"
    assert not v.verify_voucher(tampered).ok


def test_one_changed_byte_fails(key: Ed25519PrivateKey) -> None:
    payload = _encode(v.build_voucher(make_claims(seq=1, prev=None), key))
    position = payload.index(b'"anchor": "line-oee"') + len(b'"anchor": "l')
    changed = payload[:position] + b"y" + payload[position + 1 :]
    parsed, _ = v.parse_voucher(changed)
    check = v.verify_voucher(parsed)
    assert not check.ok
    assert check.reason == "signature invalid"


def test_issuer_must_be_the_signer(key: Ed25519PrivateKey) -> None:
    document = v.build_voucher(make_claims(seq=1, prev=None), key)
    other = v.build_voucher(make_claims(seq=1, prev=None), Ed25519PrivateKey.generate())
    document["issuer"] = other["issuer"]
    assert not v.verify_voucher(document).ok


def test_chain_links_previous_hash(key: Ed25519PrivateKey) -> None:
    chain = voucher_chain(key, 3)
    assert chain[0]["credentialSubject"]["prev"] is None
    assert chain[1]["credentialSubject"]["prev"] == v.voucher_hash(chain[0])
    assert chain[2]["credentialSubject"]["prev"] == v.voucher_hash(chain[1])
    assert v.voucher_hash(chain[0]).startswith("sha256:")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": 1e400}', "invalid_json"),
        (b"[]", "schema"),
        (b'{"credentialSubject": {"schema": "valuegate/voucher/v9"}}', "schema_version"),
    ],
)
def test_parse_rejects_bad_payloads(payload: bytes, code: str) -> None:
    with pytest.raises(v.VoucherError) as caught:
        v.parse_voucher(payload)
    assert caught.value.code == code


def test_parse_rejects_unknown_fields(key: Ed25519PrivateKey) -> None:
    document = v.build_voucher(make_claims(seq=1, prev=None), key)
    document["credentialSubject"]["price"] = "100.00"
    with pytest.raises(v.VoucherError) as caught:
        v.parse_voucher(_encode(document))
    assert caught.value.code == "schema"
    assert caught.value.voucher_id == "gw-1:1"


def test_parse_rejects_mismatched_voucher_id(key: Ed25519PrivateKey) -> None:
    document = v.build_voucher(make_claims(seq=2, prev=None), key)
    document["credentialSubject"]["seq"] = 3
    with pytest.raises(v.VoucherError, match="does not match"):
        v.parse_voucher(_encode(document))


def test_non_finite_claims_cannot_be_signed(key: Ed25519PrivateKey) -> None:
    claims = make_claims(seq=1, prev=None, value=float("nan"))
    with pytest.raises(v.VoucherError) as caught:
        v.build_voucher(claims, key)
    assert caught.value.code == "non_finite"


def test_sequence_must_fit_json_safe_integers(key: Ed25519PrivateKey) -> None:
    claims = msgspec.structs.replace(make_claims(seq=1, prev=None), seq=v.MAX_SEQ + 1, voucher_id=f"gw-1:{v.MAX_SEQ + 1}")
    with pytest.raises(v.VoucherError, match="outside"):
        v.build_voucher(claims, key)


def _node_verdict(document: dict) -> str:
    result = subprocess.run(
        ["node", str(PEERS / "verify_voucher.js")],
        input=json.dumps(document).encode(),
        capture_output=True,
        cwd=PEERS,
        timeout=30,
        check=False,
    )
    return result.stdout.decode().strip() or result.stderr.decode().strip()


@pytest.mark.peer
def test_node_verifier_checks_our_proof(node_peers: Path, key: Ed25519PrivateKey) -> None:
    assert shutil.which("node")
    document = v.build_voucher(make_claims(seq=7, prev="sha256:" + "00" * 32), key)
    assert _node_verdict(document) == "valid"

    changed = json.loads(json.dumps(document))
    changed["credentialSubject"]["anchor"] = "line-oeE"
    assert _node_verdict(changed) == "invalid: signature does not verify"


@pytest.mark.peer
def test_node_verifier_accepts_the_w3c_vector(node_peers: Path) -> None:
    vector = json.loads((Path(__file__).resolve().parent.parent / "conformance" / "eddsa-jcs-2022" / "signedJCS.json").read_text())
    assert _node_verdict(vector) == "valid"
    vector["validFrom"] = "2023-01-01T00:00:01Z"
    assert _node_verdict(vector) == "invalid: signature does not verify"
