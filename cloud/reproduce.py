"""Reproduction: recompute each stored voucher's evidence digest and numbers from the stored per-minute records.

A voucher is reproduced when the Merkle root over the stored records of its
machines and period equals its evidence digest, and the kernels and the
value methodology, run on those records, give its reporting, sufficiency
and delta parts exactly. The baseline is rebuilt from the stored
baseline-period records when the contract is uploaded and those records
exist. Otherwise the voucher's own baseline value is used, and only the
delta's point estimate is compared. A voucher whose records have not all
arrived stays pending.

No voucher commits to the baseline-period records, so a record the broker
lost there shows only as a rebuilt baseline that differs from the claim or
covers too few days. Such a voucher stays pending ("waiting for baseline
records") and its gateway is asked for the baseline period's records, which
the edge keeps, until ``baseline_wait_s`` after the voucher was stored; only
then does the difference count as a mismatch.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any, NamedTuple

import msgspec
import psycopg
import structlog

from valuegate.edge import methodology
from valuegate.edge.protocol.contract import Anchor, ContractError, parse_contract
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.edge.protocol.voucher import Claims

from . import metrics
from .chain import touch_contracts
from .machines import foreign_machines
from .recompute import baseline_from_records, baseline_span, claimed_baseline, day_kpis, evidence_of

__all__ = ("BaselineSpan", "Outcome", "PendingPass", "count_waiting", "load_records", "evidence_of", "reproduce_claims", "reproduce_pending")

log = structlog.get_logger("valuegate.cloud.reproduce")
Conn = psycopg.AsyncConnection[Any]

_RECORD_SQL = (
    "SELECT machine_id, to_char(minute AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:00\"Z\"'), running_ms, idle_ms, planned_stop_ms,"
    " unplanned_stop_ms, changeover_ms, offline_ms, produced, reject, stops, reasons, uncertain_ms"
    " FROM telemetry WHERE tenant_id = %s AND machine_id = ANY(%s) AND minute >= %s AND minute < %s"
    ' ORDER BY machine_id COLLATE "C", minute'
)
_WAITING = "waiting for records"
_WAITING_BASELINE = "waiting for baseline records"
_baselines: OrderedDict[tuple[Any, ...], methodology.BaselineResult | methodology.InsufficientBaseline | None] = OrderedDict()


class Outcome:
    """Result of one reproduction: ``reproduced`` is True, False, or None while records are missing."""

    __slots__ = ("reproduced", "detail")

    def __init__(self, reproduced: bool | None, detail: str) -> None:
        self.reproduced = reproduced
        self.detail = detail

    def __repr__(self) -> str:
        return f"Outcome({self.reproduced!r}, {self.detail!r})"


async def load_records(conn: Conn, tenant_id: str, machines: list[str], start: dt.datetime, end: dt.datetime) -> list[MinuteRecord]:
    """Return the stored records of ``machines`` in ``[start, end)``, ordered by machine id (code point order), then minute."""
    cur = await conn.execute(_RECORD_SQL, (tenant_id, machines, start, end))
    return [MinuteRecord(*row) for row in await cur.fetchall()]


async def _anchor(conn: Conn, claims: Claims) -> tuple[Anchor | None, int | None]:
    cur = await conn.execute(
        "SELECT document, revision FROM contracts WHERE tenant_id = %s AND id = %s ORDER BY revision DESC LIMIT 1", (claims.tenant, claims.contract)
    )
    row = await cur.fetchone()
    if row is None:
        return None, None
    try:
        return parse_contract(row[0]).anchor(claims.anchor), row[1]
    except (ContractError, KeyError):
        return None, row[1]


async def _baseline(conn: Conn, claims: Claims, anchor: Anchor, revision: int) -> methodology.BaselineResult | methodology.InsufficientBaseline | None:
    """Rebuild the anchor's baseline from the stored records.

    Returns None when no record of the baseline period is stored, and the
    InsufficientBaseline error when the stored records cover too few days.
    """
    zone = claims.period.time_zone
    start, end = baseline_span(anchor, zone)
    machines = sorted(m.id for m in claims.machines)
    cur = await conn.execute(
        "SELECT count(*) FROM telemetry WHERE tenant_id = %s AND machine_id = ANY(%s) AND minute >= %s AND minute < %s",
        (claims.tenant, machines, start, end),
    )
    count = (await cur.fetchone())[0]  # type: ignore[index]
    # Each voucher values the baseline at the ideal cycle times it names, which a tag-map change alters between vouchers.
    ideal = tuple(sorted((m.id, m.ideal_cycle_time_s) for m in claims.machines))
    key = (claims.tenant, claims.contract, revision, anchor.id, ideal, zone, count)
    if key in _baselines:
        _baselines.move_to_end(key)
        return _baselines[key]
    result: methodology.BaselineResult | methodology.InsufficientBaseline | None = None
    if count:
        records = await load_records(conn, claims.tenant, machines, start, end)
        try:
            result = baseline_from_records(anchor, claims, records)
        except methodology.InsufficientBaseline as exc:
            result = exc
    _baselines[key] = result
    while len(_baselines) > 256:
        _baselines.popitem(last=False)
    return result


class BaselineSpan(NamedTuple):
    """The baseline period of a voucher's anchor whose records its gateway is asked for."""

    tenant: str
    gateway: str
    machines: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime


