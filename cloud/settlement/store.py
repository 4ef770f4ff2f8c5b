"""Settlement repository: invoice runs, approvals and non-routine adjustments in PostgreSQL.

Every function takes an open async connection and runs in the caller's
transaction, so that a run, its documents and its audit record commit
together. Other tenants' objects raise :class:`NotFound` like missing ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from valuegate.cloud.actors import name_sql
from valuegate.cloud.bundle import document_record
from valuegate.cloud.contracts import parse_stored
from valuegate.cloud.store import Conflict, Invalid, NotFound, audit
from valuegate.edge.protocol.contract import Contract

from .gaps import gap_waiting
from .invoice import BillingPeriod, Document, Exclusion, IssuedDocument, RunResult, compute_run
from .pricing import VoucherValue

__all__ = (
    "BILLABLE_SQL",
    "load_contract",
    "billable_values",
    "list_adjustments",
    "load_exclusions",
    "add_adjustment",
    "withdraw_adjustment",
    "adjustments_of_run",
    "issued_documents",
    "run_invoice",
    "approve_run",
    "get_run",
    "list_runs",
    "run_documents",
    "stored_record",
)

log = structlog.get_logger("valuegate.cloud.settlement")
Conn = psycopg.AsyncConnection[Any]

# A voucher is billable once it is stored (its proof and key were checked on ingest),
# lies within its gateway's contiguous chain, and its re-computation did not disagree.
BILLABLE_SQL = """
SELECT v.voucher_id, v.gateway_id, v.seq, v.anchor_id, v.plant_date, v.quantity, v.delta_point, v.delta_low,
       v.running_day, v.sufficient
FROM vouchers v
JOIN voucher_chain c ON c.voucher_id = v.voucher_id
JOIN gateway_chain g ON g.gateway_id = v.gateway_id
WHERE v.tenant_id = %s AND v.contract_id = %s AND v.seq <= g.contiguous_through AND c.reproduced IS DISTINCT FROM false
ORDER BY v.plant_date, v.voucher_id
"""


async def _rows(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def load_contract(conn: Conn, tenant_id: str, contract_id: str) -> tuple[Contract, int]:
    """Return the contract in force (its highest revision) and that revision number."""
    rows = await _rows(
        conn,
        "SELECT document, revision FROM contracts WHERE tenant_id = %s AND id = %s ORDER BY revision DESC LIMIT 1",
        (tenant_id, contract_id),
    )
    if not rows:
        raise NotFound(f"contract {contract_id!r} not found")
    return parse_stored(rows[0]["document"], contract_id, rows[0]["revision"]), rows[0]["revision"]


async def billable_values(conn: Conn, tenant_id: str, contract_id: str) -> list[VoucherValue]:
    """Return the contract's billable vouchers as pricing inputs."""
    return [
        VoucherValue(
            voucher_id=row["voucher_id"],
            gateway=row["gateway_id"],
            seq=row["seq"],
            anchor=row["anchor_id"],
            plant_date=row["plant_date"].isoformat(),
            quantity=row["quantity"],
            point=Decimal(row["delta_point"]),
            low=Decimal(row["delta_low"]),
            running_day=row["running_day"],
            sufficient=row["sufficient"],
        )
        for row in await _rows(conn, BILLABLE_SQL, (tenant_id, contract_id))
    ]


