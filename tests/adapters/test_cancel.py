"""Device streams stop when cancelled, even when the cancel was swallowed inside a connect that then failed.

Python 3.11's ``asyncio.wait_for`` returns normally when a cancel arrives
just as the awaited operation completes; the task keeps only a pending
cancellation count. Both client libraries connect through it, so a connect
can swallow the cancel and then fail on its next request. The stream must
see the pending cancel before it sleeps and retries.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from valuegate.adapters import modbus
from valuegate.adapters.backoff import sleep_unless_cancelled
from valuegate.adapters.devices import open_device
from valuegate.services import free_port

from .servers import tag_map
from .test_backoff import modbus_config, two_registers
from .test_opcua_timeouts import config as opcua_config
from .test_opcua_timeouts import state_tag


class SwallowingConnect:
    """A first connect that waits, swallows the cancel it gets, then fails as a timed-out request would."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure
        self.entered = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        if self.calls > 1:
            await asyncio.sleep(30)  # later connects let a cancel through
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # what wait_for does when the response arrives with the cancel
        raise self.failure


async def stop_stream(client: object, connect: SwallowingConnect) -> None:
    async def read() -> None:
        async for _ in client.stream():
            pass

    reader = asyncio.create_task(read())
    await asyncio.wait_for(connect.entered.wait(), 5)
    reader.cancel()
    done, _ = await asyncio.wait([reader], timeout=3)
    if not done:
        reader.cancel()  # the second cancel reaches the second, un-swallowing connect
        await asyncio.gather(reader, return_exceptions=True)
    assert done, f"the stream went on after the cancel and connected {connect.calls} times"
    assert reader.cancelled()
    assert connect.calls == 1


async def test_opcua_stream_stops_after_swallowed_cancel(tmp_path: Path) -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    async with open_device(opcua_config(endpoint), tag_map(tmp_path, "opcua", "opcua", state_tag())) as client:
        connect = SwallowingConnect(TimeoutError())
        client._connect = connect
        await stop_stream(client, connect)


async def test_modbus_stream_stops_after_swallowed_cancel(tmp_path: Path) -> None:
    async with open_device(modbus_config(free_port()), tag_map(tmp_path, "modbus", "modbus", two_registers())) as client:
        connect = SwallowingConnect(modbus._Disconnected("timeouts", "no response"))
        client._connect = connect
        await stop_stream(client, connect)


async def test_sleep_raises_on_pending_cancel() -> None:
    async def swallow_then_sleep() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        await sleep_unless_cancelled(30)
        return "slept"

    task = asyncio.create_task(swallow_then_sleep())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
