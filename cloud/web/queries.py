"""Read queries behind the contract page and the renewal packages: downtime by reason, machine availability, findings."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import dict_row

from valuegate.cloud.reports import SUPERSEDED_SQL
from valuegate.cloud.settlement.gaps import REJECTED_SEQ_SQL

__all__ = (
    "Downtime",
    "Span",
    "downtime_by_reason",
    "downtime_by_span",
    "machine_availability",
    "machine_period_totals",
    "anchor_gains",
    "chain_gaps",
    "gap_vouchers",
    "rejections",
    "rejection_groups",
    "rejected_payloads",
    "unreproduced_vouchers",
)

Conn = psycopg.AsyncConnection[Any]

# Planned busy time (ISO 22400-2) per minute record: everything but planned stops and missing data.
_PBT_MS = "(running_ms + idle_ms + unplanned_stop_ms + changeover_ms)"


async def _rows(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


class Downtime(NamedTuple):
    """Unplanned downtime of machines over dates: minutes per reason code, minutes of stops without a code, planned busy minutes."""

    by_reason: dict[str, float]
    unassigned: float
    planned_busy: float


async def downtime_by_reason(conn: Conn, tenant_id: str, machines: list[str], first: dt.date, last: dt.date) -> Downtime:
    """Return the unplanned downtime minutes per reason code over the machines and dates, those without a code and the planned busy minutes."""
    return (await downtime_by_span(conn, tenant_id, [Span("", machines, first, last)]))[""]


class Span(NamedTuple):
    """Machines and plant dates whose downtime is summed under ``key``, such as a value anchor's scope and reporting period."""

    key: str
    machines: list[str]
    first: dt.date
    last: dt.date


_SPANS = "unnest(%s::text[], %s::text[], %s::date[], %s::date[]) AS s(span, machine_id, first_date, last_date)"


async def downtime_by_span(conn: Conn, tenant_id: str, spans: list[Span]) -> dict[str, Downtime]:
    """Return :func:`downtime_by_reason` for every span in two statements, however many spans there are.

    The downtime per reason code comes from ``machine_reason_day``, and planned busy and unplanned stop time from ``machine_day``.
    On plain PostgreSQL both are tables of a few rows per machine and plant date that triggers keep current, so the cost does
    not grow with the minutes stored. On TimescaleDB ``machine_reason_day`` is a view that groups the minute records.
    A span without any telemetry gets zeros.
    """
    if not spans:
        return {}
    flat = [(span.key, machine, span.first, span.last) for span in spans for machine in span.machines]
    columns = [list(column) for column in zip(*flat, strict=True)] if flat else [[], [], [], []]
    coded = await _rows(
        conn,
        f"SELECT s.span, r.reason, sum(r.ms) AS ms FROM {_SPANS} JOIN machine_reason_day r ON r.tenant_id = %s AND r.machine_id = s.machine_id"
        " AND r.plant_date BETWEEN s.first_date AND s.last_date GROUP BY s.span, r.reason",
        (*columns, tenant_id),
    )
    totals = await _rows(
        conn,
        f"SELECT s.span, sum({_PBT_MS}) AS busy_ms, sum(d.unplanned_stop_ms) AS down_ms FROM {_SPANS} JOIN machine_day d"
        " ON d.tenant_id = %s AND d.machine_id = s.machine_id AND d.plant_date BETWEEN s.first_date AND s.last_date GROUP BY s.span",
        (*columns, tenant_id),
    )
    reasons: dict[str, dict[str, int]] = {span.key: {} for span in spans}
    for row in coded:
        reasons[row["span"]][row["reason"]] = int(row["ms"])
    sums = {row["span"]: (int(row["busy_ms"]), int(row["down_ms"])) for row in totals}
    result = {}
    for span in spans:
        busy_ms, down_ms = sums.get(span.key, (0, 0))
        by_reason = reasons[span.key]
        # A PLC without a reason tag, or a stop whose code is in the tag map's no_reason list, leaves the time without a code.
        unassigned_ms = max(down_ms - sum(by_reason.values()), 0)
        result[span.key] = Downtime({code: ms / 60_000 for code, ms in by_reason.items()}, unassigned_ms / 60_000, busy_ms / 60_000)
    return result


