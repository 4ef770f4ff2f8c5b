"""Property-based requests from the OpenAPI document (schemathesis) against the app served by uvicorn: no server errors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck

from valuegate.cloud.app import OPENAPI_PATH, ApiServer
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, contract_yaml, make_user, store_direct

pytestmark = pytest.mark.postgres

EXAMPLES_PER_OPERATION = 20


def _serve(settings: CloudSettings) -> Iterator[str]:
    """Run the API server in a thread with its own event loop; yield its URL; stop it after."""
    ready = threading.Event()
    stop: dict[str, Any] = {}
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            async with ApiServer(settings) as server:
                stop["event"] = asyncio.Event()
                stop["loop"] = asyncio.get_running_loop()
                stop["url"] = server.url
                ready.set()
                await stop["event"].wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="api-under-test")
    thread.start()
    ready.wait(60)
    if failure:
        raise failure[0]
    try:
        yield stop["url"]
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)


@pytest.fixture
def served(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> Iterator[tuple[str, str]]:
    acme, _ = two_tenants
    asyncio.run(store_direct(cloud_dsn, [acme.next_voucher(), acme.next_voucher()], topic_of=acme))
    token = asyncio.run(make_user(cloud_dsn, "acme", "fuzz-admin", ["admin", "csm", "finance", "auditor"]))
    settings = CloudSettings(dsn=cloud_dsn, port=0, pool_max=4)
    for url in _serve(settings):
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{url}/api/v1/contracts", json={"source": contract_yaml()}, headers=headers, timeout=10).raise_for_status()
        yield url, token


def test_no_server_errors(served: tuple[str, str]) -> None:
    url, token = served
    schema = schemathesis.openapi.from_url(url + OPENAPI_PATH)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=url, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
            content_type = response.headers.get("content-type") or [""]
            if not content_type[0].startswith(("application/json", "application/problem+json")):
                failures.append(f"{case.method} {case.formatted_path} -> content type {content_type}")

        check()
    assert failures == []
    # The generated requests reach the handlers: some succeed, some are turned away as invalid.
    assert sum(count for status, count in statuses.items() if status < 300) >= 50, statuses
    assert sum(count for status, count in statuses.items() if 400 <= status < 500) >= 50, statuses
