"""Gateway status messages: the key-rotation statements a gateway announces in its retained online status."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog

from . import metrics
from .store import StoreError, register_rotation

__all__ = ("register_status_rotations",)

log = structlog.get_logger("valuegate.cloud.ingest")


async def register_status_rotations(conn: Any, tenant: str, gateway: str, payload: bytes) -> None:
    """Register the key-rotation statements a gateway lists in its online status; each one commits or fails alone."""
    try:
        status = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        log.warning("status_invalid", gateway=gateway, reason="not JSON")
        return
    if not isinstance(status, dict) or status.get("schema") != "valuegate/status/v1" or status.get("state") != "online":
        return
    statements = status.get("rotations") or []
    if not isinstance(statements, list):
        log.warning("status_invalid", gateway=gateway, reason="rotations is not a list")
        return

    def from_seq(statement: Any) -> int:
        subject = statement.get("credentialSubject") if isinstance(statement, dict) else None
        value = subject.get("from_seq") if isinstance(subject, dict) else None
        return value if isinstance(value, int) else 0

    for statement in sorted(statements, key=from_seq):
        try:
            async with conn.transaction():
                await register_rotation(conn, tenant, gateway, statement, actor=f"gateway:{gateway}")
        except StoreError as exc:
            metrics.REJECTIONS.labels("rotation", exc.code).inc()
            log.warning("rotation_not_registered", gateway=gateway, code=exc.code, reason=str(exc))
