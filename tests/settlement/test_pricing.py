"""Pricing of value anchors, checked against amounts worked out by hand."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from valuegate.cloud.settlement.pricing import PricingError, VoucherValue, price_anchor, quantize_money, to_decimal
from valuegate.edge.protocol.contract import parse_contract


def contract(price: dict, *, settlement: str = "point", rounding: str = "0.01", metric: str = "oee_points", **limits):
    anchor = {
        "id": "oee-line1",
        "scope": ["m1"],
        "metric": metric,
        "baseline": {"first_date": "2024-01-01", "last_date": "2024-01-31", "min_days": 10},
        "reporting": {"first_date": "2024-02-01", "last_date": "2024-12-31"},
        "price": price,
        "target": limits.pop("target", None),
        **limits,
    }
    return parse_contract(
        {
            "schema": "valuegate/contract/v1",
            "id": "c-1",
            "tenant": "t1",
            "customer": "ACME",
            "start": "2024-01-01",
            "end": "2024-12-31",
            "anchors": [anchor],
            "settlement": settlement,
            "rounding": rounding,
        }
    )


def day(n: int, point: float, low: float | None = None, *, quantity: str = "oee_points", running: bool = True, ok: bool = True, seq: int | None = None):
    seq = n if seq is None else seq
    return VoucherValue(
        voucher_id=f"gw1:{seq}",
        gateway="gw1",
        seq=seq,
        anchor="oee-line1",
        plant_date=f"2024-02-{n:02d}",
        quantity=quantity,
        point=to_decimal(point),
        low=to_decimal(point if low is None else low),
        running_day=running,
        sufficient=ok,
    )


def test_oee_point_day_twenty_days():
    # 2,000 CNY per OEE point per running day; 1.5 points gained on each of 20 running days.
    terms = contract({"per": "oee_point_day", "amount": "2000"})
    charge = price_anchor(terms, "oee-line1", [day(n, 1.5) for n in range(1, 21)])
    assert charge.amount == Decimal("60000.00")
    assert str(charge.amount) == "60000.00"
    assert charge.quantity == Decimal("30.0")
    assert charge.days == 20
    assert charge.currency == "CNY"
    assert charge.voucher_ids == tuple(f"gw1:{n}" for n in range(1, 21))


def test_non_running_and_insufficient_days_bill_nothing():
    terms = contract({"per": "oee_point_day", "amount": "2000"})
    values = [day(1, 1.5), day(2, 4.0, running=False), day(3, 9.0, ok=False)]
    charge = price_anchor(terms, "oee-line1", values)
    assert charge.amount == Decimal("3000.00")
    assert charge.not_counted == (("gw1:2", "not_running_day"), ("gw1:3", "insufficient_data"))


def test_cap_limits_the_period_amount():
    terms = contract({"per": "oee_point_day", "amount": "2000"}, cap="50000")
    charge = price_anchor(terms, "oee-line1", [day(n, 1.5) for n in range(1, 21)])
    assert charge.raw_amount == Decimal("60000.0")
    assert charge.amount == Decimal("50000.00")
    assert charge.cap_applied
    assert not charge.floor_applied


def test_floor_raises_the_period_amount():
    # 0.2 points on 5 days at 2,000 = 2,000 CNY, below the 5,000 CNY floor.
    terms = contract({"per": "oee_point_day", "amount": "2000"}, floor="5000")
    charge = price_anchor(terms, "oee-line1", [day(n, 0.2) for n in range(1, 6)])
    assert charge.raw_amount == Decimal("2000.0")
    assert charge.amount == Decimal("5000.00")
    assert charge.floor_applied
    assert not charge.cap_applied


def test_no_floor_never_bills_below_zero():
    terms = contract({"per": "oee_point_day", "amount": "2000"})
    charge = price_anchor(terms, "oee-line1", [day(1, -1.0), day(2, 0.25)])
    assert charge.raw_amount == Decimal("-1500.00")
    assert charge.amount == Decimal("0.00")
    assert not charge.floor_applied


def test_lower_bound_mode_bills_the_interval_low_end():
    # Point 1.5, interval low 0.9: lower-bound mode bills 0.9 x 2,000 x 20 = 36,000.
    values = [day(n, 1.5, 0.9) for n in range(1, 21)]
    point = price_anchor(contract({"per": "oee_point_day", "amount": "2000"}), "oee-line1", values)
    lower = price_anchor(contract({"per": "oee_point_day", "amount": "2000"}, settlement="lower_bound"), "oee-line1", values)
    assert point.amount == Decimal("60000.00")
    assert lower.amount == Decimal("36000.00")
    assert lower.mode == "lower_bound"


def test_avoided_minutes_count_every_sufficient_day():
    terms = contract({"per": "avoided_minute", "amount": "35.5"}, metric="unplanned_downtime_rate")
    values = [day(1, 12.25, quantity="avoided_downtime_min"), day(2, 7.5, quantity="avoided_downtime_min", running=False)]
    charge = price_anchor(terms, "oee-line1", values)
    # (12.25 + 7.5) x 35.5 = 701.125 -> 701.13 half-up
    assert charge.amount == Decimal("701.13")


def test_target_met_bills_the_fee_once():
    terms = contract({"per": "target_met", "amount": "80000"}, target=2.0)
    met = price_anchor(terms, "oee-line1", [day(1, 2.5), day(2, 1.5), day(3, 2.0)])
    missed = price_anchor(terms, "oee-line1", [day(1, 2.5), day(2, 1.0), day(3, 2.0)])
    assert met.mean_gain == Decimal("2")
    assert met.target_met is True
    assert met.amount == Decimal("80000.00")
    assert missed.target_met is False
    assert missed.amount == Decimal("0.00")


def test_rounding_step_from_the_contract():
    assert quantize_money(Decimal("0.005"), "0.01") == Decimal("0.01")
    assert quantize_money(Decimal("-0.005"), "0.01") == Decimal("-0.01")
    assert quantize_money(Decimal("12.344"), "0.01") == Decimal("12.34")
    assert quantize_money(Decimal("12.5"), "1") == Decimal("13")
    terms = contract({"per": "oee_point_day", "amount": "333.333"}, rounding="0.1")
    assert price_anchor(terms, "oee-line1", [day(1, 1.0)]).amount == Decimal("333.3")


def test_reissued_day_counts_latest_seq():
    terms = contract({"per": "oee_point_day", "amount": "1000"})
    charge = price_anchor(terms, "oee-line1", [day(1, 1.0, seq=4), day(1, 2.0, seq=9)])
    assert charge.amount == Decimal("2000.00")
    assert charge.superseded == ("gw1:4",)


def test_quantity_mismatch_is_rejected():
    # The parser refuses this price unit for an OEE anchor; pricing still guards revisions stored before it did.
    terms = contract({"per": "oee_point_day", "amount": "10"})
    anchor = msgspec.structs.replace(terms.anchors[0], price=msgspec.structs.replace(terms.anchors[0].price, per="avoided_minute"))
    terms = msgspec.structs.replace(terms, anchors=[anchor])
    with pytest.raises(PricingError) as caught:
        price_anchor(terms, "oee-line1", [day(1, 1.0)])
    assert caught.value.code == "quantity_mismatch"
    assert "gw1:1" in str(caught.value)


def stored_terms(*, amount: str = "10", **limits: str):
    """A contract as an older revision may hold it: changed after parsing, so the parser's checks never saw it."""
    terms = contract({"per": "oee_point_day", "amount": "10"})
    anchor = msgspec.structs.replace(terms.anchors[0], price=msgspec.structs.replace(terms.anchors[0].price, amount=amount), **limits)
    return msgspec.structs.replace(terms, anchors=[anchor])


