"""Fixtures of the web tests: one running service per module, and HTTP clients logged in as each role."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.web.site import PASSWORD, Site, running_site


@pytest.fixture(scope="module")
def site(postgres_server) -> Iterator[Site]:
    with running_site(postgres_server) as running:
        yield running


@pytest.fixture
def login(site):
    """Return a function that logs a user in and returns an httpx client holding the session cookie."""
    clients: list[httpx.Client] = []

    def log_in(username: str) -> httpx.Client:
        client = httpx.Client(base_url=site.url, timeout=30, follow_redirects=False)
        clients.append(client)
        response = client.post("/login", data={"username": username, "password": PASSWORD, "next": "/contracts"})
        assert response.status_code == 303, response.text
        return client

    yield log_in
    for client in clients:
        client.close()
