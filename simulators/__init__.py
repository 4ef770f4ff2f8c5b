"""PLC simulators that replay recorded production logs or synthetic lines over OPC UA and Modbus TCP.

The classes load pymodbus, asyncua and numpy, so they are imported on first
use: importing the package (as the command line does) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = (
    "BottlingModbusSimulator",
    "ModbusLineSimulator",
    "MtconnectOpcUaSimulator",
    "SyntheticScenario",
    "generate_line",
    "build_simulator",
    "SimulatorOptions",
    "parse_fault",
)

_HOMES = {
    "BottlingModbusSimulator": "modbus_line",
    "ModbusLineSimulator": "modbus_line",
    "MtconnectOpcUaSimulator": "mtconnect_opcua",
    "SyntheticScenario": "synthetic",
    "generate_line": "synthetic",
    "build_simulator": "scenarios",
    "SimulatorOptions": "scenarios",
    "parse_fault": "faults",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
