"""Renewal service: check a contract's triggers, build each new package once, store it and deliver it by webhook."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg.types.json import Jsonb

from valuegate.cloud.bundle import GatewayKey, StoredVoucher, adjustment_record, start_bundle
from valuegate.cloud.contracts import parse_stored
from valuegate.cloud.record_export import write_contract_records
from valuegate.cloud.settlement.invoice import split_excluded
from valuegate.cloud.settlement.pricing import PricingError, latest_per_day, price_anchor
from valuegate.cloud.settlement.store import billable_values, load_contract, load_exclusions
from valuegate.cloud.store import Invalid, audit
from valuegate.cloud.web.charts import GainPoint
from valuegate.cloud.web.queries import anchor_gains, downtime_by_reason, machine_availability
from valuegate.edge.kernels.kpi import UNASSIGNED

from .delivery import claim_delivery, deliver_claimed, deliver_package, fetch_dicts, get_package, request_redelivery, set_endpoint
from .package import AnchorSummary, PackageInputs, Reduction, build_package
from .triggers import Firing, Progress, evaluate

# The delivery functions are re-exported: callers find every package operation here.
__all__ = ("contract_bundle", "contract_bundle_chunks", "progress", "StepReport", "PACKAGE_STEPS", "check_renewals", "list_packages", "tenant_packages", "package_detail", "get_package", "set_endpoint",
           "request_redelivery", "claim_delivery", "deliver_claimed", "deliver_package")

log = structlog.get_logger("valuegate.cloud.renewal")
Conn = psycopg.AsyncConnection[Any]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_exact(value: dt.datetime) -> str:
    """Keep the microseconds: a voucher stored in the second an invoice was issued must still sort on the right side of it."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def contract_bundle(conn: Conn, tenant_id: str, contract_id: str, *, created_at: dt.datetime | None = None, records: bool = True) -> bytes:
    """Build the auditor bundle of a contract in memory; see :func:`contract_bundle_chunks` for what it contains."""
    return b"".join([chunk async for chunk in contract_bundle_chunks(conn, tenant_id, contract_id, created_at=created_at, records=records)])


