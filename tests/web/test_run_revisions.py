"""The run page names the contract revision a line was priced with when it is not the revision in force."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re

import msgspec
import pytest

from tests.factories import make_claims
from tests.settlement.seed import connect, ingest
from tests.verify.bundles import JUNE, MAY, oee_contract
from tests.web.site import TRIGGERS
from valuegate.cloud.contracts import upload_contract
from valuegate.cloud.settlement import store as settlement
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


async def _amend_and_run(site) -> int:
    """Approve May with revision 1, upload revision 2 (2,500 per point-day), store a late voucher for May and run June."""
    async with await connect(site.dsn) as conn:
        may = await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="user:fin1")
        await settlement.approve_run(conn, "acme", may["id"], actor="user:fin1")
        dearer = oee_contract(triggers=TRIGGERS, anchor={"scope": ["m-1", "m-2"], "price": {"per": "oee_point_day", "amount": "2500"}},
                              title={"zh-CN": "一号线服务合同", "en": "Line 1 service contract"})
        row, created = await upload_contract(conn, "acme", json.dumps(msgspec.to_builtins(dearer)), actor="user:adm1")
        assert (row["revision"], created) == (2, True)
    previous = site.last_voucher["credentialSubject"]
    late = make_claims(seq=previous["seq"] + 1, prev=v.voucher_hash(site.last_voucher), plant_date=dt.date(2024, 5, 31), point=2.0, low=1.0)
    await ingest(site.dsn, [v.build_voucher(late, site.key)])
    async with await connect(site.dsn) as conn:
        june = await settlement.run_invoice(conn, "acme", "C-1", JUNE, actor="user:fin1")
    return june["id"]


def _sections(html: str) -> dict[str, str]:
    """Return each document section of the run page by its kind, read from its data-number."""
    found = re.findall(r'<section class="card document" data-number="([^"]+)">(.*?)</section>', html, flags=re.S)
    return {"invoice" if number.startswith("INV-") else "note": body for number, body in found}


def test_note_line_names_its_revision(site, login):
    run_id = asyncio.run(_amend_and_run(site))
    finance = login("fin1")

    english = _sections(finance.get(f"/runs/{run_id}?lang=en").text)
    # The note re-prices May with revision 1, the revision of May's invoice. June's invoice uses revision 2, the one in force.
    assert "Priced with contract revision 1; revision 2 is in force" in english["note"]
    assert "Priced with contract revision" not in english["invoice"]
    # 20 running days x 1.5 points + 2.0 points on 31 May = 32 points x 2,000.
    assert "64,000.00" in english["note"]

    chinese = _sections(finance.get(f"/runs/{run_id}?lang=zh-CN").text)
    assert "按合同第 1 版定价；现行为第 2 版" in chinese["note"]
    assert "按合同第" not in chinese["invoice"]


@pytest.mark.parametrize(("lang", "title"), [("en", "Line 1 OEE"), ("zh-CN", "一号线 OEE")])
def test_run_lines_name_the_anchor_title(site, login, lang, title):
    async def may_run() -> int:
        async with await connect(site.dsn) as conn:
            return (await settlement.run_invoice(conn, "acme", "C-1", MAY, actor="user:fin1"))["id"]

    run_id = asyncio.run(may_run())
    sections = _sections(login("fin1").get(f"/runs/{run_id}?lang={lang}").text)
    # The title in the page language, with the anchor id under it for cross-reference with exports.
    assert f'<td>{title}<br><span class="muted anchor-id">line-oee</span>' in sections["invoice"]
