"""Exports of a run whose note was priced with an earlier contract revision: each document shows its own revision, mode and digest."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from pypdf import PdfReader

from tests.factories import make_claims
from tests.settlement.test_amended_terms import CAPPED, JULY, amend, approve, invoiced_may  # noqa: F401 - invoiced_may is a fixture
from tests.settlement.seed import connect, ingest
from tests.verify.bundles import JUNE, oee_contract
from valuegate.cloud import auth
from valuegate.cloud.app import create_app
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.settlement import store as settlement
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.contract import contract_digest

pytestmark = pytest.mark.postgres

# Revision 1 bills the point estimate; revision 2 (CAPPED) the lower bound.
FIRST, SECOND = contract_digest(oee_contract()), contract_digest(CAPPED)
WORDS = {
    "en": {"invoice": "Invoice", "note": "Debit note", "current": "Contract revision 2", "earlier": "Contract revision 1 (revision 2 is in force)",
           "mode": "Settlement mode", "point": "point estimate", "lower": "lower bound of the interval", "digest": "Contract terms digest",
           "total": "Total"},
    "zh-CN": {"invoice": "发票", "note": "借项通知单", "current": "合同版本 第 2 版", "earlier": "合同版本 第 1 版（现行为第 2 版）",
              "mode": "结算方式", "point": "点估计", "lower": "置信区间下限", "digest": "合同条款摘要", "total": "合计"},
}


@pytest.fixture
async def amended_run(invoiced_may) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, str], int, list[dict[str, Any]]]]:  # noqa: F811
    """July's run under revision 2, with a debit note against May, which revision 1 priced.

    July has no voucher, so the invoice has no line: its section can take its settlement mode only from its revision's terms.
    """
    dsn, key, chain, _ = invoiced_may
    async with await connect(dsn) as conn:
        assert await amend(conn, CAPPED) == 2
        await approve(conn, JUNE)
    late = v.build_voucher(make_claims(seq=6, prev=v.voucher_hash(chain[-1]), plant_date=dt.date(2024, 5, 31), point=2.25, low=1.0), key)
    await ingest(dsn, [late])
    async with await connect(dsn) as conn:
        july = await settlement.run_invoice(conn, "acme", "C-1", JULY, actor="user:fin")
        documents = await settlement.run_documents(conn, "acme", july["id"])
        user = await auth.create_user(conn, "acme", "fin1", None, ["finance"])
        _, token = await auth.issue_token(conn, "acme", user["id"], "test", actor="test")
    app = create_app(CloudSettings(dsn=dsn, cookie_secure=True))
    async with AsyncTestClient(app, base_url="https://testserver.local") as client:
        yield client, {"Authorization": f"Bearer {token}"}, july["id"], documents


def pdf_text(pdf: bytes) -> str:
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """Return ``text`` without white space, because a digest may wrap inside its table cell."""
    return "".join(text.split())


@pytest.mark.parametrize("language", ["zh-CN", "en"])
async def test_pdf_sections_show_own_terms(amended_run, language):
    client, headers, run_id, documents = amended_run
    invoice, note = documents
    assert (invoice["record"]["contract_revision"], note["record"]["contract_revision"]) == (2, 1)
    words = WORDS[language]

    response = await client.get(f"/runs/{run_id}/export.pdf?lang={language}", headers=headers)
    assert response.status_code == 200
    text = pdf_text(response.content)
    head, rest = text.split(f"{words['invoice']} {invoice['number']}", 1)
    invoice_part, note_part = rest.split(f"{words['note']} {note['number']}", 1)
    note_part = note_part.split(words["total"], 1)[0]

    # The head names neither revision's terms: each document has its own.
    assert FIRST not in squeezed(head)
    assert SECOND not in squeezed(head)
    assert words["mode"] not in head

    assert words["current"] in invoice_part
    assert f"{words['mode']} {words['lower']}" in invoice_part
    assert SECOND in squeezed(invoice_part)
    assert FIRST not in squeezed(invoice_part)

    assert words["earlier"] in note_part
    assert f"{words['mode']} {words['point']}" in note_part
    assert FIRST in squeezed(note_part)
    assert SECOND not in squeezed(note_part)


async def test_csv_and_run_page_keep_note_terms(amended_run):
    client, headers, run_id, documents = amended_run
    invoice, note = documents
    rows = list(csv.DictReader(io.StringIO((await client.get(f"/runs/{run_id}/export.csv?lang=en", headers=headers)).content.decode("utf-8-sig"))))
    digests = {(r["Document"], r["Record"]): r["Contract terms digest"] for r in rows if r["Record"] in ("line", "total")}
    # July has no voucher of its own, so its invoice has a total row and no line.
    assert digests == {(invoice["number"], "total"): SECOND, (note["number"], "line"): FIRST, (note["number"], "total"): FIRST}

    page = (await client.get(f"/runs/{run_id}?lang=en", headers=headers)).text
    invoice_html, note_html = page.split(f'data-number="{note["number"]}"', 1)
    assert "Priced with contract revision" not in invoice_html
    assert "Priced with contract revision 1; revision 2 is in force" in note_html
