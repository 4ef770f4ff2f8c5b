"""Read models for the API and the web UI: realized contract value, vouchers with their state, machine-day KPIs.

A voucher counts toward value when it is stored (its proof, key and topic
were checked on ingest), lies within its gateway's contiguous chain, and its
recomputation did not disagree. The same rule selects billable vouchers in
settlement, and the days a non-routine adjustment excludes are left out by
settlement's own exclusion rule, so a report and an invoice read the same inputs.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec
import psycopg
from psycopg.rows import dict_row

from valuegate.edge.kernels import kpis, totals_from_columns

from .contracts import current_contract
from .store import NotFound

__all__ = ("VOUCHER_STATES", "SUPERSEDED_SQL", "contract_value", "contract_vouchers", "get_voucher", "list_machines", "MachineReport", "machine_kpis", "machine_report", "list_rejections", "list_audit")

Conn = psycopg.AsyncConnection[Any]
VOUCHER_STATES = ("verified", "reproduced", "mismatch", "gap", "rejected")

# State of a stored voucher, derived from its chain position and its recomputation.
_STATE_SQL = """CASE WHEN v.seq > coalesce(g.contiguous_through, 0) THEN 'gap'
     WHEN c.reproduced THEN 'reproduced' WHEN c.reproduced = false THEN 'mismatch' ELSE 'verified' END"""

_VALUE_SQL = f"""
SELECT v.anchor_id, v.voucher_id, v.gateway_id, v.seq, v.plant_date, v.quantity, v.delta_point, v.delta_low,
       v.running_day, v.sufficient, {_STATE_SQL} AS state
