"""Contract amendments: an issued period keeps the revision it was priced with, new periods use the revision in force."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import JUNE, MAY, oee_contract
from valuegate.cloud.contracts import upload_contract
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.settlement.invoice import BillingPeriod
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import contract_digest

pytestmark = pytest.mark.postgres

JULY = BillingPeriod(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
# Revision 2 caps each period at 1,000.00 and bills the lower end of the interval.
CAPPED = oee_contract(settlement="lower_bound", anchor={"cap": "1000.00"})


async def approve(conn, period: BillingPeriod) -> dict:
    run = await settlement.run_invoice(conn, "acme", "C-1", period, actor="user:fin")
    return await settlement.approve_run(conn, "acme", run["id"], actor="user:fin-lead")


async def amend(conn, contract) -> int:
    row, created = await upload_contract(conn, "acme", json.dumps(msgspec.to_builtins(contract)), actor="user:admin")
    assert created
    return row["revision"]


@pytest.fixture
async def invoiced_may(database):
    """May invoiced and approved with revision 1: 5 running days x 1.5 points x 2,000 = 15,000.00."""
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(), key)
    chain = voucher_chain(key, 5)
    await ingest(database, chain)
    async with await connect(database) as conn:
        may = await approve(conn, MAY)
    return database, key, chain, may


async def test_amendment_alone_issues_no_note(invoiced_may):
    dsn, key, chain, may = invoiced_may
    june_day = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 6, 3), point=1.5, low=1.0), key)
    await ingest(dsn, [june_day])
    async with await connect(dsn) as conn:
        assert await amend(conn, CAPPED) == 2
        june = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="user:fin")
        documents = await settlement.run_documents(conn, "acme", june["id"])

    # Only June's own invoice: May re-prices to its 15,000.00 with revision 1, so nothing corrects it.
    assert [d["kind"] for d in documents] == ["invoice"]
    (invoice,) = documents
    # June uses revision 2: lower bound 1.0 point x 2,000 = 2,000.00, capped at 1,000.00.
    assert invoice["total"] == Decimal("1000.00")
    line = invoice["record"]["lines"][0]
    assert (line["mode"], line["quantity"], line["cap_applied"]) == ("lower_bound", "1.0", True)
    assert invoice["record"]["contract_digest"] == contract_digest(CAPPED)
    assert invoice["record"]["contract_revision"] == 2
    assert june["contract_revision"] == 2


async def test_late_voucher_note_uses_invoice_revision(invoiced_may):
    dsn, key, chain, may = invoiced_may
    async with await connect(dsn) as conn:
        assert await amend(conn, CAPPED) == 2
        await approve(conn, JUNE)
    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=2.25, low=1.0), key)
    await ingest(dsn, [late])

    async with await connect(dsn) as conn:
        july = await settlement.run_invoice(conn, "acme", "C-1", JULY, actor="user:fin")
        invoice, note = await settlement.run_documents(conn, "acme", july["id"])
        await settlement.approve_run(conn, "acme", july["id"], actor="user:fin-lead")

    assert invoice["record"]["contract_revision"] == 2
    assert note["kind"] == "debit_note"
    assert note["corrects"] == may["invoice_number"]
    # Revision 1 (point estimate, no cap): (5 x 1.5 + 2.25) x 2,000 = 19,500.00 against 15,000.00 billed.
    assert note["total"] == Decimal("4500.00")
    line = note["record"]["lines"][0]
    assert (line["previously_billed"], line["recomputed"]) == ("15000.00", "19500.00")
    assert (line["mode"], line["quantity"], line["cap_applied"]) == ("point", "9.75", False)
    assert note["record"]["contract_digest"] == contract_digest(oee_contract())
    assert note["record"]["contract_revision"] == 1


async def test_period_keeps_revision_two_after_third(invoiced_may):
    """June, invoiced with revision 2, keeps revision 2 for its note after revision 3 is uploaded."""
    dsn, key, chain, _ = invoiced_may
    june_day = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 6, 3), point=1.5, low=1.0), key)
    await ingest(dsn, [june_day])
    second = oee_contract(settlement="lower_bound", anchor={"cap": "5000.00"})
    third = oee_contract(anchor={"price": {"per": "oee_point_day", "amount": "3000"}})
    async with await connect(dsn) as conn:
        assert await amend(conn, second) == 2
        june = await approve(conn, JUNE)
        assert await amend(conn, third) == 3
    late = v.build_voucher(make_claims(seq=7, prev=v.voucher_hash(june_day), plant_date=dt.date(2024, 6, 4), point=3.0, low=2.0), key)
    await ingest(dsn, [late])

    async with await connect(dsn) as conn:
        july = await settlement.run_invoice(conn, "acme", "C-1", JULY, actor="user:fin")
        invoice, note = await settlement.run_documents(conn, "acme", july["id"])

    assert (invoice["record"]["contract_revision"], note["record"]["contract_revision"]) == (3, 2)
    assert note["corrects"] == june["invoice_number"]
    assert note["record"]["contract_digest"] == contract_digest(second)
    # Revision 2: lower bound (1.0 + 2.0) x 2,000 = 6,000.00, capped at 5,000.00, against 2,000.00 billed.
    # Revision 3 would have given (1.5 + 3.0) x 3,000 = 13,500.00.
    assert note["total"] == Decimal("3000.00")
    line = note["record"]["lines"][0]
    assert (line["mode"], line["unit_price"], line["cap_applied"]) == ("lower_bound", "2000", True)
