"""Helpers for tests that start a renewal check from the contract page, which runs in the background."""

from __future__ import annotations

import re
import time

import httpx


def check_state(client: httpx.Client, contract_id: str) -> str:
    """Return the state the contract's renewal check page shows: none, running, done, failed or interrupted."""
    page = client.get(f"/contracts/{contract_id}/renewal-check")
    assert page.status_code == 200, page.text
    return re.search(r'id="renewal-check" data-state="([a-z]+)"', page.text).group(1)


def finished_check(client: httpx.Client, contract_id: str, *, timeout_s: float = 60) -> str:
    """Wait until the contract's renewal check has ended and return its state; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (state := check_state(client, contract_id)) == "running":
        assert time.monotonic() < deadline, f"the renewal check of {contract_id} still runs after {timeout_s} s"
        time.sleep(0.2)
    return state
