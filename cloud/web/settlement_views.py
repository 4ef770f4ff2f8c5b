"""Web pages of settlement: run an invoice, approve it, export CSV or PDF, download the auditor bundle."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Redirect, Stream

from valuegate.cloud.api.deps import Conn
from valuegate.cloud.auth import requires
from valuegate.cloud.contracts import get_contract, parse_stored
from valuegate.cloud.bundle_stream import open_bundle_stream
from valuegate.cloud.settlement import export
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.settlement.invoice import BillingPeriod, InvoiceError
from valuegate.cloud.store import Conflict, Invalid

from .pages import FINANCE_VIEW, Filled, document_language, language_of, page, parse_date, principal_of

__all__ = ("run_invoice", "run_page", "approve_run", "discard_run", "export_csv", "export_pdf", "bundle_download")


class RunForm(msgspec.Struct):
    """The invoice-run form of the contract page."""

    period_first: Filled
    period_last: Filled


@post("/contracts/{contract_id:str}/runs", guards=[requires("finance")], name="web:run-invoice", status_code=303)
async def run_invoice(
    request: Request[Any, Any, Any], conn: Conn, contract_id: FromPath[str], data: Annotated[RunForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Redirect:
    principal = principal_of(request)
    try:
        period = BillingPeriod(parse_date(data.period_first, "period_first"), parse_date(data.period_last, "period_last"))
        run = await settlement.run_invoice(conn, principal.tenant_id, contract_id, period, actor=principal.actor)
    except InvoiceError as exc:
        error = Invalid(str(exc), code=exc.code)
        error.params = exc.params  # type: ignore[attr-defined]
        raise error from exc
    return Redirect(f"/runs/{run['id']}", status_code=303)


@get("/runs/{run_id:int}", guards=[requires(*FINANCE_VIEW)], name="web:run")
async def run_page(request: Request[Any, Any, Any], conn: Conn, run_id: FromPath[int]) -> Response[str]:
    principal = principal_of(request)
    run = await settlement.get_run(conn, principal.tenant_id, run_id)
    documents = await settlement.run_documents(conn, principal.tenant_id, run_id)
    adjustments = settlement.adjustments_of_run(run, await settlement.list_adjustments(conn, principal.tenant_id, run["contract_id"]))
    stored = await get_contract(conn, principal.tenant_id, run["contract_id"])
    in_force = stored["revision"]
    # A note prices its period with the revision of the invoice it corrects. Records stored before they named their revision used the run's.
    revisions = {row["number"]: row["record"].get("contract_revision") or run["contract_revision"] for row in documents}
    titles = export.anchor_titles(parse_stored(stored["document"], run["contract_id"], in_force), language_of(request))
    return page(request, "run.html", run=run, documents=documents, adjustments=adjustments, can_approve=principal.has("finance"),
                seen=settlement.draft_digest(run, documents),
                revisions=revisions, in_force=in_force, titles=titles, money_step=export.money_step,
                gap_notes=[export.gap_note(gap, language_of(request)) for gap in run.get("gap_waiting") or ()])


@post("/runs/{run_id:int}/approve", guards=[requires("finance")], name="web:approve-run", status_code=303)
async def approve_run(request: Request[Any, Any, Any], conn: Conn, run_id: FromPath[int]) -> Redirect:
    """Approve a draft. The run page's form sends the digest of the draft it showed (``seen``); API clients may send it too."""
    principal = principal_of(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        seen = body.get("seen") if isinstance(body, dict) else None
    else:
        seen = (await request.form()).get("seen")
    seen = seen if isinstance(seen, str) and seen else None
    try:
        await settlement.approve_run(conn, principal.tenant_id, run_id, actor=principal.actor, seen=seen)
    except InvoiceError as exc:
        # The period now overlaps an invoice another run issued, so this draft can never be approved.
        error = Conflict(str(exc), code=exc.code)
        # The approval variant of the message points to "Discard draft", because a draft's period cannot change.
        error.params = {**exc.params, "variant": "approve"}  # type: ignore[attr-defined]
        raise error from exc
    return Redirect(f"/runs/{run_id}", status_code=303)


@post("/runs/{run_id:int}/discard", guards=[requires("finance")], name="web:discard-run", status_code=303)
async def discard_run(request: Request[Any, Any, Any], conn: Conn, run_id: FromPath[int]) -> Redirect:
    """Delete a draft run, such as one that can no longer be approved, and return to its contract."""
    principal = principal_of(request)
    run = await settlement.discard_run(conn, principal.tenant_id, run_id, actor=principal.actor)
    return Redirect(f"/contracts/{run['contract_id']}?done=run.discarded#settlement", status_code=303)


async def _export_parts(request: Request[Any, Any, Any], conn: Any, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], Any, str]:
    principal = principal_of(request)
    run = await settlement.get_run(conn, principal.tenant_id, run_id)
    documents = await settlement.run_documents(conn, principal.tenant_id, run_id)
    adjustments = settlement.adjustments_of_run(run, await settlement.list_adjustments(conn, principal.tenant_id, run["contract_id"]))
    contract, _ = await settlement.load_contract(conn, principal.tenant_id, run["contract_id"])
    return run, documents, adjustments, contract, document_language(request)


