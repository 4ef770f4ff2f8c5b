"""PLC simulators that replay recorded production logs over OPC UA and Modbus TCP."""
