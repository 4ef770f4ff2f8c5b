"""The agent in this process against a pymodbus filler: polling under a stalled broker, /metrics values, and a failed start-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from valuegate.edge import keys
from valuegate.edge.agent import EdgeAgent, running
from valuegate.edge.config import load_config
from valuegate.services import MosquittoServer, free_port

from .filler import FILLER_MAP, MACHINE, Plc, SpoolWatch, last_step, registers, write_contract
from .helpers import write_config
from .test_plc_faults import metric

pytestmark = pytest.mark.mosquitto

DEVICE = "filler"
REPORTING_DAYS = 1
LAST_STEP = last_step(REPORTING_DAYS)


def device_settings(port: int, tag_map: Path = FILLER_MAP) -> dict[str, object]:
    return {
        "protocol": "modbus", "id": DEVICE, "host": "127.0.0.1", "port": port, "unit_id": 1, "tag_map": str(tag_map),
        "poll_ms": 10, "timeout_ms": 500, "reconnect_min_ms": 50, "reconnect_max_ms": 200,
    }  # fmt: skip


def agent_config(folder: Path, broker_port: int, devices: list[dict[str, object]], *, anchors: int = 1, **sections: object) -> Path:
    contract = write_contract(folder, anchors=anchors, reporting_days=REPORTING_DAYS)
    machines = [{"device": device["id"], "id": MACHINE if index == 0 else f"{MACHINE}-{index}"} for index, device in enumerate(devices)]
    path = write_config(folder, broker_port, devices=devices, machines=machines, contracts=[str(contract)], **sections)
    keys.create_key(folder / "state" / "keys")
    return path


async def replay(plc: Plc, watch: SpoolWatch, *, until_step: int = LAST_STEP, timeout_s: float = 60) -> None:
    """Step the PLC each time the agent has committed the current step, up to ``until_step``."""
    deadline = time.monotonic() + timeout_s
    while plc.step < until_step:
        assert time.monotonic() < deadline, f"the agent committed only {plc.step} of {until_step} steps in {timeout_s} s"
        if watch.watermark() >= plc.clock:
            plc.show(plc.step + 1)
        await asyncio.sleep(0.003)
    while watch.watermark() < plc.clock:
        assert time.monotonic() < deadline, "the agent did not commit the last step"
        await asyncio.sleep(0.003)


async def wait_until(check, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def stopped(process_id: int) -> AsyncIterator[None]:
    """Hold a process with SIGSTOP for the block: its sockets stay open and it sends nothing."""
    os.kill(process_id, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process_id, signal.SIGCONT)


async def test_stalled_broker_never_holds_polling(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The broker stops responding mid-session; every PLC step is still polled, summarized and issued while publishes wait."""
    plc = Plc()
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port)], publish={"window": 4}))
    watch = SpoolWatch(tmp_path / "state" / "spool.db")
    try:
        async with EdgeAgent(config) as agent, running(agent):
            assert await wait_until(lambda: agent.publisher.connected and agent.publisher._current.online, 10)
            assert mosquitto.pid is not None
            async with stopped(mosquitto.pid):
                requests_before = plc.server.requests
                await replay(plc, watch)
                assert await wait_until(lambda: agent.metrics.value("valuegate_vouchers_issued_total") == 1, 30)
                assert await wait_until(lambda: agent.metrics.value("valuegate_minutes_summarized_total", machine=MACHINE) == LAST_STEP * 60, 10)

                assert plc.server.requests - requests_before >= LAST_STEP
                assert watch.outbox_depth() == 1
                # The voucher and telemetry went out while the broker was held, and wait for PUBACKs that never came.
                assert agent.publisher.sent_through() == 1
                assert agent.publisher.inflight() >= 2
                assert agent.publisher.acked_through == 0
    finally:
        watch.close()
        plc.close()


def tag_map_with_out_of_range_tag(folder: Path) -> Path:
    """Write the filler map with one more tag whose engineering range the PLC's value always exceeds."""
    text = FILLER_MAP.read_text(encoding="utf-8")
    anchor = "\nstates:\n"
    assert anchor in text
    extra = "  - {name: temperature, table: holding_register, address: 12, type: uint16, order: ABCD, unit: C, range: [0, 100]}\n"
    path = folder / "filler-with-temperature.yaml"
    path.write_text(text.replace(anchor, "\n" + extra + "states:\n", 1), encoding="utf-8")
    return path


