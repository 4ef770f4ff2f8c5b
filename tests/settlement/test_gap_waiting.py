"""An invoice run names the vouchers of its period that a chain gap keeps from billing: stored, shown in exports, checked on approval."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims, voucher_chain
from tests.settlement.seed import connect, ingest, seed
from tests.verify.bundles import JUNE, MAY, oee_contract
from valuegate.cloud.settlement import export
from valuegate.cloud.settlement import store as settlement
from valuegate.cloud.store import Conflict
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


@pytest.fixture
async def gap(database):
    """Vouchers 1-5 of gw-1 in May are stored, 6 (31 May) is missing, and 7-8 (1-2 June) wait behind the gap."""
    key = Ed25519PrivateKey.generate()
    await seed(database, oee_contract(), key)
    documents = voucher_chain(key, 5)
    six = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(documents[-1]), plant_date=dt.date(2024, 5, 31)), key)
    seven = v.build_voucher(make_claims(seq=7, prev=v.voucher_hash(six), plant_date=dt.date(2024, 6, 1)), key)
    eight = v.build_voucher(make_claims(seq=8, prev=v.voucher_hash(seven), plant_date=dt.date(2024, 6, 2)), key)
    assert await ingest(database, documents) == [f"gw-1:{n}" for n in range(1, 6)]
    assert await ingest(database, [seven, eight]) == ["gw-1:7", "gw-1:8"]
    return database, key, six, eight


async def test_run_names_waiting_vouchers(gap):
    dsn, _, _, _ = gap
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        (document,) = await settlement.run_documents(conn, "acme", run["id"])
        may = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="fin")
    assert document["total"] == Decimal("0.00")
    assert run["gap_waiting"] == [{"gateway": "gw-1", "vouchers": 2, "first_seq": 7, "last_seq": 8, "stored_through": 5,
                                   "missing_first": 6, "missing_last": 6, "missing_rejected": 0, "missing_codes": []}]
    assert may["gap_waiting"] == []  # May's vouchers lie before the gap


async def test_rerun_keeps_waiting_list(gap):
    dsn, _, _, _ = gap
    async with await connect(dsn) as conn:
        first = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        again = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
    assert again["id"] == first["id"]
    assert again["invoice_number"] == first["invoice_number"]
    assert again["inputs_digest"] == first["inputs_digest"]
    assert again["gap_waiting"] == first["gap_waiting"]


@pytest.mark.parametrize(("language", "row", "note"), [
    ("en", "vouchers waiting for a chain gap",
     "Gateway gw-1: sequence 6 is missing (no rejection stored), so 2 vouchers of this period (sequences 7–8) wait behind them."),
    ("zh-CN", "等待链缺口补齐的凭证", "网关 gw-1：序号 6 的凭证缺失（云端未存有拒收记录），因此本结算期的 2 张凭证（序号 7–8）在其后等待。"),
])  # fmt: skip
async def test_exports_name_waiting_vouchers(gap, language, row, note):
    dsn, _, _, _ = gap
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        documents = await settlement.run_documents(conn, "acme", run["id"])
    rows = list(csv.reader(io.StringIO(export.csv_bytes(documents, [], language, contract=oee_contract(), run=run).decode("utf-8-sig"))))
    waiting = [line for line in rows if line[0] == row]
    assert len(waiting) == 1
    assert waiting[0][1] == run["invoice_number"]
    assert waiting[0][4:6] == ["2024-06-01", "2024-06-30"]
    assert waiting[0][-2].startswith(note)
    assert len(waiting[0]) == len(export.CSV_COLUMNS)

    html = export.invoice_html(run=run, documents=documents, adjustments=[], contract=oee_contract(), language=language)
    assert note in html


async def test_approval_rejects_changed_gap(gap):
    """A draft approved after more vouchers joined the wait would issue a total the approver did not see explained."""
    dsn, key, _, eight = gap
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
    nine = v.build_voucher(make_claims(seq=9, prev=v.voucher_hash(eight), plant_date=dt.date(2024, 6, 3)), key)
    assert await ingest(dsn, [nine]) == ["gw-1:9"]
    async with await connect(dsn) as conn:
        with pytest.raises(Conflict) as caught:
            await settlement.approve_run(conn, "acme", run["id"], actor="fin")
        assert caught.value.code == "stale_run"
        rerun = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        assert rerun["gap_waiting"][0]["vouchers"] == 3
        approved = await settlement.approve_run(conn, "acme", run["id"], actor="fin")
    assert approved["status"] == "approved"


async def test_filled_gap_clears_waiting_list(gap):
    dsn, _, six, _ = gap
    assert await ingest(dsn, [six]) == ["gw-1:6"]
    async with await connect(dsn) as conn:
        run = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="fin")
        (document,) = await settlement.run_documents(conn, "acme", run["id"])
    assert run["gap_waiting"] == []
    (line,) = document["record"]["lines"]
    assert line["voucher_ids"] == ["gw-1:7", "gw-1:8"]