async def contract_bundle_chunks(conn: Conn, tenant_id: str, contract_id: str, *, created_at: dt.datetime | None = None,
                                 records: bool = True) -> AsyncIterator[bytes]:
    """Build the auditor bundle of a contract and yield its ZIP bytes as they are final: its vouchers with every chain voucher
    in between, keys, issued documents.

    Every earlier contract revision that an issued document was priced with goes into the bundle too. With
    ``records``, so do the stored minute records of the contract's vouchers' periods and baseline periods.
    The first chunk comes once every member but the record files is written, then one chunk per record file,
    and the last chunk carries the manifest and the ZIP central directory. A caller that stops early holds no
    valid ZIP file. Raises :class:`NotFound` for an unknown contract before the first chunk.
    """
    contract, revision = await load_contract(conn, tenant_id, contract_id)
    spans = await fetch_dicts(
        conn,
        "SELECT gateway_id, min(seq) AS first, max(seq) AS last FROM vouchers WHERE tenant_id = %s AND contract_id = %s GROUP BY gateway_id",
        (tenant_id, contract_id),
    )
    vouchers: list[dict[str, Any]] = []
    keys: list[GatewayKey] = []
    stored: list[StoredVoucher] = []
    for span in spans:
        rows = await fetch_dicts(
            conn,
            "SELECT v.document, v.voucher_id, v.stored_at, c.reproduced FROM vouchers v LEFT JOIN voucher_chain c ON c.voucher_id = v.voucher_id"
            " WHERE v.tenant_id = %s AND v.gateway_id = %s AND v.seq BETWEEN %s AND %s ORDER BY v.seq",
            (tenant_id, span["gateway_id"], span["first"], span["last"]),
        )
        vouchers += [row["document"] for row in rows]
        stored += [StoredVoucher(row["voucher_id"], _iso_exact(row["stored_at"]), row["reproduced"]) for row in rows]
        rotations = {
            row["next_key"]: row["statement"]
            for row in await fetch_dicts(conn, "SELECT next_key, statement FROM key_rotations WHERE tenant_id = %s AND gateway_id = %s", (tenant_id, span["gateway_id"]))
        }
        for key in await fetch_dicts(
            conn, "SELECT public_key, valid_from, valid_until, revoked_at, from_seq, until_seq FROM gateway_keys WHERE tenant_id = %s AND gateway_id = %s ORDER BY id",
            (tenant_id, span["gateway_id"]),
        ):
            ends = [t for t in (key["valid_until"], key["revoked_at"]) if t is not None]
            keys.append(GatewayKey(span["gateway_id"], key["public_key"], _iso(key["valid_from"]), _iso(min(ends)) if ends else None,
                                   key["from_seq"], key["until_seq"], rotations.get(key["public_key"])))
    documents = await fetch_dicts(
        conn,
        "SELECT d.record, d.issued_at, r.contract_revision FROM invoice_documents d JOIN invoice_runs r ON r.id = d.run_id"
        " WHERE d.tenant_id = %s AND d.contract_id = %s AND d.status = 'issued' ORDER BY d.issued_at, d.number",
        (tenant_id, contract_id),
    )
    # Records stored before they carried their own revision were priced with their run's.
    priced = [{**row["record"], "issued_at": _iso_exact(row["issued_at"]), "contract_revision": row["record"].get("contract_revision") or row["contract_revision"]}
              for row in documents]
    earlier = await fetch_dicts(
        conn,
        "SELECT revision, document FROM contracts WHERE tenant_id = %s AND id = %s AND revision = ANY(%s) ORDER BY revision",
        (tenant_id, contract_id, sorted({record["contract_revision"] for record in priced} - {revision})),
    )
    adjustments = await fetch_dicts(
        conn, "SELECT * FROM nonroutine_adjustments WHERE tenant_id = %s AND contract_id = %s ORDER BY id", (tenant_id, contract_id)
    )
    writer, manifest = start_bundle(
        contract=msgspec.to_builtins(contract),
        adjustments=[adjustment_record(row) for row in adjustments],
        vouchers=vouchers,
        keys=keys,
        documents=priced,
        created_at=_iso(created_at or dt.datetime.now(dt.UTC)) or "",
        stored=stored,
        revision=revision,
        revisions={row["revision"]: _priced_terms(row["document"], tenant_id, contract_id, row["revision"]) for row in earlier},
    )
    yield writer.take()
    if records:
        async for _ in write_contract_records(conn, tenant_id, contract, vouchers, writer):
            yield writer.take()
    yield writer.finish(manifest)


def _priced_terms(document: dict[str, Any], tenant_id: str, contract_id: str, revision: int) -> dict[str, Any]:
    """Return a stored revision in the form its invoices were priced with (defaults filled in), so that its digest matches theirs.

    A revision that today's contract checks reject goes in as stored: the verifier then reports why it cannot price with it.
    """
    try:
        return msgspec.to_builtins(parse_stored(document, contract_id, revision))
    except Invalid as exc:
        log.warning("bundle_revision_invalid", tenant=tenant_id, contract=contract_id, revision=revision, error=str(exc))
        return document


async def progress(conn: Conn, tenant_id: str, contract_id: str) -> tuple[Any, dict[str, Progress], dict[str, Any], Decimal]:
    """Return the contract, each anchor's progress, each priced anchor's charge over all billable vouchers, and the realized total."""
    contract, _ = await load_contract(conn, tenant_id, contract_id)
    # Days a non-routine adjustment takes out of settlement count toward neither the value nor the progress.
    values, _ = split_excluded(await billable_values(conn, tenant_id, contract_id), await load_exclusions(conn, tenant_id, contract_id))
    states: dict[str, Progress] = {}
    charges: dict[str, Any] = {}
    total = Decimal(0)
    for anchor in contract.anchors:
        mine = [v for v in values if v.anchor == anchor.id]
        target = Decimal(repr(anchor.target)) if anchor.target is not None else None
        if anchor.price is not None:
            try:
                charge = price_anchor(contract, anchor.id, mine)
            except PricingError as exc:
                log.warning("renewal_pricing_failed", tenant=tenant_id, contract=contract_id, anchor=anchor.id, error=str(exc))
            else:
                charges[anchor.id] = charge
                total += charge.amount
                states[anchor.id] = Progress(charge.mean_gain, target)
                continue
        kept, _ = latest_per_day(mine)
        counted = [v.gain(contract.settlement) for v in kept if v.sufficient and v.running_day]
        states[anchor.id] = Progress(sum(counted, Decimal(0)) / len(counted) if counted else None, target)
    return contract, states, charges, total