async def test_metrics_endpoint_values(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A day replayed with no ingest: /metrics shows the polls, the out-of-range values, the spooled events and the unacknowledged vouchers."""
    tag_map = tag_map_with_out_of_range_tag(tmp_path)
    plc = Plc(tag_map)
    plc.loop.call_soon_threadsafe(plc.server.set_values, {"temperature": 500})
    port = free_port()
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port, tag_map)], anchors=2, metrics={"port": port}))
    watch = SpoolWatch(tmp_path / "state" / "spool.db")
    try:
        async with EdgeAgent(config) as agent:
            async with running(agent):
                await replay(plc, watch)
                assert await wait_until(lambda: metric(port, "valuegate_vouchers_issued_total") == 2, 30)
                # The gauges follow the outbox at each housekeeping round, every 5 s.
                assert await wait_until(lambda: metric(port, "valuegate_outbox_depth") == 2, 15)
            # Stopped: nothing polls or issues any more, and the endpoint serves until the agent is closed.
            requests = plc.server.requests
            scraped_at = time.time()
            values_read = metric(port, "valuegate_values_read_total", device=DEVICE)
            decode_errors = metric(port, "valuegate_decode_errors_total", device=DEVICE)
            spooled = metric(port, "valuegate_samples_spooled_total", machine=MACHINE)
            issued = metric(port, "valuegate_vouchers_issued_total")
            depth = metric(port, "valuegate_outbox_depth")
            age = metric(port, "valuegate_oldest_unacked_voucher_age_seconds")
        created = watch._query("SELECT min(created_ms), max(created_ms) FROM vouchers WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'acked_through')")
    finally:
        watch.close()
        plc.close()

    # One read request per poll, seven tags per poll, and the temperature out of range in every poll.
    assert requests - 1 <= decode_errors <= requests
    assert decode_errors >= LAST_STEP + 1
    assert values_read == 7 * decode_errors
    # One state event per PLC state change plus the first, and one counter reading per new container count plus the first.
    last = registers(LAST_STEP)
    producing_steps = LAST_STEP - (LAST_STEP + 1) // 6
    assert spooled == (1 + last["state_changes"]) + (1 + producing_steps)
    assert issued == 2
    assert depth == 2
    assert created is not None
    oldest_ms, newest_ms = created
    assert age > 0
    assert (newest_ms - oldest_ms) / 1000 <= age <= scraped_at - oldest_ms / 1000


def open_files_under(folder: Path) -> list[str]:
    """Return this process's open file descriptors that point into ``folder``."""
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith(str(folder)):
                found.append(target)
    return found


async def test_failed_start_leaves_nothing_open(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The metrics port is taken, so start-up fails after both spool connections opened; both are closed again and no thread or task is left."""
    plc = Plc()
    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    metrics_port = occupied.getsockname()[1]
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port)], metrics={"port": metrics_port}))
    threads_before = set(threading.enumerate())
    tasks_before = asyncio.all_tasks()
    try:
        agent = EdgeAgent(config)
        with pytest.raises(OSError, match=rf"cannot serve health and metrics on 127\.0\.0\.1:{metrics_port}: Address already in use; another agent"):
            async with agent:
                pytest.fail("the agent started although its metrics port was taken")

        assert (tmp_path / "state" / "spool.db").exists()  # the failure came after the spool was opened
        assert agent.spool.spool is None
        assert agent.outbox_spool.spool is None
        assert open_files_under(tmp_path / "state") == []
        await asyncio.sleep(0.2)  # executor threads end after their shutdown
        # The event loop's default executor keeps its worker threads; every thread the agent names itself must be gone.
        assert [thread.name for thread in set(threading.enumerate()) - threads_before if not thread.name.startswith("asyncio_")] == []
        assert asyncio.all_tasks() - tasks_before == set()
        assert plc.server.requests == 0  # no device was opened
        assert agent.metrics.value("valuegate_mqtt_connected") == 0
    finally:
        occupied.close()
        plc.close()


async def test_tls_file_gone_keeps_polling(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """The CA file checked at start-up is gone when the publisher connects: the connect fails and is retried, and polling goes on."""
    plc = Plc()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not read before the file is gone\n", encoding="utf-8")
    tls = {"ca_file": str(ca_file)}
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port)], mqtt={"tls": tls, "reconnect_max_s": 0.2}))
    ca_file.unlink()
    watch = SpoolWatch(tmp_path / "state" / "spool.db")
    try:
        with structlog.testing.capture_logs() as logged:
            async with EdgeAgent(config) as agent, running(agent) as task:
                await replay(plc, watch, until_step=30)
                assert await wait_until(lambda: agent.metrics.value("valuegate_mqtt_connect_failures_total") >= 2, 10)
                assert not task.done()
                assert agent.metrics.value("valuegate_mqtt_connected") == 0
    finally:
        watch.close()
        plc.close()

    failures = [entry for entry in logged if entry["event"] == "mqtt_connect_failed"]
    assert failures
    assert str(ca_file) in failures[0]["reason"]
    assert "check mqtt.tls" in failures[0]["reason"]


async def test_second_agent_on_state_dir_refused(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A second agent on the same state folder stops at start-up, naming the first one's pid, and leaves the first running."""
    from valuegate.edge.spool import SpoolError

    plc = Plc()
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port)]))
    try:
        async with EdgeAgent(config) as first:
            with pytest.raises(SpoolError) as caught:
                async with EdgeAgent(config):
                    pytest.fail("a second agent started on the same state folder")
            assert str(caught.value) == (
                f"another agent (pid {os.getpid()}) uses the state folder {tmp_path / 'state'}; stop it, or give this agent its own state_dir"
            )
            assert first.spool.spool is not None
        # Once the first agent has stopped, the folder is free again.
        async with EdgeAgent(config):
            pass
    finally:
        plc.close()


