"""Vouchers of a billing period that wait behind a gap in their gateway's voucher chain.

Settlement bills a voucher only once every earlier sequence of its gateway is
stored (see ``valuegate.cloud.settlement.store.BILLABLE_SQL``). A run whose
vouchers wait behind a gap would otherwise show a short total, or 0.00, with
nothing to say why, so the run stores what waits and its page and exports name it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from valuegate.edge.protocol.contract import Contract

from .invoice import BillingPeriod

__all__ = ("gap_waiting",)

Conn = psycopg.AsyncConnection[Any]

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


async def gap_waiting(conn: Conn, tenant_id: str, contract: Contract, period: BillingPeriod) -> list[dict[str, Any]]:
    """Return, per gateway, the period's vouchers that a chain gap keeps from billing.

    Each entry has ``gateway``, ``vouchers`` (their count), ``first_seq`` and
    ``last_seq`` (their lowest and highest sequence) and ``stored_through``,
    the last sequence before the gap. The list is JSON, as the run stores it.
    """
    priced = [anchor.id for anchor in contract.anchors if anchor.price is not None]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_GAP_WAITING_SQL, (tenant_id, contract.id, priced, period.first, period.last))
    return [
        {"gateway": row["gateway_id"], "vouchers": int(row["vouchers"]), "first_seq": int(row["first_seq"]), "last_seq": int(row["last_seq"]),
         "stored_through": int(row["contiguous_through"])}
        for row in await cur.fetchall()
    ]  # fmt: skip
