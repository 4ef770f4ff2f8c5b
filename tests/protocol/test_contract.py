"""Contract validation: money terms, currency, rounding, dates and enumerations, through the parser and `edge check-config`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from tests.edge.helpers import TENANT, write_config
from valuegate.cli import app
from valuegate.edge.protocol.canonical import content_digest
from valuegate.edge.protocol.contract import CURRENCY_CODES, ContractError, contract_digest, load_contract, parse_contract, parse_contract_text

# Line numbers of the fields below, counted from 1: the tests check that errors point there.
CONTRACT = f"""schema: valuegate/contract/v1
id: ACME-FILL
tenant: {TENANT}
customer: ACME bottling
start: 2022-07-22
end: 2023-03-31
currency: CNY
rounding: "0.01"
anchors:
  - id: filler-downtime
    scope: [filler-1]
    metric: unplanned_downtime_rate
    baseline: {{first_date: 2022-07-22, last_date: 2022-09-20, min_days: 8}}
    reporting: {{first_date: 2022-09-21, last_date: 2023-02-10}}
    price: {{per: avoided_minute, amount: "12.00"}}
    cap: "150000.00"
    floor: "0"
triggers:
  - {{kind: value_over, amount: "10000.00"}}
"""
LINE = {"end": 6, "currency": 7, "rounding": 8, "metric": 12, "baseline": 13, "price": 15, "cap": 16, "floor": 17, "triggers": 19}


def changed(old: str, new: str) -> str:
    assert CONTRACT.count(old) == 1, old
    return CONTRACT.replace(old, new)


def error_of(text: str, file: str = "acme.yaml") -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_contract_text(text, file=file)
    return caught.value


def test_valid_contract_parses():
    contract = parse_contract_text(CONTRACT, file="acme.yaml")
    assert contract.anchors[0].price is not None
    assert contract.anchors[0].price.amount == "12.00"
    assert str(contract.end) == "2023-03-31"


@pytest.mark.parametrize("amount", ["-12.00", "0", "0.00", "-0.01"])
def test_price_must_be_positive(amount):
    error = error_of(changed('amount: "12.00"', f'amount: "{amount}"'))
    assert error.field == "$.anchors[0].price.amount"
    assert error.line == LINE["price"]
    assert error.value == amount
    assert str(error).startswith(f"acme.yaml:{LINE['price']}: $.anchors[0].price.amount: the unit price must be greater than zero")
    assert str(error).endswith(f"(got '{amount}'); allowed: a decimal greater than 0 such as '12.00'")


@pytest.mark.parametrize(
    "amount",
    ["twelve", "NaN", "Infinity", "1e3", "1E+2", " 300.00", "300.00 ", "\uff13\uff10\uff10.00", "+12", "12.", ".5", "1234567890123456", "0.0000001"],
    ids=["word", "nan", "infinity", "exponent", "exponent-upper", "leading-space", "trailing-space", "full-width", "plus", "bare-point",
         "no-integer", "16-digits", "7-decimals"],
)
def test_price_must_be_a_plain_decimal(amount):
    error = error_of(changed('amount: "12.00"', f'amount: "{amount}"'))
    assert (error.field, error.line, error.value) == ("$.anchors[0].price.amount", LINE["price"], amount)
    assert "not a plain decimal amount" in str(error)
    assert str(error).endswith("at most 15 digits before it and 6 after, no exponent or spaces")


@pytest.mark.parametrize("amount", ["999999999999999.999999", "0.000001", "2000"])
def test_price_at_the_limits_accepted(amount):
    contract = parse_contract_text(changed('amount: "12.00"', f'amount: "{amount}"'), file="acme.yaml")
    assert str(contract.anchors[0].price.amount) == amount


def test_unquoted_price_is_explained():
    error = error_of(changed('amount: "12.00"', "amount: 12.00"))
    assert (error.field, error.line, error.value) == ("$.anchors[0].price.amount", LINE["price"], 12.0)
    assert "decimal strings in quotes" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ('cap: "150000.00"', 'cap: "-1.00"', "$.anchors[0].cap", "a cap cannot be negative (got '-1.00'); allowed: a decimal of 0 or more"),
        ('floor: "0"', 'floor: "-5"', "$.anchors[0].floor", "a floor cannot be negative (got '-5'); allowed: a decimal of 0 or more"),
        ('floor: "0"', 'floor: "150000.01"', "$.anchors[0].floor", "the floor lies above the cap '150000.00' (got '150000.01'); allowed: a decimal from 0 to 150000.00"),
    ],
)
def test_cap_and_floor_limits(old, new, field, message):
    error = error_of(changed(old, new))
    assert error.field == field
    assert str(error) == f"acme.yaml:{LINE[field.rsplit('.', 1)[1]]}: {field}: {message}"


def test_floor_equal_to_cap_is_allowed():
    contract = parse_contract_text(changed('floor: "0"', 'floor: "150000.00"'))
    assert contract.anchors[0].floor == contract.anchors[0].cap


@pytest.mark.parametrize(
    ("currency", "hint"),
    [("RMB", "did you mean CNY?"), ("cny", "did you mean CNY?"), ("ABC", "not an ISO 4217 currency code (got"), ("XAU", "not an ISO 4217 currency code (got")],
)
def test_currency_must_be_iso_4217(currency, hint):
    error = error_of(changed("currency: CNY", f"currency: {currency}"))
    assert (error.field, error.line, error.value) == ("$.currency", LINE["currency"], currency)
    assert hint in str(error)
    assert str(error).endswith("allowed: three upper-case letters from ISO 4217 such as CNY, USD, EUR, JPY, HKD")


@pytest.mark.parametrize("currency", ["CNY", "USD", "EUR", "JPY", "HKD", "GBP", "KRW", "SGD", "TWD", "CHF", "XOF"])
def test_common_currencies_accepted(currency):
    assert currency in CURRENCY_CODES
    assert parse_contract_text(changed("currency: CNY", f"currency: {currency}")).currency == currency


@pytest.mark.parametrize("rounding", ["0.05", "0", "-0.01", "1e-2", "0.010", "2", "abc", ""])
def test_rounding_must_be_power_of_ten(rounding):
    error = error_of(changed('rounding: "0.01"', f'rounding: "{rounding}"'))
    assert (error.field, error.line, error.value) == ("$.rounding", LINE["rounding"], rounding)
    assert "the rounding step must be a positive power of ten" in str(error)
    assert str(error).endswith("allowed: 1, 0.1, 0.01, 0.001 (or 10, 100 ...)")


@pytest.mark.parametrize("rounding", ["1", "0.1", "0.01", "0.001", "10"])
def test_powers_of_ten_accepted(rounding):
    assert parse_contract_text(changed('rounding: "0.01"', f'rounding: "{rounding}"')).rounding == rounding


def test_trigger_threshold_must_be_positive():
    error = error_of(changed('amount: "10000.00"', 'amount: "-1"'))
    assert (error.field, error.line, error.value) == ("$.triggers[0].amount", LINE["triggers"], "-1")


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "message", "allowed"),
    [
        ("per: avoided_minute", "per: oee_point_day", "$.anchors[0].price.per", 15,
         "this price unit does not fit the anchor's metric unplanned_downtime_rate", "avoided_minute, target_met"),
        ("per: avoided_minute", "per: target_met", "$.anchors[0].target", 10, "an anchor priced per target met needs a target", None),
        ('{kind: value_over, amount: "10000.00"}', "{kind: value_over}", "$.triggers[0].amount", 19, "a value_over trigger needs an amount", None),
        ('{kind: value_over, amount: "10000.00"}', "{kind: days_before_end}", "$.triggers[0].days", 19, "a days_before_end trigger needs days", None),
        ('{kind: value_over, amount: "10000.00"}', "{kind: target_met, anchor: filler}", "$.triggers[0].anchor", 19,
         "no anchor of this contract has this id", "filler-downtime"),
        ("last_date: 2023-02-10", "last_date: 2023-04-30", "$.anchors[0].reporting.last_date", 14,
         "the reporting period 2022-09-21 .. 2023-04-30 lies outside the contract term 2022-07-22 .. 2023-03-31", "dates from 2022-07-22 to 2023-03-31"),
        ("floor: \"0\"", "floor: \"0\"\n    sufficiency: {max_offline_share: 1.5}", "$.anchors[0].sufficiency.max_offline_share", 18,
         "a share of the day must lie between 0 and 1", "for example 0.2 for 20%"),
        ("floor: \"0\"", "floor: \"0\"\n    uncertainty: {seed: 18446744073709551616}", "$.anchors[0].uncertainty.seed", 18,
         "the bootstrap seed must fit an unsigned 64-bit integer", "0 to 18446744073709551615"),
        ("floor: \"0\"", "floor: \"0\"\n    uncertainty: {block_days: 61}\nsettlement: lower_bound", "$.anchors[0].uncertainty.block_days", 18,
         "a block of 61 days is as long as the 61-day baseline, so every resample is the whole baseline", "1 to 60"),
        ("scope: [filler-1]", "scope: [filler-1, filler-2, filler-1]", "$.anchors[0].scope", 11,
         "machine filler-1 is listed twice, which would count its times and parts twice", "each machine once"),
        ("floor: \"0\"", "floor: \"0\"\n    target: .nan", "$.anchors[0].target", 18, "a target is a finite gain greater than zero", None),
        ("floor: \"0\"", "floor: \"0\"\n    target: -3", "$.anchors[0].target", 18, "a target is a finite gain greater than zero", None),
        ("floor: \"0\"", "floor: \"0\"\n    sufficiency: {min_planned_busy_min: .inf}", "$.anchors[0].sufficiency.min_planned_busy_min", 18,
         "the minutes must be a finite number, not negative", "0 or more, for example 30"),
        ('{kind: value_over, amount: "10000.00"}', '{kind: value_over, amount: "10000.00", days: 5}', "$.triggers[0].days", 19,
         "a value_over trigger does not use days", "only amount besides kind"),
        ('{kind: value_over, amount: "10000.00"}', '{kind: value_over, amount: "10000.00"}\n  - {kind: value_over, amount: "10000"}', "$.triggers[1]", 20,
         "the same trigger as triggers[0]; each fires once, so list it once", None),
        ('{kind: value_over, amount: "10000.00"}', "{kind: target_met, anchor: filler-downtime}", "$.triggers[0].anchor", 19,
         "this anchor has no target, so the trigger could never fire", "an anchor with a target, or add a target to it"),
        ('{kind: value_over, amount: "10000.00"}', "{kind: target_met}", "$.triggers[0].kind", 19,
         "no anchor has a target, so a target_met trigger could never fire", "add a target to an anchor"),
    ],
)  # fmt: skip
def test_terms_that_could_not_be_priced_are_refused(old, new, field, line, message, allowed):
    error = error_of(changed(old, new))
    assert error.field == field
    assert error.line == line
    assert message in str(error)
    assert error.allowed == allowed or allowed is None


def test_long_block_allowed_point_settlement():
    # The interval has zero width, but the point estimate bills the same amount whatever the interval.
    contract = parse_contract_text(changed('floor: "0"', 'floor: "0"\n    uncertainty: {block_days: 61}'))
    assert contract.settlement == "point"
    assert contract.anchors[0].uncertainty.block_days == 61
    assert parse_contract_text(changed('floor: "0"', 'floor: "0"\n    uncertainty: {block_days: 60}\nsettlement: lower_bound')).anchors[0].uncertainty.block_days == 60


def test_baseline_may_precede_term():
    # The baseline is often measured before the vendor's contract starts.
    contract = parse_contract_text(changed("first_date: 2022-07-22, last_date: 2022-09-20", "first_date: 2022-06-01, last_date: 2022-09-20"))
    assert str(contract.anchors[0].baseline.first_date) == "2022-06-01"


def test_empty_anchor_list_is_refused():
    head = CONTRACT.split("anchors:")[0]
    error = error_of(head + "anchors: []\n")
    assert (error.field, error.line) == ("$.anchors", 9)
    assert "a contract needs at least one value anchor" in str(error)


@pytest.mark.parametrize(
    ("value", "message", "allowed"),
    [
        ("1.5", "not a whole number", "a whole number such as 20240101"),
        ("true", "not a whole number", "a whole number such as 20240101"),
        ("1e30", "not a whole number; YAML reads a number with an exponent as text unless it has a dot, as in 1.0e+30", "a whole number such as 20240101"),
    ],
)
def test_whole_number_errors_say_what_is_allowed(value, message, allowed):
    error = error_of(changed('floor: "0"', f'floor: "0"\n    uncertainty: {{seed: {value}}}'))
    assert (error.field, error.line) == ("$.anchors[0].uncertainty.seed", 18)
    assert str(error).startswith(f"acme.yaml:18: $.anchors[0].uncertainty.seed: {message} (got ")
    assert error.allowed == allowed

def test_key_written_twice_is_refused():
    error = error_of(changed('currency: CNY', 'currency: CNY\ncurrency: USD'))
    assert str(error) == "acme.yaml:8: $: duplicate key 'currency' (first on line 7); write each key once"
    assert error.line == 8


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "value"),
    [
        ("end: 2023-03-31", "end: 2023-02-30", "$.end", LINE["end"], "2023-02-30"),
        ("end: 2023-03-31", "end: '2023-02-30'", "$.end", LINE["end"], "2023-02-30"),
        ("end: 2023-03-31", "end: 31.03.2023", "$.end", LINE["end"], "31.03.2023"),
        ("first_date: 2022-07-22, last", "first_date: 2022-13-01, last", "$.anchors[0].baseline.first_date", LINE["baseline"], "2022-13-01"),
    ],
)
def test_impossible_date_names_line_and_field(old, new, field, line, value):
    error = error_of(changed(old, new))
    assert isinstance(error, ContractError)
    assert (error.field, error.line, error.value) == (field, line, value)
    assert str(error) == f"acme.yaml:{line}: {field}: not a valid calendar date (got {value!r}); allowed: a real day written YYYY-MM-DD"


def test_metric_error_lists_allowed_values():
    error = error_of(changed("metric: unplanned_downtime_rate", "metric: mtbf_hours"))
    assert str(error) == (
        f"acme.yaml:{LINE['metric']}: $.anchors[0].metric: not one of the allowed values (got 'mtbf_hours'); "
        "allowed: availability_points, oee_points, unplanned_downtime_rate"
    )


def test_price_kind_error_lists_allowed_values():
    error = error_of(changed("per: avoided_minute", "per: avoided_hour"))
    assert error.field == "$.anchors[0].price.per"
    assert error.allowed == "availability_point_day, avoided_minute, oee_point_day, target_met"


def test_unknown_field_names_line_and_fields():
    error = error_of(changed('    floor: "0"\n', '    floor: "0"\n    discount: "5"\n'))
    assert (error.field, error.line) == ("$.anchors[0].discount", LINE["floor"] + 1)
    assert "unknown field (got '5')" in str(error)
    assert "allowed: id, scope, metric, baseline, reporting, title, sufficiency, uncertainty, target, price, cap, floor" in str(error)


def test_broken_yaml_and_non_mapping():
    broken = error_of("schema: valuegate/contract/v1\nid: [unclosed\n")
    assert str(broken).startswith("acme.yaml:3: $: invalid YAML:")
    listed = error_of("- one\n- two\n")
    assert str(listed).startswith("acme.yaml:1: $: a contract must be a mapping")


def test_parsed_data_error_has_field_without_line():
    data = json.loads(json.dumps(msgspec.to_builtins(parse_contract_text(CONTRACT))))
    data["anchors"][0]["price"]["amount"] = "-12.00"
    with pytest.raises(ContractError) as caught:
        parse_contract(data, file="uploaded contract")
    assert caught.value.line is None
    assert str(caught.value).startswith("uploaded contract: $.anchors[0].price.amount: the unit price must be greater than zero")
    assert "(got '-12.00')" in str(caught.value)


def test_load_contract_names_the_file(tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text(changed("end: 2023-03-31", "end: 2023-02-30"), encoding="utf-8")
    with pytest.raises(ContractError, match="^" + re.escape(f"{path}:{LINE['end']}: $.end: not a valid calendar date")):
        load_contract(path)
    path.write_bytes(b"schema: \xff\xfe\n")
    with pytest.raises(ContractError, match="cannot read the contract"):
        load_contract(path)


def test_contract_digest_is_canonical_and_stable():
    contract = parse_contract_text(CONTRACT)
    digest = contract_digest(contract)
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64
    # The bundle's contract.json is the contract with defaults filled in; its canonical form gives the same digest.
    stored = json.loads(json.dumps(msgspec.to_builtins(contract), indent=2, sort_keys=True))
    assert content_digest(stored) == digest
    assert contract_digest(parse_contract(stored)) == digest
    # Key order and quoting in the YAML do not matter; the terms do.
    assert contract_digest(parse_contract_text(changed("currency: CNY\n", "") + "currency: CNY\n")) == digest
    assert contract_digest(parse_contract_text(changed('amount: "12.00"', 'amount: "12.01"'))) != digest


runner = CliRunner()


def check_config(tmp_path: Path, contract_text: str):
    (tmp_path / "contract.yaml").write_text(contract_text, encoding="utf-8")
    path = write_config(tmp_path, 1883, machines=[{"device": "line", "id": "filler-1"}], devices=[
        {"protocol": "modbus", "id": "line", "host": "127.0.0.1", "port": 5020, "tag_map": "demo/bottling-filler-modbus.yaml"}
    ], contracts=["contract.yaml"])  # fmt: skip
    return runner.invoke(app, ["edge", "check-config", str(path)])


def test_check_config_accepts_valid_contract(tmp_path):
    result = check_config(tmp_path, CONTRACT)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('amount: "12.00"', 'amount: "-12.00"', f"contract.yaml:{LINE['price']}: $.anchors[0].price.amount: the unit price must be greater than zero"),
        ("currency: CNY", "currency: RMB", f"contract.yaml:{LINE['currency']}: $.currency: not an ISO 4217 currency code; did you mean CNY? (got 'RMB')"),
        ("end: 2023-03-31", "end: 2023-02-30", f"contract.yaml:{LINE['end']}: $.end: not a valid calendar date (got '2023-02-30')"),
        ("metric: unplanned_downtime_rate", "metric: mtbf_hours", "allowed: availability_points, oee_points, unplanned_downtime_rate"),
    ],
)
def test_check_config_reports_contract_problem(tmp_path, old, new, expected):
    result = check_config(tmp_path, changed(old, new))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert expected in result.output
    assert "1 problem(s) found" in result.output