async def _inputs(conn: Conn, tenant_id: str, contract: Any, firing: Firing, fired_at: dt.datetime, states: dict[str, Progress],
                  charges: dict[str, Any], total: Decimal, today: dt.date, *, before_bundle: Callable[[], Awaitable[None]]) -> PackageInputs:
    gains = await anchor_gains(conn, tenant_id, contract.id)
    # Days a non-routine adjustment takes out back no claim in the package, as they bill nothing.
    values, _ = split_excluded(await billable_values(conn, tenant_id, contract.id), await load_exclusions(conn, tenant_id, contract.id))
    anchors = []
    machines: set[str] = set()
    baseline_reasons: dict[str, float] = {}
    reporting_reasons: dict[str, float] = {}
    baseline_busy = reporting_busy = 0.0
    for anchor in contract.anchors:
        last = min(anchor.reporting.last_date, today)
        # The package is for the customer, so its reporting-period downtime covers only the days that a verified voucher with enough
        # data covers. Telemetry of other days backs no claim, and without such a voucher there is no reduction to state.
        days = sorted({dt.date.fromisoformat(v.plant_date) for v in values if v.anchor == anchor.id and v.sufficient
                       and anchor.reporting.first_date.isoformat() <= v.plant_date <= last.isoformat()})
        reasons, busy = await _downtime_on_days(conn, tenant_id, anchor.scope, days)
        before = await downtime_by_reason(conn, tenant_id, anchor.scope, anchor.baseline.first_date, anchor.baseline.last_date)
        for name, minutes in reasons.items():
            reporting_reasons[name] = reporting_reasons.get(name, 0.0) + minutes
        for name, minutes in [*before.by_reason.items(), *([(UNASSIGNED, before.unassigned)] if before.unassigned > 0 else [])]:
            baseline_reasons[name] = baseline_reasons.get(name, 0.0) + minutes
        reporting_busy += busy
        baseline_busy += before.planned_busy
        machines.update(anchor.scope)
        rows = [g for g in gains if g["anchor_id"] == anchor.id]
        charge = charges.get(anchor.id)
        anchors.append(
            AnchorSummary(
                anchor=anchor.id,
                title=anchor.title,
                metric=anchor.metric,
                quantity=rows[0]["quantity"] if rows else "oee_points",
                target=states[anchor.id].target,
                mean_gain=states[anchor.id].mean_gain,
                days=charge.days if charge is not None else 0,
                amount=charge.amount if charge is not None else None,
                gains=[GainPoint(g["plant_date"], float(g["delta_point"]), float(g["delta_low"]), float(g["delta_high"]), g["sufficient"]) for g in rows],
                reasons=reasons,
            )
        )

    reductions = []
    if baseline_busy > 0 and reporting_busy > 0:
        for name in sorted(set(baseline_reasons) | set(reporting_reasons)):
            reductions.append(Reduction(name, 60 * baseline_reasons.get(name, 0.0) / baseline_busy, 60 * reporting_reasons.get(name, 0.0) / reporting_busy))
    first = min(a.reporting.first_date for a in contract.anchors)
    availability = await machine_availability(conn, tenant_id, sorted(machines), first, today)
    await before_bundle()
    bundle = await contract_bundle(conn, tenant_id, contract.id, created_at=fired_at)
    # The vouchers behind the total: the verified ones settlement counts, without those an adjustment excludes.
    return PackageInputs(contract, firing, fired_at, total, len(values), anchors, reductions, availability, bundle)


