"""Streaming an auditor bundle over HTTP: the ZIP bytes go out member by member while the rest is still being built.

A bundle with a year of minute records takes minutes to build. Sent as one
body, its first byte would leave only at the end, after the read timeout of
a reverse proxy in front of the cloud (nginx's ``proxy_read_timeout`` is
60 s by default). The bytes are those
:func:`valuegate.cloud.renewal.service.contract_bundle` returns.

NOTE: bytes leave once per member, so one machine's record file that takes
longer to build than the proxy's read timeout still stalls the download.
A bundle with a year of 10 machines took 142 s in all on a loaded
2-core host, so about 14 s a record file (an estimate from that total).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import structlog

from valuegate.cloud.renewal.service import contract_bundle_chunks

__all__ = ("open_bundle_stream",)

log = structlog.get_logger("valuegate.cloud.bundle")


async def open_bundle_stream(pool: Any, tenant_id: str, contract_id: str, *, records: bool = True) -> AsyncIterator[bytes]:
    """Start building a contract's bundle and return an iterator over its ZIP bytes, with the first chunk already built.

    Errors before the first chunk, such as :class:`NotFound` for an unknown
    contract, raise here, so the caller still sends a proper error response.
    A later error ends the iterator with that error. The ZIP central
    directory comes only with the last chunk, so a client whose download
    broke off has no file that opens as a complete ZIP.
    The iterator holds a pooled connection until it ends or is closed.
    """
    stack = contextlib.AsyncExitStack()
    try:
        conn = await stack.enter_async_context(pool.connection())
        chunks = contract_bundle_chunks(conn, tenant_id, contract_id, created_at=dt.datetime.now(dt.UTC), records=records)
        stack.push_async_callback(chunks.aclose)
        first = await anext(chunks)
    except BaseException:
        await stack.aclose()
        raise
    return _send(first, chunks, stack, tenant_id, contract_id)


async def _send(first: bytes, chunks: AsyncIterator[bytes], stack: contextlib.AsyncExitStack, tenant_id: str, contract_id: str) -> AsyncIterator[bytes]:
    sent = len(first)
    try:
        yield first
        async for chunk in chunks:
            sent += len(chunk)
            yield chunk
    except Exception as exc:
        # The response has started, so no error page can follow: the server breaks the connection off instead.
        log.error("bundle_stream_failed", tenant=tenant_id, contract=contract_id, bytes_sent=sent, error=str(exc))
        await stack.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    except BaseException:
        await stack.aclose()
        raise
    else:
        await stack.aclose()
        log.info("bundle_streamed", tenant=tenant_id, contract=contract_id, bytes=sent)