async def test_health_names_device_connections(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """/healthz lists each device's connection; a PLC that goes down shows there but leaves the report ok."""
    plc = Plc()
    config = load_config(agent_config(tmp_path, mosquitto.port, [device_settings(plc.server.port)]))
    closed = False
    try:
        async with EdgeAgent(config) as agent, running(agent):
            assert await wait_until(lambda: agent.health()["devices_connected"] == {DEVICE: True}, 20), agent.health()
            assert await wait_until(lambda: agent.health()["ok"], 20), agent.health()
            await asyncio.to_thread(plc.close)
            closed = True
            assert await wait_until(lambda: agent.health()["devices_connected"] == {DEVICE: False}, 20), agent.health()
            assert agent.health()["ok"] is True
    finally:
        if not closed:
            plc.close()


async def test_opcua_on_gateway_time_moves_on_without_changes(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A server sends values only when they change: on gateway time the agent still moves the machine's time on, so minutes close."""
    from asyncua import ua

    from tests.adapters.servers import UaServer, write_tag_map

    tag_map = write_tag_map(tmp_path, "cell", "opcua", [{"name": "state", "node": "nsu=urn:valuegate:test:line;s=Line/state"}])
    async with UaServer(free_port(), {"state": ua.Variant(1, ua.VariantType.Int32)}) as server:
        # A 3 s session gives keep-alives every second: the machine's time follows the server's responses, not the gateway's clock alone.
        device = {"protocol": "opcua", "id": "cell", "endpoint": server.endpoint, "tag_map": str(tag_map), "publishing_interval_ms": 50,
                  "session_timeout_ms": 3000, "reconnect_min_ms": 50, "reconnect_max_ms": 200}
        path = write_config(tmp_path, mosquitto.port, devices=[device])
        keys.create_key(tmp_path / "state" / "keys")
        watch = SpoolWatch(tmp_path / "state" / "spool.db")
        async with EdgeAgent(load_config(path)) as agent, running(agent):
            assert await wait_until(lambda: watch.machine_watermark("cell") > 0, 20)
            first = watch.machine_watermark("cell")
            await asyncio.sleep(6)
            later = watch.machine_watermark("cell")
    # The state never changed after the first notification, yet the watermark followed the server's keep-alive responses.
    assert later - first >= 3_000
    assert later <= time.time() * 1000
