"""Fault specifications for the simulators: parsed from ``KIND[:key=value,...]`` and checked per protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("FaultSpec", "FaultError", "parse_fault", "MODBUS_FAULTS", "OPCUA_FAULTS", "FAULT_HELP")


class FaultError(ValueError):
    """A fault specification is invalid; ``spec`` is the text as given."""

    def __init__(self, spec: str, message: str) -> None:
        self.spec = spec
        super().__init__(f"fault {spec!r}: {message}")


# Options every fault takes: `at` (real seconds after the replay starts) and `for` (real seconds it lasts).
_COMMON = {"at": float}
# kind -> (options with their types, default duration in real seconds or None for one-shot faults, help)
_KINDS: dict[str, tuple[dict[str, type], float | None, str]] = {
    "exception": (
        {"start": int, "count": int, "code": int, "for": float},
        float("inf"),
        "Modbus: requests touching holding registers start..start+count-1 get exception `code` (default 2, illegal data address)",
    ),
    "timeout": ({"for": float}, 5.0, "no response for `for` seconds, so clients time out (OPC UA: Read and Write requests)"),
    "slow": ({"delay_ms": int, "for": float}, 10.0, "every response `delay_ms` late for `for` seconds (OPC UA: Read and Write requests)"),
    "drop": ({}, None, "close every client connection"),
    "server_restart": ({"down": float}, None, "stop the server, stay down `down` seconds (default 1), listen again on the same port"),
    "plc_restart": (
        {"down": float},
        None,
        "the PLC reboots: server down `down` seconds, then counters and the state-change counter start again from 0",
    ),
    "counter_wrap": ({"margin": int}, None, "the part counter jumps to `margin` (default 5) below its wrap, so it wraps soon"),
    "counter_reset": ({}, None, "the part counter is reset to 0"),
    "clock_step": (
        {"by": float},
        None,
        "the PLC clock shows `by` seconds of recorded time more than the recording, negative for less, until the next "
        "clock_step (by=0 sets it right); over Modbus the clock and state_since registers, over OPC UA every SourceTimestamp "
        "and Machine/Clock",
    ),
    "bad": (
        {"node": str, "status": str, "for": float},
        5.0,
        "OPC UA: variables (`node`, default all) report a Bad status (default BadSensorFailure) for `for` seconds",
    ),
    "uncertain": (
        {"node": str, "status": str, "for": float},
        5.0,
        "OPC UA: variables report an Uncertain status (default UncertainLastUsableValue) for `for` seconds",
    ),
}

MODBUS_FAULTS = frozenset(("exception", "timeout", "slow", "drop", "server_restart", "plc_restart", "counter_wrap", "counter_reset", "clock_step"))
OPCUA_FAULTS = frozenset(
    ("bad", "uncertain", "timeout", "slow", "drop", "server_restart", "plc_restart", "counter_wrap", "counter_reset", "clock_step")
)
FAULT_HELP = "\n".join(f"{kind}: {text}" for kind, (_, _, text) in _KINDS.items())


@dataclass(frozen=True)
class FaultSpec:
    """One fault: its kind, when it starts (real seconds after the replay starts), how long it lasts and its options."""

    kind: str
    at_s: float | None = None
    duration_s: float | None = None
    options: dict[str, object] = field(default_factory=dict)
    text: str = ""

    def option(self, name: str, default: object) -> object:
        return self.options.get(name, default)


def parse_fault(text: str, *, protocol: str | None = None) -> FaultSpec:
    """Parse ``KIND[:key=value,...]``; with ``protocol`` (modbus or opcua), reject kinds it cannot serve."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip()
    if kind not in _KINDS:
        raise FaultError(text, f"unknown fault kind {kind!r}; choose one of {', '.join(_KINDS)}")
    allowed, default_duration, _ = _KINDS[kind]
    supported = {"modbus": MODBUS_FAULTS, "opcua": OPCUA_FAULTS}.get(protocol or "")
    if supported is not None and kind not in supported:
        raise FaultError(text, f"{kind!r} is not available over {protocol}; choose one of {', '.join(sorted(supported))}")

    options: dict[str, object] = {}
    types = {**_COMMON, **allowed}
    for part in filter(None, (piece.strip() for piece in rest.split(","))):
        name, equals, raw = part.partition("=")
        name = name.strip()
        if not equals:
            raise FaultError(text, f"option {part!r} needs a value: write {name}=VALUE")
        if name not in types:
            raise FaultError(text, f"unknown option {name!r} for {kind}; allowed: {', '.join(types) or 'none'}")
        try:
            value = types[name](raw.strip())
        except ValueError:
            raise FaultError(text, f"{name}={raw.strip()!r} is not a valid {types[name].__name__}") from None
        if isinstance(value, (int, float)) and value < 0 and name != "by":
            raise FaultError(text, f"{name}={value} must be 0 or more")
        options[name] = value

    if kind == "clock_step" and "by" not in options:
        raise FaultError(text, "clock_step needs by=SECONDS (negative sets the clock back), e.g. clock_step:by=7200")
    if kind == "exception" and ("start" not in options or "count" not in options):
        raise FaultError(text, "exception needs start=ADDRESS and count=N, e.g. exception:start=10,count=2")
    if kind == "exception" and options.get("count") == 0:
        raise FaultError(text, "count=0 covers no register; use count=1 or more")
    if kind == "slow" and "delay_ms" not in options:
        options["delay_ms"] = 500
    if kind in ("bad", "uncertain"):
        options["status"] = _status_name(text, kind, str(options.get("status", _DEFAULT_STATUS[kind])))
    at = options.pop("at", None)
    duration = options.pop("for", default_duration)
    return FaultSpec(kind, at_s=at, duration_s=duration, options=options, text=text)


_DEFAULT_STATUS = {"bad": "BadSensorFailure", "uncertain": "UncertainLastUsableValue"}


def _status_name(text: str, kind: str, name: str) -> str:
    """Check that ``name`` is an OPC UA status code of severity ``kind``."""
    from asyncua import ua

    code = getattr(ua.StatusCodes, name, None)
    if not isinstance(code, int):
        raise FaultError(text, f"status {name!r} is not an OPC UA status code name; use e.g. {_DEFAULT_STATUS[kind]}")
    status = ua.StatusCode(code)
    severity = "good"
    if status.is_bad():
        severity = "bad"
    elif status.is_uncertain():
        severity = "uncertain"
    if severity != kind:
        raise FaultError(text, f"status {name!r} is {severity}, not {kind}; choose a {kind} status code such as {_DEFAULT_STATUS[kind]}")
    return name