async def list_adjustments(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return every non-routine adjustment of the contract, withdrawn ones included (``withdrawn_at`` set).

    ``created_by_name`` and ``withdrawn_by_name`` are the current names of those users, for display (see :mod:`valuegate.cloud.actors`).
    """
    return await _rows(
        conn,
        f"SELECT a.*, {name_sql('a', 'created_by')} AS created_by_name, {name_sql('a', 'withdrawn_by')} AS withdrawn_by_name"
        " FROM nonroutine_adjustments a WHERE a.tenant_id = %s AND a.contract_id = %s ORDER BY a.first_date, a.id",
        (tenant_id, contract_id),
    )


def adjustments_of_run(run: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the adjustments a run's page and exports list: for an approved run, as they stood when it was approved.

    An issued invoice never changes, so its export must not either: an
    adjustment recorded after the approval is left out, and one withdrawn
    after it is shown as it was then, in force. A draft lists them as they are now.
    """
    approved = run.get("approved_at")
    if approved is None:
        return rows
    listed = []
    for row in rows:
        if row["created_at"] > approved:
            continue
        if row.get("withdrawn_at") is not None and row["withdrawn_at"] > approved:
            row = {**row, "withdrawn_at": None, "withdrawn_by": None, "withdrawn_by_name": None, "withdraw_reason": None}
        listed.append(row)
    return listed


def _invalid(message: str, code: str, **params: str) -> Invalid:
    """Return an :class:`Invalid` that also carries the values it names, so that the web UI can show it in the page's language."""
    error = Invalid(message, code=code)
    error.params = params  # type: ignore[attr-defined]
    return error


def _exclusions(rows: list[dict[str, Any]]) -> list[Exclusion]:
    return [Exclusion(r["id"], r["anchor_id"], r["first_date"].isoformat(), r["last_date"].isoformat(), r["reason"]) for r in rows]


async def load_exclusions(conn: Conn, tenant_id: str, contract_id: str) -> list[Exclusion]:
    """Return the contract's non-routine adjustments in force (not withdrawn) as the exclusions an invoice run applies."""
    return _exclusions([row for row in await list_adjustments(conn, tenant_id, contract_id) if row["withdrawn_at"] is None])


async def add_adjustment(
    conn: Conn, tenant_id: str, contract_id: str, *, anchor_id: str | None, first_date: dt.date, last_date: dt.date, reason: str, actor: str
) -> dict[str, Any]:
    """Record a non-routine adjustment that excludes ``first_date..last_date`` from settlement, and audit it."""
    contract, _ = await load_contract(conn, tenant_id, contract_id)
    if anchor_id is not None and anchor_id not in {a.id for a in contract.anchors}:
        choices = ", ".join(a.id for a in contract.anchors)
        raise _invalid(f"contract {contract_id!r} has no anchor {anchor_id!r}; choose one of {choices}", "unknown_anchor",
                       contract=contract_id, anchor=anchor_id, choices=choices)
    if last_date < first_date:
        raise _invalid(f"adjustment ends {last_date} before it starts {first_date}; give first <= last", "reversed_period",
                       variant="adjustment", first=first_date.isoformat(), last=last_date.isoformat())
    if first_date < contract.start or last_date > contract.end:
        # Only days of the term are ever settled, so an exclusion outside it (a mistyped year) would change nothing.
        wholly = last_date < contract.start or first_date > contract.end
        where = "lies outside" if wholly else "reaches outside"
        msg = f"adjustment {first_date}..{last_date} {where} the term of contract {contract_id!r} ({contract.start}..{contract.end}); choose dates within the term"
        raise _invalid(msg, "adjustment_outside_term", variant="wholly" if wholly else "partly", first=first_date.isoformat(), last=last_date.isoformat(),
                       contract=contract_id, start=contract.start.isoformat(), end=contract.end.isoformat())
    if not reason.strip():
        raise _invalid("a non-routine adjustment needs a reason; describe what changed (for example a line rebuild)", "missing_reason")
    # Under the settlement lock, with the time taken after it. An approval then either includes this
    # adjustment and was issued after its time, or was issued before it (see approve_run).
    await _lock(conn, tenant_id, contract_id)
    # The same open adjustment again (a double click, a resubmitted form) returns the stored one and records nothing.
    inserted = await _rows(
        conn,
        "INSERT INTO nonroutine_adjustments (tenant_id, contract_id, anchor_id, kind, first_date, last_date, reason, created_by, created_at)"
        " VALUES (%s, %s, %s, 'exclude_period', %s, %s, %s, %s, clock_timestamp())"
        " ON CONFLICT (tenant_id, contract_id, coalesce(anchor_id, ''), first_date, last_date, reason) WHERE withdrawn_at IS NULL DO NOTHING RETURNING *",
        (tenant_id, contract_id, anchor_id, first_date, last_date, reason.strip(), actor),
    )
    if not inserted:
        (row,) = await _rows(
            conn,
            "SELECT * FROM nonroutine_adjustments WHERE tenant_id = %s AND contract_id = %s AND anchor_id IS NOT DISTINCT FROM %s"
            " AND first_date = %s AND last_date = %s AND reason = %s AND withdrawn_at IS NULL",
            (tenant_id, contract_id, anchor_id, first_date, last_date, reason.strip()),
        )
        log.info("adjustment_exists", tenant=tenant_id, contract=contract_id, adjustment=row["id"], actor=actor)
        return row
    (row,) = inserted
    detail = {"anchor": anchor_id, "first_date": first_date.isoformat(), "last_date": last_date.isoformat(), "reason": reason.strip()}
    await audit(conn, tenant_id=tenant_id, actor=actor, action="adjustment.create", object_type="nonroutine_adjustment", object_id=str(row["id"]), detail=detail)
    log.info("adjustment_recorded", tenant=tenant_id, contract=contract_id, adjustment=row["id"], actor=actor)
    return row


async def withdraw_adjustment(conn: Conn, tenant_id: str, contract_id: str, adjustment_id: int, *, reason: str, actor: str) -> dict[str, Any]:
    """Withdraw a non-routine adjustment from now on, with a reason, and audit it; withdrawing it again changes nothing.

    The row stays: documents issued while it applied keep naming it. The next
    invoice run bills its days again, with a debit note for an issued period.
    """
    if not reason.strip():
        raise _invalid("withdrawing an adjustment needs a reason; say what was wrong with it (for example a wrong date range)", "missing_withdraw_reason")
    await _lock(conn, tenant_id, contract_id)  # the time is taken after the lock, as in add_adjustment
    rows = await _rows(
        conn, "SELECT * FROM nonroutine_adjustments WHERE tenant_id = %s AND contract_id = %s AND id = %s FOR UPDATE", (tenant_id, contract_id, adjustment_id)
    )
    if not rows:
        raise NotFound(f"adjustment NRA-{adjustment_id} of contract {contract_id!r} not found")
    if rows[0]["withdrawn_at"] is not None:
        return rows[0]
    (row,) = await _rows(
        conn,
        "UPDATE nonroutine_adjustments SET withdrawn_at = clock_timestamp(), withdrawn_by = %s, withdraw_reason = %s WHERE id = %s RETURNING *",
        (actor, reason.strip(), adjustment_id),
    )
    await audit(conn, tenant_id=tenant_id, actor=actor, action="adjustment.withdraw", object_type="nonroutine_adjustment", object_id=str(adjustment_id),
                detail={"reason": reason.strip()})
    log.info("adjustment_withdrawn", tenant=tenant_id, contract=contract_id, adjustment=adjustment_id, actor=actor)
    return row


async def issued_documents(conn: Conn, tenant_id: str, contract_id: str) -> list[IssuedDocument]:
    """Return every issued invoice and note of the contract with its amounts and vouchers per anchor.

    Each invoice comes with the contract revision its run priced it with, so
    that notes against it price its period with the same terms.
    """
    documents = await _rows(
        conn,
        "SELECT d.number, d.kind, d.period_first, d.period_last, d.corrects, r.contract_revision FROM invoice_documents d"
        " JOIN invoice_runs r ON r.id = d.run_id"
        " WHERE d.tenant_id = %s AND d.contract_id = %s AND d.status = 'issued' ORDER BY d.period_first, d.issued_at, d.number",
        (tenant_id, contract_id),
    )
    revisions = {doc["contract_revision"] for doc in documents if doc["kind"] == "invoice"}
    terms = await _revisions(conn, tenant_id, contract_id, sorted(revisions))
    issued = []
    for doc in documents:
        lines = await _rows(conn, "SELECT anchor_id, amount, voucher_ids FROM invoice_lines WHERE document_number = %s ORDER BY line_no", (doc["number"],))
        amounts = {line["anchor_id"]: Decimal(line["amount"]) for line in lines}
        vouchers = {line["anchor_id"]: tuple(line["voucher_ids"]) for line in lines}
        # A run's own invoice is always priced with the run's revision; notes take their invoice's.
        revision = doc["contract_revision"] if doc["kind"] == "invoice" else None
        issued.append(IssuedDocument(doc["number"], doc["kind"], BillingPeriod(doc["period_first"], doc["period_last"]), amounts, vouchers, doc["corrects"],
                                     contract=terms.get(revision) if revision is not None else None, contract_revision=revision))
    return issued


async def _revisions(conn: Conn, tenant_id: str, contract_id: str, revisions: list[int]) -> dict[int, Contract]:
    """Return the parsed terms of the given revisions of a contract; a revision that today's checks reject raises :class:`Invalid`."""
    rows = await _rows(
        conn,
        "SELECT revision, document FROM contracts WHERE tenant_id = %s AND id = %s AND revision = ANY(%s)",
        (tenant_id, contract_id, revisions),
    )
    return {row["revision"]: parse_stored(row["document"], contract_id, row["revision"]) for row in rows}


def stored_record(document: Document) -> dict[str, Any]:
    """Return the record a document is stored with: the bundle form plus the number of the contract revision it was priced with."""
    return {**document_record(document), "contract_revision": document.contract_revision}


async def _insert_documents(conn: Conn, run_id: int, tenant_id: str, contract_id: str, result: RunResult) -> None:
    for document in (result.invoice, *result.notes):
        record = stored_record(document)
        await conn.execute(
            "INSERT INTO invoice_documents (number, run_id, tenant_id, contract_id, kind, period_first, period_last, corrects, currency, total, status, record)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'draft', %s)",
            (document.number, run_id, tenant_id, contract_id, document.kind, document.period.first, document.period.last,
             document.corrects, document.currency, document.total, Jsonb(record)),
        )
        for line_no, line in enumerate(document.lines, start=1):
            charge = line.charge
            await conn.execute(
                "INSERT INTO invoice_lines (document_number, line_no, anchor_id, period_first, period_last, price_kind, mode, unit_price,"
                " quantity, days, amount, previously_billed, recomputed, cap_applied, floor_applied, voucher_ids, excluded)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (document.number, line_no, line.anchor, line.period_first, line.period_last, charge.kind, charge.mode, charge.unit_price,
                 charge.quantity, charge.days, line.amount, line.previously_billed, line.recomputed, charge.cap_applied, charge.floor_applied,
                 list(charge.voucher_ids), Jsonb(record["lines"][line_no - 1]["excluded"])),
            )


