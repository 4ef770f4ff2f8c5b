"""The voucher protocol against public test vectors: W3C eddsa-jcs-2022, RFC 8785 and RFC 8032."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from valuegate.edge.protocol import keys, proof
from valuegate.edge.protocol.canonical import canonicalize

VECTORS = Path(__file__).resolve().parent.parent / "conformance"
EDDSA = VECTORS / "eddsa-jcs-2022"
JCS_NAMES = sorted(path.stem for path in (VECTORS / "jcs" / "input").glob("*.json"))


def _text(name: str) -> str:
    return (EDDSA / name).read_text(encoding="utf-8").strip()


def _json(name: str) -> dict:
    return json.loads((EDDSA / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", JCS_NAMES)
def test_jcs_output_matches_rfc8785_vector(name: str) -> None:
    source = json.loads((VECTORS / "jcs" / "input" / f"{name}.json").read_text(encoding="utf-8"))
    expected = (VECTORS / "jcs" / "output" / f"{name}.json").read_bytes()
    expected_hex = bytes.fromhex((VECTORS / "jcs" / "outhex" / f"{name}.txt").read_text().replace("\n", " "))
    assert canonicalize(source) == expected
    assert canonicalize(source) == expected_hex


def test_jcs_vector_set_is_complete() -> None:
    assert JCS_NAMES == ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("vector", json.loads((VECTORS / "ed25519" / "rfc8032-7.1-ed25519.json").read_text())["vectors"], ids=lambda v: v["name"])
def test_ed25519_rfc8032_vector(vector: dict) -> None:
    private_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["secret_key"]))
    message = bytes.fromhex(vector["message"])
    assert keys.raw_public_key(private_key.public_key()).hex() == vector["public_key"]
    signature = private_key.sign(message)
    assert signature.hex() == vector["signature"]
    private_key.public_key().verify(signature, message)


def test_ed25519_json_agrees_with_openssl_file() -> None:
    # The JSON list was extracted from the OpenSSL file; check the signatures appear there verbatim.
    openssl_text = (VECTORS / "ed25519" / "openssl-evppkey_ecx.txt").read_text().replace("\n", "").lower()
    vectors = json.loads((VECTORS / "ed25519" / "rfc8032-7.1-ed25519.json").read_text())["vectors"]
    assert len(vectors) == 5
    for vector in vectors:
        assert vector["signature"][:64] in openssl_text


def test_eddsa_jcs_2022_key_pair_round_trip() -> None:
    pair = _json("keyPair.json")
    private_key = keys.private_key_from_multibase(pair["privateKeyMultibase"])
    assert keys.public_key_multibase(private_key.public_key()) == pair["publicKeyMultibase"]
    assert keys.private_key_multibase(private_key) == pair["privateKeyMultibase"]


def test_eddsa_jcs_2022_intermediate_values() -> None:
    document = _json("unsigned.json")
    proof_config = _json("proofConfigJCS.json")
    assert canonicalize(document).decode() == _text("canonDocJCS.txt")
    assert canonicalize(proof_config).decode() == _text("proofCanonJCS.txt")
    assert hashlib.sha256(canonicalize(document)).hexdigest() == _text("docHashJCS.txt")
    assert hashlib.sha256(canonicalize(proof_config)).hexdigest() == _text("proofHashJCS.txt")
    assert proof.hash_data(document, proof_config).hex() == _text("combinedHashJCS.txt")


def test_eddsa_jcs_2022_signed_document_is_reproduced() -> None:
    private_key = keys.private_key_from_multibase(_json("keyPair.json")["privateKeyMultibase"])
    signed = proof.sign_document(_json("unsigned.json"), private_key, created=_json("proofConfigJCS.json")["created"])
    assert signed == _json("signedJCS.json")
    assert signed["proof"]["proofValue"] == _text("sigBTC58JCS.txt")


def test_eddsa_jcs_2022_vector_verifies() -> None:
    check = proof.verify_document(_json("signedJCS.json"))
    assert check.ok, check.reason


def test_eddsa_jcs_2022_tampered_vector_fails() -> None:
    signed = _json("signedJCS.json")
    signed["credentialSubject"]["alumniOf"] = "The School of Examples!"
    check = proof.verify_document(signed)
    assert not check.ok
    assert check.reason == "signature invalid"


def test_eddsa_jcs_2022_context_mismatch_fails() -> None:
    signed = _json("signedJCS.json")
    signed["@context"] = ["https://www.w3.org/ns/credentials/v2"]
    check = proof.verify_document(signed)
    assert not check.ok
    assert "@context" in check.reason
