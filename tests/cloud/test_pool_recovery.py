"""The API after its database connections broke (PostgreSQL restarted): the next request gets a fresh connection, not a 500."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from valuegate.cloud.app import create_app
from valuegate.cloud.settings import CloudSettings

from .conftest import Gateway, make_user
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


async def test_requests_after_connections_reset(cloud_dsn: str, two_tenants: tuple[Gateway, Gateway]) -> None:
    headers = {"Authorization": f"Bearer {await make_user(cloud_dsn, 'acme', 'csm1', ['csm'])}"}
    with TcpProxy(int(conninfo_to_dict(cloud_dsn)["port"])) as proxy:
        through_proxy = make_conninfo(cloud_dsn, port=str(proxy.port), host="127.0.0.1")
        async with AsyncTestClient(create_app(CloudSettings(dsn=through_proxy))) as client:
            answers = [(await client.get("/api/v1/gateways", headers=headers)).status_code for _ in range(3)]
            assert answers == [200, 200, 200]
            # Every pooled connection is reset, as a server restart does, and the server is back at once.
            proxy.cut()
            proxy.restore()
            answers = [(await client.get("/api/v1/gateways", headers=headers)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 200]