def _baseline_span(claims: Claims, anchor: Anchor) -> BaselineSpan:
    start, end = baseline_span(anchor, claims.period.time_zone)
    return BaselineSpan(claims.tenant, claims.gateway, tuple(sorted(m.id for m in claims.machines)), start, end)


async def reproduce_claims(conn: Conn, claims: Claims, start: dt.datetime, end: dt.datetime, *, final: bool = True) -> Outcome:
    """Recompute one voucher from the stored records and compare every recomputed part with its claims.

    With ``final`` false, a baseline that differs while everything else matches leaves the voucher
    pending (detail "waiting for baseline records"), because baseline records may still arrive.
    """
    machines = sorted(m.id for m in claims.machines)
    foreign = await foreign_machines(conn, claims.tenant, claims.gateway, machines, start, end)
    if foreign:
        owners = ", ".join(f"machine {machine!r} is measured by gateway {owner!r}" for machine, owner in sorted(foreign.items()))
        return Outcome(False, f"{owners}, not by this voucher's gateway {claims.gateway!r}, so the stored records are not the ones it commits to")
    cur = await conn.execute(
        "SELECT count(*) FROM telemetry WHERE tenant_id = %s AND machine_id = ANY(%s) AND minute >= %s AND minute < %s",
        (claims.tenant, machines, start, end),
    )
    stored = (await cur.fetchone())[0]  # type: ignore[index]
    if stored < claims.evidence.records:
        return Outcome(None, f"{_WAITING}: {stored} of {claims.evidence.records} stored")
    records = await load_records(conn, claims.tenant, machines, start, end)
    root, count = evidence_of(records)
    if (root, count) != (claims.evidence.merkle_root, claims.evidence.records):
        return Outcome(False, f"evidence digest of the {count} stored records is {root}, the voucher claims {claims.evidence.merkle_root} over {claims.evidence.records}")

    day = day_kpis(records, claims)
    anchor, revision = await _anchor(conn, claims)
    if anchor is None:
        return Outcome(None, f"evidence digest matches; contract {claims.contract!r} with anchor {claims.anchor!r} is not uploaded yet")
    baseline = await _baseline(conn, claims, anchor, revision or 0)
    # The edge issues no voucher before its baseline has enough days, so stored records that cover
    # too few days lack some of the baseline period, as when the broker lost them.
    shortfall = baseline if isinstance(baseline, methodology.InsufficientBaseline) else None
    unstored = baseline is None
    exact = isinstance(baseline, methodology.BaselineResult)
    if not isinstance(baseline, methodology.BaselineResult):
        baseline = claimed_baseline(anchor, claims)
    try:
        reporting, delta, sufficiency = methodology.value_for_day(anchor, baseline, claims.period.plant_date, day)
    except ValueError as exc:
        return Outcome(False, f"cannot recompute the day: {exc}")

    differences = []
    if reporting != claims.reporting:
        differences.append(f"reporting {reporting} != claimed {claims.reporting}")
    if sufficiency != claims.sufficiency:
        differences.append(f"sufficiency {sufficiency} != claimed {claims.sufficiency}")
    if exact:
        if baseline.claim() != claims.baseline:
            if not differences and not final:
                return Outcome(
                    None,
                    f"{_WAITING_BASELINE}: the baseline rebuilt from the stored records of {baseline.first_date}..{baseline.last_date} "
                    f"is {baseline.claim().value} over {baseline.claim().days} days, the voucher claims {claims.baseline.value} over {claims.baseline.days}",
                )
            differences.append(f"baseline {baseline.claim()} != claimed {claims.baseline}")
        if delta != claims.delta:
            differences.append(f"delta {delta} != claimed {claims.delta}")
    elif delta.point != claims.delta.point:
        differences.append(f"delta.point {delta.point} != claimed {claims.delta.point}")
    if shortfall is not None:
        message = (
            f"the records stored for the baseline {claims.baseline.first_date}..{claims.baseline.last_date} cover {shortfall.covered} "
            f"of the {shortfall.required} days it needs, the voucher claims {claims.baseline.days}"
        )
        if not differences and not final:
            return Outcome(None, f"{_WAITING_BASELINE}: {message}")
        differences.append(message)
    if differences:
        return Outcome(False, "; ".join(differences))
    if unstored and not final:
        # Rejected or lost on the way (a key registered late, a broker without persistence): ask for them before settling for the claimed value.
        period = f"{claims.baseline.first_date}..{claims.baseline.last_date}"
        return Outcome(None, f"{_WAITING_BASELINE}: no record of the baseline {period} is stored")
    scope = "with the baseline rebuilt from stored records" if exact else "with the voucher's baseline value (baseline records not stored)"
    return Outcome(True, f"evidence digest and numbers reproduced {scope}")