async def run_invoice(conn: Conn, tenant_id: str, contract_id: str, period: BillingPeriod, *, actor: str) -> dict[str, Any]:
    """Compute (or re-compute) the draft run of ``period``; an approved run is returned unchanged.

    The same period and inputs give the same invoice number, documents and totals.
    The run's ``gap_waiting`` lists, per gateway, the period's vouchers that a
    gap in the gateway's chain keeps from billing (see :func:`.gaps.gap_waiting`).
    """
    await _lock(conn, tenant_id, contract_id)
    contract, _ = await load_contract(conn, tenant_id, contract_id)
    if period.first < contract.start or period.last > contract.end:
        # Partly outside is refused too: an approved run reaching past the term would block every later period and print wrong dates.
        wholly = period.last < contract.start or period.first > contract.end
        where = "lies outside" if wholly else "reaches outside"
        msg = f"billing period {period.label} {where} the term of contract {contract_id!r} ({contract.start}..{contract.end}); choose dates within the term"
        raise _invalid(msg, "period_outside_term", variant="wholly" if wholly else "partly", first=period.first.isoformat(), last=period.last.isoformat(),
                       contract=contract_id, start=contract.start.isoformat(), end=contract.end.isoformat())
    existing = await _rows(
        conn,
        "SELECT * FROM invoice_runs WHERE tenant_id = %s AND contract_id = %s AND period_first = %s AND period_last = %s",
        (tenant_id, contract_id, period.first, period.last),
    )
    if existing and existing[0]["status"] == "approved":
        log.info("invoice_run_unchanged", tenant=tenant_id, contract=contract_id, run=existing[0]["id"], reason="approved")
        return existing[0]

    result, revision = await _compute(conn, tenant_id, contract_id, period)
    waiting = await gap_waiting(conn, tenant_id, contract, period)

    if existing:
        run = existing[0]
        await conn.execute("DELETE FROM invoice_documents WHERE run_id = %s", (run["id"],))
        (run,) = await _rows(
            conn,
            "UPDATE invoice_runs SET inputs_digest = %s, contract_revision = %s, contract_digest = %s, gap_waiting = %s, computed_at = now()"
            " WHERE id = %s RETURNING *",
            (result.digest, revision, result.invoice.contract_digest, Jsonb(waiting), run["id"]),
        )
    else:
        (run,) = await _rows(
            conn,
            "INSERT INTO invoice_runs (tenant_id, contract_id, contract_revision, contract_digest, period_first, period_last, invoice_number, status,"
            " inputs_digest, gap_waiting, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, 'draft', %s, %s, %s) RETURNING *",
            (tenant_id, contract_id, revision, result.invoice.contract_digest, period.first, period.last, result.invoice.number, result.digest,
             Jsonb(waiting), actor),
        )
    await _insert_documents(conn, run["id"], tenant_id, contract_id, result)

    detail = {
        "period": period.label,
        "invoice": result.invoice.number,
        "total": str(result.invoice.total),
        "notes": [{"number": n.number, "kind": n.kind, "total": str(n.total)} for n in result.notes],
        "inputs_digest": result.digest,
        "contract_digest": result.invoice.contract_digest,
        "gap_waiting": waiting,
    }
    await audit(conn, tenant_id=tenant_id, actor=actor, action="invoice.run", object_type="invoice_run", object_id=str(run["id"]), detail=detail)
    log.info("invoice_run_computed", tenant=tenant_id, contract=contract_id, run=run["id"], invoice=result.invoice.number, notes=len(result.notes),
             vouchers_waiting_for_gap=sum(entry["vouchers"] for entry in waiting))
    return run