def test_floor_above_cap_is_rejected():
    with pytest.raises(PricingError) as caught:
        price_anchor(stored_terms(cap="100", floor="200"), "oee-line1", [day(1, 1.0)])
    assert caught.value.code == "floor_above_cap"


@pytest.mark.parametrize("amount", ["-12.00", "0", "0.00"])
def test_non_positive_price_is_rejected(amount):
    # A day that lost 100.5 points must never bill 100.5 x 12.00 to the vendor's customer as a gain.
    with pytest.raises(PricingError) as caught:
        price_anchor(stored_terms(amount=amount), "oee-line1", [day(1, -100.5)])
    assert caught.value.code == "non_positive_price"
    assert caught.value.anchor == "oee-line1"
    assert f"unit price {Decimal(amount)}" in str(caught.value)


@pytest.mark.parametrize("limit", ["cap", "floor"])
def test_negative_limit_is_rejected(limit):
    with pytest.raises(PricingError) as caught:
        price_anchor(stored_terms(**{limit: "-1.00"}), "oee-line1", [day(1, 1.0)])
    assert caught.value.code == "negative_limit"
    assert f"has {limit} -1.00" in str(caught.value)


def test_empty_period_amount_has_the_rounding_places():
    assert str(price_anchor(contract({"per": "oee_point_day", "amount": "2000"}), "oee-line1", []).amount) == "0.00"
    assert str(price_anchor(contract({"per": "oee_point_day", "amount": "2000"}, rounding="1"), "oee-line1", []).amount) == "0"
    assert str(price_anchor(contract({"per": "oee_point_day", "amount": "2000"}, rounding="0.001"), "oee-line1", []).amount) == "0.000"


def test_non_finite_gain_is_rejected():
    with pytest.raises(PricingError) as caught:
        to_decimal(float("nan"), what="delta.point")
    assert caught.value.code == "non_finite"
