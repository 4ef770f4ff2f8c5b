"""Tenant isolation, checked on every operation of the OpenAPI document so that new endpoints are covered too.

A user of tenant ``acme`` requests each of tenant ``globex``'s objects, by
path parameter or by id in the request body, and must get 404. List
endpoints must not show any of globex's ids.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from valuegate.cloud import auth, contracts
from valuegate.cloud.app import OPENAPI_PATH, create_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, contract_yaml, make_user, store_direct

pytestmark = pytest.mark.postgres

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def setting(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[tuple[AsyncTestClient[Any], dict[str, Any], dict[str, str]]]:
    acme, globex = two_tenants
    globex.machines = ("g-m1",)
    await store_direct(cloud_dsn, [acme.next_voucher()], topic_of=acme)
    await store_direct(cloud_dsn, [globex.next_voucher()], topic_of=globex)
    async with await psycopg.AsyncConnection.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            await contracts.upload_contract(conn, "acme", contract_yaml())
            await contracts.upload_contract(conn, "globex", contract_yaml(tenant="globex", contract_id="g-2026", anchor="avail"))
            user = await auth.create_user(conn, "globex", "g-admin", None, ["admin"])
            token_row, globex_token = await auth.issue_token(conn, "globex", user["id"], "g")
        key_id = (await (await conn.execute("SELECT id FROM gateway_keys WHERE gateway_id = 'gw-g1'")).fetchone())[0]  # type: ignore[index]
        async with conn.transaction():
            # A renewal package of globex's, written directly: only its id and tenant matter here.
            package = await conn.execute(
                "INSERT INTO renewal_packages (tenant_id, contract_id, trigger_key, trigger_kind, fired_at, detail, summary_html, archive, "
                "archive_sha256, talking_points) VALUES ('globex', 'g-2026', 'days_before_end:1', 'days_before_end', now(), '{}', '{}', '', '', '[]') "
                "RETURNING id"
            )
            package_id = (await package.fetchone())[0]  # type: ignore[index]
    acme_token = await make_user(cloud_dsn, "acme", "a-admin", ["admin", "csm", "finance", "auditor"])
    # Every id of globex that a path or a body can name; a new parameter must be added here.
    objects = {
        "site_id": "works",
        "gateway_id": "gw-g1",
        "key_id": key_id,
        "contract_id": "g-2026",
        "voucher_id": "gw-g1:1",
        "machine_id": "g-m1",
        "user_id": user["id"],
        "token_id": token_row["id"],
        "package_id": package_id,
    }
    app = create_app(CloudSettings(dsn=cloud_dsn))
    async with AsyncTestClient(app, base_url="http://testserver.local") as client:
        yield client, objects, {"acme": acme_token, "globex": globex_token}


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema


def minimal_instance(schema: dict[str, Any], document: dict[str, Any], objects: dict[str, Any]) -> Any:
    """Build the smallest value the schema accepts, with globex's ids in fields named like them."""
    schema = _resolve(schema, document)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, document).get("type") != "null"]
            return minimal_instance(options[0], document, objects)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        required = schema.get("required", [])
        out = {}
        for name, sub in schema.get("properties", {}).items():
            if name in objects:
                out[name] = objects[name]
            elif name in required:
                out[name] = minimal_instance(sub, document, objects)
        return out
    if kind == "array":
        return [minimal_instance(schema.get("items", {}), document, objects)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-03-01T00:00:00Z"
    if fmt == "date":
        return "2026-03-01"
    return "a" * max(10, schema.get("minLength", 1))


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items() if method in METHODS]


def _request_parts(path: str, op: dict[str, Any], document: dict[str, Any], objects: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    names = re.findall(r"{(\w+)}", path)
    unknown = [name for name in names if name not in objects]
    if unknown:
        pytest.fail(f"{path} has path parameters {unknown} without a globex object; add one to the objects of this test")
    url = path
    for name in names:
        url = url.replace("{" + name + "}", str(objects[name]))
    query = {p["name"]: minimal_instance(p.get("schema", {}), document, objects) for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")}
    body = None
    if "requestBody" in op:
        body = minimal_instance(op["requestBody"]["content"]["application/json"]["schema"], document, objects)
    return url, query, body


def _names_object(op: dict[str, Any], path: str, document: dict[str, Any], objects: dict[str, Any]) -> bool:
    if re.search(r"{\w+}", path):
        return True
    if "requestBody" not in op:
        return False
    schema = _resolve(op["requestBody"]["content"]["application/json"]["schema"], document)
    return any(name in objects for name in schema.get("properties", {}))


async def test_every_operation_hides_other_tenant(setting: tuple[AsyncTestClient[Any], dict[str, Any], dict[str, str]]) -> None:
    client, objects, tokens = setting
    document = (await client.get(OPENAPI_PATH)).json()
    as_acme = {"Authorization": f"Bearer {tokens['acme']}"}
    as_globex = {"Authorization": f"Bearer {tokens['globex']}"}
    checked = []
    for path, method, op in operations(document):
        if not _names_object(op, path, document, objects):
            continue
        url, query, body = _request_parts(path, op, document, objects)
        response = await client.request(method.upper(), url, params=query, json=body, headers=as_acme)
        assert response.status_code == 404, f"{method.upper()} {url} as acme returned {response.status_code}: {response.text[:300]}"
        assert response.json()["code"] == "not_found"
        checked.append((method, path))
        if method == "get":
            owner = await client.get(url, params=query, headers=as_globex)
            assert owner.status_code == 200, f"GET {url} as globex returned {owner.status_code}; the test object is wrong"
    assert len(checked) >= 12


async def test_lists_never_show_other_tenant(setting: tuple[AsyncTestClient[Any], dict[str, Any], dict[str, str]]) -> None:
    client, objects, tokens = setting
    document = (await client.get(OPENAPI_PATH)).json()
    as_acme = {"Authorization": f"Bearer {tokens['acme']}"}
    foreign = {"globex", "g-2026", "gw-g1", "g-m1", "g-admin", str(objects["token_id"])}
    listed = 0
    for path, method, op in operations(document):
        if method != "get" or re.search(r"{\w+}", path):
            continue
        _url, query, _body = _request_parts(path, op, document, objects)
        response = await client.get(path, params=query, headers=as_acme)
        assert response.status_code == 200, f"GET {path} returned {response.status_code}"
        leaked = [value for value in foreign if value in response.text]
        assert leaked == [], f"GET {path} as acme shows globex values {leaked}"
        listed += 1
    assert listed >= 8


async def test_contract_vouchers_by_state_stay_in_tenant(setting: tuple[AsyncTestClient[Any], dict[str, Any], dict[str, str]]) -> None:
    client, _objects, tokens = setting
    as_acme = {"Authorization": f"Bearer {tokens['acme']}"}
    for state in ("verified", "gap", "rejected", "reproduced", "mismatch"):
        response = await client.get("/api/v1/contracts/c-2026/vouchers", params={"state": state}, headers=as_acme)
        assert response.status_code == 200
        assert "gw-g1" not in response.text
