"""Voucher states on the contract page: verified, reproduced, re-computation disagrees, gap and rejected, in zh-CN and English."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt

import msgspec
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.factories import make_claims
from tests.settlement.seed import ingest
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.ingest import IngestWorker
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol import voucher as v
from valuegate.services import MosquittoServer

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto]

TOPIC = "valuegate/v1/acme/plant-1/gw-1/vouchers"
LABELS = {
    "en": {"verified": "verified", "reproduced": "reproduced", "mismatch": "re-computation disagrees", "gap": "gap", "rejected": "rejected"},
    "zh-CN": {"verified": "已核验", "reproduced": "已复算一致", "mismatch": "复算不一致", "gap": "链缺口", "rejected": "已拒收"},
}
# Voucher id -> the state its row must show.
EXPECTED = {
    "gw-1:1": "verified",
    "gw-1:2": "mismatch",
    "gw-1:3": "reproduced",
    "gw-1:4": "mismatch",
    "gw-1:22": "rejected",
    "gw-1:23": "gap",
}


async def _publish_through_ingest(dsn: str, port: int, payloads: list[bytes]) -> None:
    """Publish vouchers as gateway gw-1 would, with the product's ingest worker running.

    Waits for both rejections of voucher 22 and for the worker's re-computation
    of voucher 2, whose 3 claimed records differ from the 30 stored for its day.
    """
    settings = CloudSettings(dsn=dsn, mqtt_port=port, share_group="states")
    async with IngestWorker(settings):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-1-states", protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            for payload in payloads:
                client.publish(TOPIC, payload, qos=1).wait_for_publish(10)
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
                    sql = "SELECT code, contract_id FROM rejections WHERE voucher_id = 'gw-1:22' ORDER BY code"
                    rows = await (await conn.execute(sql)).fetchall()
                    found = await (await conn.execute("SELECT reproduced FROM voucher_chain WHERE voucher_id = 'gw-1:2'")).fetchall()
                if (len(rows) == len(payloads) and found != [(None,)]) or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
        finally:
            client.disconnect()
            client.loop_stop()
    # Only the rejection signed by the gateway's key belongs to the contract; the tampered copy could come from anyone on the broker.
    assert rows == [("future_timestamp", "C-1"), ("signature_invalid", None)]
    assert found == [(False,)]


@pytest.fixture(scope="module")
def states(site):
    """Give the site's vouchers every state: 2 and 4 disputed, 3 reproduced, 22 rejected, 23 beyond the gap that 22 leaves.

    Voucher 22 arrives twice: altered in transit, and signed by the gateway's key with an issue time in the future.
    """
    genuine = v.build_voucher(make_claims(seq=22, prev=v.voucher_hash(site.last_voucher), plant_date=dt.date(2024, 5, 27)), site.key)
    tampered = copy.deepcopy(genuine)
    tampered["credentialSubject"]["delta"]["point"] = 9.0
    future = make_claims(seq=22, prev=v.voucher_hash(site.last_voucher), plant_date=dt.date(2024, 5, 27), issued_at="2999-01-01T00:00:00Z")
    with MosquittoServer() as broker:
        payloads = [msgspec.json.encode(tampered), msgspec.json.encode(v.build_voucher(future, site.key))]
        asyncio.run(_publish_through_ingest(site.dsn, broker.port, payloads))

    after_gap = make_claims(seq=23, prev=v.voucher_hash(genuine), plant_date=dt.date(2024, 5, 28), point=3.0, low=2.0, high=4.0)
    asyncio.run(ingest(site.dsn, [v.build_voucher(after_gap, site.key)]))
    # As the re-computation worker records it: voucher 3 agrees with the stored telemetry, voucher 4 does not.
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute("UPDATE voucher_chain SET reproduced = true WHERE voucher_id = 'gw-1:3'")
        conn.execute("UPDATE voucher_chain SET reproduced = false, reproduce_detail = 'oee 0.70 differs from 0.735' WHERE voucher_id = 'gw-1:4'")
    return site


def _state_cell(page: str, voucher_id: str) -> str:
    rows = page.split(f'<tr data-voucher="{voucher_id}">')
    assert len(rows) == 2, f"expected one row of {voucher_id}, found {len(rows) - 1}"
    row = rows[1].split("</tr>", 1)[0]
    return row.split('<span class="state', 1)[1].split("</span>", 1)[0]


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_each_state_shows_its_label(states, login, lang):
    page = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    for voucher_id, state in EXPECTED.items():
        cell = _state_cell(page, voucher_id)
        assert cell.startswith(f' state-{state}"'), (voucher_id, cell)
        assert cell.endswith(f">{LABELS[lang][state]}"), (voucher_id, cell)


def test_rejected_row_names_the_reason(states, login):
    page = login("csm1").get("/contracts/C-1?lang=en").text
    cell = _state_cell(page, "gw-1:22")
    assert 'title="by the cloud&#39;s clock it was issued in the future; check the gateway&#39;s clock."' in cell
    assert 'data-code="future_timestamp"' in cell


def test_realized_total_counts_verified_only(states, login):
    page = login("csm1").get("/contracts/C-1?lang=en").text
    # 20 days x 1.5 points x 2,000 CNY, less the disputed days of vouchers 2 and 4: 18 x 3,000.
    # Voucher 21 has too little data, voucher 22 was rejected and voucher 23 lies beyond the gap.
    assert 'id="realized-total">CNY 54,000.00<' in page


@pytest.mark.parametrize(("lang", "title"), [
    ("zh-CN", "证据摘要和各项数值均已用云端存储的记录复算一致，基线也由这些记录重建"),
    ("en", "the evidence digest and every figure were recomputed from the stored records, with the baseline rebuilt from them"),
])
def test_reproduced_row_explains_itself_in_the_page_language(states, login, lang, title):
    with psycopg.connect(states.dsn, autocommit=True) as conn:
        conn.execute("UPDATE voucher_chain SET reproduce_detail = 'evidence digest and numbers reproduced with the baseline rebuilt' WHERE voucher_id = 'gw-1:3'")
    page = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    assert f'title="{title}"' in _state_cell(page, "gw-1:3")
    # A disagreement keeps the worker's own words, for the engineer who looks into it.
    assert 'title="oee 0.70 differs from 0.735"' in _state_cell(page, "gw-1:4")
