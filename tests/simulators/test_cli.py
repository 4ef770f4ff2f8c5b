"""`valuegate simulate`: option errors, and a real run read by a Modbus client with a fault typed on stdin."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from typer.testing import CliRunner

from valuegate.cli import app


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["melt"], "unknown source 'melt'"),
        (["mazak03", "--protocol", "modbus"], "mazak03 is served over opcua, not 'modbus'"),
        (["bottling", "--speed", "0"], "must be positive recorded seconds"),
        (["bottling", "--speed", "inf"], "inf must be positive recorded seconds per real second, at most 1e+09"),
        (["mazak03", "--speed", "1e308"], "1e+308 must be positive recorded seconds per real second, at most 1e+09"),
        (["bottling", "--speed", "nan"], "nan must be positive recorded seconds"),
        (["bottling", "--days", "0"], "must be 1 or more"),
        (["bottling", "--start", "22-07-2022"], "is not a date; write YYYY-MM-DD"),
        (["bottling", "--fault", "bad"], "'bad' is not available over modbus"),
        (["bottling", "--fault", "exception:start=1"], "exception needs start=ADDRESS and count=N"),
        (["synthetic", "--protocol", "opcua", "--tag-map", "x.yaml"], "a tag map sets a Modbus layout"),
        (["bottling", "--port", "70000"], "70000 is not a TCP port"),
        (["bottling", "--start", "2023-05-01"], "no production day between 2023-05-01 and the last day"),
        (["bottling", "--counter-offset", "-1"], "-1 is negative; the part counter starts at 0 or more"),
        (["bottling", "--counter-offset", "65536"], "counter offset 65536 does not fit the 16-bit part counter 'containers'; choose 0..65535"),
        (["bottling", "--protocol", "opcua", "--counter-offset", "2147483648"], "does not fit the Int32 part counter"),
        (["mazak03", "--counter-offset", "5"], "mazak03 over opcua has no part counter offset"),
        (["mazak03", "--hold-until-read"], "works over Modbus only"),
    ],
)
def test_bad_options_rejected(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *arguments])
    assert result.exit_code == 2
    assert message in _unboxed(result.output)


def _unboxed(output: str) -> str:
    """Return the output without rich's box drawing and line wrapping."""
    return " ".join(output.translate({ord(char): " " for char in "│╭╮╰╯─"}).split())


def test_slice_outside_recording_fails() -> None:
    result = CliRunner().invoke(app, ["simulate", "bottling", "--start", "2021-01-01", "--end", "2021-01-31"])
    assert result.exit_code == 2
    assert "no production day between 2021-01-01 and 2021-01-31" in _unboxed(result.output)
    assert "the recording has days from 2022-07-22 to 2023-02-10" in _unboxed(result.output)


@pytest.mark.parametrize(("source", "protocol"), [("bottling", "Modbus TCP"), ("mazak03", "OPC UA")])
def test_listen_failure_is_one_line(source: str, protocol: str) -> None:
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", source, "--days", "1"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run([*command, "--port", str(port)], capture_output=True, text=True, timeout=60)
    # 192.0.2.1 (TEST-NET-1) is assigned to no interface here; binding to it fails without sending anything.
    foreign = subprocess.run([*command, "--host", "192.0.2.1"], capture_output=True, text=True, timeout=60)
    advice = "choose a free port (0 picks one) and an address of this machine, such as 127.0.0.1"
    for result, where, reason in ((taken, f"127.0.0.1:{port}", "Address already in use"),
                                  (foreign, "192.0.2.1:0", "Cannot assign requested address")):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.splitlines() == [f"error: cannot listen on {where} for {protocol}: {reason}; {advice}"]


def test_list_and_write_tag_map(tmp_path: Path) -> None:
    listed = CliRunner().invoke(app, ["simulate", "--list"])
    assert listed.exit_code == 0
    assert "synthetic: modbus, opcua" in listed.output
    faults = CliRunner().invoke(app, ["simulate", "--list-faults"])
    assert "plc_restart:" in faults.output
    target = tmp_path / "synthetic.yaml"
    written = CliRunner().invoke(app, ["simulate", "--write-tag-map", str(target)])
    assert written.exit_code == 0
    assert "name: synthetic-filler-modbus" in target.read_text(encoding="utf-8")


