"""Data Integrity proofs of cryptosuite eddsa-jcs-2022 (W3C vc-di-eddsa, JCS variant).

Signing hashes two canonical forms separately: the proof configuration
(the proof without ``proofValue``, carrying the document's ``@context``)
and the document without its proof. The Ed25519 signature covers
``SHA-256(proof configuration) || SHA-256(document)``, and the result is
stored as a base58btc multibase ``proofValue``.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonicalize
from .keys import KeyFormatError, public_key_from_verification_method, verification_method

__all__ = ("CRYPTOSUITE", "ProofError", "ProofCheck", "hash_data", "sign_document", "verify_document")

CRYPTOSUITE = "eddsa-jcs-2022"
PROOF_TYPE = "DataIntegrityProof"


class ProofError(ValueError):
    """A document cannot be signed, or its proof is malformed."""


@dataclass(frozen=True, slots=True)
class ProofCheck:
    """Outcome of verifying one proof: ``ok`` with the signer's verification method, or a reason."""

    ok: bool
    reason: str
    verification_method: str | None = None


def hash_data(unsecured_document: dict[str, Any], proof_config: dict[str, Any]) -> bytes:
    """Return the 64 bytes that eddsa-jcs-2022 signs: the proof config hash, then the document hash."""
    proof_hash = hashlib.sha256(canonicalize(proof_config)).digest()
    document_hash = hashlib.sha256(canonicalize(unsecured_document)).digest()
    return proof_hash + document_hash


def sign_document(
    document: dict[str, Any],
    private_key: Ed25519PrivateKey,
    *,
    created: str,
    proof_purpose: str = "assertionMethod",
) -> dict[str, Any]:
    """Return a copy of ``document`` with an eddsa-jcs-2022 proof added; ``created`` is an XML datetime."""
    if "proof" in document:
        msg = "the document already has a proof; sign the unsecured document instead"
        raise ProofError(msg)
    proof_config: dict[str, Any] = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": created,
        "verificationMethod": verification_method(private_key.public_key()),
        "proofPurpose": proof_purpose,
    }
    if "@context" in document:
        proof_config["@context"] = copy.deepcopy(document["@context"])

    signature = private_key.sign(hash_data(document, proof_config))

    secured = copy.deepcopy(document)
    secured["proof"] = {**proof_config, "proofValue": "z" + base58.b58encode(signature).decode("ascii")}
    return secured


def _context_prefix_ok(document_context: Any, proof_context: Any) -> bool:
    doc = document_context if isinstance(document_context, list) else [document_context]
    proof = proof_context if isinstance(proof_context, list) else [proof_context]
    return doc[: len(proof)] == proof


def verify_document(secured: dict[str, Any], public_key: Ed25519PublicKey | None = None) -> ProofCheck:
    """Verify the eddsa-jcs-2022 proof of ``secured``.

    The key comes from the proof's did:key verification method; when
    ``public_key`` is given, the verification method must name that key.
    """
    proof = secured.get("proof") if isinstance(secured, dict) else None
    if not isinstance(proof, dict):
        return ProofCheck(False, "missing proof")
    if proof.get("type") != PROOF_TYPE or proof.get("cryptosuite") != CRYPTOSUITE:
        return ProofCheck(False, f"unsupported proof type {proof.get('type')!r} / cryptosuite {proof.get('cryptosuite')!r}")
    proof_value = proof.get("proofValue")
    if not isinstance(proof_value, str) or not proof_value.startswith("z"):
        return ProofCheck(False, "proofValue is not base58btc multibase")
    method = proof.get("verificationMethod")
    try:
        signer = public_key_from_verification_method(method)
    except KeyFormatError as exc:
        return ProofCheck(False, str(exc))
    if public_key is not None and signer.public_bytes_raw() != public_key.public_bytes_raw():
        return ProofCheck(False, f"proof is signed by {method}, not by the expected key", method)

    proof_config = {k: v for k, v in proof.items() if k != "proofValue"}
    document = {k: v for k, v in secured.items() if k != "proof"}
    if "@context" in proof_config and not _context_prefix_ok(document.get("@context"), proof_config["@context"]):
        return ProofCheck(False, "proof @context does not match the document @context", method)
    try:
        signature = base58.b58decode(proof_value[1:])
        signer.verify(signature, hash_data(document, proof_config))
    except (InvalidSignature, ValueError) as exc:
        reason = "signature invalid" if isinstance(exc, InvalidSignature) else f"cannot check the signature: {exc}"
        return ProofCheck(False, reason, method)
    return ProofCheck(True, "ok", method)
