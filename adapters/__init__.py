"""PLC adapters: OPC UA and Modbus TCP clients, value decoding and tag maps."""
