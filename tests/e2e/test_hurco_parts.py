"""Hurco recordings end to end: the OPC UA simulator, the OPC UA adapter and the edge counter kernels give parts per plant day.

The expected counts are read straight from the raw SHDR files: each rise
of Part_Count counts on the New York plant day of the reading that shows it.
"""

from __future__ import annotations

import asyncio
import gzip
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from valuegate.adapters.devices import OpcUaDeviceConfig, open_device
from valuegate.adapters.tagmap import load_tag_map, shipped_tag_map_dir
from valuegate.edge.cli_oee import machine_days
from valuegate.edge.trace import TraceRow
from valuegate.simulators.mtconnect_opcua import MtconnectOpcUaSimulator

RECORDINGS = Path(__file__).resolve().parents[2] / "simulators" / "recordings" / "nist-hurco-mtc"
NEW_YORK = ZoneInfo("America/New_York")
FILES = {"hurco02": "2-1-2017-Hurco02-Clean.txt.gz", "hurco04": "2-1-2017-Hurco04-Clean.txt.gz"}


def raw_part_rises(name: str) -> dict[str, int]:
    """Return, per New York plant day, the sum of Part_Count rises between consecutive readings, from the raw file."""
    rises: dict[str, int] = {}
    last = None
    with gzip.open(RECORDINGS / FILES[name], "rt", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("|")
            for item, value in zip(fields[1::2], fields[2::2], strict=False):
                if item != "Part_Count" or value == "UNAVAILABLE":
                    continue
                day = datetime.fromisoformat(fields[0].replace("Z", "+00:00")).astimezone(NEW_YORK).date().isoformat()
                count = int(float(value))
                if last is not None and count > last:
                    rises[day] = rises.get(day, 0) + count - last
                rises.setdefault(day, 0)
                last = count
    return rises


def hurco_map():
    """Return the shipped tag map of the simulator's Hurco variables: execution decides the state, PartCount counts parts."""
    return load_tag_map(shipped_tag_map_dir() / "demo" / "hurco-mtconnect-opcua.yaml")


async def replay(name: str, tag_map) -> list[TraceRow]:
    """Serve the recording over OPC UA and return every sample the adapter's subscription delivers, as trace rows."""
    rows: list[TraceRow] = []
    async with MtconnectOpcUaSimulator(name, speed=500_000, paused=True) as simulator:
        config = OpcUaDeviceConfig(id=name, endpoint=simulator.endpoint, tag_map="unused", publishing_interval_ms=20, sampling_ms=0)
        async with open_device(config, tag_map) as client:
            assert client.mode_in_use == "subscribe"

            async def gather() -> None:
                async for batch in client.stream():
                    rows.extend(TraceRow(s.ts_ms, name, s.tag, s.value, s.status) for s in batch)

            reader = asyncio.create_task(gather())
            simulator.resume()
            await simulator.wait_done(timeout_s=60)
            # Wait for the last recorded count to arrive before the stream stops.
            final = simulator.expected_changes("part_count")[-1].value
            deadline = asyncio.get_running_loop().time() + 10
            while not any(row.tag == "part_count" and row.value == final for row in rows):
                assert asyncio.get_running_loop().time() < deadline, f"part count {final} never arrived"
                await asyncio.sleep(0.05)
            reader.cancel()
    return sorted(rows, key=lambda row: row.ts_ms)


@pytest.mark.parametrize("name", ["hurco02", "hurco04"])
async def test_parts_per_day_match_recording(name, tmp_path):
    tag_map = hurco_map()
    rows = await replay(name, tag_map)
    assert any(row.tag == "part_count" for row in rows)
    produced = {day: kpis.produced for day, kpis in machine_days(rows, tag_map, "America/New_York")}
    expected = raw_part_rises(name)
    assert sum(expected.values()) > 0
    for day, parts in expected.items():
        assert produced.get(day, 0) == parts, f"{name} {day}: the edge counted {produced.get(day, 0)} parts, the recording {parts}"
    assert {day for day, parts in produced.items() if parts} <= set(expected)


def test_hurco02_counts_by_hand():
    # Hurco02's part counter reads 1909 once on 1 February, then 1910 to 1917 on 2 February: 8 parts that day.
    assert raw_part_rises("hurco02") == {"2017-02-01": 0, "2017-02-02": 8}


@pytest.mark.parametrize("name", ["hurco02", "hurco04"])
def test_oee_command_counts_recorded_parts(name):
    """`valuegate oee recording:NAME` with the shipped Hurco map counts the parts the raw file shows, per plant day."""
    import json

    from typer.testing import CliRunner

    from valuegate.cli import app

    result = CliRunner().invoke(app, ["oee", f"recording:{name}", "--map", "demo/hurco-mtconnect-opcua", "--json"])
    assert result.exit_code == 0, result.output
    (machine,) = json.loads(result.stdout)["machines"]
    produced = {day["date"]: day["produced"] for day in machine["days"]}
    expected = raw_part_rises(name)
    for day, parts in expected.items():
        assert produced.get(day, 0) == parts, (name, day)
