"""State values that match no rule of the tag map: counted per machine, and each new value logged once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map
from valuegate.edge import keys
from valuegate.edge.agent import EdgeAgent, running
from valuegate.edge.config import load_config
from valuegate.edge.normalize import Normalizer
from valuegate.services import MosquittoServer

from .filler import FILLER_MAP, MACHINE, Plc, SpoolWatch, registers, write_contract
from .helpers import write_config

FILLER = load_tag_map(FILLER_MAP)
OFFLINE = 5
# 2026-01-01T00:00:00Z, inside the plausible range of PLC times.
T0 = 1_767_225_600_000


def poll(state: int, clock: int) -> list[Sample]:
    values = {"state": state, "reason": 0, "state_since": T0, "clock": T0 + clock, "containers": 0, "state_changes": 0}
    return [Sample("filler", tag, clock, "gateway", clock, value, value, "good") for tag, value in values.items()]


def test_normalizer_counts_unmatched_polls() -> None:
    normalizer = Normalizer(MACHINE, FILLER)
    codes = []
    for clock, state in enumerate([1, 9, 9, 7, 9, 1, 7], start=1):
        batch = normalizer.feed(poll(state, clock * 1000))
        codes.extend(event.code for event in batch.states)

    # 9, 9, 7, 9 and 7 match none of the rules for 0, 1 and 2: the map's default (offline) applies to each.
    assert normalizer.unmatched_total == 5
    assert normalizer.unmatched_new == ["state=9", "state=7"]
    assert codes == [0, OFFLINE, 0, OFFLINE]
    normalizer.unmatched_new.clear()
    normalizer.feed(poll(9, 9000))
    assert normalizer.unmatched_total == 6
    assert normalizer.unmatched_new == []


def test_normalizer_keeps_a_bounded_number_of_values() -> None:
    normalizer = Normalizer(MACHINE, FILLER)
    for clock, state in enumerate(range(100, 200), start=1):
        normalizer.feed(poll(state, clock * 1000))
    assert normalizer.unmatched_total == 100
    assert normalizer.unmatched_new == [f"state={state}" for state in range(100, 132)]


@pytest.mark.mosquitto
async def test_agent_logs_and_counts_unmatched_states(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A real pymodbus filler shows state codes 9 and 7, which the map lacks; the agent warns once per code and counts the polls."""
    plc = Plc()
    device = {
        "protocol": "modbus", "id": "filler", "host": "127.0.0.1", "port": plc.server.port, "unit_id": 1, "tag_map": str(FILLER_MAP),
        "poll_ms": 10, "timeout_ms": 500, "reconnect_min_ms": 50, "reconnect_max_ms": 200,
    }  # fmt: skip
    contract = write_contract(tmp_path, anchors=1, reporting_days=1)
    path = write_config(tmp_path, mosquitto.port, devices=[device], machines=[{"device": "filler", "id": MACHINE}], contracts=[str(contract)])
    keys.create_key(tmp_path / "state" / "keys")
    watch = SpoolWatch(tmp_path / "state" / "spool.db")

    async def show(step: int, state: int | None = None) -> None:
        values = registers(step)
        if state is not None:
            values["state"] = state
        plc.step = step
        plc.loop.call_soon_threadsafe(plc.server.set_values, values)
        deadline = time.monotonic() + 20
        while watch.watermark() < values["clock"]:
            assert time.monotonic() < deadline, f"the agent did not commit step {step}"
            await asyncio.sleep(0.005)

    def counted() -> float:
        return agent.metrics.value("valuegate_state_unmatched_samples_total", machine=MACHINE)

    try:
        with structlog.testing.capture_logs() as logged:
            async with EdgeAgent(load_config(path)) as agent, running(agent):
                await show(1)
                assert counted() == 0
                for step, state in [(2, 9), (3, 9), (4, 7), (5, 9)]:
                    await show(step, state)
                await show(6)
                during = counted()
                # At least one poll saw each of the four steps; the normalizer counted exactly what the metric shows.
                assert during >= 4
                assert during == agent._normalizers[MACHINE].unmatched_total
                await show(7)
                await asyncio.sleep(0.2)
                assert counted() == during, "polls of a known state were counted as unmatched"
    finally:
        watch.close()
        plc.close()

    warnings = [entry for entry in logged if entry["event"] == "state_unmatched"]
    assert [entry["values"] for entry in warnings] == [["state=9"], ["state=7"]]
    assert {(entry["machine"], entry["category"], entry["log_level"]) for entry in warnings} == {(MACHINE, "offline", "warning")}
    assert f"tag map '{FILLER.name}'" in warnings[0]["hint"]