async def get_run(conn: Conn, tenant_id: str, run_id: int) -> dict[str, Any]:
    """Return a run, with ``approved_by_name``, the approver's current name for display (see :mod:`valuegate.cloud.actors`)."""
    rows = await _rows(conn, f"SELECT r.*, {name_sql('r', 'approved_by')} AS approved_by_name FROM invoice_runs r WHERE r.tenant_id = %s AND r.id = %s",
                       (tenant_id, run_id))
    if not rows:
        raise NotFound(f"invoice run {run_id} not found")
    return rows[0]


async def list_runs(conn: Conn, tenant_id: str, contract_id: str) -> list[dict[str, Any]]:
    """Return the contract's runs, latest period first, each with its invoice's total and its notes (``notes``: number, kind, total, corrects)."""
    rows = await _rows(
        conn,
        "SELECT r.*, d.total, d.currency, coalesce((SELECT json_agg(json_build_object('number', n.number, 'kind', n.kind, 'total', n.total::text, 'corrects', n.corrects)"
        " ORDER BY n.number) FROM invoice_documents n WHERE n.run_id = r.id AND n.kind <> 'invoice'), '[]') AS notes"
        " FROM invoice_runs r JOIN invoice_documents d ON d.number = r.invoice_number"
        " WHERE r.tenant_id = %s AND r.contract_id = %s ORDER BY r.period_first DESC",
        (tenant_id, contract_id),
    )
    for row in rows:
        # The totals travel as text through JSON, so that they stay exact Decimals.
        row["notes"] = [{**note, "total": Decimal(note["total"])} for note in row["notes"]]
    return rows


