"""Machine KPIs over the API: downtime by the reasons stored with each minute, and query parameters named as sent."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from valuegate.cloud.app import create_app
from valuegate.cloud.chain import load_gateways
from valuegate.cloud.db import UTC_OPTIONS, refresh_machine_day
from valuegate.cloud.settings import CloudSettings
from valuegate.cloud.telemetry import check_batch, store_batches
from valuegate.cloud.verify import parse_topic
from valuegate.edge.protocol.records import TELEMETRY_SCHEMA, MinuteRecord, TelemetryBatch

from .conftest import Gateway, make_user

pytestmark = pytest.mark.postgres


@pytest.fixture
async def client(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(CloudSettings(dsn=cloud_dsn, cookie_secure=True, max_body_bytes=1024 * 1024))
    async with AsyncTestClient(app, base_url="https://testserver.local") as test_client:
        yield test_client


def minute(stamp: str, *, stop_ms: int = 0, reasons: dict[str, int] | None = None) -> MinuteRecord:
    """One minute of machine m1: ``stop_ms`` unplanned stop with ``reasons``, the rest running."""
    return MinuteRecord(machine="m1", minute=stamp, running_ms=60_000 - stop_ms, idle_ms=0, planned_stop_ms=0, unplanned_stop_ms=stop_ms,
                        changeover_ms=0, offline_ms=0, produced=10, reject=0, stops=1 if stop_ms else 0, reasons=reasons or {}, uncertain_ms=0)


async def store_minutes(dsn: str, records: list[MinuteRecord]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, options=UTC_OPTIONS) as conn:
        async with conn.transaction():
            gateways = await load_gateways(conn, {"gw-a1"})
            batch = TelemetryBatch(schema=TELEMETRY_SCHEMA, tenant="acme", site="plant1", gateway="gw-a1", records=records)
            topic = parse_topic("valuegate/v1/acme/plant1/gw-a1/telemetry")
            assert await store_batches(conn, [check_batch(msgspec.json.encode(batch), topic, gateways)]) == len(records)
        await refresh_machine_day(conn)
        await conn.commit()


async def test_kpis_split_downtime_by_reason(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'csm1', ['csm'])}"}
    await store_minutes(cloud_dsn, [
        minute("2026-03-01T01:00:00Z", stop_ms=60_000, reasons={"104": 60_000}),
        minute("2026-03-01T01:01:00Z", stop_ms=60_000, reasons={"200": 30_000, "104": 30_000}),
        # Half a minute stopped without a reason code.
        minute("2026-03-01T01:02:00Z", stop_ms=30_000),
        minute("2026-03-01T01:03:00Z"),
        minute("2026-03-02T01:00:00Z", stop_ms=60_000, reasons={"200": 60_000}),
    ])

    response = await client.get("/api/v1/machines/m1/kpis", params={"from": "2026-03-01", "to": "2026-03-02"}, headers=headers)

    assert response.status_code == 200, response.text
    first, second = response.json()
    # 1 March: 104 = 1 + 0.5 min, 200 = 0.5 min, 0.5 min without a reason; largest first, ties by code.
    assert list(first["kpis"]["downtime_by_reason"].items()) == [("104", 1.5), ("200", 0.5), ("unassigned", 0.5)]
    assert first["kpis"]["unplanned_downtime_min"] == 2.5
    assert second["kpis"]["downtime_by_reason"] == {"200": 1.0}


async def test_invalid_query_names_sent_parameter(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'csm1', ['csm'])}"}

    response = await client.get("/api/v1/machines/m1/kpis", params={"from": "2026-03-01", "to": "bad"}, headers=headers)

    assert response.status_code == 400
    problem = response.json()
    assert problem["detail"] == "query parameter `to` is invalid (invalid RFC3339 encoded date); correct the value"
    assert [(e["field"], e["source"], e["kind"]) for e in problem["errors"]] == [("to", "query", "invalid")]


def _renamed_query_parameters(app: Any) -> list[tuple[str, str, str]]:
    """Return (path, query name, Python name) of every API query parameter whose name differs from the handler's argument."""
    found = []
    for route in app.routes:
        if not route.path.startswith("/api/"):
            continue
        for handler in route.route_handlers:
            for name, parameter in handler.parsed_fn_signature.parameters.items():
                alias = getattr(parameter.kwarg_definition, "query", None) or getattr(parameter.kwarg_definition, "name", None)
                if alias and alias != name and type(parameter.kwarg_definition).__name__ in ("ParameterKwarg", "QueryParameter"):
                    found.append((route.path, alias, name))
    return found


def _bad_value(schema: dict[str, Any]) -> str:
    """Return a text that query validation rejects for a parameter of this OpenAPI schema."""
    options = schema.get("oneOf") or schema.get("anyOf") or [schema]
    if any("enum" in option for option in options):
        return "no-such-value"
    if any(option.get("format") == "date" for option in options):
        return "bad"
    if any(option.get("type") == "integer" for option in options):
        return "many"
    return "\x01"


async def test_every_renamed_parameter_named_as_sent(client: AsyncTestClient[Any], cloud_dsn: str) -> None:
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'ops', ['admin'])}"}
    schema = (await client.get("/api/v1/schema/openapi.json")).json()
    renamed = _renamed_query_parameters(client.app)
    # The kpis dates and the vouchers state filter are sent as from, to and state.
    assert {(alias, name) for _, alias, name in renamed} >= {("from", "first"), ("to", "last"), ("state", "state_filter")}

    for path, alias, name in renamed:
        operation = schema["paths"][re.sub(r"\{(\w+):\w+\}", r"{\1}", path)]["get"]
        parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
        # The OpenAPI document publishes the name a caller sends, never the Python one.
        assert alias in parameters, (path, alias)
        assert name not in parameters, (path, name)
        query = {p: "2026-03-01" for p, spec in parameters.items() if spec.get("required")}
        query[alias] = _bad_value(parameters[alias]["schema"])
        url = path.replace("{machine_id:str}", "m1").replace("{contract_id:str}", "c-2026")

        response = await client.get(f"/api/v1{url.removeprefix('/api/v1')}", params=query, headers=headers)

        assert response.status_code == 400, (path, alias, response.text)
        problem = response.json()
        assert [e["field"] for e in problem["errors"]] == [alias], (path, problem)
        assert f"`{alias}`" in problem["detail"], (path, problem["detail"])
        assert f"`{name}`" not in problem["detail"], (path, problem["detail"])
