"""Invoice runs in PostgreSQL: idempotent runs, approval, frozen issued invoices, notes, adjustments, audit."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import JUNE, MAY, oee_contract
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.settlement.invoice import BillingPeriod
from valuegate.cloud.store import Conflict, Invalid, NotFound
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import contract_digest

pytestmark = pytest.mark.postgres


@pytest.fixture
async def seeded(database):
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(), key)
    chain = voucher_chain(key, 5)
    await ingest(database, chain)
    return database, key, chain


async def audit_actions(conn) -> list[str]:
    cur = await conn.execute("SELECT action FROM audit_log WHERE action LIKE 'invoice.%%' OR action LIKE 'adjustment.%%' ORDER BY id")
    return [row[0] for row in await cur.fetchall()]


async def test_run_is_idempotent_and_approval_final(seeded):
    dsn, _, _ = seeded
    async with await connect(dsn) as conn:
        first = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        again = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        assert again["id"] == first["id"]
        assert again["invoice_number"] == first["invoice_number"]
        assert again["inputs_digest"] == first["inputs_digest"]
        (document,) = await settlement.run_documents(conn, "acme", first["id"])
        # 5 days x 1.5 points x 2,000 CNY
        assert document["total"] == Decimal("15000.00")
        assert document["status"] == "draft"
        assert document["record"]["lines"][0]["voucher_ids"] == [f"gw-1:{n}" for n in range(1, 6)]

        approved = await settlement.approve_run(conn, "acme", first["id"], actor="fin-lead")
        assert approved["status"] == "approved"
        assert approved["approved_by"] == "fin-lead"
        (issued,) = await settlement.run_documents(conn, "acme", first["id"])
        assert issued["status"] == "issued"
        assert await audit_actions(conn) == ["invoice.run", "invoice.run", "invoice.approve"]

        with pytest.raises(psycopg.errors.CheckViolation, match="is issued and cannot be changed"):
            await conn.execute("UPDATE invoice_documents SET total = 1 WHERE number = %s", (issued["number"],))
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot be changed"):
            await conn.execute("DELETE FROM invoice_lines WHERE document_number = %s", (issued["number"],))
        with pytest.raises(psycopg.errors.CheckViolation, match="is approved and cannot be changed"):
            await conn.execute("UPDATE invoice_runs SET status = 'draft', approved_at = NULL WHERE id = %s", (first["id"],))
        rerun = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        assert rerun["id"] == first["id"]


async def test_late_voucher_gives_note_and_keeps_invoice(seeded):
    dsn, key, chain = seeded
    async with await connect(dsn) as conn:
        may = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        await settlement.approve_run(conn, "acme", may["id"], actor="fin")

    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=-0.5, low=-1.0), key)
    assert await ingest(dsn, [late]) == ["gw-1:6"]

    async with await connect(dsn) as conn:
        june = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        invoice, note = await settlement.run_documents(conn, "acme", june["id"])
        assert invoice["kind"] == "invoice"
        assert invoice["total"] == Decimal("0")
        assert note["kind"] == "credit_note"
        assert note["corrects"] == may["invoice_number"]
        # 31 May lost 0.5 points: 7.0 x 2,000 = 14,000 now against 15,000 billed.
        assert note["total"] == Decimal("-1000.00")
        line = note["record"]["lines"][0]
        assert line["previously_billed"] == "15000.00"
        assert line["recomputed"] == "14000.00"
        assert "gw-1:6" in line["voucher_ids"]
        (original,) = await settlement.run_documents(conn, "acme", may["id"])
        assert original["total"] == Decimal("15000.00")
        assert original["record"]["lines"][0]["voucher_ids"] == [f"gw-1:{n}" for n in range(1, 6)]


async def test_adjustment_excludes_days_and_is_audited(seeded):
    dsn, _, _ = seeded
    async with await connect(dsn) as conn:
        row = await settlement.add_adjustment(
            conn, "acme", "C-1", anchor_id="line-oee", first_date=dt.date(2024, 5, 8), last_date=dt.date(2024, 5, 9),
            reason="Line 1 rebuild", actor="csm",
        )
        run = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        (document,) = await settlement.run_documents(conn, "acme", run["id"])
        assert document["total"] == Decimal("9000.00")
        excluded = document["record"]["lines"][0]["excluded"]
        assert excluded == [{"voucher_id": f"gw-1:{n}", "reason": f"nonroutine_adjustment:{row['id']}"} for n in (3, 4)]
        assert await audit_actions(conn) == ["adjustment.create", "invoice.run"]

        with pytest.raises(Invalid, match="needs a reason"):
            await settlement.add_adjustment(conn, "acme", "C-1", anchor_id=None, first_date=dt.date(2024, 5, 8), last_date=dt.date(2024, 5, 9), reason=" ", actor="csm")
        with pytest.raises(Invalid, match="has no anchor"):
            await settlement.add_adjustment(conn, "acme", "C-1", anchor_id="nope", first_date=dt.date(2024, 5, 8), last_date=dt.date(2024, 5, 9), reason="x", actor="csm")


async def test_period_outside_term_is_rejected(seeded):
    dsn, _, _ = seeded
    async with await connect(dsn) as conn:
        with pytest.raises(Invalid, match="lies outside the term of contract 'C-1'"):
            await settlement.run_invoice(conn, "acme", "C-1", BillingPeriod(dt.date(2025, 1, 1), dt.date(2025, 1, 31)), actor="fin")
        # Either end outside the term (2024-04-01..2024-12-31) is refused too, and nothing is written.
        for first, last in ((dt.date(2024, 12, 1), dt.date(2099, 12, 31)), (dt.date(2024, 3, 25), dt.date(2024, 4, 30))):
            with pytest.raises(Invalid, match=r"reaches outside the term of contract 'C-1' \(2024-04-01..2024-12-31\)"):
                await settlement.run_invoice(conn, "acme", "C-1", BillingPeriod(first, last), actor="fin")
        cursor = await conn.execute("SELECT count(*) FROM invoice_runs")
        assert (await cursor.fetchone())[0] == 0


async def test_other_tenant_sees_nothing(seeded):
    dsn, _, _ = seeded
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        with pytest.raises(NotFound):
            await settlement.get_run(conn, "globex", run["id"])
        with pytest.raises(NotFound):
            await settlement.approve_run(conn, "globex", run["id"], actor="x")
        with pytest.raises(NotFound):
            await settlement.run_invoice(conn, "globex", "C-1", MAY, actor="x")


async def test_stale_draft_cannot_be_approved(seeded):
    """Two drafts both correcting May must not both issue a note: the second approval needs a re-run."""
    dsn, key, chain = seeded
    july = BillingPeriod(dt.date(2024, 7, 1), dt.date(2024, 7, 31))
    async with await connect(dsn) as conn:
        may = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        await settlement.approve_run(conn, "acme", may["id"], actor="fin")

    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=1.0, low=0.5), key)
    await ingest(dsn, [late])

    async with await connect(dsn) as conn:
        june = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        july_run = await settlement.run_invoice(conn, "acme", "C-1", july, actor="fin")
        assert [d["kind"] for d in await settlement.run_documents(conn, "acme", july_run["id"])] == ["invoice", "debit_note"]
        await settlement.approve_run(conn, "acme", june["id"], actor="fin")
        with pytest.raises(Conflict, match="is out of date"):
            await settlement.approve_run(conn, "acme", july_run["id"], actor="fin")

        again = await settlement.run_invoice(conn, "acme", "C-1", july, actor="fin")
        assert again["id"] == july_run["id"]
        assert [d["kind"] for d in await settlement.run_documents(conn, "acme", july_run["id"])] == ["invoice"]
        approved = await settlement.approve_run(conn, "acme", july_run["id"], actor="fin")
        assert approved["status"] == "approved"
        cur = await conn.execute("SELECT count(*) FROM invoice_documents WHERE kind = 'debit_note' AND status = 'issued'")
        assert (await cur.fetchone())[0] == 1


async def test_run_records_terms_digest_and_money_places(seeded):
    dsn, _, _ = seeded
    terms = contract_digest(oee_contract())
    async with await connect(dsn) as conn:
        may = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
        assert may["contract_digest"] == terms
        (document,) = await settlement.run_documents(conn, "acme", may["id"])
        assert document["record"]["contract_digest"] == terms

        # June has no voucher: its invoice has no line and a total of 0.00, stored and recorded.
        june = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        (empty,) = await settlement.run_documents(conn, "acme", june["id"])
        assert empty["record"]["lines"] == []
        assert empty["record"]["total"] == "0.00"
        assert str(empty["total"]) == "0.00"
        assert june["inputs_digest"] != may["inputs_digest"]


async def test_approval_waiting_for_lock_sees_first(seeded):
    """A second approval that read the draft before the first one committed returns the approved run instead of failing."""
    import asyncio

    dsn, _, _ = seeded
    async with await connect(dsn) as first, await connect(dsn) as second:
        run = await settlement.run_invoice(first, "acme", "C-1", MAY, actor="fin")

        async def approve_second() -> dict:
            async with second.transaction():
                return await settlement.approve_run(second, "acme", run["id"], actor="fin-b")

        async with first.transaction():
            await settlement.approve_run(first, "acme", run["id"], actor="fin-a")
            waiting = asyncio.create_task(approve_second())
            await asyncio.sleep(0.5)
            assert not waiting.done()  # blocked on the contract's lock
        approved = await waiting
        assert (approved["status"], approved["approved_by"]) == ("approved", "fin-a")
        assert await audit_actions(first) == ["invoice.run", "invoice.approve"]
