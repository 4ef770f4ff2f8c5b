"""Lifecycle shared by the simulators: server start and stop, the replay task, scheduled faults, pause and done."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from .faults import FaultSpec
from .replay import ReplayClock

__all__ = ("ReplayService",)


class ReplayService:
    """Base of the simulators: subclasses serve values and implement :meth:`inject`.

    With ``paused=True`` the server starts but recorded time stays at the
    start until :meth:`resume`, so that a client can connect and subscribe
    before the first change. With ``wait_for_client=True`` the replay
    resumes by itself once a client has read the served values (Modbus) or
    read or subscribed to them (OPC UA).
    """

    clock: ReplayClock
    faults: list[FaultSpec]

    def __init__(self, *, paused: bool = False, wait_for_client: bool = False) -> None:
        self.finished = asyncio.Event()
        self.wait_for_client = wait_for_client
        self._resumed = asyncio.Event()
        if not paused and not wait_for_client:
            self._resumed.set()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._fault_tasks: list[tuple[FaultSpec, asyncio.Task[None]]] = []
        self._log: Any = structlog.get_logger("valuegate.simulators")

    @property
    def now_ms(self) -> int:
        """Recorded time (UTC epoch ms) the PLC clock shows now."""
        return self.clock.now_ms

    def resume(self) -> None:
        """Start the replay of a simulator created with ``paused=True`` or ``wait_for_client=True``."""
        self._resumed.set()

    @property
    def started(self) -> bool:
        """Whether the replay has started (it may since have finished)."""
        return self._resumed.is_set()

    async def wait_started(self) -> None:
        """Wait until the replay starts."""
        await self._resumed.wait()

    async def inject(self, fault: FaultSpec | str) -> None:
        raise NotImplementedError

    async def _start_server(self) -> None:
        raise NotImplementedError

    async def _stop_server(self) -> None:
        raise NotImplementedError

    async def _apply(self, now_ms: int) -> None:
        raise NotImplementedError

    async def _mark_done(self) -> None:
        raise NotImplementedError

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    def _reads(self) -> int:
        """Return how many client reads the server has answered; read-paced replay needs it."""
        raise NotImplementedError

    def _client_arrived(self) -> asyncio.Event:
        """Return the event the server sets when a client first reads or subscribes to the served values."""
        raise NotImplementedError

    async def _resume_on_client(self) -> None:
        await self._client_arrived().wait()
        if not self._resumed.is_set():
            self._log.info("client_arrived_replay_starting", start_ms=self.clock.start_ms)
            self.resume()

    async def _replay(self) -> None:
        await self._resumed.wait()
        reads = self._reads if self.clock.pacing.hold_until_read else None
        await self.clock.run(self._apply, stop=self._stopping, reads=reads)
        if not self._stopping.is_set():
            await self._mark_done()
            self.finished.set()
            self._log.info("replay_done", end_ms=self.clock.end_ms)

    async def _scheduled(self, spec: FaultSpec) -> None:
        await self._resumed.wait()
        await asyncio.sleep(spec.at_s or 0.0)
        try:
            await self.inject(spec)
        except (ValueError, OSError) as exc:
            self._log.error("fault_failed", fault=spec.text or spec.kind, error=str(exc))

    async def start(self) -> None:
        """Serve the start state, then run the replay and every scheduled fault as tasks."""
        await self._apply(self.clock.start_ms)
        await self._start_server()
        if self.wait_for_client:
            self._spawn(self._resume_on_client(), "wait-for-client")
        self._spawn(self._replay(), "replay")
        for spec in self.faults:
            self._spawn(self._scheduled(spec), f"fault-{spec.kind}")
            self._fault_tasks.append((spec, self._tasks[-1]))

    def unapplied_faults(self) -> list[FaultSpec]:
        """Return the scheduled faults whose time has not come yet (or that were still being applied)."""
        return [spec for spec, task in self._fault_tasks if not task.done()]

    async def stop(self) -> None:
        """Cancel the replay and fault tasks and stop the server; safe to call twice."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_server()

    async def wait_done(self, timeout_s: float | None = None) -> None:
        """Wait until the replay has reached its end (``finished`` is set)."""
        await asyncio.wait_for(self.finished.wait(), timeout_s)

    async def __aenter__(self) -> Any:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
