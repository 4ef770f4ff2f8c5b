"""`valuegate edge check-config` and `valuegate keys`: messages, exit codes, and a rotation in the middle of a chain."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
import structlog
import structlog.testing
import yaml
from typer.testing import CliRunner

from valuegate.cli import app
from valuegate.edge.issuer import VoucherSigner
from valuegate.edge.protocol.keyrotation import key_for_seq, verify_rotation
from valuegate.edge.protocol.voucher import verify_voucher, voucher_hash
from valuegate.edge.spool import Spool

from .helpers import issue_synthetic, write_config

FILLER_MAP = "demo/bottling-filler-modbus.yaml"
runner = CliRunner()


def device(**changes: object) -> dict:
    return {"protocol": "modbus", "id": "filler", "host": "127.0.0.1", "port": 5020, "tag_map": FILLER_MAP, **changes}


def test_check_config_ok(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883, devices=[device()], machines=[{"device": "filler", "id": "filler-1"}])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        70000,
        devices=[device(port=0)],
        machines=[{"device": "nope", "time_zone": "Mars/Olympus"}],
        time_zone="Asia/Shangai",
        contracts=["missing.yaml"],
    )
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    output = result.output
    assert f"{path}" in output
    assert "$.mqtt.port: port is out of range (got 70000); allowed: 1..65535" in output
    assert "$.time_zone: unknown IANA time zone (got 'Asia/Shangai')" in output
    assert "$.machines[0].device: no device has this id (got 'nope'); allowed: filler" in output
    assert "$.machines[0].time_zone: unknown IANA time zone (got 'Mars/Olympus')" in output
    assert "$.contracts[0]: contract file not found" in output
    assert "$.devices[0].port: port is outside the TCP range (got 0); allowed: 1..65535" in output
    assert "problem(s) found" in output


def test_check_config_contract_scope(tmp_path: Path) -> None:
    contract = {
        "schema": "valuegate/contract/v1",
        "id": "c-1",
        "tenant": "acme",
        "customer": "Acme",
        "start": "2026-01-01",
        "end": "2026-12-31",
        "anchors": [
            {
                "id": "oee",
                "scope": ["filler-1", "capper-9"],
                "metric": "oee_points",
                "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-10", "min_days": 5},
                "reporting": {"first_date": "2026-01-11", "last_date": "2026-12-31"},
            }
        ],
    }
    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(contract), encoding="utf-8")
    path = write_config(tmp_path, 1883, devices=[device()], machines=[{"device": "filler", "id": "filler-1"}], contracts=["contract.yaml"])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    scope_line = next(number for number, text in enumerate((tmp_path / "contract.yaml").read_text().splitlines(), 1) if text.strip() == "scope:")
    # The line is that of the scope's list, which starts on the line after its key.
    assert f"contract.yaml:{scope_line + 1}: $.anchors[0].scope: no device of this gateway measures these machines of the scope (got 'capper-9'); allowed: filler-1" in result.output


def test_check_config_reports_tag_map_errors(tmp_path: Path) -> None:
    broken = yaml.safe_load((Path(__file__).parents[2] / "firmware_configs" / FILLER_MAP).read_text())
    del broken["tags"][0]["order"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    path = write_config(tmp_path, 1883, devices=[device(tag_map="broken.yaml")])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    assert "broken.yaml" in result.output
    assert "$.tags[0].order" in result.output
    assert "ABCD, CDAB, BADC, DCBA" in result.output


def test_run_refuses_key_readable_by_others(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    assert runner.invoke(app, ["keys", "new", "--config", str(path)]).exit_code == 0
    key = tmp_path / "state" / "keys" / "gateway.key"
    os.chmod(key, 0o644)
    result = runner.invoke(app, ["keys", "export-public", "--config", str(path)])
    assert result.exit_code == 1
    assert f"chmod 600 {key}" in result.output


def test_rotation_mid_chain(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    state = tmp_path / "state"
    created = runner.invoke(app, ["keys", "new", "--config", str(path)])
    first_key = created.stdout.strip()
    signer = VoucherSigner(state / "keys", tenant="acme", site="suzhou", gateway="gw-1")
    spool = Spool(state / "spool.db")
    before = issue_synthetic(spool, signer, 3, first_date="2026-01-01")

    rotated = runner.invoke(app, ["keys", "rotate", "--config", str(path)])
    assert rotated.exit_code == 0, rotated.output
    statement = json.loads(rotated.stdout)
    # The statement goes to standard output alone; the next step goes to standard error.
    assert "the agent signs from seq 4 on with the new key. It publishes this statement in its status when it signs that voucher" in rotated.stderr
    assert "`valuegate cloud admin key-rotate -c cloud.yaml acme gw-1 rotation-statements.json`" in rotated.stderr
    assert verify_rotation(statement).ok
    assert statement["credentialSubject"]["from_seq"] == 4
    assert statement["credentialSubject"]["previous_key"] == first_key

    # The running signer notices the rotation inside its next issuing transaction, and logs the switch.
    with structlog.testing.capture_logs() as logs:
        after = issue_synthetic(spool, signer, 2, first_date="2026-01-10")
    (loaded,) = [entry for entry in logs if entry["event"] == "signing_key_loaded"]
    assert loaded["from_seq"] == 4
    assert loaded["verification_method"] == statement["credentialSubject"]["next_key"]
    chain = before + after
    assert [v["credentialSubject"]["seq"] for v in chain] == [1, 2, 3, 4, 5]
    for previous, current in zip(chain, chain[1:], strict=False):
        assert current["credentialSubject"]["prev"] == voucher_hash(previous)
    exported = json.loads(runner.invoke(app, ["keys", "export-public", "--config", str(path)]).output)
    for voucher in chain:
        check = verify_voucher(voucher)
        assert check.ok
        assert check.verification_method == key_for_seq(first_key, exported["rotations"], voucher["credentialSubject"]["seq"])
    assert {verify_voucher(v).verification_method for v in after} == {exported["verification_method"]}
    assert exported["verification_method"] != first_key


def test_keys_new_names_register_step(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    created = runner.invoke(app, ["keys", "new", "--config", str(path)])
    assert created.exit_code == 0, created.output
    assert f"`valuegate keys export-public -c {path} > gw-1.pub.json`" in created.stderr
    assert "`valuegate cloud admin key-add -c cloud.yaml acme gw-1 gw-1.pub.json`. " in created.stderr
    assert (
        "A site with many gateways can instead list each gateway's file as its `key:` in one plan and run "
        "`valuegate cloud admin apply -c cloud.yaml plan.yaml` (the plan format is in docs/cloud.md)"
    ) in created.stderr
    exported = json.loads(runner.invoke(app, ["keys", "export-public", "--config", str(path)]).stdout)
    assert exported["verification_method"] == created.stdout.strip()
    # Whole seconds, cut down as the agent cuts a voucher's issued_at.
    assert before <= dt.datetime.fromisoformat(exported["created"]) <= dt.datetime.now(dt.UTC)
    assert "." not in exported["created"]


def test_key_commands_need_no_mqtt_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VG_UNSET_PASSWORD", raising=False)
    path = write_config(tmp_path, 1883, mqtt={"username": "gw-1", "password_env": "VG_UNSET_PASSWORD"})
    for command in (["keys", "new"], ["keys", "export-public"], ["keys", "rotate"]):
        result = runner.invoke(app, [*command, "--config", str(path)])
        assert result.exit_code == 0, (command, result.output)
    # check-config runs before the service starts, so there the missing password is a problem, with the file to put it in.
    checked = runner.invoke(app, ["edge", "check-config", str(path)])
    assert checked.exit_code == 1
    assert "$.mqtt.password_env: the environment variable is not set; set it in the service's environment file (/etc/valuegate/edge.env)" in checked.output


def test_keys_new_creates_private_state(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    previous = os.umask(0o022)
    try:
        assert runner.invoke(app, ["keys", "new", "--config", str(path)]).exit_code == 0
        assert runner.invoke(app, ["keys", "rotate", "--config", str(path)]).exit_code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "spool.db").stat().st_mode & 0o077 == 0


def test_lost_key_replaced_after_rotation(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    folder = tmp_path / "state" / "keys"
    assert runner.invoke(app, ["keys", "new", "--config", str(path)]).exit_code == 0
    assert runner.invoke(app, ["keys", "rotate", "--config", str(path)]).exit_code == 0
    statements = (folder / "rotations.json").read_text()
    (folder / "gateway.key").rename(tmp_path / "lost.key")

    refused = runner.invoke(app, ["keys", "new", "--config", str(path)])
    assert refused.exit_code == 1
    assert "`valuegate keys new --replace-lost`" in refused.output
    replaced = runner.invoke(app, ["keys", "new", "--replace-lost", "--config", str(path)])
    assert replaced.exit_code == 0, replaced.output
    new_key = replaced.stdout.strip()
    assert "`valuegate cloud admin key-add -c cloud.yaml acme gw-1 gw-1.pub.json`" in replaced.stderr
    assert "revoke it with `valuegate cloud admin key-revoke`, but only once the cloud acknowledged every voucher signed with it" in replaced.stderr
    (kept,) = folder.glob("rotations.replaced-*.json")
    assert kept.read_text() == statements
    exported = json.loads(runner.invoke(app, ["keys", "export-public", "--config", str(path)]).stdout)
    assert exported["verification_method"] == new_key
    assert exported["rotations"] == []
    assert exported["created"] is not None
    # A working key is replaced by rotation, never by --replace-lost.
    again = runner.invoke(app, ["keys", "new", "--replace-lost", "--config", str(path)])
    assert again.exit_code == 1
    assert "use `valuegate keys rotate` to replace a working key" in again.output


def test_check_config_duplicate_device_id(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883, devices=[device(), device()])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    id_lines = [number for number, text in enumerate(path.read_text().splitlines(), 1) if text.strip() == "id: filler"]
    assert f"{path}:{id_lines[1]}: $.devices[1].id: duplicate device id, first used at devices[0] (got 'filler')" in result.output
    assert "both measure machine" not in result.output
    assert "1 problem(s) found" in result.output


def oee_contract(tmp_path: Path, metric: str) -> str:
    contract = {
        "schema": "valuegate/contract/v1", "id": "c-oee", "tenant": "acme", "customer": "Acme",
        "start": "2026-01-01", "end": "2026-12-31",
        "anchors": [{
            "id": "mazak-oee", "scope": ["mazak-03"], "metric": metric,
            "baseline": {"first_date": "2026-01-01", "last_date": "2026-01-10", "min_days": 5},
            "reporting": {"first_date": "2026-01-11", "last_date": "2026-12-31"},
        }],
    }  # fmt: skip
    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False), encoding="utf-8")
    return "contract.yaml"


def mazak_device() -> dict:
    return {"protocol": "opcua", "id": "cnc", "endpoint": "opc.tcp://127.0.0.1:4840/", "tag_map": "demo/mazak-mtconnect-opcua.yaml"}


def test_check_config_oee_needs_ideal_cycle_time(tmp_path: Path) -> None:
    """The shipped Mazak map has no ideal cycle time, so an OEE anchor on it could never issue a voucher."""
    contract = oee_contract(tmp_path, "oee_points")
    path = write_config(tmp_path, 1883, devices=[mazak_device()], machines=[{"device": "cnc", "id": "mazak-03"}], contracts=[contract])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1, result.output
    metric_line = (tmp_path / contract).read_text().splitlines().index("  metric: oee_points") + 1
    tag_map = Path(__file__).parents[2] / "firmware_configs" / "demo" / "mazak-mtconnect-opcua.yaml"
    assert (
        f"{tmp_path / contract}:{metric_line}: $.anchors[0].metric: contract c-oee, anchor mazak-oee: OEE is undefined for "
        f"machine mazak-03, because its tag map {tag_map} has no ideal_cycle_time_s, so no voucher could ever be issued "
        "(got 'oee_points'); allowed: ideal_cycle_time_s in the tag map and a counter of kind produced or good; "
        "or metric availability_points or unplanned_downtime_rate"
    ) in result.output


def test_check_config_availability_needs_no_cycle_time(tmp_path: Path) -> None:
    contract = oee_contract(tmp_path, "availability_points")
    path = write_config(tmp_path, 1883, devices=[mazak_device()], machines=[{"device": "cnc", "id": "mazak-03"}], contracts=[contract])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output


def test_check_config_oee_needs_part_counter(tmp_path: Path) -> None:
    tag_map = yaml.safe_load((Path(__file__).parents[2] / "firmware_configs" / "demo" / "mazak-mtconnect-opcua.yaml").read_text())
    tag_map["ideal_cycle_time_s"] = 90.0
    tag_map["counters"] = []
    (tmp_path / "no-counter.yaml").write_text(yaml.safe_dump(tag_map, sort_keys=False), encoding="utf-8")
    contract = oee_contract(tmp_path, "oee_points")
    path = write_config(tmp_path, 1883, devices=[{**mazak_device(), "tag_map": "no-counter.yaml"}],
                        machines=[{"device": "cnc", "id": "mazak-03"}], contracts=[contract])  # fmt: skip
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{tmp_path / 'no-counter.yaml'} has no counter of kind produced or good, so no voucher" in result.output
    assert "has no ideal_cycle_time_s" not in result.output


def test_check_config_warns_plc_time_without_clock(tmp_path: Path) -> None:
    """A warning, not a problem: the exit status stays 0 and the map and its line are named."""
    tag_map = yaml.safe_load((Path(__file__).parents[2] / "firmware_configs" / "demo" / "mazak-mtconnect-opcua.yaml").read_text())
    tag_map["tags"] = [tag for tag in tag_map["tags"] if tag["name"] != "clock"]
    del tag_map["time"]["clock"]
    (tmp_path / "no-clock.yaml").write_text(yaml.safe_dump(tag_map, sort_keys=False), encoding="utf-8")
    path = write_config(tmp_path, 1883, devices=[{**mazak_device(), "tag_map": "no-clock.yaml"}])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    time_line = (tmp_path / "no-clock.yaml").read_text().splitlines().index("time:") + 2  # the block under `time:`
    assert f"WARNING: {tmp_path / 'no-clock.yaml'}:{time_line}: $.time: time.source is plc but no tag carries the PLC clock" in result.output
    assert "keeps its last day open until its next change" in result.output
    assert result.output.rstrip().endswith(f"{path}: OK with 1 warning(s)")

    shipped = write_config(tmp_path, 1883, devices=[mazak_device()])
    result = runner.invoke(app, ["edge", "check-config", str(shipped)])
    assert "WARNING" not in result.output
    assert result.output.rstrip().endswith(f"{shipped}: OK")


def test_agent_logs_missing_clock_at_start(tmp_path: Path) -> None:
    import structlog

    from valuegate.edge.cli_agent import _log_config_warnings
    from valuegate.edge.config import load_config

    tag_map = yaml.safe_load((Path(__file__).parents[2] / "firmware_configs" / "demo" / "mazak-mtconnect-opcua.yaml").read_text())
    del tag_map["time"]["clock"]
    tag_map["tags"] = [tag for tag in tag_map["tags"] if tag["name"] != "clock"]
    (tmp_path / "no-clock.yaml").write_text(yaml.safe_dump(tag_map, sort_keys=False), encoding="utf-8")
    config = load_config(write_config(tmp_path, 1883, devices=[{**mazak_device(), "tag_map": "no-clock.yaml"}]))
    with structlog.testing.capture_logs() as events:
        _log_config_warnings(config, structlog.get_logger("test"))
    (event,) = events
    assert (event["event"], event["log_level"], event["device"]) == ("plc_clock_missing", "warning", "cnc")
    assert event["tag_map"] == str(tmp_path / "no-clock.yaml")
    assert "no tag carries the PLC clock" in event["detail"]


def test_check_config_reports_edge_yaml_syntax_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], "\tbroken: 1", *lines[2:]]) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    assert result.output.count("a tab character at column 1; indent YAML with spaces only") == 1
    assert f"1 problem(s) found in {path} and the files it names" in result.output


def test_check_config_duplicate_key_in_edge_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    path.write_text(path.read_text() + "site: wuxi\n", encoding="utf-8")
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    first = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("site:"))
    assert f"$: duplicate key 'site' (first on line {first}); write each key once" in result.output


def test_check_config_path_key_unknown(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    path.write_text(path.read_text() + "path: /etc/passwd\n", encoding="utf-8")
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1
    (line,) = [text for text in result.output.splitlines() if "$.path: Object contains unknown field" in text]
    assert "allowed: schema, gateway, tenant, site, mqtt, state_dir, devices, time_zone, machines, contracts, metrics, spool, publish" in line
    assert "publish, path" not in line


def test_check_config_checks_signing_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    missing = runner.invoke(app, ["edge", "check-config", str(path)])
    assert missing.exit_code == 0
    assert f"note: no signing key in {tmp_path / 'state' / 'keys'} yet; create it with `valuegate keys new" in missing.output
    assert runner.invoke(app, ["keys", "new", "--config", str(path)]).exit_code == 0
    key = tmp_path / "state" / "keys" / "gateway.key"
    os.chmod(key, 0o644)
    wide = runner.invoke(app, ["edge", "check-config", str(path)])
    assert wide.exit_code == 1
    assert f"run `chmod 600 {key}`" in wide.output
    os.chmod(key, 0o600)
    good = runner.invoke(app, ["edge", "check-config", str(path)])
    assert good.exit_code == 0
    assert "signing key" not in good.output


def test_check_config_warns_unlisted_namespace(tmp_path: Path) -> None:
    tag_map = yaml.safe_load((Path(__file__).parents[2] / "firmware_configs" / "demo" / "mazak-mtconnect-opcua.yaml").read_text())
    tag_map["tags"][1]["node"] = "nsu=urn:valuegate:simulator:mtconect;s=Machine/ControllerMode"
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(tag_map, sort_keys=False), encoding="utf-8")
    path = write_config(tmp_path, 1883, devices=[{**mazak_device(), "tag_map": "typo.yaml"}])
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    node_line = next(n for n, text in enumerate((tmp_path / "typo.yaml").read_text().splitlines(), 1) if "mtconect" in text)
    assert (
        f"WARNING: {tmp_path / 'typo.yaml'}:{node_line}: $.tags[1].node: namespace URI 'urn:valuegate:simulator:mtconect' of tag mode "
        "is not among the map's namespaces; check it for a typo, or add it to namespaces"
    ) in result.output
    assert "allowed: urn:valuegate:simulator:mtconnect (device cnc)" in result.output
    assert result.output.rstrip().endswith(f"{path}: OK with 1 warning(s)")


def test_warns_exposed_metrics_plain_tls(tmp_path: Path) -> None:
    path = write_config(tmp_path, 8883, metrics={"host": "0.0.0.0", "port": 9464})
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "$.metrics.host: health and metrics are served beyond this machine and carry no authentication (got '0.0.0.0'); allowed: 127.0.0.1 or ::1" in result.output
    assert "$.mqtt.port: port 8883 is the MQTT over TLS port, but mqtt.tls is not set; add a tls section or use port 1883 (got 8883)" in result.output
    assert result.output.rstrip().endswith(f"{path}: OK with 2 warning(s)")
    quiet = write_config(tmp_path, 1883, metrics={"host": "::1", "port": 9464})
    assert "WARNING" not in runner.invoke(app, ["edge", "check-config", str(quiet)]).output


def test_check_config_finds_missing_opcua_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from valuegate.adapters.tagmap import shipped_tag_map_dir

    monkeypatch.delenv("VG_CNC_PASSWORD", raising=False)
    device = {"id": "cnc-1", "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840/", "tag_map": str(shipped_tag_map_dir() / "demo" / "mazak-mtconnect-opcua.yaml"),
              "auth": {"method": "username", "username": "valuegate", "password_env": "VG_CNC_PASSWORD"}}
    path = write_config(tmp_path, 1883, devices=[device])
    checked = runner.invoke(app, ["edge", "check-config", str(path)])
    assert checked.exit_code == 1, checked.output
    assert "$.devices[0].auth.password_env: the environment variable is not set" in checked.output
    assert "VG_CNC_PASSWORD" in checked.output
    # The key commands never connect to the device, so they need no password.
    assert runner.invoke(app, ["keys", "new", "--config", str(path)]).exit_code == 0
    monkeypatch.setenv("VG_CNC_PASSWORD", "")
    empty = runner.invoke(app, ["edge", "check-config", str(path)])
    assert empty.exit_code == 1
    assert "$.devices[0].auth.password_env: the environment variable is set but empty" in empty.output
    monkeypatch.setenv("VG_CNC_PASSWORD", "s3cret")
    assert runner.invoke(app, ["edge", "check-config", str(path)]).exit_code == 0


def test_edge_commands_take_the_file_either_way(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)
    assert runner.invoke(app, ["edge", "check-config", str(path)]).exit_code == 0
    assert runner.invoke(app, ["edge", "check-config", "--config", str(path)]).exit_code == 0
    both = runner.invoke(app, ["edge", "check-config", str(path), "--config", str(tmp_path / "other.yaml")])
    assert both.exit_code == 2
    assert "two files given" in both.output
    neither = runner.invoke(app, ["edge", "run"])
    assert neither.exit_code == 2
    # The message sits in a framed box that wraps it; compare its words.
    words = " ".join(neither.output.replace("│", " ").split())
    assert "give the agent's edge.yaml, as an argument or with --config" in words


def test_check_config_warns_likely_tag_map_mistakes(tmp_path: Path) -> None:
    """Each a valid setting that is most often a mistake: a warning with file, line and the fix; the exit status stays 0."""
    root = Path(__file__).parents[2] / "firmware_configs" / "demo"
    filler = yaml.safe_load((root / "bottling-filler-modbus.yaml").read_text())
    counter = next(tag for tag in filler["tags"] if tag["name"] == "containers")
    counter.update(scale=0.5)
    filler["counters"][0]["bits"] = 32
    next(tag for tag in filler["tags"] if tag["name"] == "reason").update(length=4)
    (tmp_path / "filler.yaml").write_text(yaml.safe_dump(filler, sort_keys=False), encoding="utf-8")

    mazak = yaml.safe_load((root / "mazak-mtconnect-opcua.yaml").read_text())
    mazak["tags"][1]["node"] = "ns=2;s=Machine/ControllerMode"
    mazak["states"]["rules"] = []
    for tag in mazak["tags"]:
        tag.pop("no_reason", None)
    (tmp_path / "mazak.yaml").write_text(yaml.safe_dump(mazak, sort_keys=False), encoding="utf-8")

    hurco = yaml.safe_load((root / "hurco-mtconnect-opcua.yaml").read_text())
    hurco["tags"].append({"name": "since", "node": "nsu=urn:valuegate:simulator:mtconnect;s=Machine/Since", "role": "state_since"})
    (tmp_path / "hurco.yaml").write_text(yaml.safe_dump(hurco, sort_keys=False), encoding="utf-8")

    filler_device = {"id": "filler", "protocol": "modbus", "host": "127.0.0.1", "port": 502, "unit_id": 1, "tag_map": "filler.yaml"}
    hurco_device = {**mazak_device(), "id": "hurco", "tag_map": "hurco.yaml"}
    path = write_config(tmp_path, 1883, devices=[filler_device, {**mazak_device(), "tag_map": "mazak.yaml"}, hurco_device])
    result = runner.invoke(app, ["edge", "check-config", str(path)])

    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "$.counters[0].bits: counter containers wraps at 32 bits, but its tag is a uint16 of 16 bits" in output
    assert "$.tags[4].scale: counter tag containers is scaled, so its increments are no whole parts (got 0.5)" in output
    assert "$.tags[1].length: length is read only for strings; reason is a uint16, whose width its type sets (got 4)" in output
    assert "$.states.rules: no state rules, so every value takes the default category" in output
    assert "$.tags[1].node: node id of mode names namespace index 2, which changes when the server registers its namespaces in another order" in output
    assert "$.tags[2].role: time.source is gateway, so the agent stamps samples with its own clock and never reads since as the PLC's time" in output
    assert result.output.rstrip().endswith(f"{path}: OK with 6 warning(s)")


def test_check_config_type_errors_hide_nothing(tmp_path: Path) -> None:
    """Type errors in edge.yaml and its devices come in one run with the range errors of the parts that are well typed."""
    path = write_config(
        tmp_path,
        "x1883",
        devices=[device(port="x5020"), device(id="filler-2", unit_id=300), device(id="filler-3", protocol="profinet")],
        spool={"max_mb": 0.5, "sample_sync": "fast"},
        metrics={"port": 70000},
        publish={"window": 0},
        gateway="gw/1",
        machines=[{"device": "filler", "time_zone": 8}, {"device": "nope"}],
    )
    result = runner.invoke(app, ["edge", "check-config", str(path)])
    assert result.exit_code == 1, result.output
    output = result.output
    assert "$.mqtt.port: Expected `int`, got `str` (got 'x1883')" in output
    assert "$.spool.sample_sync: Invalid enum value (got 'fast'); allowed: full, normal" in output
    assert "$.machines[0].time_zone: Expected `str | null`, got `int` (got 8)" in output
    assert "$.devices[0].port: Expected `int`, got `str` (got 'x5020')" in output
    assert "$.devices[2].protocol: Invalid value (got 'profinet'); allowed: modbus, opcua" in output
    # Checked although other parts of the file, or other items of the same list, have type errors:
    assert "$.gateway: invalid id: it becomes an MQTT topic level (got 'gw/1')" in output
    assert "$.metrics.port: port is out of range (got 70000)" in output
    assert "$.publish.window: must be at least 1 (got 0)" in output
    assert "$.machines[1].device: no device has this id (got 'nope')" in output
    assert "$.devices[1].unit_id: unit id is outside the Modbus range (got 300)" in output
    # A section with a type error gets no range checks, so spool.max_mb is reported only once sample_sync is fixed.
    assert "$.spool.max_mb" not in output
    assert "10 problem(s) found" in output
