"""The bundle download streams: the first ZIP bytes leave while the record files are still being read, and the result verifies."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.settlement.seed import KEY_VALID_FROM, connect, ingest, ingest_telemetry, save_contract
from valuegate.cloud import auth, record_export, store
from valuegate.cloud.app import ApiServer
from valuegate.cloud.bundle import GatewayKey, build_bundle
from valuegate.cloud.bundle_writer import BundleWriter
from valuegate.cloud.db import migrate
from valuegate.cloud.settings import CloudSettings
from valuegate.edge import keys
from valuegate.edge.protocol.contract import parse_contract
from valuegate.edge.protocol.records import MinuteRecord
from valuegate.verify import verify_bundle

from .test_evidence_guide import CONTRACT, ZONE, issue_vouchers

pytestmark = pytest.mark.postgres

PASSWORD = "correct-horse-battery"


async def _served_contract(dsn: str, folder: Path) -> dict[str, str]:
    """Store the edge pipeline's vouchers and every minute record behind them; return an auditor's bearer header."""
    vouchers, export = issue_vouchers(folder)
    migrate(dsn)
    async with await connect(dsn) as conn, conn.transaction():
        await store.create_tenant(conn, "acme", "ACME")
        await store.create_site(conn, "acme", "s", "Site", ZONE)
        await store.create_gateway(conn, "acme", "s", "gw-1")
        public = keys.export_public(folder / "keys")["public_key_multibase"]
        await store.add_gateway_key(conn, "acme", "gw-1", public, valid_from=KEY_VALID_FROM)
        await save_contract(conn, parse_contract(CONTRACT))
        user = await auth.create_user(conn, "acme", "aud1", PASSWORD, ["auditor"])
        _, token = await auth.issue_token(conn, "acme", user["id"], "test", actor="test")
    await ingest(dsn, vouchers, site="s")
    await ingest_telemetry(dsn, [msgspec.convert(record, MinuteRecord) for record in export], site="s")
    return {"Authorization": f"Bearer {token}"}


async def test_bundle_streams_before_records_are_read(database, tmp_path, monkeypatch):
    headers = await _served_contract(database, tmp_path)
    gate = asyncio.Event()
    reads: list[str] = []
    load_records = record_export.load_records

    async def gated(conn: Any, tenant_id: str, machines: list[str], start: Any, end: Any) -> Any:
        # The builder waits here until the test has its first chunk, so that chunk cannot come from a finished build.
        await gate.wait()
        reads.append(machines[0])
        return await load_records(conn, tenant_id, machines, start, end)

    monkeypatch.setattr(record_export, "load_records", gated)
    async with ApiServer(CloudSettings(dsn=database, port=0, pool_max=4)) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        async with client.stream("GET", "/contracts/c-evidence/bundle.zip", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/zip"
            chunks = response.aiter_raw()
            first = await asyncio.wait_for(anext(chunks), timeout=20)
            assert first.startswith(b"PK\x03\x04")
            assert reads == []
            gate.set()
            body = first + b"".join([chunk async for chunk in chunks])

    assert sorted(set(reads)) == ["filler-10", "filler-9"]
    path = tmp_path / "streamed.zip"
    path.write_bytes(body)
    report = verify_bundle(path)
    assert report.ok, report.as_dict()
    assert report.evidence.recomputed == 2
    with zipfile.ZipFile(path) as archive:
        assert "records/filler-9.jsonl" in archive.namelist()


async def test_bundle_error_mid_stream_breaks_download(database, tmp_path, monkeypatch):
    headers = await _served_contract(database, tmp_path)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("telemetry read failed")

    monkeypatch.setattr(record_export, "load_records", broken)
    received = b""
    async with ApiServer(CloudSettings(dsn=database, port=0, pool_max=4)) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", "/contracts/c-evidence/bundle.zip", headers=headers) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    received += chunk
        # The members before the failure arrived, but without the central directory they do not open as a ZIP file.
        assert received.startswith(b"PK\x03\x04")
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(received))
        # The server stays up and still sends the bundle without records.
        without = await client.get("/contracts/c-evidence/bundle.zip?records=false", headers=headers)
        assert without.status_code == 200
        assert "manifest.json" in zipfile.ZipFile(io.BytesIO(without.content)).namelist()


async def test_bundle_unknown_contract_is_404(database, tmp_path):
    headers = await _served_contract(database, tmp_path)
    async with ApiServer(CloudSettings(dsn=database, port=0, pool_max=4)) as server, httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.get("/contracts/no-such/bundle.zip", headers={**headers, "Accept-Language": "en"})
    assert response.status_code == 404


def test_taken_chunks_equal_whole_bundle(tmp_path):
    """Bytes taken member by member join to exactly the bytes of a bundle built in one piece."""
    vouchers, export = issue_vouchers(tmp_path)
    public = keys.export_public(tmp_path / "keys")["public_key_multibase"]
    records = {m: sorted((r for r in export if r["machine"] == m), key=lambda r: r["minute"]) for m in ("filler-10", "filler-9")}
    parts = {"contract": CONTRACT, "vouchers": vouchers, "keys": [GatewayKey("gw-1", public)], "documents": [], "created_at": "2026-04-01T00:00:00Z"}
    whole = build_bundle(records=records, **parts)

    from valuegate.cloud.bundle import record_names, start_bundle
    from valuegate.cloud.signature import canonical_fast

    writer, manifest = start_bundle(**parts)
    chunks = [writer.take()]
    for machine, name in record_names(sorted(records)).items():
        with writer.record_file(machine, name) as file:
            file.write([canonical_fast(row) for row in records[machine]])
            with pytest.raises(RuntimeError, match="still open"):
                writer.take()
        chunks.append(writer.take())
    chunks.append(writer.finish(manifest))
    assert all(chunks)
    assert b"".join(chunks) == whole
    assert isinstance(writer, BundleWriter)
