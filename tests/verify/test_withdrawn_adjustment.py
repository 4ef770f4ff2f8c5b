"""A withdrawn non-routine adjustment: the days it excluded are billed again by a debit note, and the bundle verifies.

Real invoice runs in PostgreSQL. May is issued with its five vouchers at
1.5 OEE points each (3,000.00 per voucher day at the contract's price).
Then 8 May is excluded, so June's run credits 3,000.00. The exclusion is
withdrawn, and July's run bills 8 May again with a debit note of 3,000.00.
Both verifiers replay the adjustment's recorded and withdrawn times.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.verify.bundles import JULY, JUNE
from tests.verify.test_verify_bundle import failed, rewrite_manifest
from tests.verify.test_verify_settled import approve, seeded_may
from tests.settlement.seed import connect
from valuegate.cloud.renewal.service import contract_bundle
from valuegate.cloud.settlement import store as settlement
from valuegate.verify import verify_bundle

pytestmark = pytest.mark.postgres
REBUILD = {"anchor_id": "line-oee", "first_date": dt.date(2024, 5, 8), "last_date": dt.date(2024, 5, 8), "reason": "line rebuild"}


async def withdrawn_bundle(database: str, folder: Path) -> list[dict]:
    await seeded_may(database)
    async with await connect(database) as conn:
        first = await settlement.add_adjustment(conn, "acme", "C-1", **REBUILD, actor="user:csm")
        again = await settlement.add_adjustment(conn, "acme", "C-1", **REBUILD, actor="user:csm2")  # a double submit
        assert again["id"] == first["id"]
        await approve(conn, JUNE)
        with pytest.raises(settlement.Invalid):
            await settlement.withdraw_adjustment(conn, "acme", "C-1", first["id"], reason=" ", actor="user:csm")
        withdrawn = await settlement.withdraw_adjustment(conn, "acme", "C-1", first["id"], reason="wrong line: the rebuild was on line 2", actor="user:csm")
        assert withdrawn["withdrawn_by"] == "user:csm"
        assert await settlement.load_exclusions(conn, "acme", "C-1") == []
        await approve(conn, JULY)
        await conn.commit()
        body = await contract_bundle(conn, "acme", "C-1")
    (folder.parent / "bundle.zip").write_bytes(body)
    zipfile.ZipFile(folder.parent / "bundle.zip").extractall(folder)
    return json.loads((folder / "invoices.json").read_text(encoding="utf-8"))


async def test_withdrawn_adjustment_billed_again(database, tmp_path) -> None:
    folder = tmp_path / "unpacked"
    documents = await withdrawn_bundle(database, folder)
    assert [(d["kind"], d["total"]) for d in documents] == [
        ("invoice", "15000.00"), ("credit_note", "-3000.00"), ("invoice", "0.00"), ("debit_note", "3000.00"), ("invoice", "0.00")]
    (adjustment,) = json.loads((folder / "adjustments.json").read_text(encoding="utf-8"))
    assert adjustment["withdrawn_by"] == "user:csm"
    assert documents[1]["issued_at"] < adjustment["withdrawn_at"] < documents[3]["issued_at"]
    report = verify_bundle(tmp_path / "bundle.zip")
    assert report.ok, report.as_dict()

    async with await connect(database) as conn:
        audited = await (await conn.execute("SELECT action, actor FROM audit_log WHERE object_type = 'nonroutine_adjustment' ORDER BY id")).fetchall()
    assert audited == [("adjustment.create", "user:csm"), ("adjustment.withdraw", "user:csm")]

    # A bundle that hides the withdrawal keeps the adjustment in force in July, so May re-prices to 12,000.00 while its documents bill 15,000.00.
    (folder / "adjustments.json").write_text(json.dumps([{**adjustment, "withdrawn_at": None}]), encoding="utf-8")
    rewrite_manifest(folder)
    bad = failed(verify_bundle(folder).documents)
    may = f"{documents[0]['number']} (invoice)"
    assert list(bad) == [may]
    assert "re-price the period to 12000.00" in bad[may][0]
    assert "bill 15000.00; a credit or debit note is missing" in bad[may][0]


@pytest.mark.peer
async def test_node_verifier_replays_withdrawal(database, tmp_path, node_peers) -> None:
    folder = tmp_path / "unpacked"
    await withdrawn_bundle(database, folder)
    result = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "checked 5 vouchers and 5 documents, 0 failed"

    adjustments = json.loads((folder / "adjustments.json").read_text(encoding="utf-8"))
    (folder / "adjustments.json").write_text(json.dumps([{**adjustments[0], "withdrawn_at": None}]), encoding="utf-8")
    rewrite_manifest(folder)
    hidden = subprocess.run(["node", str(node_peers / "verify_bundle.js"), str(folder)], capture_output=True, text=True, timeout=60)
    assert hidden.returncode != 0, hidden.stdout


async def test_issued_runs_list_adjustments_as_approved(database, tmp_path) -> None:
    """May was issued before the adjustment, June while it applied, July after its withdrawal: each run's exports show that state."""
    await withdrawn_bundle(database, tmp_path / "unpacked")
    async with await connect(database) as conn:
        rows = await settlement.list_adjustments(conn, "acme", "C-1")
        runs = [await settlement.get_run(conn, "acme", run_id) for run_id in (1, 2, 3)]
    assert [run["period_first"].month for run in runs] == [5, 6, 7]
    listed = [[(row["id"], row["withdrawn_by"]) for row in settlement.adjustments_of_run(run, rows)] for run in runs]
    assert listed == [[], [(rows[0]["id"], None)], [(rows[0]["id"], "user:csm")]]
    draft = {**runs[2], "approved_at": None}
    assert settlement.adjustments_of_run(draft, rows) == rows
