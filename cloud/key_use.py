"""Which of a gateway's sequences a key signs, and how many of them the cloud has not stored yet.

A revocation rejects every voucher of the key that arrives after it, also
one signed long before. Revoking a key while vouchers it signed still
wait in the gateway's outbox therefore leaves those sequences missing for
good. The revoke command calls :func:`key_use` first and raises Conflict
unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ("KeyUse", "key_use")

Conn = psycopg.AsyncConnection[Any]

_SIGNED_BY = "v.document -> 'proof' ->> 'verificationMethod'"


@dataclass(frozen=True, slots=True)
class KeyUse:
    """``last_seq``: the highest sequence the key can have signed, or None while the gateway may still sign with it.

    ``missing`` counts the sequences up to ``last_seq`` the cloud has not
    stored, ``first_missing`` is the lowest of them, and ``latest_seq`` is
    the gateway's highest stored sequence (0 when none is stored).
    """

    last_seq: int | None
    missing: int
    first_missing: int | None
    latest_seq: int


async def _scalar(conn: Conn, sql: str, params: tuple[Any, ...]) -> Any:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return row[0] if row else None


async def key_use(conn: Conn, gateway_id: str, key: dict[str, Any]) -> KeyUse:
    """Find how far ``key`` (a ``gateway_keys`` row) signs the gateway's chain and what of that is stored.

    A rotation statement ends a key at ``until_seq``. Without one (a key
    replaced after a loss) the key ends below the first stored voucher
    that another key signed after the key's own latest stored voucher.
    """
    latest = int(await _scalar(conn, "SELECT coalesce(max(seq), 0) FROM voucher_chain WHERE gateway_id = %s", (gateway_id,)))
    last = key["until_seq"]
    if last is None:
        method = f"did:key:{key['public_key']}#{key['public_key']}"
        join = "FROM voucher_chain c JOIN vouchers v ON v.voucher_id = c.voucher_id AND v.period_start = c.period_start WHERE c.gateway_id = %s"
        own = await _scalar(conn, f"SELECT max(c.seq) {join} AND {_SIGNED_BY} = %s", (gateway_id, method))
        other = await _scalar(conn, f"SELECT min(c.seq) {join} AND {_SIGNED_BY} <> %s AND c.seq > %s", (gateway_id, method, own or 0))
        if other is None:
            return KeyUse(last_seq=None, missing=0, first_missing=None, latest_seq=latest)
        last = int(other) - 1
    stored = int(await _scalar(conn, "SELECT count(*) FROM voucher_chain WHERE gateway_id = %s AND seq <= %s", (gateway_id, last)))
    missing = last - stored
    first = None
    if missing:
        through = await _scalar(conn, "SELECT contiguous_through FROM gateway_chain WHERE gateway_id = %s", (gateway_id,))
        first = int(through or 0) + 1
    return KeyUse(last_seq=last, missing=missing, first_missing=first, latest_seq=latest)
