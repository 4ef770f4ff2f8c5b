"""The edge agent: device readers, spool writer, pipeline, publisher and housekeeping as one asyncio task group.

Use it as ``async with EdgeAgent(config) as agent: await agent.run()``;
:meth:`EdgeAgent.stop` (the CLI calls it on SIGTERM) drains the spool
writer, lets the pipeline finish its step, publishes ``offline`` on the
status topic and returns within seconds. Start-up goes through an ``AsyncExitStack``, so
a failure part-way closes what was already opened. Reading each machine's
device is in :mod:`.device_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog

from valuegate.adapters.tagmap import load_tag_map

from . import outbox, retention
from .config import EdgeConfig, Machine
from .device_reader import DeviceOpener, DeviceReader, default_opener
from .issuer import VoucherSigner
from .metrics import AgentMetrics, LogLimiter, MetricsServer
from .minutes import MachineInfo
from .normalize import Normalizer
from .pipeline import Pipeline
from .publish import Publisher
from .rejection_notice import load_notice
from .spool import Spool, SpoolError, SpoolThread
from .spool_rows import MachineBatch

__all__ = ("EdgeAgent", "DeviceOpener")

log = structlog.get_logger("valuegate.edge.agent")


def _lock_state_dir(state: Path) -> int:
    """Take the state folder's exclusive lock for this process and return its descriptor; raise SpoolError when another agent has it.

    Two agents on one spool would read the same PLCs twice and take the MQTT session from each other.
    The kernel drops the lock when the process ends, also after a kill -9, so no stale lock is left.
    """
    path = state / "agent.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise SpoolError(
            f"another agent (pid {holder}) uses the state folder {state}; stop it, or give this agent its own state_dir", path=path
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
    return descriptor


_HOUSEKEEPING_S = 5.0
_WRITER_BATCHES = 256


class EdgeAgent:
    """One gateway's agent; ``open_device`` can be replaced to feed samples without a PLC."""

    def __init__(self, config: EdgeConfig, *, open_device: DeviceOpener | None = None, machines: list[Machine] | None = None) -> None:
        self.config = config
        self.instance = uuid.uuid4().hex
        self.metrics = AgentMetrics()
        self._open_device = open_device or default_opener
        self._machines = machines
        self._stack = AsyncExitStack()
        self._stopping = asyncio.Event()
        self._work = asyncio.Event()
        self._dirty: set[str] = set()
        self._queue: asyncio.Queue[MachineBatch | None] = asyncio.Queue(maxsize=10_000)
        self._normalizers: dict[str, Normalizer] = {}
        self._device_tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._log = log.bind(gateway=config.gateway)
        self._limit = LogLimiter()
        self._rejected: dict[str, int] = {}
        self.spool: SpoolThread
        self.outbox_spool: SpoolThread
        self.publisher: Publisher
        self.pipeline: Pipeline
        self.signer: VoucherSigner
        self.metrics_server: MetricsServer | None = None

    # -- start and stop -----------------------------------------------------

    async def __aenter__(self) -> EdgeAgent:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._log.info("agent_stopped", instance=self.instance)

    async def _start(self) -> None:
        from valuegate.edge import kernels
        from valuegate.edge.protocol.contract import load_contract

        config = self.config
        state = config.state_path
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = _lock_state_dir(state)
        self._stack.callback(os.close, lock)
        self._log.info("agent_starting", instance=self.instance, state_dir=str(state), client_id=config.client_id)

        machines = self._machines if self._machines is not None else config.machine_list()
        infos = [MachineInfo(machine.id, load_tag_map(machine.device.tag_map), machine.time_zone) for machine in machines]
        self._devices = {machine.id: machine for machine in machines}
        contracts = [load_contract(config.resolve(name)) for name in config.contracts]
        self.signer = VoucherSigner(state / "keys", tenant=config.tenant, site=config.site, gateway=config.gateway)
        seconds = await asyncio.to_thread(kernels.warm_up)
        self._log.info("kernels_ready", seconds=round(sum(seconds.values()), 3))

        # Two connections on two threads: the pipeline's long computations must not hold up acks and publishing.
        wal_limit = retention.wal_limit(int(config.spool.max_mb * 1024 * 1024))
        self.spool = await self._stack.enter_async_context(SpoolThread(state / "spool.db", sample_sync=config.spool.sample_sync, wal_limit_bytes=wal_limit))
        self.outbox_spool = await self._stack.enter_async_context(SpoolThread(state / "spool.db", wal_limit_bytes=wal_limit))
        self.pipeline = Pipeline(infos, contracts, self.signer)
        for info in infos:
            progress = await self.spool.call(Spool.progress, info.id)
            normalizer = Normalizer(info.id, info.tag_map, watermark_ms=progress.watermark_ms)
            self._normalizers[info.id] = normalizer
            resumed = normalizer.resume()
            if resumed.states:
                await self.spool.call(Spool.append, [resumed])
            self._dirty.add(info.id)
        self.publisher = Publisher(
            config,
            self.outbox_spool,
            self.metrics,
            instance=self.instance,
            telemetry_key=lambda: self.signer.key.private_key,
            status_extra=self._status_keys,
            time_zones={info.id: info.time_zone for info in infos},
        )
        # The notice the cloud sent before a restart, shown on /healthz until it ages out.
        self.publisher.cloud_rejection.restore(await self.outbox_spool.call(load_notice))

        if config.metrics.port:
            server = MetricsServer(self.metrics, self.health, host=config.metrics.host, port=config.metrics.port)
            self._stack.callback(server.stop)
            self.metrics_server = await asyncio.to_thread(server.start)
            self._log.info("metrics_serving", host=config.metrics.host, port=self.metrics_server.port)
        await self._refresh_gauges()
        self._log.info("agent_started", machines=len(infos), anchors=len(self.pipeline.plans), pid=os.getpid())

    def _status_keys(self) -> dict[str, Any]:
        return {"key": self.signer.key.verification_method, "rotations": self.signer.rotations()}

    def stop(self) -> None:
        """Ask :meth:`run` to drain and return; safe to call from a signal handler and twice."""
        if not self._stopping.is_set():
            self._log.info("agent_stopping")
        self._stopping.set()
        self._work.set()
        for task in self._device_tasks:
            task.cancel()

    async def run(self) -> None:
        """Run every task until :meth:`stop`."""
        async with asyncio.TaskGroup() as group:
            for machine_id, machine in self._devices.items():
                reader = DeviceReader(
                    machine_id,
                    machine.device,
                    self._normalizers[machine_id],
                    open_device=self._open_device,
                    metrics=self.metrics,
                    limit=self._limit,
                    log=self._log,
                    stopping=self._stopping,
                    enqueue=self._enqueue,
                )
                self._device_tasks.append(group.create_task(reader.run(), name=f"device:{machine_id}"))
            writer = group.create_task(self._write_spool(), name="spool-writer")
            group.create_task(self._run_pipeline(writer), name="pipeline")
            group.create_task(self.publisher.run(), name="publisher")
            group.create_task(self._housekeeping(), name="housekeeping")
            if self._stopping.is_set():
                self.stop()

    # -- spool writer and pipeline ---------------------------------------

    async def _enqueue(self, batch: MachineBatch) -> None:
        if batch.states or batch.counters or batch.watermark_ms is not None:
            await self._queue.put(batch)

    async def _write_spool(self) -> None:
        """Commit queued batches, several per transaction, then wake the pipeline."""
        try:
            await self._write_batches()
        finally:
            self._work.set()

    async def _write_batches(self) -> None:
        while True:
            first = await self._next_batch()
            if first is None:
                return
            batches = [first]
            while len(batches) < _WRITER_BATCHES and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    self._queue.put_nowait(None)
                    break
                batches.append(item)
            self._busy += 1  # drained() must not see an empty queue while these batches are on their way to disk
            try:
                batches = await self._append(batches)
            finally:
                self._busy -= 1
            for batch in batches:
                self.metrics.samples_spooled.labels(batch.machine).inc(len(batch.states) + len(batch.counters))
                self._dirty.add(batch.machine)
            self._work.set()

    async def _append(self, batches: list[MachineBatch]) -> list[MachineBatch]:
        """Commit ``batches`` and return those stored; a batch whose values SQLite cannot bind is dropped and logged."""
        try:
            await self.spool.call(Spool.append, batches)
            stored = batches
        except (OverflowError, TypeError, ValueError, sqlite3.InterfaceError):
            # Spool.append rejects integers it cannot store; anything else it cannot bind fails the whole
            # transaction, so commit batch by batch and drop only the ones that fail.
            stored = []
            for batch in batches:
                try:
                    await self.spool.call(Spool.append, [batch])
                    stored.append(batch)
                except (OverflowError, TypeError, ValueError, sqlite3.InterfaceError) as exc:
                    self.metrics.spool_rejected.labels(batch.machine).inc(len(batch.states) + len(batch.counters) + 1)
                    self._log.error("spool_batch_rejected", machine=batch.machine, error=repr(exc), states=len(batch.states),
                                    counters=len(batch.counters), watermark_ms=batch.watermark_ms)
        rejected = self.spool.spool.rejected if self.spool.spool is not None else {}
        for machine, total in rejected.items():
            if total > self._rejected.get(machine, 0):
                self.metrics.spool_rejected.labels(machine).inc(total - self._rejected.get(machine, 0))
                self._rejected[machine] = total
        return stored

    async def _next_batch(self) -> MachineBatch | None:
        if self._stopping.is_set() and self._queue.empty():
            return None
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            stopper.cancel()
            return getter.result()
        getter.cancel()
        return None if self._queue.empty() else self._queue.get_nowait()

    async def _run_pipeline(self, writer: asyncio.Task[None]) -> None:
        key_changes = self.signer.key_changes
        while True:
            await self._work.wait()
            self._work.clear()
            while self._dirty:
                machine_id = self._dirty.pop()
                self._busy += 1
                try:
                    result = await self.spool.call(self.pipeline.step, machine_id, now_ms=time.time_ns() // 1_000_000)
                finally:
                    self._busy -= 1
                if result.minutes:
                    self._dirty.add(machine_id)
                    self.metrics.minutes_summarized.labels(machine_id).inc(result.minutes)
                    self.metrics.counts_left_out.labels(machine_id).inc(result.counts_left_out)
                    self.metrics.counter_glitches.labels(machine_id).inc(result.glitches)
                    self.publisher.notify()
                for plant_date in result.days:
                    self.metrics.days_closed.labels(machine_id).inc()
                    self._log.info("plant_day_closed", machine=machine_id, plant_date=plant_date)
                if self.signer.key_changes != key_changes:
                    key_changes = self.signer.key_changes
                    self.publisher.announce()
                if result.vouchers:
                    self.metrics.vouchers_issued.inc(len(result.vouchers))
                    first, last = result.vouchers[0]["credentialSubject"], result.vouchers[-1]["credentialSubject"]
                    self._log.info("vouchers_issued", count=len(result.vouchers), first_id=first["voucher_id"], last_id=last["voucher_id"])
                if self._stopping.is_set():
                    break
            if self._stopping.is_set() and writer.done():
                self.publisher.stop()
                return

    # -- housekeeping -------------------------------------------------------

    async def _housekeeping(self) -> None:
        while not self._stopping.is_set():
            # asyncio.timeout keeps a cancel that arrives as the wait ends (Python 3.11's wait_for can drop it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HOUSEKEEPING_S):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                await retention.housekeep(self.outbox_spool, self.config.spool, self.metrics, keep=self.pipeline.baseline_spans(), log=self._log, limit=self._limit)
                await self._refresh_gauges()
            except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the agent; the next round retries
                self._log.error("housekeeping_failed", error=repr(exc))

    async def _refresh_gauges(self) -> dict[str, int | None]:
        stats = await self.outbox_spool.call(outbox.outbox_stats)
        self.metrics.outbox_depth.set(stats["depth"] or 0)
        self.metrics.unpublished_records.set(stats["unpublished_records"] or 0)
        oldest = stats["oldest_created_ms"]
        self.metrics.oldest_unacked_age.set(max(0.0, time.time() - oldest / 1000) if oldest else 0.0)
        return stats

    def health(self) -> dict[str, Any]:
        """Return the health report served on ``/healthz``."""
        m = self.metrics
        connected = bool(m.value("valuegate_mqtt_connected"))
        taken_over = self.publisher.taken_over if hasattr(self, "publisher") else False
        repeated = self.publisher.resend_watch.repeated() if hasattr(self, "publisher") else None
        return {
            "ok": connected and not taken_over and not m.value("valuegate_spool_alarm"),
            "gateway": self.config.gateway,
            "instance": self.instance,
            "mqtt_connected": connected,
            "mqtt_session_taken_over": taken_over,
            "outbox_depth": int(m.value("valuegate_outbox_depth")),
            "oldest_unacked_voucher_age_s": m.value("valuegate_oldest_unacked_voucher_age_seconds"),
            "spool_alarm": bool(m.value("valuegate_spool_alarm")),
            # Reported, but not part of "ok": the agent works, and the cause and its fix are on the cloud's side.
            "resend_repeated": repeated.as_dict() if repeated else None,
            "cloud_rejection": self.publisher.cloud_rejection.current() if hasattr(self, "publisher") else None,
            # Reported, but not part of "ok": a PLC that is down loses no data already read, and the agent keeps retrying.
            "devices_connected": {device: bool(m.value("valuegate_device_connected", device=device)) for device in self._device_ids()},
        }

    def _device_ids(self) -> list[str]:
        return sorted(machine.device.id for machine in getattr(self, "_devices", {}).values())

    # -- for the demo and tests ---------------------------------------------

    async def drained(self, *, poll_s: float = 0.1) -> None:
        """Wait until every closed minute is summarized, every voucher acknowledged and every record published."""
        while True:
            if self._queue.empty() and not self._dirty and not self._busy and await self._caught_up():
                stats = await self._refresh_gauges()
                if not stats["depth"] and not stats["unpublished_records"]:
                    return
            await asyncio.sleep(poll_s)

    async def _caught_up(self) -> bool:
        for machine_id in self._normalizers:
            progress = await self.spool.call(Spool.progress, machine_id)
            if progress.watermark_ms // 60_000 * 60_000 > (progress.minutes_done_ms or 0) and progress.minutes_done_ms is not None:
                return False
        return True


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``agent`` in a background task for the block; stop it and wait for it on exit."""
    task = asyncio.create_task(agent.run(), name="edge-agent")
    try:
        yield task
    finally:
        agent.stop()
        await asyncio.wait_for(task, timeout=15)
