"""Contract upload through `valuegate cloud admin contract-upload` and POST /api/v1/contracts: bad terms are rejected, nothing is stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from typer.testing import CliRunner

from valuegate.cli import app as root_app
from valuegate.cloud.app import create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings
from valuegate.edge.protocol.contract import contract_digest, load_contract, parse_contract_text

from .conftest import Gateway, contract_yaml, make_user

pytestmark = pytest.mark.postgres

# contract_yaml() puts `end` on line 6, `currency` on line 7, `metric` on line 11 and `price` on line 14.
BAD_TERMS = [
    pytest.param("amount: '100.00'", "amount: '-12.00'", 14, "$.anchors[0].price.amount", "the unit price must be greater than zero", id="negative-price"),
    pytest.param("amount: '100.00'", "amount: '0'", 14, "$.anchors[0].price.amount", "the unit price must be greater than zero", id="zero-price"),
    pytest.param("currency: CNY", "currency: RMB", 7, "$.currency", "not an ISO 4217 currency code; did you mean CNY?", id="currency"),
    pytest.param("end: 2026-12-31", "end: 2023-02-30", 6, "$.end", "not a valid calendar date (got '2023-02-30')", id="impossible-date"),
    pytest.param("metric: oee_points", "metric: mtbf_hours", 11, "$.anchors[0].metric", "allowed: availability_points, oee_points, unplanned_downtime_rate", id="metric"),
    pytest.param("\nanchors:", "\nrounding: '0.05'\nanchors:", 8, "$.rounding", "the rounding step must be a positive power of ten", id="rounding"),
    pytest.param("amount: '100.00'", "amount: '1e3'", 14, "$.anchors[0].price.amount", "not a plain decimal amount (got '1e3')", id="exponent-price"),
    pytest.param(
        "amount: '100.00'", "amount: '99999999999999999999999999999999999.99'", 14, "$.anchors[0].price.amount", "at most 15 digits before it",
        id="huge-price",
    ),
]


def bad_contract(old: str, new: str) -> str:
    source = contract_yaml()
    assert source.count(old) == 1, old
    return source.replace(old, new)


def stored_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM contracts").fetchone()[0]


@pytest.fixture
def cli_tenant(cloud_dsn: str) -> str:
    result = CliRunner().invoke(root_app, ["cloud", "admin", "tenant-create", "acme", "ACME", "--dsn", cloud_dsn])
    assert result.exit_code == 0, result.output
    return cloud_dsn


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), BAD_TERMS)
def test_cli_rejects_bad_terms(cli_tenant: str, tmp_path: Path, old: str, new: str, line: int, field: str, message: str) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(bad_contract(old, new), encoding="utf-8")
    result = CliRunner().invoke(root_app, ["cloud", "admin", "contract-upload", "acme", str(path), "--dsn", cli_tenant])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"error: {path}:{line}: {field}: " in result.output
    assert message in result.output
    assert stored_count(cli_tenant) == 0


def test_cli_prints_terms_digest(cli_tenant: str, tmp_path: Path) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(contract_yaml(), encoding="utf-8")
    result = CliRunner().invoke(root_app, ["cloud", "admin", "contract-upload", "acme", str(path), "--dsn", cli_tenant])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"contract c-2026 revision 1 stored; terms digest {contract_digest(load_contract(path))}"


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True, max_body_bytes=1024 * 1024))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


async def admin_headers(dsn: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {await make_user(dsn, 'acme', 'ops', ['admin'])}"}


@pytest.mark.parametrize(("old", "new", "line", "field", "message"), BAD_TERMS)
async def test_api_rejects_bad_terms(client: AsyncTestClient[Any], cloud_dsn: str, old: str, new: str, line: int, field: str, message: str) -> None:
    response = await client.post("/api/v1/contracts", json={"source": bad_contract(old, new)}, headers=await admin_headers(cloud_dsn))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_contract"
    assert problem["detail"].startswith(f"uploaded contract:{line}: {field}: ")
    assert message in problem["detail"]
    assert stored_count(cloud_dsn) == 0


async def test_api_returns_terms_digest(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    headers = await admin_headers(cloud_dsn)
    source = contract_yaml()
    response = await client.post("/api/v1/contracts", json={"source": source}, headers=headers)
    assert response.status_code == 201, response.text
    expected = contract_digest(parse_contract_text(source))
    assert response.json()["contract_digest"] == expected
    assert (await client.get("/api/v1/contracts/c-2026", headers=headers)).json()["contract_digest"] == expected
    assert [row["contract_digest"] for row in (await client.get("/api/v1/contracts", headers=headers)).json()] == [expected]


async def test_stored_negative_price_gives_422(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    """A revision stored before prices were checked is refused with a code, not priced and not a server error."""
    document = msgspec.to_builtins(parse_contract_text(contract_yaml()))
    document["anchors"][0]["price"]["amount"] = "-12.00"
    source = json.dumps(document)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO contracts (tenant_id, id, revision, source, document, sha256, uploaded_by) VALUES ('acme', 'c-2026', 1, %s, %s, %s, 'test')",
            (source, psycopg.types.json.Jsonb(document), "sha256:" + hashlib.sha256(source.encode()).hexdigest()),
        )
    response = await client.get("/api/v1/contracts/c-2026/value", headers=await admin_headers(cloud_dsn))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_stored_contract"
    assert "contract c-2026 revision 1: $.anchors[0].price.amount: the unit price must be greater than zero" in response.json()["detail"]
    assert "upload a corrected revision" in response.json()["detail"]