async def _priced_revisions(conn: Any, tenant_id: str, contract_id: str, numbers: set[int]) -> dict[int, Any]:
    """Return the parsed terms of the given revisions; one that today's contract checks reject is left out, and its documents show their lines' mode."""
    cur = await conn.execute("SELECT revision, document FROM contracts WHERE tenant_id = %s AND id = %s AND revision = ANY(%s)",
                             (tenant_id, contract_id, sorted(numbers)))
    terms = {}
    for revision, document in await cur.fetchall():
        try:
            terms[revision] = parse_stored(document, contract_id, revision)
        except Invalid:
            continue
    return terms


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@get("/runs/{run_id:int}/export.csv", guards=[requires(*FINANCE_VIEW)], name="web:export-csv")
async def export_csv(request: Request[Any, Any, Any], conn: Conn, run_id: FromPath[int]) -> Response[bytes]:
    run, documents, adjustments, contract, language = await _export_parts(request, conn, run_id)
    body = export.csv_bytes(documents, adjustments, language, contract=contract, run=run)
    # Litestar appends "; charset=utf-8" to text types itself; naming it here too doubled it.
    return Response(body, media_type="text/csv", headers=_attachment(f"{run['invoice_number']}.{language}.csv"))


@get("/runs/{run_id:int}/export.pdf", guards=[requires(*FINANCE_VIEW)], name="web:export-pdf")
async def export_pdf(request: Request[Any, Any, Any], conn: Conn, run_id: FromPath[int]) -> Response[bytes]:
    run, documents, adjustments, contract, language = await _export_parts(request, conn, run_id)
    # Each document's section names the revision it was priced with: a note keeps the revision of the invoice it corrects.
    numbers = {row["record"].get("contract_revision") or run["contract_revision"] for row in documents}
    revisions = await _priced_revisions(conn, principal_of(request).tenant_id, run["contract_id"], numbers)
    in_force = (await get_contract(conn, principal_of(request).tenant_id, run["contract_id"]))["revision"]
    # WeasyPrint takes from a second to minutes; on a worker thread it holds up no other request.
    body = await asyncio.to_thread(
        export.pdf_bytes, run=run, documents=documents, adjustments=adjustments, contract=contract, language=language, revisions=revisions, in_force=in_force
    )
    return Response(body, media_type="application/pdf", headers=_attachment(f"{run['invoice_number']}.{language}.pdf"))


@get("/contracts/{contract_id:str}/bundle.zip", guards=[requires(*FINANCE_VIEW)], name="web:bundle")
async def bundle_download(request: Request[Any, Any, Any], contract_id: FromPath[str], records: FromQuery[bool] = True) -> Stream:
    # Each member goes out once it is written, so the server keeps at most one record file's ZIP bytes in memory at a time.
    principal = principal_of(request)
    chunks = await open_bundle_stream(request.app.state.pool, principal.tenant_id, contract_id, records=records)
    # Two names, so that an auditor who downloads both keeps both.
    name = f"{contract_id}.bundle.zip" if records else f"{contract_id}.bundle-without-records.zip"
    return Stream(chunks, media_type="application/zip", headers=_attachment(name))
