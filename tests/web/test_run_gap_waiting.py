"""The run page names the vouchers of its period that wait behind a chain gap, in both languages, and a 0.00 draft is not silent."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from tests.factories import make_claims
from tests.settlement.seed import ingest
from tests.web.test_run_approval import start_run
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def waiting(site):
    """Voucher 23 of gw-1 (2 June) is stored while voucher 22 is missing, so the June run has nothing to bill."""
    missing = v.build_voucher(make_claims(seq=22, prev=v.voucher_hash(site.last_voucher), plant_date=dt.date(2024, 6, 1)), site.key)
    late = v.build_voucher(make_claims(seq=23, prev=v.voucher_hash(missing), plant_date=dt.date(2024, 6, 2)), site.key)
    assert asyncio.run(ingest(site.dsn, [late])) == ["gw-1:23"]
    return site


@pytest.mark.parametrize(("lang", "total", "line"), [
    ("zh-CN", "本结算期有 1 张凭证尚未计费", "网关 gw-1：序号 22 的凭证缺失（云端未存有拒收记录），因此本结算期的 1 张凭证（序号 23）在其后等待。"),
    ("en", "1 voucher of this billing period is not billed yet",
     "Gateway gw-1: sequence 22 is missing (no rejection stored), so 1 voucher of this period (sequence 23) waits behind them."),
])  # fmt: skip
def test_run_page_names_gap(waiting, login, lang, total, line):
    finance = login("fin1")
    run_id = start_run(finance, "2024-06-01", "2024-06-15")
    page = finance.get(f"/runs/{run_id}?lang={lang}").text
    section = page.split('id="gap-waiting"', 1)[1].split("</section>", 1)[0]
    assert total in section
    assert line in section


def test_run_without_gap_shows_no_note(waiting, login):
    finance = login("fin1")
    run_id = start_run(finance, "2024-05-06", "2024-05-12")
    assert 'id="gap-waiting"' not in finance.get(f"/runs/{run_id}?lang=en").text