async def run_documents(conn: Conn, tenant_id: str, run_id: int) -> list[dict[str, Any]]:
    """Return the run's documents (invoice first, then notes) with their stored records."""
    await get_run(conn, tenant_id, run_id)
    return await _rows(
        conn,
        "SELECT * FROM invoice_documents WHERE run_id = %s AND tenant_id = %s ORDER BY (kind <> 'invoice'), number",
        (run_id, tenant_id),
    )


async def _clock(conn: Conn) -> dt.datetime:
    """Return the database's current time (not the transaction's start, as now() gives)."""
    return (await (await conn.execute("SELECT clock_timestamp()")).fetchone())[0]  # type: ignore[index]


async def _lock(conn: Conn, tenant_id: str, contract_id: str) -> None:
    # One run or approval at a time per contract, so that two finance users cannot interleave.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"settlement:{tenant_id}:{contract_id}",))


async def _compute(conn: Conn, tenant_id: str, contract_id: str, period: BillingPeriod) -> tuple[RunResult, int]:
    contract, revision = await load_contract(conn, tenant_id, contract_id)
    values = await billable_values(conn, tenant_id, contract_id)
    exclusions = await load_exclusions(conn, tenant_id, contract_id)
    issued = await issued_documents(conn, tenant_id, contract_id)
    return compute_run(contract, period, values, exclusions, issued, revision=revision), revision


async def discard_run(conn: Conn, tenant_id: str, run_id: int, *, actor: str) -> dict[str, Any]:
    """Delete a draft run with its documents, for example one that overlaps an invoice issued since; return the run as it was.

    An approved run is never deleted: its invoice is issued, and a later run corrects it with a note.
    """
    run = await get_run(conn, tenant_id, run_id)
    await _lock(conn, tenant_id, run["contract_id"])
    run = await get_run(conn, tenant_id, run_id)
    if run["status"] == "approved":
        error = Conflict(
            f"invoice run {run_id} ({run['invoice_number']}) is approved, and an issued invoice is never deleted; a later run corrects it with a note",
            code="run_approved",
        )
        error.params = {"run": str(run_id), "invoice": run["invoice_number"]}  # type: ignore[attr-defined]
        raise error
    await conn.execute("DELETE FROM invoice_runs WHERE id = %s AND tenant_id = %s AND status = 'draft'", (run_id, tenant_id))
    await audit(
        conn, tenant_id=tenant_id, actor=actor, action="invoice.discard", object_type="invoice_run", object_id=str(run_id),
        detail={"invoice": run["invoice_number"], "period": f"{run['period_first']}..{run['period_last']}"},
    )  # fmt: skip
    log.info("invoice_run_discarded", tenant=tenant_id, run=run_id, invoice=run["invoice_number"], actor=actor)
    return run


