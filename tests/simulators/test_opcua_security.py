"""The OPC UA simulator serves only security policy None with anonymous access, logs that itself, and asyncua has nothing to warn about."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from asyncua import Client, ua

from valuegate.simulators.opcua_server import VariableServer, VariableSpec

# asyncua 2.1 logs these at start when a server offers signed or encrypted endpoints, or user-name log-in, without a certificate.
ASYNCUA_WARNINGS = (
    "No encrypting policy available, password may get transferred in plaintext",
    "Endpoints other than open requested but private key and certificate are not set.",
    "No signing policy available, user certificate cannot get verified",
)
OWN_LINE = "serves security policy None with anonymous access only, for local testing"


async def test_server_offers_none_policy_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncua")
    with structlog.testing.capture_logs() as events:
        async with VariableServer("urn:test:security", "Machine", [VariableSpec("count", ua.VariantType.Int32, 7)]) as server:
            async with Client(server.endpoint) as client:
                endpoints = await client.get_endpoints()
                value = await client.get_node(ua.NodeId("Machine/count", 2)).read_value()

    server_warnings = [record.getMessage() for record in caplog.records if record.name.startswith("asyncua.server")]
    assert server_warnings == []
    assert value == 7
    assert {(endpoint.SecurityPolicyUri, endpoint.SecurityMode) for endpoint in endpoints} == {
        ("http://opcfoundation.org/UA/SecurityPolicy#None", ua.MessageSecurityMode.None_)
    }
    assert [token.TokenType for endpoint in endpoints for token in endpoint.UserIdentityTokens] == [ua.UserTokenType.Anonymous]
    assert [event["detail"] for event in events if event["event"] == "opcua_security_none"] == [OWN_LINE]


def test_simulate_command_shows_own_line_only() -> None:
    """`valuegate simulate --verbose` lets asyncua's warnings through to stderr, so none of them may be emitted at all."""
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", "mazak03", "--days", "1", "--verbose"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        assert process.stderr is not None
        # asyncua warns while the server starts, before the simulator logs its own line, and both write to stderr.
        for line in process.stderr:
            lines.append(line)
            if "opcua_security_none" in line:
                break
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
        lines.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = "".join(lines)
    assert OWN_LINE in stderr
    for warning in ASYNCUA_WARNINGS:
        assert warning not in stderr