async def test_serves_until_done_and_takes_stdin_faults() -> None:
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "valuegate"), "simulate", "bottling", "--days", "1", "--speed", "40000", "--linger", "1.5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        port = None
        assert process.stdout is not None and process.stdin is not None
        for line in process.stdout:
            found = re.search(r"over Modbus TCP on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        assert await client.connect()
        assert not (await client.read_holding_registers(0, count=12)).isError()

        process.stdin.write("exception:start=0,count=1\n")
        process.stdin.flush()
        for _ in range(50):
            if (await client.read_holding_registers(0, count=1)).isError():
                break
            await asyncio.sleep(0.05)
        assert (await client.read_holding_registers(0, count=1)).exception_code == 0x02
        client.close()

        # The 8.8-hour production window takes about 0.8 s at this speed; the idle hours are jumped over.
        output = await asyncio.wait_for(asyncio.to_thread(process.stdout.read), timeout=60)
        assert process.wait(timeout=10) == 0
        assert "fault applied: exception:start=0,count=1" in output
        assert "replay done" in output
        assert "[info     ] replay_done" in output
        assert "[debug" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_fault_after_replay_is_reported() -> None:
    """A fault scheduled after the command exits gets a warning at start and a not-applied line at the end."""
    command = [
        str(Path(sys.executable).parent / "valuegate"), "simulate", "bottling", "--days", "1", "--speed", "40000", "--linger", "0.5",
        "--fault", "timeout:at=30,for=2", "--fault", "drop:at=0.2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    expected = (r"warning: fault timeout:at=30,for=2 is scheduled at 30 s, but the replay takes about (\d\.\d) s and the command "
                r"exits 0\.5 s after it \(--linger\), so the fault will not be applied; lower at= or raise --linger")
    matched = re.fullmatch(expected, warnings[0])
    assert matched, warnings[0]
    # The 8.8-hour production window takes about 0.8 s at this speed.
    assert 0.5 <= float(matched.group(1)) <= 1.5
    not_applied = [line for line in result.stderr.splitlines() if line.startswith("fault not applied:")]
    assert not_applied == ["fault not applied: timeout:at=30,for=2 was scheduled at 30 s, after the command stopped"]
    assert "drop:at=0.2" not in result.stderr, "a fault within the replay gets no warning"
    logged = result.stdout + result.stderr
    assert "fault_injected" in logged
    assert "fault=drop" in logged
    assert "fault=timeout" not in logged


def test_log_events_go_to_stderr() -> None:
    """Standard output carries only the command's own lines; every structlog event goes to standard error."""
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", "bottling", "--days", "1", "--speed", "864000", "--linger", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    events = [line for line in result.stdout.splitlines() if re.search(r"\[(debug|info|warning|error) *\]", line)]
    assert events == []
    assert result.stdout.splitlines()[0].startswith("serving bottling over Modbus TCP on 127.0.0.1:")
    for event in ("simulator_started", "modbus_server_started", "replay_done"):
        assert event in result.stderr, event


def test_sigterm_stops_like_ctrl_c() -> None:
    """SIGTERM closes the servers and logs their stop, as Ctrl-C does, and the command exits 0."""
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", "mazak03", "--port", "0", "--speed", "60"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().startswith("serving mazak03 over OPC UA at opc.tcp://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "stopped"
    assert "opcua_server_stopped" in err


def test_ipv6_loopback_endpoint_bracketed() -> None:
    """An IPv6 host goes into the OPC UA endpoint URL in brackets, and the server listens there."""
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", "mazak03", "--host", "::1", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("serving mazak03 over OPC UA at opc.tcp://[::1]:"), first + process.stderr.read()
        port = int(first.split("]:", 1)[1].split("/", 1)[0])
        with socket.create_connection(("::1", port), timeout=5):
            pass
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_tag_map_from_shipped_folder() -> None:
    """--tag-map takes a path in the shipped maps folder, as an edge configuration does."""
    command = [str(Path(sys.executable).parent / "valuegate"), "simulate", "synthetic", "--tag-map", "generic/filler-modbus.yaml",
               "--days", "1", "--speed", "864000", "--linger", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "tag_map=generic-filler-modbus" in result.stderr
