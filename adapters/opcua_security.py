"""OPC UA security: the gateway's own application certificate, and checking the server's certificate."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = ("CertificateRejected", "OwnCertificate", "check_server_certificate", "ensure_own_certificate", "load_certificate", "thumbprint")

CERT_FILE = "cert.der"
KEY_FILE = "key.pem"


class CertificateRejected(Exception):
    """The server's certificate is not the pinned one and not in the trusted folder."""

    def __init__(self, message: str, *, thumbprint: str) -> None:
        super().__init__(message)
        self.thumbprint = thumbprint


class OwnCertificate:
    """Paths of the gateway's application certificate (DER) and private key (PEM)."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path


def thumbprint(certificate: x509.Certificate) -> str:
    """Return the SHA-256 of the certificate's DER encoding as hex, the form used to pin or report it."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_certificate(path: Path) -> x509.Certificate:
    """Load a DER or PEM certificate file."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable and writable only by its owner (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def ensure_own_certificate(pki_dir: Path, application_uri: str, *, common_name: str = "valuegate gateway") -> OwnCertificate:
    """Return the gateway's certificate, creating a self-signed one (RSA 2048, 5 years) on first run.

    The folder is created with mode 0700, the key and certificate files with
    mode 0600, and a file found with wider permissions is narrowed again.
    The certificate carries ``application_uri`` and the host name in its
    subject alternative names, because servers check the application URI
    of an application instance certificate against the session's.
    """
    from asyncua.crypto import cert_gen

    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    cert_path, key_path = pki_dir / CERT_FILE, pki_dir / KEY_FILE
    if not (cert_path.is_file() and key_path.is_file()):
        key = cert_gen.generate_private_key()
        host = socket.gethostname()
        certificate = cert_gen.generate_self_signed_app_certificate(
            key,
            common_name,
            {"organizationName": "valuegate"},
            [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)],
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=5 * 365,
        )
        _write_private(key_path, cert_gen.dump_private_key_as_pem(key))
        _write_private(cert_path, certificate.public_bytes(serialization.Encoding.DER))
    for path in (cert_path, key_path):
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    return OwnCertificate(cert_path, key_path)


def _trusted_certificates(folder: Path) -> list[x509.Certificate]:
    certificates = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
            try:
                certificates.append(load_certificate(path))
            except ValueError:
                continue
    return certificates


def check_server_certificate(certificate: x509.Certificate, *, pinned: Path | None, trusted_dir: Path | None) -> None:
    """Accept ``certificate`` only if it equals the pinned certificate or one in ``trusted_dir``, and is in its validity period.

    Raises :class:`CertificateRejected` naming the certificate's SHA-256 thumbprint, so that an engineer can
    compare it with the one shown by the server before trusting it.
    """
    print_ = thumbprint(certificate)
    now = datetime.datetime.now(datetime.timezone.utc)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise CertificateRejected(
            f"server certificate {print_} is outside its validity period "
            f"{certificate.not_valid_before_utc:%Y-%m-%d} .. {certificate.not_valid_after_utc:%Y-%m-%d}",
            thumbprint=print_,
        )
    candidates: list[x509.Certificate] = []
    if pinned is not None:
        candidates.append(load_certificate(pinned))
        pinned_print = thumbprint(candidates[0])
    if trusted_dir is not None and trusted_dir.is_dir():
        candidates.extend(_trusted_certificates(trusted_dir))
    if any(thumbprint(candidate) == print_ for candidate in candidates):
        return
    where = f"the pinned certificate {pinned} ({pinned_print})" if pinned is not None else f"the trusted folder {trusted_dir}"
    raise CertificateRejected(
        f"server certificate {print_} ({certificate.subject.rfc4514_string()}) does not match {where}; "
        "if it is the right server, copy its certificate there",
        thumbprint=print_,
    )
