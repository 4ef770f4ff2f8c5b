"""Dependencies shared by the API controllers: a pooled connection in a transaction, and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from ..auth import Principal

__all__ = ("Conn", "provide_conn", "caller")

# Handlers take the pooled connection as the named dependency "conn".
Conn = NamedDependency[psycopg.AsyncConnection[Any]]


async def provide_conn(state: State) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Lend a connection for one request; it commits when the handler returns and rolls back when it raises."""
    async with state.pool.connection() as conn:
        yield conn


def caller(request: Request[Any, Any, Any]) -> Principal:
    """Return the authenticated caller; guards have already rejected anonymous requests."""
    principal = request.scope.get("user")
    if principal is None:
        raise RuntimeError("caller() used on a route without a guard")
    return principal
