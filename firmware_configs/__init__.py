"""Shipped tag maps (YAML) per PLC family and state model."""