FROM vouchers v
JOIN voucher_chain c ON c.gateway_id = v.gateway_id AND c.seq = v.seq
LEFT JOIN gateway_chain g ON g.gateway_id = v.gateway_id
WHERE v.tenant_id = %s AND v.contract_id = %s
"""


def _pricing() -> Any:
    from valuegate.cloud.settlement import pricing

    return pricing


def _settlement() -> tuple[Any, Any]:
    from valuegate.cloud.settlement import invoice, store

    return invoice, store


# A rejection is superseded once the same voucher id was stored after it, for example when the gateway resent a voucher that
# arrived before its key rotation was known. The voucher then has its stored state, and the rejection stays only in the rejections list.
# Superseded: the same bytes were stored later (a voucher rejected once, for example before its new key was
# registered, then resent). A different payload under a stored voucher's id, such as a forgery, stays a rejection.
# The stored document is the payload as received (see valuegate.cloud.chain), so their SHA-256 digests compare.
SUPERSEDED_SQL = """EXISTS (SELECT 1 FROM vouchers sv WHERE sv.tenant_id = r.tenant_id AND sv.voucher_id = r.voucher_id
    AND sv.stored_at >= r.received_at AND encode(sha256(convert_to(sv.document::text, 'UTF8')), 'hex') = r.payload_sha256)"""


# Realized value per (tenant, contract), with the data version it was computed from.
_value_cache: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()
_VALUE_CACHE_SIZE = 256


async def _value_version(conn: Conn, tenant_id: str, contract_id: str, revision: int) -> tuple[Any, ...]:
    # Ingest and recomputation bump the contract's counter on every change to its vouchers.
    cur = await conn.execute("SELECT version FROM contract_activity WHERE tenant_id = %s AND contract_id = %s", (tenant_id, contract_id))
    row = await cur.fetchone()
    return (revision, row[0] if row else 0)


async def contract_value(conn: Conn, tenant_id: str, contract_id: str) -> dict[str, Any]:
    """Return, per anchor, the realized quantities over counted vouchers and the money the contract's price gives them.

    The result is kept per process and reused until the contract or any of its vouchers changes.
    """
    contract, revision = await current_contract(conn, tenant_id, contract_id)
    key = (tenant_id, contract_id)
    exclusions = await _settlement()[1].load_exclusions(conn, tenant_id, contract_id)
    version = (*await _value_version(conn, tenant_id, contract_id, revision), tuple(exclusions))
    cached = _value_cache.get(key)
    if cached is not None and cached[0] == version:
        _value_cache.move_to_end(key)
        return cached[1]
    result = await _compute_value(conn, tenant_id, contract, revision, exclusions)
    _value_cache[key] = (version, result)
    while len(_value_cache) > _VALUE_CACHE_SIZE:
        _value_cache.popitem(last=False)
    return result


async def _rejected_by_anchor(conn: Conn, tenant_id: str, contract_id: str) -> dict[str | None, int]:
    """Count the contract's rejected vouchers that no stored voucher superseded, per value anchor their latest payload names.

    One voucher may be rejected for several causes (or under several payloads), so the count is of distinct
    voucher ids, or payloads without one. A payload that names no anchor counts under None.
    """
    cur = await conn.execute(
        "SELECT DISTINCT ON (coalesce(r.voucher_id, r.payload_sha256)) r.payload FROM rejections r"
        f" WHERE r.tenant_id = %s AND r.contract_id = %s AND NOT {SUPERSEDED_SQL}"
        " ORDER BY coalesce(r.voucher_id, r.payload_sha256), r.last_received_at DESC, r.id DESC",
        (tenant_id, contract_id),
    )
    counts: dict[str | None, int] = {}
    for (payload,) in await cur.fetchall():
        anchor = None
        try:
            anchor = msgspec.json.decode(bytes(payload))["credentialSubject"]["anchor"] if payload is not None else None
        except (msgspec.DecodeError, KeyError, TypeError):
            pass
        key = anchor if isinstance(anchor, str) else None
        counts[key] = counts.get(key, 0) + 1
    return counts


async def _compute_value(conn: Conn, tenant_id: str, contract: Any, revision: int, exclusions: list[Any]) -> dict[str, Any]:
    contract_id = contract.id
    pricing = _pricing()
    invoice = _settlement()[0]
    cur = await conn.execute(_VALUE_SQL, (tenant_id, contract_id))
    per_anchor: dict[str, list[Any]] = {a.id: [] for a in contract.anchors}
    states: dict[str, dict[str, int]] = {a.id: dict.fromkeys(VOUCHER_STATES, 0) for a in contract.anchors}
    for anchor_id, vid, gateway, seq, plant_date, quantity, point, low, running, sufficient, state in await cur.fetchall():
        if anchor_id not in per_anchor:
            continue
        states[anchor_id][state] += 1
        if state in ("gap", "mismatch"):
            continue
        per_anchor[anchor_id].append(
            pricing.VoucherValue(vid, gateway, seq, anchor_id, plant_date.isoformat(), quantity, point, low, running, sufficient)
        )
    rejected = await _rejected_by_anchor(conn, tenant_id, contract_id)
    for anchor_id, count in rejected.items():
        if anchor_id in states:
            states[anchor_id]["rejected"] = count

    anchors = []
    total = Decimal(0)
    for anchor in contract.anchors:
        # Days a non-routine adjustment takes out of settlement are left out here too, by the rule an invoice run applies.
        values, left_out = invoice.split_excluded(per_anchor[anchor.id], exclusions)
        kept, superseded = pricing.latest_per_day(values)
        counted = [v for v in kept if v.sufficient]
        entry: dict[str, Any] = {
            "anchor": anchor.id,
            "title": anchor.title,
            "metric": anchor.metric,
            "quantity": counted[0].quantity if counted else None,
            "points_gained": sum((v.gain(contract.settlement) for v in counted if v.quantity != "avoided_downtime_min"), Decimal(0)),
            "avoided_minutes": sum((v.gain(contract.settlement) for v in counted if v.quantity == "avoided_downtime_min"), Decimal(0)),
            "running_days": sum(1 for v in counted if v.running_day),
            "vouchers": states[anchor.id],
            "superseded": len(superseded),
            "excluded": [{"voucher": v.voucher_id, "adjustment": x.id} for v, x in sorted(left_out, key=lambda pair: pair[0].voucher_id)],
            "amount": None,
            "unit_price": None,
            "cap_applied": False,
            "floor_applied": False,
            "pricing_error": None,
        }
        if anchor.price is not None:
            try:
                charge = pricing.price_anchor(contract, anchor.id, values)
            except pricing.PricingError as exc:
                entry["pricing_error"] = {"code": exc.code, "detail": str(exc)}
            else:
                entry.update(amount=charge.amount, unit_price=charge.unit_price, cap_applied=charge.cap_applied, floor_applied=charge.floor_applied)
                total += charge.amount
        anchors.append(entry)
    return {
        "contract": contract.id,
        "revision": revision,
        "currency": contract.currency,
        "settlement": contract.settlement,
        "total": total,
        "rejected": sum(rejected.values()),
        "anchors": anchors,
    }


_VOUCHER_COLUMNS = f"""v.voucher_id, v.gateway_id, v.seq, v.anchor_id, v.plant_date, v.period_start, v.period_end, v.metric,
    v.quantity, v.delta_point, v.delta_low, v.delta_high, v.reporting_value, v.baseline_value, v.running_day, v.sufficient,
    v.evidence_root, v.evidence_records, v.issued_at, v.stored_at, {_STATE_SQL} AS state, c.reproduce_detail"""


async def contract_vouchers(
    conn: Conn, tenant_id: str, contract_id: str, *, state: str | None = None, anchor: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """List the contract's vouchers with their state, newest plant day first; ``total`` counts every match, before the limit and offset.

    ``rejected`` lists rejections instead, leaving out those superseded by a stored voucher of the same id.
    """
    await current_contract(conn, tenant_id, contract_id)
    cur = conn.cursor(row_factory=dict_row)
    if state == "rejected":
        where = f" FROM rejections r WHERE r.tenant_id = %s AND r.contract_id = %s AND NOT {SUPERSEDED_SQL}"
        await cur.execute(
            "SELECT r.id, r.received_at, r.last_received_at, r.received_count, r.voucher_id, r.gateway_id, r.code, r.reason, 'rejected' AS state"
            f"{where} ORDER BY r.last_received_at DESC, r.id DESC LIMIT %s OFFSET %s",
            (tenant_id, contract_id, limit, offset),
        )
        items = with_actions(tenant_id, await cur.fetchall())
        total = await _count(conn, f"SELECT count(*){where}", [tenant_id, contract_id])
        return {"items": items, "limit": limit, "offset": offset, "total": total}
    sql = (
        f"SELECT {_VOUCHER_COLUMNS} FROM vouchers v JOIN voucher_chain c ON c.gateway_id = v.gateway_id AND c.seq = v.seq"
        " LEFT JOIN gateway_chain g ON g.gateway_id = v.gateway_id WHERE v.tenant_id = %s AND v.contract_id = %s"
    )
    params: list[Any] = [tenant_id, contract_id]
    if anchor is not None:
        sql += " AND v.anchor_id = %s"
        params.append(anchor)
    if state is not None:
        sql = f"SELECT * FROM ({sql}) s WHERE s.state = %s"
        params.append(state)
    await cur.execute(f"{sql} ORDER BY plant_date DESC, voucher_id LIMIT %s OFFSET %s", [*params, limit, offset])
    items = await cur.fetchall()
    if state is None:
        # Every stored voucher has its voucher_chain row, so the count needs no join and reads the contract index alone.
        count_sql = "SELECT count(*) FROM vouchers v WHERE v.tenant_id = %s AND v.contract_id = %s" + (" AND v.anchor_id = %s" if anchor is not None else "")
    else:
        count_sql = f"SELECT count(*) FROM ({sql}) counted"
    total = await _count(conn, count_sql, params)
    return {"items": items, "limit": limit, "offset": offset, "total": total}


async def _count(conn: Conn, sql: str, params: list[Any]) -> int:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def get_voucher(conn: Conn, tenant_id: str, voucher_id: str) -> dict[str, Any]:
    """Return one stored voucher with its signed document and state."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"SELECT {_VOUCHER_COLUMNS}, v.contract_id, v.document FROM vouchers v"
        " JOIN voucher_chain c ON c.gateway_id = v.gateway_id AND c.seq = v.seq"
        " LEFT JOIN gateway_chain g ON g.gateway_id = v.gateway_id WHERE v.tenant_id = %s AND v.voucher_id = %s",
        (tenant_id, voucher_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"voucher {voucher_id!r} not found")
    return row


