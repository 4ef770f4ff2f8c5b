"""Builders for the edge tests: configuration files, synthetic anchor days and vouchers issued into a spool."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from valuegate.edge.config import EdgeConfig, load_config
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.outbox import PendingVoucher
from valuegate.edge.spool import Spool

TENANT, SITE, GATEWAY = "acme", "suzhou", "gw-1"


def write_config(folder: Path, broker_port: int, *, devices: list[dict[str, Any]] | None = None, **sections: Any) -> Path:
    """Write an edge.yaml for the tests; ``sections`` override top-level keys (mqtt settings merge)."""
    data: dict[str, Any] = {
        "schema": "valuegate/edge/v1",
        "gateway": GATEWAY,
        "tenant": TENANT,
        "site": SITE,
        "time_zone": "UTC",
        "state_dir": str(folder / "state"),
        "devices": devices or [],
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "keepalive_s": 10},
        "metrics": {"port": 0},
        "publish": {"ack_timeout_s": 1.0},
    }
    mqtt = sections.pop("mqtt", {})
    data["mqtt"].update(mqtt)
    publish = sections.pop("publish", {})
    data["publish"].update(publish)
    data.update(sections)
    path = folder / "edge.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load(folder: Path, broker_port: int, **sections: Any) -> EdgeConfig:
    return load_config(write_config(folder, broker_port, **sections))


def synthetic_body(plant_date: str, *, machine: str = "filler-1") -> dict[str, Any]:
    """Return voucher claims (without numbering) for one plant day, with fixed plausible numbers."""
    day = dt.date.fromisoformat(plant_date)
    return {
        "contract": "c-1",
        "anchor": "oee-filler",
        "machines": [{"id": machine, "mapping_hash": "sha256:" + "0" * 64, "time_source": "plc", "ideal_cycle_time_s": 2.7}],
        "period": {"start": f"{day}T00:00:00Z", "end": f"{day + dt.timedelta(days=1)}T00:00:00Z", "plant_date": plant_date, "time_zone": "UTC"},
        "metric": {"name": "oee_points", "unit": "percentage_points", "better": "higher"},
        "reporting": {
            "value": 61.5,
            "planned_busy_min": 1200.0,
            "run_min": 900.0,
            "unplanned_downtime_min": 120.0,
            "availability": 0.75,
            "effectiveness": 0.9,
            "quality": 0.911111,
            "oee": 0.615,
            "running_day": True,
        },
        "baseline": {"value": 55.0, "days": 20, "first_date": "2026-01-01", "last_date": "2026-01-20", "digest": "sha256:" + "1" * 64},
        "delta": {
            "quantity": "oee_points",
            "point": 6.5,
            "low": 4.1,
            "high": 8.8,
            "confidence": 0.95,
            "method": "moving_block_bootstrap_percentile/xorshift64/v1",
            "resamples": 2000,
            "seed": 7,
        },
        "sufficiency": {"ok": True, "reasons": [], "covered_min": 1440.0},
        "evidence": {"merkle_root": "sha256:" + "2" * 64, "records": 1440, "record_schema": "valuegate/minute/v1"},
    }


def issue_synthetic(
    spool: Spool, signer: VoucherSigner, count: int, *, first_date: str = "2026-02-01", anchor: str = "oee-filler", now_ms: int = 1_770_000_000_000
) -> list[dict[str, Any]]:
    """Store ``count`` reporting anchor days and issue one voucher each, in one transaction."""
    start = dt.date.fromisoformat(first_date)
    items = []
    for offset in range(count):
        plant_date = (start + dt.timedelta(days=offset)).isoformat()
        body = synthetic_body(plant_date)
        body["anchor"] = anchor
        spool.store_anchor_day("c-1", anchor, plant_date, "reporting", {})
        day_start = int(dt.datetime.combine(start + dt.timedelta(days=offset), dt.time(), dt.UTC).timestamp() * 1000)
        items.append(PendingVoucher("c-1", anchor, plant_date, ("filler-1",), day_start, day_start + 86_400_000, body))
    return signer.issue(spool, items, now_ms=now_ms)


def outbox_depth(spool: Spool) -> int:
    """Count the vouchers above the acknowledged sequence, straight from the spool's tables."""
    return spool.db.execute("SELECT count(*) FROM vouchers WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'acked_through')").fetchone()[0]


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
