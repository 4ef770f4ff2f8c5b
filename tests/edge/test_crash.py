"""The agent process killed with SIGKILL at seeded random moments of a 2,000-voucher replay, delivering to the product's ingest.

A pymodbus server (the simulators' RegisterServer) plays the bottling
filler, one PLC hour per step. The PLC moves to the next step only once
the agent has committed the current one to its spool, so the replay pauses
while the agent is down and every run reads the same input. Each round
kills the running agent with SIGKILL and starts it again on the same state
folder. The vouchers go through a real Mosquitto to ``IngestWorker`` on
PostgreSQL. At the end PostgreSQL must hold every voucher once, in one
unbroken chain, and the agent's outbox must be empty.

The claims are compared with a replay of the same steps in this process,
with no kill: a clean restart of the normalizer at each sample the killed
agent had committed, which is all a restart can know. A restart marks the
machine offline from its last committed poll until the state the next poll
reports began (see ``Normalizer.resume``), so days without a restart must
also show the PLC pattern's own figures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from valuegate.adapters.samples import Sample
from valuegate.adapters.tagmap import load_tag_map
from valuegate.edge import keys
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.normalize import Normalizer
from valuegate.edge.minutes import MachineInfo
from valuegate.edge.pipeline import Pipeline
from valuegate.edge.protocol.contract import load_contract
from valuegate.edge.protocol.voucher import voucher_hash
from valuegate.edge.spool import Spool
from valuegate.services import MosquittoServer

from .filler import FILLER_MAP, MACHINE, STEP_MS, Plc, SpoolWatch, last_step, registers, write_contract
from .helpers import GATEWAY, SITE, TENANT, write_config
from .realcloud import contiguous_through, register, rejections, stored_documents, worker

pytestmark = [pytest.mark.mosquitto, pytest.mark.postgres, pytest.mark.slow]

# 200 anchors over 10 days rather than fewer anchors over more days: the same 2,000 vouchers from fewer PLC steps.
ANCHORS = 200
REPORTING_DAYS = 10
KILLS = int(os.environ.get("VG_KILLS", 10))
SEED = 20261204
LAST_STEP = last_step(REPORTING_DAYS)
# Claims that name the issuing moment, or the hash of a voucher that contains it, differ between runs.
RUN_SPECIFIC_CLAIMS = ("issued_at", "prev")


def reference_vouchers(folder: Path, contract: Path, restarts: list[int]) -> list[dict[str, Any]]:
    """Replay every step once, in this process, through the agent's normalizer, spool and pipeline; return the vouchers issued.

    After each step whose clock is in ``restarts`` the normalizer starts
    again from the committed watermark, as the agent does at start-up.
    """
    tag_map = load_tag_map(FILLER_MAP)
    keys.create_key(folder / "keys")
    signer = VoucherSigner(folder / "keys", tenant=TENANT, site=SITE, gateway=GATEWAY)
    pipeline = Pipeline([MachineInfo(MACHINE, tag_map, "UTC")], [load_contract(contract)], signer)
    normalizer = Normalizer(MACHINE, tag_map)
    spool = Spool(folder / "spool.db", sample_sync="off")
    vouchers: list[dict[str, Any]] = []
    try:
        for step in range(LAST_STEP + 1):
            values = registers(step)
            clock = values["clock"]
            samples = [Sample("filler", tag, clock, "gateway", clock, value, value, "good") for tag, value in values.items()]
            spool.append([normalizer.feed(samples)])
            if clock in restarts:
                normalizer = Normalizer(MACHINE, tag_map, watermark_ms=spool.progress(MACHINE).watermark_ms)
                resumed = normalizer.resume()
                if resumed.states:
                    spool.append([resumed])
            while True:
                result = pipeline.step(spool, MACHINE, now_ms=time.time_ns() // 1_000_000)
                vouchers += result.vouchers
                if not result.minutes:
                    break
    finally:
        spool.close()
    return vouchers


def plant_date(epoch_ms: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).date().isoformat()


def claims_without_run(voucher: dict[str, Any]) -> dict[str, Any]:
    claims = dict(voucher["credentialSubject"])
    for name in RUN_SPECIFIC_CLAIMS:
        claims.pop(name)
    return claims


def start_agent(config: Path, log: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    command = [str(Path(sys.executable).parent / "valuegate"), "edge", "run", "--config", str(config)]
    with open(log, "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)


async def drive(plc: Plc, watch: SpoolWatch, agent: subprocess.Popen[bytes], *, until_step: int = LAST_STEP, then_s: float = 0.0) -> None:
    """Step the PLC each time the agent has committed the current step, up to ``until_step``, and keep driving ``then_s`` seconds longer."""
    stop_at = None
    while agent.poll() is None:
        if plc.step < LAST_STEP and watch.watermark() >= plc.clock:
            plc.show(plc.step + 1)
        if stop_at is None and plc.step >= until_step:
            stop_at = time.monotonic() + then_s
        if stop_at is not None and time.monotonic() >= stop_at:
            return
        await asyncio.sleep(0.003)


async def wait_for(check, timeout_s: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return bool(await check())


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when the machine has one: fsync costs nothing there, and what a killed process wrote stays in the page cache anyway."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="valuegate-crash-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_sigkill_rounds_lose_nothing(tmp_path: Path, work_dir: Path, mosquitto: MosquittoServer, cloud_dsn: str, numba_cache: Path) -> None:
    contract = write_contract(work_dir, anchors=ANCHORS, reporting_days=REPORTING_DAYS)
    expected = ANCHORS * REPORTING_DAYS
    plc = Plc()
    device = {
        "protocol": "modbus",
        "id": "filler",
        "host": "127.0.0.1",
        "port": plc.server.port,
        "unit_id": 1,
        "tag_map": str(FILLER_MAP),
        "poll_ms": 10,
        "timeout_ms": 500,
        "reconnect_min_ms": 50,
        "reconnect_max_ms": 200,
    }
    config = write_config(work_dir, mosquitto.port, devices=[device], machines=[{"device": "filler", "id": MACHINE}], contracts=[str(contract)])
    state = work_dir / "state"
    key = keys.create_key(state / "keys")
    await register(cloud_dsn, key.verification_method)
    log = tmp_path / "agent.log"
    watch = SpoolWatch(state / "spool.db")
    restarts: list[int] = []
    rng = random.Random(SEED)
    # Each kill comes at a seeded step plus a seeded delay, so that some land while a poll is committed and others while days close and vouchers are signed.
    kill_steps = sorted(rng.sample(range(2, LAST_STEP - 2), KILLS))
    # Reproduction recomputes every voucher from its records; it is not under test here and would compete for the CPU.
    async with worker(cloud_dsn, mosquitto.port, reproduce_interval_s=3600):
        agent = start_agent(config, log, numba_cache)
        try:
            for kill_step in kill_steps:
                # The agent commits at least one poll in every round, so that no kill lands before it has started.
                await drive(plc, watch, agent, until_step=max(kill_step, plc.step + 1), then_s=rng.uniform(0.0, 0.6))
                assert agent.poll() is None, log.read_text()[-3000:]
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(10)
                restarts.append(watch.watermark())
                agent = start_agent(config, log, numba_cache)

            await drive(plc, watch, agent)

            async def delivered() -> bool:
                return await contiguous_through(cloud_dsn) >= expected and watch.outbox_depth() == 0

            assert await wait_for(delivered, 90), (await rejections(cloud_dsn), log.read_text()[-3000:])
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(10) == 0, log.read_text()[-3000:]
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
            plc.close()

    documents = await stored_documents(cloud_dsn)
    assert [doc["credentialSubject"]["seq"] for doc in documents] == list(range(1, expected + 1))
    assert await contiguous_through(cloud_dsn) == expected
    assert await rejections(cloud_dsn) == []
    previous = None
    for document in documents:
        assert document["credentialSubject"]["prev"] == (voucher_hash(previous) if previous else None), document["credentialSubject"]["seq"]
        previous = document

    # Same claims, in the same order, as the replay without kills.
    assert len(restarts) == KILLS
    assert restarts == sorted(set(restarts))
    reference = reference_vouchers(work_dir / "reference", contract, restarts)
    assert len(reference) == expected
    for document, replayed in zip(documents, reference, strict=True):
        assert claims_without_run(document) == claims_without_run(replayed)

    # The values the PLC pattern gives by hand: every minute recorded; 20 of 24 hours producing on a day no restart touched.
    first = dt.date(2026, 1, 3)
    days = {(doc["credentialSubject"]["anchor"], doc["credentialSubject"]["period"]["plant_date"]) for doc in documents}
    assert days == {(f"a{a:02d}", (first + dt.timedelta(days=d)).isoformat()) for a in range(ANCHORS) for d in range(REPORTING_DAYS)}
    touched = {plant_date(clock) for clock in restarts} | {plant_date(clock + STEP_MS) for clock in restarts}
    untouched = 0
    for document in documents:
        claims = document["credentialSubject"]
        assert claims["evidence"]["records"] == 1440
        if claims["period"]["plant_date"] not in touched:
            untouched += 1
            assert claims["reporting"]["run_min"] == 1200
            assert claims["reporting"]["unplanned_downtime_min"] == 240
            assert claims["reporting"]["availability"] == pytest.approx(20 / 24, abs=1e-6)
    assert untouched >= ANCHORS

    assert watch.outbox_depth() == 0
    watch.close()
    assert log.read_text().count('"event": "agent_started"') == KILLS + 1