async def list_machines(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, site_id, mapping_hash, time_source, ideal_cycle_time_s, updated_at FROM machines WHERE tenant_id = %s ORDER BY id", (tenant_id,)
    )
    return await cur.fetchall()


class MachineReport(NamedTuple):
    """One machine over plant dates: KPIs per day, and the sums its downtime Pareto needs, in milliseconds."""

    days: list[dict[str, Any]]
    reason_ms: dict[str, int]
    unplanned_stop_ms: int
    planned_busy_ms: int


async def machine_kpis(conn: Conn, tenant_id: str, machine_id: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Return ISO 22400-2 KPIs per plant day of one machine from the machine-day aggregate (days without data are left out)."""
    return (await machine_report(conn, tenant_id, machine_id, first, last)).days


async def machine_report(conn: Conn, tenant_id: str, machine_id: str, first: dt.date, last: dt.date) -> MachineReport:
    """Return :func:`machine_kpis` with the machine's downtime per reason code over the same dates, in three statements.

    The per-day sums come from ``machine_day`` and the reason codes from ``machine_reason_day``, not from the minute records.

    Raise :class:`NotFound` when the machine is unknown and has no telemetry either.
    """
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("SELECT ideal_cycle_time_s FROM machines WHERE tenant_id = %s AND id = %s", (tenant_id, machine_id))
    machine = await cur.fetchone()
    await cur.execute(
        "SELECT plant_date, sum(running_ms) AS running_ms, sum(idle_ms) AS idle_ms, sum(planned_stop_ms) AS planned_stop_ms,"
        " sum(unplanned_stop_ms) AS unplanned_stop_ms, sum(changeover_ms) AS changeover_ms, sum(offline_ms) AS offline_ms,"
        " sum(produced) AS produced, sum(reject) AS reject, sum(stops) AS stops, sum(minutes) AS minutes"
        " FROM machine_day WHERE tenant_id = %s AND machine_id = %s AND plant_date BETWEEN %s AND %s GROUP BY plant_date ORDER BY plant_date",
        (tenant_id, machine_id, first, last),
    )
    rows = await cur.fetchall()
    if machine is None and not rows:
        raise NotFound(f"machine {machine_id!r} not found")
    await cur.execute(
        "SELECT plant_date, reason, ms FROM machine_reason_day WHERE tenant_id = %s AND machine_id = %s AND plant_date BETWEEN %s AND %s",
        (tenant_id, machine_id, first, last),
    )
    reasons: dict[dt.date, dict[str, int]] = {}
    for row in await cur.fetchall():
        reasons.setdefault(row["plant_date"], {})[row["reason"]] = int(row["ms"])
    ideal = machine["ideal_cycle_time_s"] if machine else None
    days = []
    reason_ms: dict[str, int] = {}
    unplanned_ms = busy_ms = 0
    for row in rows:
        state_ms = [int(row[f"{name}_ms"]) for name in ("running", "idle", "planned_stop", "unplanned_stop", "changeover", "offline")]
        day_reasons = reasons.get(row["plant_date"], {})
        totals = totals_from_columns(state_ms, produced=int(row["produced"]), reject=int(row["reject"]), stops=int(row["stops"]),
                                     reasons=day_reasons or None, ideal_cycle_time_s=ideal)
        result = kpis(totals)
        days.append({"plant_date": row["plant_date"], "minutes": int(row["minutes"]), "kpis": result})
        for code, ms in day_reasons.items():
            reason_ms[code] = reason_ms.get(code, 0) + ms
        # Planned busy time (ISO 22400-2): everything but planned stops and missing data.
        running, idle, _, unplanned, changeover, _ = state_ms
        unplanned_ms += unplanned
        busy_ms += running + idle + unplanned + changeover
    return MachineReport(days, reason_ms, unplanned_ms, busy_ms)


def _revoked_key_action(tenant_id: str, gateway: str) -> str:
    # key-rotate would reject the statement, because the revoked key signed it, so the new key is registered on its own.
    return (f"the gateway still signs with this key: run `valuegate keys rotate` on gateway {gateway!r}, then register the new public key "
            f"(the did:key that `valuegate keys export-public` prints) with `valuegate cloud admin key-add {tenant_id} {gateway} NEW_KEY`")


def with_actions(tenant_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append to each rejection's stored reason what the tenant must do, for the codes that need a change on their side.

    The ingest check stores the reason as it found it. A revoked key keeps
    being rejected until the gateway signs with a new registered key, so its
    reason names the commands that do that.
    """
    for row in rows:
        if row.get("code") == "key_revoked" and row.get("gateway_id"):
            row["reason"] = f"{row['reason']}; {_revoked_key_action(tenant_id, row['gateway_id'])}"
    return rows


async def list_rejections(conn: Conn, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """List every rejection of the tenant, the most recently received first.

    A row is one payload rejected for one code on one topic:
    ``received_at`` is its first receipt, ``last_received_at`` its latest and
    ``received_count`` how many times it arrived. ``superseded`` is true once
    the same payload was stored as a voucher after its first receipt.
    """
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT r.id, r.received_at, r.last_received_at, r.received_count, r.kind, r.topic, r.gateway_id, r.voucher_id, r.contract_id, r.code, r.reason,"
        f" r.payload_sha256, r.payload_size, {SUPERSEDED_SQL} AS superseded FROM rejections r WHERE r.tenant_id = %s"
        " ORDER BY r.last_received_at DESC, r.id DESC LIMIT %s OFFSET %s",
        (tenant_id, limit, offset),
    )
    return with_actions(tenant_id, await cur.fetchall())


async def list_audit(conn: Conn, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, at, actor, action, object_type, object_id, detail FROM audit_log WHERE tenant_id = %s ORDER BY id DESC LIMIT %s OFFSET %s",
        (tenant_id, limit, offset),
    )
    return await cur.fetchall()
