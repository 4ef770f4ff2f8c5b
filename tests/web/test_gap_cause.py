"""A chain gap behind vouchers rejected for no contract: the anchor card and the run documents name the cause and what to do.

Gateway gw-1 signs vouchers 22 and 23 with a second key that the cloud then revokes, so both are rejected as
key_revoked. Such a rejection names no contract, because no valid key of the gateway signed its claims.
Voucher 24, signed with the gateway's registered key, is stored and waits behind the gap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import make_claims
from tests.settlement.seed import KEY_VALID_FROM, connect, ingest
from tests.web.test_run_approval import start_run
from valuegate.cloud import store
from valuegate.cloud.chain import load_gateways, rejection_hints, store_rejections
from valuegate.cloud.settlement import export
from valuegate.cloud.verify import Topic, check_voucher
from valuegate.edge.protocol import voucher as v
from valuegate.edge.protocol.keys import public_key_multibase

pytestmark = pytest.mark.postgres

TOPIC = "valuegate/v1/acme/plant-1/gw-1/vouchers"


async def _reject_revoked(dsn: str, documents: list[dict], key: Ed25519PrivateKey) -> list[tuple[str, str | None, str]]:
    """Register ``key`` for gw-1, revoke it, and store each document's rejection as the ingest workers do."""
    async with await connect(dsn) as conn, conn.transaction():
        row = await store.add_gateway_key(conn, "acme", "gw-1", public_key_multibase(key.public_key()), valid_from=KEY_VALID_FROM)
        await store.revoke_gateway_key(conn, "acme", "gw-1", row["id"], "gateway key lost", force=True)
    now = dt.datetime.now(dt.UTC)
    stored = []
    async with await connect(dsn) as conn, conn.transaction():
        gateways = await load_gateways(conn, {"gw-1"})
        rows = []
        for document in documents:
            payload = json.dumps(document).encode("utf-8")
            with pytest.raises(v.VoucherError) as caught:
                check_voucher(payload, Topic("acme", "plant-1", "gw-1", "vouchers"), gateways, now=now, clock_skew=dt.timedelta(minutes=5))
            voucher_id, contract = rejection_hints(payload, Topic("acme", "plant-1", "gw-1", "vouchers"), gateways, now=now)
            rows.append(("voucher", TOPIC, "acme", "gw-1", voucher_id, contract, caught.value.code, str(caught.value),
                         hashlib.sha256(payload).hexdigest(), len(payload), payload))  # fmt: skip
            stored.append((voucher_id, contract, caught.value.code))
        await store_rejections(conn, rows)
    return stored


@pytest.fixture(scope="module")
def revoked(site):
    lost = Ed25519PrivateKey.generate()
    prev = v.voucher_hash(site.last_voucher)
    signed = []
    for seq, day in ((22, dt.date(2024, 5, 27)), (23, dt.date(2024, 5, 28))):
        document = v.build_voucher(make_claims(seq=seq, prev=prev, plant_date=day), lost)
        prev = v.voucher_hash(document)
        signed.append(document)
    stored = asyncio.run(_reject_revoked(site.dsn, signed, lost))
    assert stored == [("gw-1:22", None, "key_revoked"), ("gw-1:23", None, "key_revoked")]
    later = v.build_voucher(make_claims(seq=24, prev=prev, plant_date=dt.date(2024, 5, 29)), site.key)
    assert asyncio.run(ingest(site.dsn, [later])) == ["gw-1:24"]
    return site


CARD = {
    "en": ("1 voucher of this value anchor does not bill yet, because gateway gw-1 has a gap in its voucher chain: sequences 22–23 are missing"
           " (highest received 24). The cloud rejected the first missing voucher, gw-1:22, because its signing key was revoked (key_revoked)."
           " The cloud cannot store vouchers signed with a revoked key"),
    "zh-CN": ("此价值锚点有 1 张凭证暂不计价，因为网关 gw-1 的凭证链有缺口：序号 22–23 的凭证缺失（已收到最高序号 24）。"
              "云端拒收了缺失的第一张凭证 gw-1:22，因为其签名密钥已被吊销（key_revoked）。云端无法存入用已吊销密钥签发的凭证"),
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_card_names_revoked_key_cause(revoked, login, lang):
    html = login("csm1").get(f"/contracts/C-1?lang={lang}").text
    card = html.split('id="anchor-line-oee"', 1)[1].split("</section>", 1)[0]
    assert CARD[lang] in card
    assert '<small class="muted detail">key_revoked: key ' in card
    # The generic advice about key validity does not apply to a revoked key.
    assert "/api/v1/rejections" not in card


RUN_NOTES = {
    "en": ("Gateway gw-1: sequences 22–23 are missing (rejected: key_revoked), so 1 voucher of this period (sequence 24) waits behind them."
           " It is billed once the missing vouchers are stored, and the chain-gap line on the contract page says what to do."),
    "zh-CN": ("网关 gw-1：序号 22–23 的凭证缺失（已拒收：key_revoked），因此本结算期的 1 张凭证（序号 24）在其后等待。"
              "缺失的凭证存入后即计费，合同页面上的链缺口说明给出了处理办法。"),
}


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_run_documents_name_missing_sequences(revoked, login, lang):
    finance = login("fin1")
    run_id = start_run(finance, "2024-05-27", "2024-05-31")
    page = finance.get(f"/runs/{run_id}?lang={lang}").text
    section = page.split('id="gap-waiting"', 1)[1].split("</section>", 1)[0]
    assert RUN_NOTES[lang] in section
    exported = finance.get(f"/runs/{run_id}/export.csv?lang={lang}")
    assert exported.status_code == 200, exported.text
    assert RUN_NOTES[lang] in exported.content.decode("utf-8-sig")


GAP = {"gateway": "gw-1", "vouchers": 13, "first_seq": 13, "last_seq": 25, "stored_through": 0}


@pytest.mark.parametrize(("entry", "language", "expected"), [
    ({**GAP, "missing_first": 1, "missing_last": 12, "missing_rejected": 12, "missing_codes": ["key_not_valid"]}, "en",
     "Gateway gw-1: sequences 1–12 are missing (rejected: key_not_valid), so 13 vouchers of this period (sequences 13–25) wait behind them."),
    ({**GAP, "missing_first": 1, "missing_last": 12, "missing_rejected": 3, "missing_codes": ["key_unknown", "key_revoked"]}, "zh-CN",
     "网关 gw-1：序号 1–12 的凭证缺失（其中 3 张已拒收：key_unknown、key_revoked），因此本结算期的 13 张凭证（序号 13–25）在其后等待。"),
    ({**GAP, "missing_first": 1, "missing_last": 1, "missing_rejected": 0, "missing_codes": []}, "en",
     "Gateway gw-1: sequence 1 is missing (no rejection stored), so 13 vouchers"),
    (GAP, "en", "Gateway gw-1: the vouchers from sequence 1 on are missing, so 13 vouchers"),
])  # fmt: skip
def test_gap_note_variants(entry, language, expected):
    note = export.gap_note(entry, language)
    assert note.startswith(expected)
    assert "sequence 0" not in note
    assert "序号 0" not in note