async def machine_availability(conn: Conn, tenant_id: str, machines: list[str], first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Return per machine the planned busy and running minutes over the dates and availability = running / planned busy."""
    return await _period_totals(conn, "telemetry", tenant_id, machines, first, last)


async def machine_period_totals(conn: Conn, tenant_id: str, machines: list[str], first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Return what :func:`machine_availability` returns, summed from the machine-day aggregate instead of the minute records.

    One statement reads a few rows per machine and day, so its cost does not grow with the minutes stored.
    """
    return await _period_totals(conn, "machine_day", tenant_id, machines, first, last)


async def _period_totals(conn: Conn, table: str, tenant_id: str, machines: list[str], first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Sum per machine over the dates from ``table``: the minute records or the machine-day aggregate, which have the same columns."""
    rows = await _rows(
        conn,
        f"SELECT machine_id, sum({_PBT_MS}) AS busy_ms, sum(running_ms) AS run_ms, sum(unplanned_stop_ms) AS down_ms, sum(stops) AS stops"
        f" FROM {table} WHERE tenant_id = %s AND machine_id = ANY(%s) AND plant_date BETWEEN %s AND %s GROUP BY machine_id ORDER BY machine_id",
        (tenant_id, machines, first, last),
    )
    return _availability(rows)


def _availability(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for row in rows:
        busy = int(row["busy_ms"])
        result.append(
            {
                "machine": row["machine_id"],
                "planned_busy_min": busy / 60_000,
                "run_min": int(row["run_ms"]) / 60_000,
                "unplanned_min": int(row["down_ms"]) / 60_000,
                "stops": int(row["stops"]),
                "availability": int(row["run_ms"]) / busy if busy else None,
            }
        )
    return result


async def anchor_gains(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return every stored voucher's daily gain, interval, sufficiency reasons and planned busy minutes, oldest day first.

    ``state`` is ``gap`` behind a gap in the gateway's chain, ``mismatch`` when the re-computation disagreed, else ``billable``,
    by the rule settlement bills with (``valuegate.cloud.settlement.store.BILLABLE_SQL``).
    """
    return await _rows(
        conn,
        "SELECT v.anchor_id, v.plant_date, v.delta_point, v.delta_low, v.delta_high, v.sufficient, v.running_day, v.quantity, v.reporting_value,"
        " v.baseline_value, v.document->'credentialSubject'->'sufficiency'->'reasons' AS reasons, v.voucher_id,"
        " (v.document->'credentialSubject'->'reporting'->>'planned_busy_min')::float8 AS planned_busy_min,"
        " CASE WHEN v.seq > coalesce(g.contiguous_through, 0) THEN 'gap' WHEN c.reproduced = false THEN 'mismatch' ELSE 'billable' END AS state"
        " FROM vouchers v JOIN voucher_chain c ON c.gateway_id = v.gateway_id AND c.seq = v.seq"
        " LEFT JOIN gateway_chain g ON g.gateway_id = v.gateway_id"
        " WHERE v.tenant_id = %s AND v.contract_id = %s ORDER BY v.plant_date, v.voucher_id",
        (tenant_id, contract_id),
    )


async def chain_gaps(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return the gateways of the contract whose chain has a gap: stored through N, but a higher sequence arrived."""
    return await _rows(
        conn,
        "SELECT g.gateway_id, g.contiguous_through, g.highest_seq FROM gateway_chain g"
        " WHERE g.highest_seq > g.contiguous_through AND g.gateway_id IN"
        " (SELECT DISTINCT gateway_id FROM voucher_chain WHERE tenant_id = %s AND contract_id = %s) ORDER BY g.gateway_id",
        (tenant_id, contract_id),
    )


async def gap_vouchers(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return per anchor and gateway the contract's stored vouchers behind a gap in the gateway's chain: their count and the gap's bounds."""
    return await _rows(
        conn,
        "SELECT v.anchor_id, v.gateway_id, count(*) AS vouchers, g.contiguous_through, g.highest_seq FROM vouchers v"
        " JOIN gateway_chain g ON g.gateway_id = v.gateway_id"
        " WHERE v.tenant_id = %s AND v.contract_id = %s AND v.seq > g.contiguous_through"
        " GROUP BY v.anchor_id, v.gateway_id, g.contiguous_through, g.highest_seq ORDER BY v.anchor_id, v.gateway_id",
        (tenant_id, contract_id),
    )


# The contract's rejections that no later stored voucher of the same id superseded.
_OPEN_REJECTIONS = f"FROM rejections r WHERE r.tenant_id = %s AND r.contract_id = %s AND NOT {SUPERSEDED_SQL}"


async def rejections(conn: Conn, tenant_id: str, contract_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    """Return the contract's open rejections, one per voucher id and code (the latest), by gateway and sequence.

    The table keeps a row per payload, code and topic, so a voucher id has several rows when its gateway signed it more than once.
    ``payload`` is the latest stored payload, and a row without a readable sequence comes last, newest first.
    """
    return await _rows(
        conn,
        "SELECT voucher_id, gateway_id, code, reason, received_at, payload FROM"
        " (SELECT DISTINCT ON (r.gateway_id, r.voucher_id, r.code) r.id, r.voucher_id, r.gateway_id, r.code, r.reason, r.received_at,"
        f" r.last_received_at, r.payload, {REJECTED_SEQ_SQL} AS seq"
        f" {_OPEN_REJECTIONS} ORDER BY r.gateway_id, r.voucher_id, r.code, r.last_received_at DESC, r.id DESC) latest"
        " ORDER BY gateway_id, seq NULLS LAST, code, last_received_at DESC, id DESC LIMIT %s",
        (tenant_id, contract_id, limit),
    )


async def rejection_groups(conn: Conn, tenant_id: str, contract_id: str, *, details: int = 50) -> list[dict[str, Any]]:
    """Return the contract's open rejections grouped by gateway and code, ordered by gateway and code.

    Each group has its distinct ``voucher_ids``, ``unnamed`` (distinct payloads without a voucher id), the ``latest_reason``
    and up to ``details`` distinct English ``reasons``, enough for the page to collapse those that differ only in a timestamp. Counting distinct ids and payloads keeps a group's numbers the same
    however many times the gateway resent a voucher.
    """
    return await _rows(
        conn,
        "SELECT coalesce(r.gateway_id, '?') AS gateway_id, r.code,"
        " coalesce(array_agg(DISTINCT r.voucher_id) FILTER (WHERE r.voucher_id IS NOT NULL), '{}') AS voucher_ids,"
        " count(DISTINCT r.payload_sha256) FILTER (WHERE r.voucher_id IS NULL) AS unnamed,"
        " (array_agg(r.reason ORDER BY r.last_received_at DESC, r.id DESC))[1] AS latest_reason,"
        " (array_agg(DISTINCT r.reason))[1:%s] AS reasons"
        f" {_OPEN_REJECTIONS} GROUP BY 1, r.code ORDER BY 1, r.code",
        (details, tenant_id, contract_id),
    )


async def rejected_payloads(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return the latest stored payload of each open rejection with a voucher id, one per voucher id, for the gain chart."""
    return await _rows(
        conn,
        "SELECT DISTINCT ON (r.voucher_id) r.voucher_id, r.payload"
        f" {_OPEN_REJECTIONS} AND r.voucher_id IS NOT NULL AND r.payload IS NOT NULL"
        " ORDER BY r.voucher_id, r.last_received_at DESC, r.id DESC",
        (tenant_id, contract_id),
    )


async def unreproduced_vouchers(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return the contract's vouchers whose re-computation disagreed or is still pending with a detail, by gateway and sequence.

    ``reproduced`` is False for a disagreement and None while pending; a voucher never tried yet has no detail and is left out.
    """
    return await _rows(
        conn,
        "SELECT v.anchor_id, v.gateway_id, v.seq, c.reproduced, c.reproduce_detail FROM vouchers v"
        " JOIN voucher_chain c ON c.gateway_id = v.gateway_id AND c.seq = v.seq"
        " WHERE v.tenant_id = %s AND v.contract_id = %s"
        " AND (c.reproduced = false OR (c.reproduced IS NULL AND c.reproduce_detail IS NOT NULL))"
        " ORDER BY v.gateway_id, v.seq",
        (tenant_id, contract_id),
    )
