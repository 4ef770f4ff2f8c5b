"""`valuegate cloud admin apply PLAN`: a site's tenant, gateways, keys and contracts from one file, in one transaction, repeatable."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from valuegate.cli import app as root_app
from valuegate.cloud.db import UTC_OPTIONS
from valuegate.edge import keys

from .conftest import contract_yaml

pytestmark = pytest.mark.postgres
runner = CliRunner()


def write_plan(folder: Path, *, gateways: int = 3, second_zone: str = "Europe/Berlin", extra: str = "") -> Path:
    """A plan with two sites, ``gateways`` gateways with export-public key files, and one contract."""
    lines = ["tenant: acme", "name: ACME Bottling", "sites:", "  - id: plant1", "    time_zone: Asia/Shanghai", "    gateways:"]
    for index in range(1, gateways + 1):
        key_folder = folder / "state" / f"gw-{index}"
        if not (key_folder / "gateway.key").exists():
            keys.create_key(key_folder)
        export = keys.export_public(key_folder)
        (folder / f"gw-{index}.json").write_text(json.dumps({**export, "gateway": f"gw-{index}"}), encoding="utf-8")
        lines += [f"      - id: gw-{index}", f"        key: gw-{index}.json"]
    lines += ["  - id: plant2", f"    time_zone: {second_zone}", "    name: Berlin plant", "contracts: [acme.yaml]", extra]
    (folder / "acme.yaml").write_text(contract_yaml(), encoding="utf-8")
    path = folder / "plan.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def apply(dsn: str, plan: Path, *args: str) -> Any:
    return runner.invoke(root_app, ["cloud", "admin", "apply", "--dsn", dsn, str(plan), *args])


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, options=UTC_OPTIONS) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - table names from this list
            for table in ("tenants", "sites", "gateways", "gateway_keys", "contracts", "audit_log")
        }


def test_apply_creates_then_changes_nothing(tmp_path: Path, cloud_dsn: str) -> None:
    plan = write_plan(tmp_path)
    first = apply(cloud_dsn, plan)
    assert first.exit_code == 0, first.output
    assert "10 created, 0 unchanged" in first.output  # tenant, 2 sites, 3 gateways, 3 keys, 1 contract
    after_first = counts(cloud_dsn)
    assert after_first["gateways"] == 3
    assert after_first["gateway_keys"] == 3
    assert after_first["contracts"] == 1
    with psycopg.connect(cloud_dsn, options=UTC_OPTIONS) as conn:
        valid_from = conn.execute("SELECT valid_from FROM gateway_keys WHERE gateway_id = 'gw-2'").fetchone()[0]
        site = conn.execute("SELECT name, time_zone FROM sites WHERE id = 'plant2'").fetchone()
    created = json.loads((tmp_path / "gw-2.json").read_text())["created"]
    assert valid_from == dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    assert site == ("Berlin plant", "Europe/Berlin")

    again = apply(cloud_dsn, plan)
    assert again.exit_code == 0, again.output
    assert "0 created, 10 unchanged" in again.output
    assert counts(cloud_dsn) == after_first  # not even an audit record


def test_plan_that_differs_writes_nothing(tmp_path: Path, cloud_dsn: str) -> None:
    assert apply(cloud_dsn, write_plan(tmp_path, gateways=1)).exit_code == 0
    before = counts(cloud_dsn)
    # Two new gateways and their keys come before the site whose zone differs: none of them may stay.
    changed = write_plan(tmp_path, gateways=3, second_zone="Asia/Tokyo")
    result = apply(cloud_dsn, changed)
    assert result.exit_code == 1
    assert "site 'plant2' exists with time_zone 'Europe/Berlin', but the plan has 'Asia/Tokyo'" in result.output
    assert counts(cloud_dsn) == before


def test_dry_run_writes_nothing(tmp_path: Path, cloud_dsn: str) -> None:
    before = counts(cloud_dsn)
    result = apply(cloud_dsn, write_plan(tmp_path, gateways=2), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would create  gateway gw-2 (site plant1)" in result.output
    assert "8 would be created (dry run, nothing written), 0 unchanged" in result.output
    assert counts(cloud_dsn) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param("owner: someone", "Object contains unknown field `owner`", id="unknown-field"),
        pytest.param("sites_extra: 1", "unknown field `sites_extra`", id="misspelt-field"),
    ],
)
def test_bad_plan_names_the_field(tmp_path: Path, cloud_dsn: str, extra: str, message: str) -> None:
    result = apply(cloud_dsn, write_plan(tmp_path, gateways=1, extra=extra))
    assert result.exit_code == 1
    assert message in result.output
    assert "plan.yaml" in result.output
    assert counts(cloud_dsn)["tenants"] == 0


def test_gateway_listed_twice_is_refused(tmp_path: Path, cloud_dsn: str) -> None:
    plan = write_plan(tmp_path, gateways=1)
    text = plan.read_text().replace("  - id: plant2\n", "  - id: plant2\n    gateways: [{id: gw-1}]\n")
    plan.write_text(text)
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert "gateway 'gw-1' is listed more than once" in result.output
    assert counts(cloud_dsn)["gateways"] == 0


def test_key_of_another_gateway_refused(tmp_path: Path, cloud_dsn: str) -> None:
    """A box cloned from gw-1's disk image exports gw-1's key under its own id; neither apply nor key-add registers it."""
    plan = write_plan(tmp_path, gateways=2)
    cloned = json.loads((tmp_path / "gw-1.json").read_text())
    (tmp_path / "gw-2.json").write_text(json.dumps({**cloned, "gateway": "gw-2"}), encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert "site 'plant1', gateway 'gw-2': key z6Mk" in result.output
    assert "is already registered for gateway 'gw-1'; each gateway needs a key of its own" in result.output
    assert counts(cloud_dsn)["gateway_keys"] == 0

    (tmp_path / "gw-2.json").write_text(json.dumps(keys.export_public(tmp_path / "state" / "gw-2") | {"gateway": "gw-2"}), encoding="utf-8")
    assert apply(cloud_dsn, plan).exit_code == 0
    added = runner.invoke(root_app, ["cloud", "admin", "key-add", "--dsn", cloud_dsn, "acme", "gw-2", cloned["verification_method"]])
    assert added.exit_code == 1
    assert "already registered for gateway 'gw-1'" in added.output


def test_changed_key_or_contract_refused(tmp_path: Path, cloud_dsn: str) -> None:
    plan = write_plan(tmp_path, gateways=1)
    assert apply(cloud_dsn, plan).exit_code == 0
    before = counts(cloud_dsn)

    keys.create_key(tmp_path / "state" / "replaced")
    original = (tmp_path / "gw-1.json").read_text()
    (tmp_path / "gw-1.json").write_text(json.dumps(keys.export_public(tmp_path / "state" / "replaced") | {"gateway": "gw-1"}), encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert "gateway 'gw-1' already has key(s) 1 in force and the plan names another key" in result.output
    assert counts(cloud_dsn) == before

    (tmp_path / "gw-1.json").write_text(original, encoding="utf-8")
    (tmp_path / "acme.yaml").write_text(contract_yaml(price="120.00"), encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert "contract 'c-2026' is in force as revision 1 with another text than" in result.output
    assert counts(cloud_dsn) == before


def test_plan_file_problems_name_the_file(tmp_path: Path, cloud_dsn: str) -> None:
    plan = write_plan(tmp_path, gateways=1)
    plan.write_text("tenant: acme\ntenant: beta\n", encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert f"{plan}, line 2, column 1: the plan is not valid YAML: key 'tenant' is written twice" in result.output

    plan.write_text("tenant: acme\nsites:\n  - id: plant1\n   time_zone: [Asia\n", encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert result.output == (
        f"error: {plan}, line 4, column 4: the plan is not valid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection at line 3, column 3); correct the plan there (its format is in docs/cloud.md)\n"
    )

    plan = write_plan(tmp_path, gateways=1)
    (tmp_path / "acme.yaml").write_text(contract_yaml(price="-1.00"), encoding="utf-8")
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert str(tmp_path / "acme.yaml") + ":14:" in result.output
    assert "uploaded contract" not in result.output
    assert counts(cloud_dsn)["tenants"] == 0


def test_gateway_of_another_tenant_rejected(tmp_path: Path, cloud_dsn: str) -> None:
    (tmp_path / "acme").mkdir()
    (tmp_path / "beta").mkdir()
    assert apply(cloud_dsn, write_plan(tmp_path / "acme", gateways=1)).exit_code == 0
    plan = write_plan(tmp_path / "beta", gateways=1)
    plan.write_text(plan.read_text().replace("tenant: acme\nname: ACME Bottling", "tenant: beta\nname: Beta Foods"), encoding="utf-8")
    before = counts(cloud_dsn)
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert result.output == (
        "error: site 'plant1', gateway 'gw-1': gateway id 'gw-1' belongs to another tenant, and gateway ids are unique across tenants; "
        "choose another id for this gateway\n"
    )
    assert "acme" not in result.output.lower()
    assert counts(cloud_dsn) == before


def one_gateway_plan(folder: Path, key: str) -> Path:
    path = folder / "plan.yaml"
    lines = ["tenant: acme", "name: ACME Bottling", "sites:", "  - id: plant1", "    time_zone: Asia/Shanghai", "    gateways:", "      - id: gw-9",
             f"        key: {key}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_key_problems_name_entry_once(tmp_path: Path, cloud_dsn: str) -> None:
    result = apply(cloud_dsn, one_gateway_plan(tmp_path, "z6MkBAD"))
    assert result.exit_code == 1
    assert result.output == (
        "error: site 'plant1', gateway 'gw-9': public key 'z6MkBAD' does not hold a 32-byte Ed25519 key with multicodec prefix ed01; "
        "give the z6Mk... key or the did:key that `valuegate keys export-public` prints\n"
    )

    result = apply(cloud_dsn, one_gateway_plan(tmp_path, "keys/gw-9.json"))
    assert result.exit_code == 1
    assert result.output == (
        f"error: site 'plant1', gateway 'gw-9': key file not found: {tmp_path / 'keys' / 'gw-9.json'}; check the gateway's key path in the plan, "
        "which starts at the plan's folder, or write the file on the gateway with `valuegate keys export-public -c edge.yaml` and copy it there\n"
    )
    assert counts(cloud_dsn)["tenants"] == 0


def test_missing_contract_file_named(tmp_path: Path, cloud_dsn: str) -> None:
    plan = write_plan(tmp_path, gateways=1)
    (tmp_path / "acme.yaml").unlink()
    result = apply(cloud_dsn, plan)
    assert result.exit_code == 1
    assert result.output == (
        f"error: contract file not found: {tmp_path / 'acme.yaml'}; check the path in the plan's contracts list, which starts at the plan's folder\n"
    )
    assert counts(cloud_dsn)["tenants"] == 0
