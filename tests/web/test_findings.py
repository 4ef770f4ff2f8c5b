"""Data-quality findings on the contract page: a gap in a gateway's chain and a re-computation that disagrees."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest

from tests.factories import make_claims
from tests.settlement.seed import ingest
from valuegate.edge.protocol import voucher as v

pytestmark = pytest.mark.postgres


def test_gap_and_mismatch_show_and_do_not_bill(site, login):
    # Sequence 22 never arrives; 23 does, so the gateway's chain has a gap.
    claims = make_claims(seq=23, prev="sha256:" + "00" * 32, plant_date=dt.date(2024, 5, 28), point=3.0, low=2.0, high=4.0)
    asyncio.run(ingest(site.dsn, [v.build_voucher(claims, site.key)]))
    # The re-computation worker found that voucher 4 does not match the stored telemetry.
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute("UPDATE voucher_chain SET reproduced = false, reproduce_detail = 'oee 0.70 differs from 0.735' WHERE voucher_id = 'gw-1:4'")

    client = login("csm1")
    page = client.get("/contracts/C-1?lang=en").text
    anchor_card = page.split('id="anchor-line-oee"', 1)[1].split("</section>", 1)[0]
    assert ("1 voucher of this value anchor does not bill yet, because gateway gw-1 has a gap in its voucher chain: sequence 22 is missing"
            " (highest received 23). The cloud asks the gateway to resend the missing vouchers") in anchor_card
    # The gap is on the card of the anchor it holds back, not repeated in the contract's own findings.
    assert page.count("sequence 22 is missing") == 1
    assert ("Gateway gw-1, voucher gw-1:4: the cloud&#39;s re-computation from stored telemetry disagrees with what the gateway signed; "
            "vouchers in this state bill nothing. Re-computation detail: oee 0.70 differs from 0.735") in page
    assert '<tr data-voucher="gw-1:23">' in page
    row_23 = page.split('<tr data-voucher="gw-1:23">', 1)[1].split("</tr>", 1)[0]
    assert 'class="state state-gap"' in row_23
    row_4 = page.split('<tr data-voucher="gw-1:4">', 1)[1].split("</tr>", 1)[0]
    assert 'class="state state-mismatch"' in row_4
    # Neither the gap voucher nor the disputed one counts: 19 days x 1.5 x 2,000 CNY.
    assert 'id="realized-total">CNY 57,000.00<' in page
