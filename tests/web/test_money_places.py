"""Amounts on pages and in invoice PDFs show the decimal places of the contract's rounding step. The module has a service of its own."""

from __future__ import annotations

import asyncio
import io
import re

import msgspec
import pytest
from pypdf import PdfReader

from tests.settlement.seed import connect, save_contract
from tests.verify.bundles import oee_contract
from tests.web.test_run_approval import start_run
from valuegate.cloud.settlement.export import money_step
from valuegate.cloud.web.i18n import format_money

pytestmark = pytest.mark.postgres


def unpriced_contract(contract_id: str, **terms):
    """Contract ``contract_id`` of tenant acme, like C-1 but with an anchor that has no price, so its realized total is a plain zero."""
    data = msgspec.to_builtins(oee_contract(**terms))
    data["id"] = contract_id
    del data["anchors"][0]["price"]
    return msgspec.convert(data, type(oee_contract()))


@pytest.fixture(scope="module")
def contracts(site) -> None:
    async def save() -> None:
        async with await connect(site.dsn) as conn:
            await save_contract(conn, unpriced_contract("C-DEFAULT"))
            await save_contract(conn, unpriced_contract("C-FEN", rounding="0.001"))
            whole = msgspec.structs.replace(oee_contract(rounding="1"), id="C-YUAN")
            await save_contract(conn, whole)
            await conn.commit()

    asyncio.run(save())


def realized_total(page: str) -> str:
    return re.search(r'id="realized-total">([^<]*)<', page).group(1)


@pytest.mark.parametrize(
    ("contract_id", "language", "total"),
    [
        # No rounding key: the default step 0.01 gives two places, also to the zero of a contract without prices.
        ("C-DEFAULT", "zh-CN", "¥0.00"),
        ("C-DEFAULT", "en", "CNY 0.00"),
        ("C-FEN", "en", "CNY 0.000"),
        ("C-YUAN", "zh-CN", "¥0"),
        ("C-1", "en", "CNY 60,000.00"),
    ],
)
def test_realized_total_places(login, contracts, contract_id, language, total) -> None:
    page = login("csm1").get(f"/contracts/{contract_id}?lang={language}")
    assert page.status_code == 200, page.text
    assert realized_total(page.text) == total


def test_prices_show_step_places(login, contracts) -> None:
    csm = login("csm1")
    # Contract C-1 writes its price as "2000" and rounds to 0.01; C-YUAN rounds to whole yuan.
    assert "Unit price: CNY 2,000.00 per OEE point per running day" in csm.get("/contracts/C-1?lang=en").text
    assert "单价：每 OEE 点·运行日 ¥2,000.00" in csm.get("/contracts/C-1?lang=zh-CN").text
    assert "Unit price: CNY 2,000 per OEE point per running day" in csm.get("/contracts/C-YUAN?lang=en").text


def test_run_unit_price_places(login, contracts) -> None:
    finance = login("fin1")
    run_id = start_run(finance, "2024-05-01", "2024-05-31")
    page = finance.get(f"/runs/{run_id}?lang=en").text
    prices = re.findall(r'<td class="num">(CNY [\d,.]+)</td>', page)
    assert prices[0] == "CNY 2,000.00"
    pdf = finance.get(f"/runs/{run_id}/export.pdf?lang=zh-CN").content
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "¥2,000.00" in text
    assert not re.search(r"¥2,000(?![.\d])", text)


@pytest.mark.parametrize(
    ("amount", "rounding", "shown"),
    [
        ("0", "0.01", "CNY 0.00"),
        ("60000", "0.01", "CNY 60,000.00"),
        ("60000.00", "1", "CNY 60,000"),
        ("0.005", "0.01", "CNY 0.005"),  # a unit price finer than the step keeps its digits
        ("-12.5", "0.01", "-CNY 12.50"),
        ("120", "10", "CNY 120"),
        ("12.5", None, "CNY 12.5"),
    ],
)
def test_format_money_steps(amount, rounding, shown) -> None:
    assert format_money(amount, "CNY", "en", rounding) == shown


def test_money_step_of_totals() -> None:
    assert [money_step(total) for total in ("60000.00", "0.00", "120", "1.500")] == ["0.01", "0.01", "1", "0.001"]