def draft_digest(run: dict[str, Any], documents: list[dict[str, Any]]) -> str:
    """Return a digest of what a draft shows: its documents with their lines and vouchers, and the vouchers waiting behind gaps.

    The run page sends it with the approval, so that a draft computed again
    after the approver opened it is not issued unseen.
    """
    content = {"documents": {row["number"]: row["record"] for row in documents}, "gap_waiting": run.get("gap_waiting") or []}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


async def approve_run(conn: Conn, tenant_id: str, run_id: int, *, actor: str, seen: str | None = None) -> dict[str, Any]:
    """Approve a draft run: its documents become issued and final. Approving twice changes nothing.

    ``seen`` is the :func:`draft_digest` of the draft the approver reviewed;
    when the draft was computed again since and shows something else, the
    approval fails with :class:`Conflict` (``run_changed``).

    The draft's documents must still be what the current inputs give. A
    voucher or an adjustment that changes them, or a note issued by another
    run against the same invoice, makes the approval fail with
    :class:`Conflict`. Finance then reviews the re-run instead of issuing a
    stale or duplicate note. The same holds when the vouchers that wait
    behind a chain gap changed, so the approver has seen the current ones.
    """
    run = await get_run(conn, tenant_id, run_id)
    if run["status"] == "approved":
        return run
    await _lock(conn, tenant_id, run["contract_id"])
    # Another approval of this run may have finished while this one waited for the lock.
    run = await get_run(conn, tenant_id, run_id)
    if run["status"] == "approved":
        return run
    # The issue time is taken under the lock, as adjustments take theirs: an adjustment recorded or
    # withdrawn before this instant is in what the run computes below, one after it is not.
    issued_at = await _clock(conn)
    documents = await run_documents(conn, tenant_id, run_id)
    if seen is not None and seen != draft_digest(run, documents):
        msg = (f"invoice run {run_id} ({run['invoice_number']}) was computed again at {run['computed_at'].isoformat()}, after you opened it, "
               "and now shows other documents; review the current draft and approve it again")  # fmt: skip
        error = Conflict(msg, code="run_changed")
        error.params = {"run": str(run_id), "invoice": run["invoice_number"]}  # type: ignore[attr-defined]
        raise error
    period = BillingPeriod(run["period_first"], run["period_last"])
    result, _ = await _compute(conn, tenant_id, run["contract_id"], period)
    contract, _ = await load_contract(conn, tenant_id, run["contract_id"])
    # Compare whole documents (lines and voucher ids), not the inputs digest: vouchers of
    # other periods arrive every day and must not block an approval they do not change.
    stored = {row["number"]: row["record"] for row in documents}
    current = {document.number: stored_record(document) for document in (result.invoice, *result.notes)}
    if stored != current or run["gap_waiting"] != await gap_waiting(conn, tenant_id, contract, period):
        msg = f"invoice run {run_id} ({run['invoice_number']}) is out of date: its inputs changed since it was computed; run the period again and review it before approving"
        error = Conflict(msg, code="stale_run")
        error.params = {"run": str(run_id), "invoice": run["invoice_number"]}  # type: ignore[attr-defined]
        raise error
    (run,) = await _rows(
        conn,
        "UPDATE invoice_runs SET status = 'approved', approved_by = %s, approved_at = %s WHERE id = %s RETURNING *",
        (actor, issued_at, run_id),
    )
    await conn.execute("UPDATE invoice_documents SET status = 'issued', issued_at = %s WHERE run_id = %s", (issued_at, run_id))
    await audit(
        conn, tenant_id=tenant_id, actor=actor, action="invoice.approve", object_type="invoice_run", object_id=str(run_id),
        detail={"invoice": run["invoice_number"], "inputs_digest": run["inputs_digest"]},
    )
    log.info("invoice_run_approved", tenant=tenant_id, run=run_id, invoice=run["invoice_number"], actor=actor)
    return run