class PendingPass(NamedTuple):
    """Outcome of one pass: how many vouchers got a verdict, and those still missing records past the wait."""

    decided: int
    missing_records: list[tuple[str, str, str, int]]
    missing_baselines: list[tuple[str, BaselineSpan]] = []


# A pending voucher not tried in the last 10 seconds. Both scans lock the rows they pick and skip rows
# that another worker's pass has locked, so two workers split the pending vouchers between them.
_RETRY = "c.reproduced IS NULL AND (c.reproduced_at IS NULL OR c.reproduced_at < now() - interval '10 seconds')"
_FLAGS = "c.stored_at < now() - make_interval(secs => %(records_wait_s)s), c.stored_at < now() - make_interval(secs => %(baseline_wait_s)s)"

# Vouchers of the gateway plant dates whose telemetry arrived since a scan last took them.
# A plant day starts within 14 hours of its date's UTC midnight, so the period_start window
# [date - 1 day, date + 1 day) bounds the range read from voucher_chain_pending_gateway.
# NOTE: marks carry the plant date of the machine's time zone. A voucher dated in another zone
# matches no mark and waits in the normal order.
_ARRIVED_SQL = (
    f"SELECT c.voucher_id, c.period_start, {_FLAGS}, a.tenant_id, a.gateway_id, a.plant_date, a.noted_at"
    " FROM telemetry_arrivals a"
    " JOIN voucher_chain c ON c.gateway_id = a.gateway_id AND c.tenant_id = a.tenant_id"
    " AND c.period_start >= (a.plant_date - 1)::timestamp AT TIME ZONE 'UTC' AND c.period_start < (a.plant_date + 1)::timestamp AT TIME ZONE 'UTC'"
    " JOIN vouchers v ON v.voucher_id = c.voucher_id AND v.period_start = c.period_start AND v.plant_date = a.plant_date"
    f" WHERE {_RETRY} ORDER BY a.noted_at, c.stored_at LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED"
)
# The rest in the order of voucher_chain_pending: never tried first, then least recently tried.
_OLDEST_SQL = (
    f"SELECT c.voucher_id, c.period_start, {_FLAGS} FROM voucher_chain c"
    f" WHERE {_RETRY} AND c.voucher_id <> ALL(%(taken)s::text[])"
    " ORDER BY c.reproduced_at NULLS FIRST, c.stored_at LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED"
)
# Documents are read only for the vouchers picked, so no other one is detoasted.
_CLAIMS_SQL = (
    "SELECT v.voucher_id, v.document -> 'credentialSubject', v.period_end, v.site_id"
    " FROM unnest(%s::text[], %s::timestamptz[]) AS p(voucher_id, period_start)"
    " JOIN vouchers v ON v.voucher_id = p.voucher_id AND v.period_start = p.period_start"
)
# A mark is deleted only if no batch moved it after the scan read it.
_CONSUME_SQL = (
    "DELETE FROM telemetry_arrivals a USING unnest(%s::text[], %s::text[], %s::date[], %s::timestamptz[]) AS k(tenant_id, gateway_id, plant_date, noted_at)"
    " WHERE a.tenant_id = k.tenant_id AND a.gateway_id = k.gateway_id AND a.plant_date = k.plant_date AND a.noted_at <= k.noted_at"
)
# Marks of days whose voucher never came (telemetry of the current day, a gateway with no contract).
_PRUNE_SQL = "DELETE FROM telemetry_arrivals WHERE noted_at < now() - interval '2 days'"


class _Picked(NamedTuple):
    voucher_id: str
    period_start: dt.datetime
    waited: bool
    final: bool