async def _downtime_on_days(conn: Conn, tenant_id: str, machines: list[str], days: list[dt.date]) -> tuple[dict[str, float], float]:
    """Return unplanned downtime minutes per reason code, stops without a code under ``UNASSIGNED``, and the planned busy minutes
    of the machines on the given plant days, from the machine-day sums ``machine_reason_day`` and ``machine_day``."""
    if not days:
        return {}, 0.0
    rows = await fetch_dicts(
        conn,
        "SELECT reason, sum(ms) AS ms FROM machine_reason_day WHERE tenant_id = %s AND machine_id = ANY(%s) AND plant_date = ANY(%s) GROUP BY reason",
        (tenant_id, machines, days),
    )
    totals = await fetch_dicts(
        conn,
        "SELECT coalesce(sum(running_ms + idle_ms + unplanned_stop_ms + changeover_ms), 0) AS busy_ms, coalesce(sum(unplanned_stop_ms), 0) AS down_ms"
        " FROM machine_day WHERE tenant_id = %s AND machine_id = ANY(%s) AND plant_date = ANY(%s)",
        (tenant_id, machines, days),
    )
    reasons = {row["reason"]: int(row["ms"]) / 60_000 for row in rows}
    # A PLC without a reason tag leaves its stops without a code; they are downtime all the same.
    unassigned_ms = int(totals[0]["down_ms"]) - sum(int(row["ms"]) for row in rows)
    if unassigned_ms > 0:
        reasons[UNASSIGNED] = reasons.get(UNASSIGNED, 0.0) + unassigned_ms / 60_000
    return reasons, int(totals[0]["busy_ms"]) / 60_000


# Reports a check's progress: the step's name, its number (from 1) and the number of steps.
StepReport = Callable[[str, int, int], Awaitable[None]]
# The steps of one package, after the first step that reads the values and evaluates the triggers.
PACKAGE_STEPS = ("inputs", "bundle", "documents", "store")


async def _no_report(step: str, number: int, count: int) -> None:
    return None


async def check_renewals(conn: Conn, tenant_id: str, contract_id: str, *, today: dt.date, actor: str = "system", pdf: bool = True,
                         report: StepReport = _no_report, waiting: list[Firing] | None = None) -> list[dict[str, Any]]:
    """Evaluate the contract's triggers and build a package for each firing not built before; return the new packages.

    Runs in the caller's transaction. A firing whose package exists is skipped
    before anything is built; the unique key also stops a concurrent duplicate.
    While the contract has no verified voucher, no package is built, because it
    would state a value of 0 for good: each such firing is appended to
    ``waiting`` and builds at the first check after a verified voucher arrived.
    ``report`` hears of each step: ``values``, then :data:`PACKAGE_STEPS` per package.
    """
    await report("values", 1, 1)
    contract, states, charges, total = await progress(conn, tenant_id, contract_id)
    firings = evaluate(contract, today=today, progress=states, realized_total=total)
    built = await fetch_dicts(conn, "SELECT trigger_key FROM renewal_packages WHERE tenant_id = %s AND contract_id = %s", (tenant_id, contract_id))
    done = {row["trigger_key"] for row in built}
    due = [firing for firing in firings if firing.key not in done]
    if due and not await _has_verified_voucher(conn, tenant_id, contract_id):
        for firing in due:
            log.info("renewal_package_waiting", tenant=tenant_id, contract=contract_id, trigger=firing.key, reason="no verified voucher")
        if waiting is not None:
            waiting += due
        return []

    created = []
    count = 1 + len(PACKAGE_STEPS) * len(due)
    for index, firing in enumerate(due):
        first = 2 + len(PACKAGE_STEPS) * index
        fired_at = dt.datetime.now(dt.UTC)
        await report("inputs", first, count)
        inputs = await _inputs(conn, tenant_id, contract, firing, fired_at, states, charges, total, today,
                               before_bundle=lambda: report("bundle", first + 1, count))
        await report("documents", first + 2, count)
        # The PDF summaries take seconds to draw; on a worker thread they hold up no other request or ingest.
        package = await asyncio.to_thread(build_package, inputs, pdf=pdf)
        await report("store", first + 3, count)
        rows = await fetch_dicts(
            conn,
            "INSERT INTO renewal_packages (tenant_id, contract_id, trigger_key, trigger_kind, fired_at, detail, summary_html, archive, archive_sha256, talking_points)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, contract_id, trigger_key) DO NOTHING"
            " RETURNING id, tenant_id, contract_id, trigger_key, trigger_kind, fired_at, archive_sha256",
            (tenant_id, contract_id, firing.key, firing.kind, fired_at, Jsonb(firing.detail), Jsonb(package.summary_html), package.archive,
             package.sha256, Jsonb(package.talking_points)),
        )
        if not rows:
            continue
        await audit(conn, tenant_id=tenant_id, actor=actor, action="renewal.package", object_type="renewal_package", object_id=str(rows[0]["id"]),
                    detail={"contract": contract_id, "trigger": firing.key, "archive_sha256": package.sha256})
        log.info("renewal_package_built", tenant=tenant_id, contract=contract_id, trigger=firing.key, package=rows[0]["id"])
        created.append(rows[0])
    return created


