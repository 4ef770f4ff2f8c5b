"""The contract file guides, in English and Chinese: every example is a valid contract, and the key tables match the schema."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

from valuegate.cloud.renewal.triggers import Progress, evaluate
from valuegate.cloud.settlement.pricing import VoucherValue, price_anchor
from valuegate.edge.methodology import METRICS
from valuegate.edge.protocol.contract import Contract, contract_digest, parse_contract_text

DOCS = Path(__file__).parents[1] / "docs"
GUIDES = ("contracts.md", "contracts.zh-CN.md")

_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The first header cell of a key table, per language.
_KEY_HEADERS = {"key", "键"}
_YES = ("yes", "是")
_NO = ("no", "否")
_NONE = ("none", "无")
_COLUMNS = ("key", "type", "required", "default", "meaning")


def _unwrap(node: mi.Type) -> mi.Type:
    """Return the one type of an optional field (``Price | None`` gives ``Price``)."""
    if isinstance(node, mi.UnionType):
        members = [member for member in node.types if not isinstance(member, mi.NoneType)]
        if len(members) == 1:
            return members[0]
    return node


def _fields(node: mi.Type, prefix: str = "", required_so_far: bool = True) -> Iterator[tuple[str, mi.Field, bool]]:
    """Yield the path of every contract field (``anchors[].price.amount``), its msgspec field, and whether every contract must have it."""
    node = _unwrap(node)
    if isinstance(node, mi.ListType):
        yield from _fields(node.item_type, prefix + "[]", required_so_far)
        return
    if not isinstance(node, mi.StructType):
        return
    for field in node.fields:
        path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
        always = required_so_far and field.required
        yield path, field, always
        yield from _fields(field.type, path, always)


SCHEMA = {path: (field, always) for path, field, always in _fields(mi.type_info(Contract))}


def _present(data: Any, node: mi.Type, prefix: str = "") -> set[str]:
    """Return the schema paths that ``data`` (a contract as loaded from YAML) writes out."""
    node = _unwrap(node)
    found: set[str] = set()
    if isinstance(node, mi.ListType) and isinstance(data, list):
        for item in data:
            found |= _present(item, node.item_type, prefix + "[]")
    elif isinstance(node, mi.StructType) and isinstance(data, dict):
        for field in node.fields:
            if field.encode_name in data:
                path = f"{prefix}.{field.encode_name}" if prefix else field.encode_name
                found.add(path)
                found |= _present(data[field.encode_name], field.type, path)
    return found


def _examples(name: str) -> list[str]:
    return _YAML_BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


def _key_rows(name: str) -> dict[str, dict[str, str]]:
    """Return the rows of the document's key tables by key path, each as a mapping of column name to cell text."""
    rows: dict[str, dict[str, str]] = {}
    in_key_table = False
    for line in (DOCS / name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_key_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in _KEY_HEADERS:
            in_key_table = True
            continue
        if not in_key_table or set(cells[0]) <= {"-"}:
            continue
        assert len(cells) == len(_COLUMNS), (name, line)
        key = cells[0].strip("`")
        assert key not in rows, (name, f"{key} is listed twice")
        rows[key] = dict(zip(_COLUMNS, cells, strict=True))
    return rows


@pytest.mark.parametrize("name", GUIDES)
def test_examples_are_valid_contracts(name):
    examples = _examples(name)
    assert len(examples) >= 2, f"{name} should show a minimal and a fuller contract"
    for index, text in enumerate(examples):
        parse_contract_text(text, file=f"{name} example {index + 1}")


def test_examples_same_in_both_languages():
    digests = {name: [contract_digest(parse_contract_text(text)) for text in _examples(name)] for name in GUIDES}
    assert digests["contracts.md"] == digests["contracts.zh-CN.md"]


@pytest.mark.parametrize("name", GUIDES)
def test_minimal_example_has_only_required_keys(name):
    minimal = yaml.safe_load(_examples(name)[0])
    required = {path for path, (_, always) in SCHEMA.items() if always}
    assert _present(minimal, mi.type_info(Contract)) == required


@pytest.mark.parametrize("name", GUIDES)
def test_fuller_example_uses_every_key(name):
    fuller = yaml.safe_load(_examples(name)[1])
    missing = set(SCHEMA) - _present(fuller, mi.type_info(Contract))
    assert not missing


@pytest.mark.parametrize("name", GUIDES)
def test_key_tables_list_every_field(name):
    listed = set(_key_rows(name))
    assert set(SCHEMA) - listed == set(), "fields missing from the key tables"
    assert listed - set(SCHEMA) == set(), "keys in the tables that the schema does not have"


@pytest.mark.parametrize("name", GUIDES)
def test_key_tables_state_required_and_default(name):
    rows = _key_rows(name)
    for path, (field, _) in SCHEMA.items():
        row = rows[path]
        if field.required:
            assert row["required"].startswith(_YES), (path, row["required"])
            assert row["default"] == "", (path, row["default"])
            continue
        assert row["required"].startswith(_NO), (path, row["required"])
        if field.default is None:
            assert row["default"] in _NONE, (path, row["default"])
            continue
        if field.default is not msgspec.NODEFAULT:
            expected = field.default
        elif field.default_factory in (dict, list):
            expected = field.default_factory()
        else:
            # A settings struct: the row points at the defaults of its own keys.
            assert row["default"] and "`" not in row["default"], (path, row["default"])
            continue
        written = re.search(r"`([^`]+)`", row["default"])
        assert written is not None, (path, row["default"])
        assert yaml.safe_load(written.group(1)) == expected, (path, row["default"])


@pytest.mark.parametrize("name", GUIDES)
def test_choice_rows_list_every_value(name):
    rows = _key_rows(name)
    for path, (field, _) in SCHEMA.items():
        node = _unwrap(field.type)
        if isinstance(node, mi.LiteralType):
            for value in node.values:
                assert f"`{value}`" in rows[path]["meaning"], (path, value)


def _running_day(anchor: str, quantity: str, point: str, low: str) -> VoucherValue:
    return VoucherValue(voucher_id="gw-1:1", gateway="gw-1", seq=1, anchor=anchor, plant_date="2026-03-02", quantity=quantity,
                        point=Decimal(point), low=Decimal(low), running_day=True, sufficient=True)


def test_minimal_example_has_no_price():
    contract = parse_contract_text(_examples("contracts.md")[0])
    assert [anchor.price for anchor in contract.anchors] == [None]
    assert (contract.currency, contract.rounding, contract.settlement) == ("CNY", "0.01", "point")


def test_fuller_example_prices_as_explained():
    contract: Contract = parse_contract_text(_examples("contracts.md")[1])
    press = _running_day("press-oee", METRICS["oee_points"].quantity, "1.5", "1.0")
    filler = _running_day("filler-downtime", METRICS["unplanned_downtime_rate"].quantity, "14", "10")

    # Lower-bound settlement: 1.0 point x 800 = 800.00, raised to the 5,000.00 floor.
    assert price_anchor(contract, "press-oee", [press]).amount == Decimal("5000.00")
    # 10 avoided minutes x 12.00, no cap or floor.
    assert price_anchor(contract, "filler-downtime", [filler]).amount == Decimal("120.00")
    # 300 points x 800 = 240,000.00, lowered to the 200,000.00 cap.
    capped = _running_day("press-oee", METRICS["oee_points"].quantity, "300", "300")
    assert price_anchor(contract, "press-oee", [capped]).amount == Decimal("200000.00")


def test_fuller_example_triggers_as_explained():
    contract = parse_contract_text(_examples("contracts.md")[1])
    reached = {"press-oee": Progress(Decimal("5.0"), Decimal("5.0")), "filler-downtime": Progress(Decimal("30"), Decimal("20"))}
    below = {"press-oee": Progress(Decimal("4.9"), Decimal("5.0")), "filler-downtime": Progress(Decimal("30"), Decimal("20"))}

    fired = evaluate(contract, today=dt.date(2026, 11, 1), progress=reached, realized_total=Decimal("100000.00"))
    assert [firing.key for firing in fired] == ["target_met:press-oee", "days_before_end:60", "value_over:100000.00"]

    quiet = evaluate(contract, today=dt.date(2026, 10, 31), progress=below, realized_total=Decimal("99999.99"))
    assert quiet == []