async def _pick(conn: Conn, limit: int, records_wait_s: float, baseline_wait_s: float) -> tuple[list[_Picked], list[tuple[Any, ...]]]:
    """Pick up to ``limit`` pending vouchers, those with newly arrived telemetry first; return them and the arrival marks used.

    Arrivals take at most three quarters of ``limit``, so a steady flow of
    telemetry still leaves room for vouchers that wait in the backlog.
    """
    params: dict[str, Any] = {"records_wait_s": records_wait_s, "baseline_wait_s": baseline_wait_s, "limit": max(1, limit * 3 // 4)}
    rows = await (await conn.execute(_ARRIVED_SQL, params)).fetchall()
    picked = [_Picked(*row[:4]) for row in rows]
    marks = {tuple(row[4:7]): row[7] for row in rows}
    if len(rows) == params["limit"]:
        # The key of the last row may have more pending vouchers than fitted; its mark stays for the next pass.
        marks.pop(tuple(rows[-1][4:7]), None)
    params.update(limit=limit - len(picked), taken=[item.voucher_id for item in picked])
    if params["limit"] > 0:
        picked += [_Picked(*row) for row in await (await conn.execute(_OLDEST_SQL, params)).fetchall()]
    return picked, [(*key, noted_at) for key, noted_at in marks.items()]


async def reproduce_pending(conn: Conn, *, limit: int = 200, records_wait_s: float = 30.0, baseline_wait_s: float = 21_600.0) -> PendingPass:
    """Try up to ``limit`` pending vouchers: first those whose telemetry arrived since the last pass, then the least recently tried.

    Return how many got a verdict, ``(tenant, site, gateway, seq)`` of each
    voucher stored more than ``records_wait_s`` ago whose records are still missing,
    and ``(site, span)`` of each baseline period whose records such a voucher waits for.
    A differing baseline becomes a mismatch once the voucher was stored ``baseline_wait_s`` ago.

    While a voucher is pending, ``reproduced_at`` is the time of the last attempt.
    """
    picked, marks = await _pick(conn, limit, records_wait_s, baseline_wait_s)
    claims_of: dict[str, tuple[Any, ...]] = {}
    if picked:
        cur = await conn.execute(_CLAIMS_SQL, ([item.voucher_id for item in picked], [item.period_start for item in picked]))
        claims_of = {row[0]: row[1:] for row in await cur.fetchall()}
    decided = 0
    missing: list[tuple[str, str, str, int]] = []
    baselines: dict[BaselineSpan, str] = {}
    for voucher_id, start, waited, final in picked:
        subject, end, site_id = claims_of[voucher_id]
        claims = msgspec.convert(subject, Claims)
        try:
            outcome = await reproduce_claims(conn, claims, start, end, final=final)
        except (ValueError, KeyError) as exc:
            outcome = Outcome(False, f"recomputation failed: {exc}")
        await conn.execute(
            "UPDATE voucher_chain SET reproduced = %s, reproduce_detail = %s, reproduced_at = now() WHERE voucher_id = %s",
            (outcome.reproduced, outcome.detail, voucher_id),
        )
        if outcome.reproduced is None and waited and outcome.detail.startswith(_WAITING_BASELINE):
            anchor, _revision = await _anchor(conn, claims)
            if anchor is not None:
                baselines.setdefault(_baseline_span(claims, anchor), site_id)
        elif outcome.reproduced is None and waited and outcome.detail.startswith(_WAITING):
            missing.append((claims.tenant, site_id, claims.gateway, claims.seq))
        if outcome.reproduced is not None:
            await touch_contracts(conn, {(claims.tenant, claims.contract)})
            decided += 1
            metrics.REPRODUCED.labels("reproduced" if outcome.reproduced else "mismatch").inc()
            if not outcome.reproduced:
                log.warning("voucher_not_reproduced", voucher_id=voucher_id, detail=outcome.detail)
    if marks:
        await conn.execute(_CONSUME_SQL, [list(column) for column in zip(*marks, strict=True)])
    await conn.execute(_PRUNE_SQL)
    await conn.commit()
    return PendingPass(decided, missing, [(site, span) for span, site in baselines.items()])


async def count_waiting(conn: Conn, *, records_wait_s: float) -> tuple[int, int]:
    """Return how many vouchers are pending, and how many of them were stored over ``records_wait_s`` ago and still wait for records.

    A voucher waits when its last attempt found its own records or its
    baseline records missing. One never tried yet counts as pending only.
    """
    cur = await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE stored_at < now() - make_interval(secs => %s)"
        " AND (starts_with(reproduce_detail, %s) OR starts_with(reproduce_detail, %s))) FROM voucher_chain WHERE reproduced IS NULL",
        (records_wait_s, _WAITING, _WAITING_BASELINE),
    )
    pending, waiting = await cur.fetchone()  # type: ignore[misc]
    return pending, waiting
