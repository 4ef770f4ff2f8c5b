"""Register layouts for synthetic lines: the synthetic filler tag map, and state codes read from any tag map."""

from __future__ import annotations

import msgspec
import yaml

from valuegate.adapters.tagmap import TagMap

__all__ = ("SYNTHETIC_FILLER_MAP", "synthetic_filler_map", "state_codes")

# The bottling filler layout (registers 0-11) plus two state codes and a reject counter, so that
# a synthetic line can show changeovers, starvation and rejects. An edge reads it with this map;
# `valuegate simulate --write-tag-map FILE` writes it out.
SYNTHETIC_FILLER_MAP = """\
schema: valuegate/tagmap/v1
name: synthetic-filler-modbus
vendor: valuegate simulator (synthetic filler)
description: >
  Line state with a reason code, the time the state began and the PLC
  clock as Unix-epoch milliseconds, 16-bit counters of items made and
  rejected, and a 16-bit state-change counter.
protocol: modbus
tags:
  - {name: state, table: holding_register, address: 0, type: uint16, order: ABCD, role: state_input,
     description: "0 no production scheduled, 1 producing, 2 stopped by a fault, 3 changeover, 4 starved or blocked"}
  - {name: reason, table: holding_register, address: 1, type: uint16, order: ABCD, role: reason,
     description: "101-104 failures, 200 micro-stop, 300 starved or blocked, 400 changeover, 0 none"}
  - {name: state_since, table: holding_register, address: 2, type: uint64, order: ABCD, unit: ms, role: state_since}
  - {name: clock, table: holding_register, address: 6, type: uint64, order: CDAB, unit: ms, role: clock}
  - {name: produced, table: holding_register, address: 10, type: uint16, order: ABCD, unit: items, role: counter}
  - {name: state_changes, table: holding_register, address: 11, type: uint16, order: ABCD, role: state_seq}
  - {name: rejected, table: holding_register, address: 12, type: uint16, order: ABCD, unit: items, role: counter}
states:
  model: vendor-codes
  rules:
    - {when: {state: [1]}, category: running, label: producing}
    - {when: {state: [2]}, category: unplanned_stop, reason_tag: reason, label: stopped by a fault}
    - {when: {state: [3]}, category: changeover, label: changeover}
    - {when: {state: [4]}, category: idle, label: starved or blocked}
    - {when: {state: [0]}, category: planned_stop, label: no production scheduled}
  default: offline
counters:
  - {tag: produced, kind: produced, bits: 16, signed: false, max_rate_per_min: 60}
  - {tag: rejected, kind: reject, bits: 16, signed: false, max_rate_per_min: 60}
time:
  source: plc
  state_since: state_since
  clock: clock
  state_seq: state_changes
ideal_cycle_time_s: 2.7
"""


def synthetic_filler_map() -> TagMap:
    """Return the synthetic filler tag map."""
    return msgspec.convert(yaml.safe_load(SYNTHETIC_FILLER_MAP), TagMap)


def state_codes(tag_map: TagMap) -> dict[str, int]:
    """Return, per category, the first state code the map's rules give it (single state tag maps only)."""
    state_tags = [tag.name for tag in tag_map.modbus_tags if tag.role == "state_input"]
    if len(state_tags) != 1:
        raise ValueError(f"tag map {tag_map.name!r} has {len(state_tags)} state_input tags; a synthetic line needs exactly one")
    codes: dict[str, int] = {}
    for rule in tag_map.states.rules:
        values = rule.when.get(state_tags[0])
        if values and not rule.unless and set(rule.when) == {state_tags[0]}:
            codes.setdefault(rule.category, int(values[0]))
    return codes
