"""`valuegate edge check-config` and `valuegate keys`: messages, exit codes, and a rotation in the middle of a chain."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
    assert "anchors[0].scope: no device of this gateway measures capper-9 (got ['capper-9']); allowed: filler-1" in result.output


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
    first_key = created.output.strip()
    signer = VoucherSigner(state / "keys", tenant="acme", site="suzhou", gateway="gw-1")
    spool = Spool(state / "spool.db")
    before = issue_synthetic(spool, signer, 3, first_date="2026-01-01")

    rotated = runner.invoke(app, ["keys", "rotate", "--config", str(path)])
    assert rotated.exit_code == 0, rotated.output
    statement = json.loads(rotated.output)
    assert verify_rotation(statement).ok
    assert statement["credentialSubject"]["from_seq"] == 4
    assert statement["credentialSubject"]["previous_key"] == first_key

    # The running signer notices the rotation inside its next issuing transaction.
    after = issue_synthetic(spool, signer, 2, first_date="2026-01-10")
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
