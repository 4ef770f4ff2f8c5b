"""Rejected API inputs: the problem details name the field, where it came from and what was wrong, and nothing is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from valuegate.cloud.app import create_app
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, make_user

pytestmark = pytest.mark.postgres

# Each case: method, path, JSON body, the exact detail, and the one entry of ``errors`` without its msgspec message.
CASES = {
    "missing": (
        "POST", "/api/v1/sites", {"time_zone": "UTC"},
        "field `id` of the request body is missing; add it",
        {"field": "id", "source": "body", "kind": "missing"},
    ),
    "wrong_type": (
        "POST", "/api/v1/sites", {"id": 5, "time_zone": "UTC"},
        "field `id` of the request body must be str, not int",
        {"field": "id", "source": "body", "kind": "type"},
    ),
    "null": (
        "POST", "/api/v1/sites", {"id": None, "time_zone": "UTC"},
        "field `id` of the request body must be str, not null",
        {"field": "id", "source": "body", "kind": "type"},
    ),
    "empty": (
        "POST", "/api/v1/sites", {"id": "", "time_zone": "UTC"},
        "field `id` of the request body is empty; give it a value",
        {"field": "id", "source": "body", "kind": "empty"},
    ),
    "unknown": (
        "POST", "/api/v1/sites", {"id": "p2", "time_zone": "UTC", "colour": "red"},
        "the request body contains the unknown field `colour`; remove it or check its spelling",
        {"field": "colour", "source": "body", "kind": "unknown"},
    ),
    "pattern": (
        "POST", "/api/v1/sites", {"id": "two words", "time_zone": "UTC"},
        "field `id` of the request body is invalid (expected `str` matching regex '^[A-Za-z0-9][A-Za-z0-9_.-]*$'); correct the value",
        {"field": "id", "source": "body", "kind": "invalid"},
    ),
    "not_an_object": (
        "POST", "/api/v1/sites", ["p2", "UTC"],
        "the request body must be object, not array",
        {"field": None, "source": "body", "kind": "type"},
    ),
    "list_item": (
        "POST", "/api/v1/users", {"username": "new-user", "roles": ["boss"]},
        "field `roles[0]` of the request body is invalid (invalid enum value 'boss'); correct the value",
        {"field": "roles[0]", "source": "body", "kind": "invalid"},
    ),
    "query_text_for_number": (
        "GET", "/api/v1/contracts/c-2026/vouchers?limit=many", None,
        "query parameter `limit` must be int, not str",
        {"field": "limit", "source": "query", "kind": "type"},
    ),
    "query_absent": (
        "GET", "/api/v1/machines/m-1/kpis?to=2026-01-31", None,
        "query parameter `from` is missing; add it",
        {"field": "from", "source": "query", "kind": "missing"},
    ),
    "query_out_of_range": (
        "GET", "/api/v1/contracts/c-2026/vouchers?limit=0", None,
        "query parameter `limit` is invalid (expected `int` >= 1); correct the value",
        {"field": "limit", "source": "query", "kind": "invalid"},
    ),
}


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True, max_body_bytes=1024 * 1024))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


async def stored_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return {table: await (await conn.execute(f"SELECT * FROM {table} ORDER BY 1")).fetchall() for table in ("sites", "users", "audit_log")}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_rejected_input_names_field(client: AsyncTestClient[Any], cloud_dsn: str, case: str) -> None:
    method, path, body, detail, entry = CASES[case]
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'ops', ['admin'])}"}
    before = await stored_rows(cloud_dsn)

    response = await client.request(method, path, json=body, headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["detail"] == detail
    assert [{key: value for key, value in error.items() if key != "message"} for error in problem["errors"]] == [entry]
    assert problem["errors"][0]["message"]
    assert await stored_rows(cloud_dsn) == before


def test_unparsed_validation_error_keeps_detail() -> None:
    """A ValidationException with neither ``extra`` nor a missing parameter yields no field, so the API keeps Litestar's detail."""
    from litestar.exceptions import ValidationException

    from valuegate.cloud.api.problems import FieldError, _validation_detail, field_errors

    plain = ValidationException("multipart boundary missing in Content-Type")
    assert field_errors(plain) == []
    assert _validation_detail(field_errors(plain), plain.detail) == "multipart boundary missing in Content-Type"
    header = ValidationException("Missing required header parameter 'x-gateway' for path /api/v1/x")
    assert field_errors(header) == [FieldError("x-gateway", "header", "missing", header.detail)]
    assert _validation_detail(field_errors(header), header.detail) == "header parameter `x-gateway` is missing; add it"
