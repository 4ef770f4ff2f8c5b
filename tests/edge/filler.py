"""The bottling filler PLC for the edge agent tests: a register pattern per step, served by the simulators' Modbus server."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from pathlib import Path
from typing import Any

import yaml

from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.simulators.modbus_server import RegisterServer

from .helpers import TENANT

FILLER_MAP = shipped_tag_map_dir() / "demo" / "bottling-filler-modbus.yaml"
MACHINE = "filler-1"
STEP_MS = 3_600_000
T0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def last_step(reporting_days: int) -> int:
    """Return the step after which the last reporting day has closed: two baseline days, the reporting days and one more hour."""
    return (2 + reporting_days) * 24 + 1


def registers(step: int) -> dict[str, int]:
    """Return the filler's register values at ``step``: producing 1,000 containers an hour, except stopped (reason 17) in every sixth hour.

    The stop begins 10 minutes before the sixth hour's poll and ends 10
    minutes before the next poll, so each day has four one-hour stops.
    """
    clock = T0 + step * STEP_MS
    stopped = step % 6 == 5
    if stopped:
        since = clock - 600_000
    elif step >= 6:
        since = T0 + (step - step % 6) * STEP_MS - 600_000
    else:
        since = T0
    changes = (step + 1) // 6 + step // 6
    producing_steps = step - (step + 1) // 6
    return {
        "state": 2 if stopped else 1,
        "reason": 17 if stopped else 0,
        "state_since": since,
        "clock": clock,
        "containers": producing_steps * 1000 % 65536,
        "state_changes": changes,
    }


class Plc:
    """The filler's registers on a background event loop; :meth:`show` sets them to one step."""

    def __init__(self, tag_map: Path = FILLER_MAP) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RegisterServer(load_tag_map(tag_map), port=0, unit_id=1)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.step = 0
        self.show(0)

    def show(self, step: int) -> None:
        self.step = step
        self.loop.call_soon_threadsafe(self.server.set_values, registers(step))

    @property
    def clock(self) -> int:
        return registers(self.step)["clock"]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class SpoolWatch:
    """Reads the agent's spool read-only from the test, to see what the agent has committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def _query(self, sql: str) -> tuple[Any, ...] | None:
        try:
            if self.db is None:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, isolation_level=None)
            return self.db.execute(sql).fetchone()
        except sqlite3.OperationalError:
            return None  # the agent has not created the spool or its tables yet

    def watermark(self) -> int:
        return self.machine_watermark(MACHINE)

    def machine_watermark(self, machine: str) -> int:
        row = self._query(f"SELECT watermark_ms FROM machines WHERE machine = '{machine}'")
        return row[0] if row else 0

    def outbox_depth(self) -> int:
        row = self._query("SELECT count(*) FROM vouchers WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'acked_through')")
        assert row is not None
        return row[0]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def write_contract(folder: Path, *, anchors: int, reporting_days: int) -> Path:
    """Write a contract whose anchors on the filler alternate between OEE points and unplanned downtime, with two baseline days."""
    last = dt.date(2026, 1, 3) + dt.timedelta(days=reporting_days - 1)
    anchors = [
        {
            "id": f"a{index:02d}",
            "scope": [MACHINE],
            "metric": "oee_points" if index % 2 else "unplanned_downtime_rate",
            "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-02", "min_days": 1},
            "reporting": {"first_date": "2026-01-03", "last_date": last.isoformat()},
            "uncertainty": {"resamples": 100, "block_days": 1, "seed": index},
        }
        for index in range(anchors)
    ]
    contract = {"schema": "valuegate/contract/v1", "id": "c-1", "tenant": TENANT, "customer": "Acme", "start": "2026-01-01", "end": "2026-12-31", "anchors": anchors}
    path = folder / "contract.yaml"
    path.write_text(yaml.safe_dump(contract), encoding="utf-8")
    return path
