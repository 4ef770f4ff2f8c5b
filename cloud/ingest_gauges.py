"""Ingest gauges read from the database: the reproduction backlog and the gateways with a chain gap.

A worker's own batches show only part of the picture: another process may
have stored the rows, and a gateway that stopped sending after a gap sends
no batch at all. So each worker counts these from the tables during its
housekeeping, at most every ``interval_s``, and sets the process's gauges.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from . import metrics
from .chain import count_gap_gateways
from .reproduce import count_waiting

__all__ = ("GAUGE_INTERVAL_S", "GAUGE_AFTER_CHANGE_S", "DatabaseGauges")

# Each count reads at most the pending rows of voucher_chain and every row of gateway_chain.
GAUGE_INTERVAL_S = 30.0
# After a pass that gave vouchers a verdict the counts have moved, so they are taken again this soon.
GAUGE_AFTER_CHANGE_S = 2.0


class DatabaseGauges:
    """Sets ``valuegate_vouchers_waiting_for_records``, ``valuegate_vouchers_pending`` and ``valuegate_chain_gap_gateways``."""

    def __init__(self, *, records_wait_s: float, interval_s: float = GAUGE_INTERVAL_S) -> None:
        self.records_wait_s = records_wait_s
        self.interval_s = interval_s
        self._counted_at: float | None = None
        self._changed = False

    async def update(self, conn: psycopg.AsyncConnection[Any], *, changed: bool = False) -> bool:
        """Count and set the gauges if ``interval_s`` has passed since the last count; return whether it counted.

        ``changed``: this worker's pass just gave vouchers a verdict, so the counts are taken
        again once ``GAUGE_AFTER_CHANGE_S`` has passed.
        """
        now = time.monotonic()
        # Kept until the next count, so that a verdict just after a count still moves the gauges within seconds.
        self._changed = self._changed or changed
        wait_s = min(self.interval_s, GAUGE_AFTER_CHANGE_S) if self._changed else self.interval_s
        if self._counted_at is not None and now - self._counted_at < wait_s:
            return False
        pending, waiting = await count_waiting(conn, records_wait_s=self.records_wait_s)
        gaps = await count_gap_gateways(conn)
        await conn.commit()
        metrics.VOUCHERS_PENDING.set(pending)
        metrics.WAITING_FOR_RECORDS.set(waiting)
        metrics.CHAIN_GAPS.set(gaps)
        self._counted_at = now
        self._changed = False
        return True
