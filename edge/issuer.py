"""Voucher issuing: turns an anchor's day result into signed claims, numbered and chained in the outbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog

from . import outbox
from .keys import KeyFileError, KeyFiles, SigningKey, load_signing_key, read_rotations
from .outbox import PendingVoucher
from .protocol.keyrotation import key_for_seq, parse_rotation
from .jcs import sign_and_hash
from .protocol.voucher import SCHEMA, Claims, voucher_id
from .spool import Spool

__all__ = ("VoucherSigner", "claims_from", "iso_utc")

log = structlog.get_logger("valuegate.edge.issuer")


def iso_utc(epoch_ms: int) -> str:
    """Format epoch milliseconds as an XML Schema UTC datetime with second precision."""
    return dt.datetime.fromtimestamp(epoch_ms // 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def claims_from(
    body: dict[str, Any],
    *,
    tenant: str,
    site: str,
    gateway: str,
    seq: int,
    prev: str | None,
    issued_at: str,
) -> Claims:
    """Build the claims of one voucher from an anchor-day body (contract, anchor, machines, period and results)."""
    subject = {
        "schema": SCHEMA,
        "voucher_id": voucher_id(gateway, seq),
        "tenant": tenant,
        "site": site,
        "gateway": gateway,
        "seq": seq,
        "prev": prev,
        "issued_at": issued_at,
        **{name: body[name] for name in ("contract", "anchor", "machines", "period", "metric", "reporting", "baseline", "delta", "sufficiency", "evidence")},
    }
    return msgspec.convert(subject, Claims)


class VoucherSigner:
    """Signs vouchers with the gateway key in force for each sequence number.

    Before every issuing transaction the signer checks the key folder's
    rotation statements: when ``valuegate keys rotate`` has announced a new
    key from a sequence at or below the next one, the signer loads it, so
    that a rotation never splits the chain.
    """

    def __init__(self, key_dir: Path, *, tenant: str, site: str, gateway: str) -> None:
        self.key_dir = key_dir
        self.tenant = tenant
        self.site = site
        self.gateway = gateway
        self.key: SigningKey = load_signing_key(key_dir)
        self._rotations_stamp = self._stamp()
        self._rotations = read_rotations(key_dir)
        self.key_changes = 0
        """Times a rotation made the signer load a new key; the agent then publishes its status again."""

    def _stamp(self) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        """Identify the rotation statements and the key file as they are now, so that either change makes the signer reload.

        The key file counts too: ``keys new --replace-lost`` on a gateway that never rotated writes only a new key file.
        """
        return _file_stamp(self.key_dir / "rotations.json"), _file_stamp(KeyFiles(self.key_dir).key)

    def rotations(self) -> list[dict[str, Any]]:
        return list(self._rotations)

    def before_sign(self, next_seq: int) -> None:
        """Load the key that must sign ``next_seq``; called inside the issuing transaction."""
        stamp = self._stamp()
        # While the key file is moved aside for a replacement, the loaded key keeps signing until the new file exists.
        if stamp != self._rotations_stamp and stamp[1] is not None:
            try:
                key = load_signing_key(self.key_dir)
            except KeyFileError as exc:
                # A key file caught while it is being written; the next voucher tries again.
                log.warning("signing_key_unreadable", gateway=self.gateway, error=str(exc))
                key = None
            if key is not None:
                self._rotations = read_rotations(self.key_dir)
                self._rotations_stamp = stamp
                self.key = key
                self.key_changes += 1
                log.info("signing_key_loaded", gateway=self.gateway, verification_method=self.key.verification_method, from_seq=next_seq)
        if self._rotations:
            expected = key_for_seq(self._first_key(), self._rotations, next_seq)
            if expected != self.key.verification_method:
                msg = (
                    f"seq {next_seq} must be signed by {expected}, but the key file holds {self.key.verification_method}; "
                    f"restore the key named in {self.key_dir / 'rotations.json'}"
                )
                raise RuntimeError(msg)

    def _first_key(self) -> str:
        return parse_rotation(self._rotations[0]).previous_key

    def sign(self, seq: int, prev: str | None, item: PendingVoucher, *, issued_at: str) -> tuple[dict[str, Any], str]:
        """Return the signed voucher and its chain hash."""
        claims = claims_from(item.body, tenant=self.tenant, site=self.site, gateway=self.gateway, seq=seq, prev=prev, issued_at=issued_at)
        method = self.key.verification_method
        return sign_and_hash(claims, self.key.private_key, method=method, issuer=method.partition("#")[0])

    def issue(self, spool: Spool, items: Sequence[PendingVoucher], *, now_ms: int) -> list[dict[str, Any]]:
        """Number, sign and store ``items`` in one spool transaction; return the signed vouchers."""
        issued_at = iso_utc(now_ms)
        return outbox.issue_vouchers(
            spool,
            items,
            lambda seq, prev, item: self.sign(seq, prev, item, issued_at=issued_at),
            now_ms=now_ms,
            before_sign=self.before_sign,
        )


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size