async def _has_verified_voucher(conn: Conn, tenant_id: str, contract_id: str) -> bool:
    """Return whether settlement counts any voucher of the contract: verified and not taken out by a non-routine adjustment."""
    values, _ = split_excluded(await billable_values(conn, tenant_id, contract_id), await load_exclusions(conn, tenant_id, contract_id))
    return bool(values)


# Whether a delivery loop holds the package's advisory lock (see claim_delivery): pg_locks shows a bigint key
# as its high 32 bits in classid and its low 32 bits in objid, with objsubid 1, per database.
_DELIVERING = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid::bigint = (hashtextextended('renewal_delivery:' || p.id, 0) >> 32) & 4294967295"
    " AND l.objid::bigint = hashtextextended('renewal_delivery:' || p.id, 0) & 4294967295)"
)


async def list_packages(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    rows = await fetch_dicts(
        conn,
        "SELECT p.id, p.trigger_key, p.trigger_kind, p.fired_at, p.detail, p.archive_sha256,"
        " (SELECT bool_or(d.delivered) FROM webhook_deliveries d WHERE d.package_id = p.id) AS delivered,"
        f" (SELECT count(*) FROM webhook_deliveries d WHERE d.package_id = p.id) AS attempts, {_DELIVERING} AS delivering"
        " FROM renewal_packages p WHERE p.tenant_id = %s AND p.contract_id = %s ORDER BY p.fired_at DESC, p.id DESC",
        (tenant_id, contract_id),
    )
    for row in rows:
        row["delivery"] = _delivery_state(delivered=bool(row["delivered"]), attempts=row["attempts"], delivering=row.pop("delivering"))
    return rows


def _delivery_state(*, delivered: bool, attempts: int, delivering: bool) -> str:
    if delivered:
        return "delivered"
    if delivering:
        return "delivering"
    return "failed" if attempts else "not_sent"


async def tenant_packages(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    """Return every renewal package of the tenant, newest first, with its delivery state.

    ``delivery`` is ``delivered`` once an attempt succeeded, ``delivering`` while
    a delivery loop runs its attempts, ``failed`` when the attempts so far all
    failed and none runs, and ``not_sent`` before the first attempt.
    """
    rows = await fetch_dicts(
        conn,
        "SELECT p.id, p.contract_id, p.trigger_key, p.trigger_kind, p.fired_at, p.archive_sha256,"
        f" coalesce(d.delivered, false) AS delivered, coalesce(d.attempts, 0) AS attempts, d.last_attempt_at, {_DELIVERING} AS delivering"
        " FROM renewal_packages p LEFT JOIN LATERAL (SELECT bool_or(delivered) AS delivered, count(*) AS attempts, max(started_at) AS last_attempt_at"
        " FROM webhook_deliveries WHERE package_id = p.id) d ON true"
        " WHERE p.tenant_id = %s ORDER BY p.fired_at DESC, p.id DESC",
        (tenant_id,),
    )
    for row in rows:
        row["delivery"] = _delivery_state(delivered=row.pop("delivered"), attempts=row["attempts"], delivering=row.pop("delivering"))
    return rows


async def package_detail(conn: Conn, tenant_id: str, package_id: int) -> dict[str, Any]:
    """Return a package as the API shows it, without the archive itself: trigger, archive digest, talking points and every delivery attempt."""
    package = await get_package(conn, tenant_id, package_id)
    attempts = await fetch_dicts(
        conn,
        "SELECT attempt, url, status_code, error, delivered, started_at, duration_ms FROM webhook_deliveries WHERE package_id = %s ORDER BY attempt, id",
        (package_id,),
    )
    rows = await fetch_dicts(conn, f"SELECT {_DELIVERING} AS delivering FROM renewal_packages p WHERE p.id = %s", (package_id,))
    delivery = _delivery_state(delivered=any(a["delivered"] for a in attempts), attempts=len(attempts), delivering=rows[0]["delivering"])
    keys = ("id", "contract_id", "trigger_key", "trigger_kind", "fired_at", "detail", "archive_sha256", "talking_points")
    return {**{key: package[key] for key in keys}, "delivery": delivery, "attempts": len(attempts), "deliveries": attempts}
