"""Vouchers of a billing period that wait behind a gap in their gateway's voucher chain, and the missing vouchers that hold them.

Settlement bills a voucher only once every earlier sequence of its gateway is
stored (see ``valuegate.cloud.settlement.store.BILLABLE_SQL``). A run whose
vouchers wait behind a gap would otherwise show a short total, or 0.00, with
nothing to say why, so the run stores what waits and what is missing, and its
page and exports name both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from valuegate.edge.protocol.contract import Contract

from .invoice import BillingPeriod

__all__ = ("REJECTED_SEQ_SQL", "MissingRun", "gap_waiting", "missing_runs")

Conn = psycopg.AsyncConnection[Any]

# The sequence number of a rejection row's voucher id (``gateway:seq``), or NULL when the id does not read so.
# The CASE keeps PostgreSQL from casting an id that is not a number, whatever order it evaluates the filters in.
REJECTED_SEQ_SQL = """CASE WHEN left(r.voucher_id, length(r.gateway_id) + 1) = r.gateway_id || ':'
     AND substr(r.voucher_id, length(r.gateway_id) + 2) ~ '^[0-9]{1,18}$'
     THEN substr(r.voucher_id, length(r.gateway_id) + 2)::bigint END"""

# Stored vouchers of priced anchors in the period that lie past their gateway's contiguous chain.
# A voucher whose re-computation disagreed stays out, because the gap is not what keeps it from billing.
_GAP_WAITING_SQL = """
SELECT v.gateway_id, count(*) AS vouchers, min(v.seq) AS first_seq, max(v.seq) AS last_seq, g.contiguous_through
FROM vouchers v
JOIN voucher_chain c ON c.voucher_id = v.voucher_id
JOIN gateway_chain g ON g.gateway_id = v.gateway_id
WHERE v.tenant_id = %s AND v.contract_id = %s AND v.anchor_id = ANY(%s) AND v.plant_date BETWEEN %s AND %s
  AND v.seq > g.contiguous_through AND c.reproduced IS DISTINCT FROM false
GROUP BY v.gateway_id, g.contiguous_through
ORDER BY v.gateway_id
"""

# Per gateway with a gap, the first run of missing sequences: from the one after the contiguous chain to the one
# before the next stored voucher. Every voucher rejection of the tenant for a sequence of that run joins it,
# whatever contract it names: a key_revoked or key_unknown rejection names none (see valuegate.cloud.chain.rejection_hints).
_MISSING_SQL = f"""
WITH gaps AS (
  SELECT g.gateway_id, g.contiguous_through + 1 AS first_missing,
         (SELECT min(c.seq) FROM voucher_chain c WHERE c.gateway_id = g.gateway_id AND c.seq > g.contiguous_through) - 1 AS last_missing
  FROM gateway_chain g WHERE g.gateway_id = ANY(%s) AND g.highest_seq > g.contiguous_through
), rejected AS (
  SELECT r.gateway_id, {REJECTED_SEQ_SQL} AS seq, r.code, r.reason, r.last_received_at, r.id
  FROM rejections r WHERE r.tenant_id = %s AND r.kind = 'voucher' AND r.gateway_id = ANY(%s)
)
SELECT m.gateway_id, m.first_missing, m.last_missing, r.seq, r.code, r.reason
FROM gaps m LEFT JOIN rejected r ON r.gateway_id = m.gateway_id AND r.seq BETWEEN m.first_missing AND m.last_missing
ORDER BY m.gateway_id, r.seq, r.last_received_at DESC, r.id DESC
"""


@dataclass(frozen=True, slots=True)
class MissingRun:
    """The first run of missing sequences of a gateway's chain, which every later voucher of the gateway waits behind."""

    gateway: str
    first: int
    last: int
    rejected: int
    """How many sequences of the run have a rejection stored for the tenant."""
    codes: tuple[str, ...]
    """The distinct rejection codes of the run, in the order of their lowest sequence."""
    first_code: str | None
    """The code of the latest rejection of the first missing sequence; None when none is stored."""
    first_reason: str | None
    """The stored English reason of that rejection."""

    @property
    def first_voucher(self) -> str:
        return f"{self.gateway}:{self.first}"


async def missing_runs(conn: Conn, tenant_id: str, gateway_ids: Iterable[str]) -> dict[str, MissingRun]:
    """Return, per gateway of ``gateway_ids`` whose chain has a gap, its first run of missing sequences and their rejections."""
    gateways = sorted(set(gateway_ids))
    if not gateways:
        return {}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_MISSING_SQL, (gateways, tenant_id, gateways))
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        rows.setdefault(row["gateway_id"], []).append(row)
    runs = {}
    for gateway, found in rows.items():
        first, last = int(found[0]["first_missing"]), int(found[0]["last_missing"])
        rejections = [row for row in found if row["seq"] is not None]
        at_first = [row for row in rejections if row["seq"] == first]
        runs[gateway] = MissingRun(
            gateway, first, last, rejected=len({row["seq"] for row in rejections}), codes=tuple(dict.fromkeys(row["code"] for row in rejections)),
            first_code=at_first[0]["code"] if at_first else None, first_reason=at_first[0]["reason"] if at_first else None,
        )
    return runs


async def gap_waiting(conn: Conn, tenant_id: str, contract: Contract, period: BillingPeriod) -> list[dict[str, Any]]:
    """Return, per gateway, the period's vouchers that a chain gap keeps from billing and the missing vouchers that hold them.

    Each entry has ``gateway``, ``vouchers`` (their count), and ``first_seq``
    and ``last_seq`` (their lowest and highest sequence). ``stored_through``
    is the last sequence before the gap, and ``missing_first`` and
    ``missing_last`` bound the run of missing sequences right after it.
    ``missing_rejected`` counts those with a rejection stored, and
    ``missing_codes`` lists the rejection codes. The list is JSON, as the run stores it.
    """
    priced = [anchor.id for anchor in contract.anchors if anchor.price is not None]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_GAP_WAITING_SQL, (tenant_id, contract.id, priced, period.first, period.last))
    rows = await cur.fetchall()
    missing = await missing_runs(conn, tenant_id, [row["gateway_id"] for row in rows])
    waiting = []
    for row in rows:
        stored_through = int(row["contiguous_through"])
        # The chain may move between the two queries; the gap's bounds alone then stand for the missing run.
        run = missing.get(row["gateway_id"]) or MissingRun(row["gateway_id"], stored_through + 1, int(row["first_seq"]) - 1, 0, (), None, None)
        waiting.append({
            "gateway": row["gateway_id"], "vouchers": int(row["vouchers"]), "first_seq": int(row["first_seq"]), "last_seq": int(row["last_seq"]),
            "stored_through": stored_through, "missing_first": run.first, "missing_last": run.last,
            "missing_rejected": run.rejected, "missing_codes": list(run.codes),
        })  # fmt: skip
    return waiting
