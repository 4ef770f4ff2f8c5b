"""Contract files (schema ``valuegate/contract/v1``): value anchors and their commercial terms.

One YAML file describes a contract. The edge reads the measurement part of
each anchor: scope, metric, baseline and reporting periods, sufficiency
rules and bootstrap settings. The cloud reads the same file for prices,
caps, floors, settlement mode and renewal triggers. Prices never enter a
voucher.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from .canonical import content_digest
from .contract_source import ContractError, ContractSource, source_from_text, validation_error

__all__ = (
    "CONTRACT_SCHEMA",
    "CURRENCY_CODES",
    "ContractError",
    "PeriodSpec",
    "Sufficiency",
    "Uncertainty",
    "Price",
    "Anchor",
    "Trigger",
    "Contract",
    "contract_digest",
    "load_contract",
    "parse_contract",
    "parse_contract_text",
)

CONTRACT_SCHEMA = "valuegate/contract/v1"

Metric = Literal["oee_points", "availability_points", "unplanned_downtime_rate"]

# ISO 4217 list one (current currency and fund codes) as shipped in Debian's iso-codes 4.15.0
# (/usr/share/iso-codes/json/iso_4217.json), without the codes that cannot settle an invoice:
# precious metals (XAG XAU XPD XPT), bond-market units (XBA-XBD), XDR, XSU, XUA, XTS and XXX.
CURRENCY_CODES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR
    SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD
    USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
    """.split()
)
_CURRENCY_NAMES = {"RMB": "CNY", "YUAN": "CNY", "US$": "USD", "YEN": "JPY"}

# 1, 10, 100 ... or 0.1, 0.01, 0.001 ...: a rounding step that is a power of ten, written without an exponent.
_ROUNDING = re.compile(r"10*|0\.0*1")
# The metric each price unit bills (target_met fits any metric with a target).
_METRIC_FOR_PRICE: dict[str, str | None] = {
    "oee_point_day": "oee_points",
    "availability_point_day": "availability_points",
    "avoided_minute": "unplanned_downtime_rate",
    "target_met": None,
}


class _Spec(msgspec.Struct, forbid_unknown_fields=True):
    pass


class PeriodSpec(_Spec):
    """Plant-local calendar dates, both inclusive."""

    first_date: dt.date
    last_date: dt.date


class BaselineSpec(_Spec):
    """Baseline period and the minimum number of covered days it needs before any value is claimed."""

    first_date: dt.date
    last_date: dt.date
    min_days: int


class Sufficiency(_Spec):
    """Data-sufficiency gate for one day: enough planned busy time, little enough missing data."""

    min_planned_busy_min: float = 30.0
    max_offline_share: float = 0.2


class Uncertainty(_Spec):
    """Seeded block bootstrap over days for the 95% interval of the delta."""

    resamples: int = 2000
    block_days: int = 3
    seed: int = 20240101
    confidence: float = 0.95


class Price(_Spec):
    """Price of one unit of realized value, as a decimal string in the contract currency."""

    per: Literal["oee_point_day", "availability_point_day", "avoided_minute", "target_met"]
    amount: str


class Anchor(_Spec):
    """A value anchor: what is measured, against which baseline, and (cloud only) at what price."""

    id: str
    scope: list[str]
    metric: Metric
    baseline: BaselineSpec
    reporting: PeriodSpec
    title: dict[str, str] = {}
    sufficiency: Sufficiency = msgspec.field(default_factory=Sufficiency)
    uncertainty: Uncertainty = msgspec.field(default_factory=Uncertainty)
    target: float | None = None
    price: Price | None = None
    cap: str | None = None
    floor: str | None = None


class Trigger(_Spec):
    """Renewal-prep trigger: target met, days before the contract ends, or cumulative value over a threshold."""

    kind: Literal["target_met", "days_before_end", "value_over"]
    days: int | None = None
    amount: str | None = None
    anchor: str | None = None


class Contract(_Spec):
    """A parsed contract file."""

    schema: str
    id: str
    tenant: str
    customer: str
    start: dt.date
    end: dt.date
    anchors: list[Anchor]
    title: dict[str, str] = {}
    currency: str = "CNY"
    rounding: str = "0.01"
    settlement: Literal["point", "lower_bound"] = "point"
    triggers: list[Trigger] = []

    def anchor(self, anchor_id: str) -> Anchor:
        for anchor in self.anchors:
            if anchor.id == anchor_id:
                return anchor
        msg = f"contract {self.id!r} has no anchor {anchor_id!r}; anchors: {', '.join(a.id for a in self.anchors)}"
        raise KeyError(msg)


def contract_digest(contract: Contract) -> str:
    """Return ``sha256:<hex>`` over the RFC 8785 canonical JSON of the contract's terms, defaults filled in.

    This is the canonical form of a bundle's ``contract.json``. Invoices record
    it, so that an auditor can match the terms they were priced with against
    the digest printed on the signed contract or invoice.
    """
    return content_digest(msgspec.to_builtins(contract))


# Digits with an optional point: no exponent, spaces or other scripts' digits. Up to 15 digits before the point and 6
# after keep every charge (a price times points and days) inside the 28 digits of Python's default decimal context.
_AMOUNT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,6})?")
_AMOUNT_ALLOWED = "a decimal string such as '12.00': digits and an optional point, at most 15 digits before it and 6 after, no exponent or spaces"


def _decimal(source: ContractSource, field_path: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    if not _AMOUNT.fullmatch(value):
        raise source.error(field_path, "not a plain decimal amount", allowed=_AMOUNT_ALLOWED)
    return Decimal(value)


def _check_money(contract: Contract, source: ContractSource) -> None:
    """Check the commercial terms: currency, rounding, prices, caps, floors and trigger thresholds."""
    if contract.currency not in CURRENCY_CODES:
        code = _CURRENCY_NAMES.get(contract.currency.upper(), contract.currency.upper())
        hint = f"not an ISO 4217 currency code; did you mean {code}?" if code in CURRENCY_CODES else "not an ISO 4217 currency code"
        raise source.error("$.currency", hint, allowed="three upper-case letters from ISO 4217 such as CNY, USD, EUR, JPY, HKD")
    if not _ROUNDING.fullmatch(contract.rounding):
        raise source.error("$.rounding", "the rounding step must be a positive power of ten", allowed="1, 0.1, 0.01, 0.001 (or 10, 100 ...)")

    for index, anchor in enumerate(contract.anchors):
        where = f"$.anchors[{index}]"
        if anchor.price is not None:
            fits = _METRIC_FOR_PRICE.get(anchor.price.per)
            if fits is not None and fits != anchor.metric:
                fitting = [per for per, metric in _METRIC_FOR_PRICE.items() if metric in (anchor.metric, None)]
                raise source.error(f"{where}.price.per", f"this price unit does not fit the anchor's metric {anchor.metric}", allowed=", ".join(fitting))
            if anchor.price.per == "target_met" and anchor.target is None:
                raise source.error(f"{where}.target", "an anchor priced per target met needs a target", allowed="the mean gain per day to reach, for example 2.5")
            price = _decimal(source, f"{where}.price.amount", anchor.price.amount)
            if price is not None and price <= 0:
                message = "the unit price must be greater than zero, because a negative price turns value the plant lost into a charge"
                raise source.error(f"{where}.price.amount", message, allowed="a decimal greater than 0 such as '12.00'")
        cap = _decimal(source, f"{where}.cap", anchor.cap)
        floor = _decimal(source, f"{where}.floor", anchor.floor)
        for name, limit in (("cap", cap), ("floor", floor)):
            if limit is not None and limit < 0:
                raise source.error(f"{where}.{name}", f"a {name} cannot be negative", allowed="a decimal of 0 or more")
        if cap is not None and floor is not None and floor > cap:
            raise source.error(f"{where}.floor", f"the floor lies above the cap {anchor.cap!r}", allowed=f"a decimal from 0 to {anchor.cap}")

    _check_triggers(contract, source)


# The keys each trigger kind reads; any other is a mistake the renewal check would pass over.
_TRIGGER_KEYS = {"target_met": {"anchor"}, "days_before_end": {"days"}, "value_over": {"amount"}}


def _check_triggers(contract: Contract, source: ContractSource) -> None:
    """Check that each renewal trigger has what its kind needs, nothing it ignores, and can fire at all."""
    targets = {anchor.id: anchor.target for anchor in contract.anchors}
    seen: dict[tuple[Any, ...], int] = {}
    for index, trigger in enumerate(contract.triggers):
        where = f"$.triggers[{index}]"
        if trigger.kind == "days_before_end" and trigger.days is None:
            raise source.error(f"{where}.days", "a days_before_end trigger needs days", allowed="a whole number of days, 0 or more, for example 60")
        if trigger.kind == "value_over" and trigger.amount is None:
            raise source.error(f"{where}.amount", "a value_over trigger needs an amount", allowed=f"a decimal string in {contract.currency}, for example '10000.00'")
        for key in ("days", "amount", "anchor"):
            if getattr(trigger, key) is not None and key not in _TRIGGER_KEYS[trigger.kind]:
                needs = ", ".join(sorted(_TRIGGER_KEYS[trigger.kind]))
                raise source.error(f"{where}.{key}", f"a {trigger.kind} trigger does not use {key}", allowed=f"only {needs} besides kind")
        if trigger.anchor is not None and trigger.anchor not in targets:
            raise source.error(f"{where}.anchor", "no anchor of this contract has this id", allowed=", ".join(targets))
        if trigger.kind == "target_met":
            if trigger.anchor is not None and targets[trigger.anchor] is None:
                raise source.error(f"{where}.anchor", "this anchor has no target, so the trigger could never fire", allowed="an anchor with a target, or add a target to it")
            if trigger.anchor is None and all(target is None for target in targets.values()):
                raise source.error(f"{where}.kind", "no anchor has a target, so a target_met trigger could never fire", allowed="add a target to an anchor")
        threshold = _decimal(source, f"{where}.amount", trigger.amount)
        if threshold is not None and threshold <= 0:
            raise source.error(f"{where}.amount", "the threshold must be greater than zero", allowed="a decimal greater than 0 such as '10000.00'")
        if trigger.days is not None and trigger.days < 0:
            raise source.error(f"{where}.days", "a number of days cannot be negative", allowed="0 or more")
        key = (trigger.kind, trigger.days, threshold, trigger.anchor)
        if key in seen:
            raise source.error(f"{where}", f"the same trigger as triggers[{seen[key]}]; each fires once, so list it once")
        seen[key] = index


def _check(contract: Contract, source: ContractSource) -> None:
    if contract.schema != CONTRACT_SCHEMA:
        raise source.error("$.schema", "unknown contract schema", allowed=CONTRACT_SCHEMA)
    if contract.end < contract.start:
        raise source.error("$.end", f"the contract ends before it starts ({contract.start})", value=contract.end.isoformat())
    if not contract.anchors:
        raise source.error("$.anchors", "a contract needs at least one value anchor", allowed="a list of anchors with id, scope, metric, baseline and reporting")
    seen: set[str] = set()
    for index, anchor in enumerate(contract.anchors):
        where = f"$.anchors[{index}]"
        if anchor.id in seen:
            raise source.error(f"{where}.id", "duplicate anchor id; give each anchor its own id")
        seen.add(anchor.id)
        if not anchor.scope:
            raise source.error(f"{where}.scope", "an anchor needs at least one machine")
        if len(set(anchor.scope)) != len(anchor.scope):
            twice = sorted({machine for machine in anchor.scope if anchor.scope.count(machine) > 1})
            raise source.error(f"{where}.scope", f"machine {', '.join(twice)} is listed twice, which would count its times and parts twice", allowed="each machine once")
        if anchor.target is not None and not (math.isfinite(anchor.target) and anchor.target > 0):
            raise source.error(f"{where}.target", "a target is a finite gain greater than zero", allowed="for example 2.5 (points) or 30 (avoided minutes a day)")
        if anchor.baseline.last_date < anchor.baseline.first_date:
            raise source.error(f"{where}.baseline.last_date", f"the baseline ends before it starts ({anchor.baseline.first_date})")
        if anchor.reporting.last_date < anchor.reporting.first_date:
            raise source.error(f"{where}.reporting.last_date", f"the reporting period ends before it starts ({anchor.reporting.first_date})")
        if anchor.reporting.first_date <= anchor.baseline.last_date:
            message = f"the reporting period overlaps the baseline, which ends {anchor.baseline.last_date}"
            raise source.error(f"{where}.reporting.first_date", message, allowed=f"a date after {anchor.baseline.last_date}")
        if anchor.baseline.min_days < 1:
            raise source.error(f"{where}.baseline.min_days", "the baseline needs at least one day", allowed="1 or more")
        _check_measurement(anchor, where, contract, source)
    _check_money(contract, source)


def _check_measurement(anchor: Anchor, where: str, contract: Contract, source: ContractSource) -> None:
    """Check an anchor's reporting period, sufficiency gate and bootstrap settings."""
    first, last = anchor.reporting.first_date, anchor.reporting.last_date
    if first < contract.start or last > contract.end:
        # The baseline may lie before the contract starts (it is often measured before the installation); the reporting period may not.
        field = "first_date" if first < contract.start else "last_date"
        message = f"the reporting period {first} .. {last} lies outside the contract term {contract.start} .. {contract.end}"
        raise source.error(f"{where}.reporting.{field}", message, allowed=f"dates from {contract.start} to {contract.end}")

    gate = anchor.sufficiency
    if not 0 <= gate.max_offline_share <= 1:
        raise source.error(f"{where}.sufficiency.max_offline_share", "a share of the day must lie between 0 and 1", allowed="for example 0.2 for 20%")
    if not math.isfinite(gate.min_planned_busy_min) or gate.min_planned_busy_min < 0:
        raise source.error(f"{where}.sufficiency.min_planned_busy_min", "the minutes must be a finite number, not negative", allowed="0 or more, for example 30")

    if not 0 < anchor.uncertainty.confidence < 1:
        raise source.error(f"{where}.uncertainty.confidence", "the confidence level must lie strictly between 0 and 1", allowed="for example 0.95")
    if anchor.uncertainty.resamples < 100:
        raise source.error(f"{where}.uncertainty.resamples", "too few bootstrap resamples", allowed="100 or more")
    if not 0 <= anchor.uncertainty.seed < 2**64:
        raise source.error(f"{where}.uncertainty.seed", "the bootstrap seed must fit an unsigned 64-bit integer", allowed=f"0 to {2**64 - 1}")

    block = anchor.uncertainty.block_days
    baseline_days = (anchor.baseline.last_date - anchor.baseline.first_date).days + 1
    if block < 1:
        raise source.error(f"{where}.uncertainty.block_days", "a bootstrap block needs at least one day", allowed="1 or more")
    # Only lower-bound settlement bills from the interval; with the point estimate a zero-width interval changes no amount.
    if block >= baseline_days and contract.settlement == "lower_bound":
        message = (
            f"a block of {block} days is as long as the {baseline_days}-day baseline, so every resample is the whole baseline, "
            "the 95% interval has zero width and lower-bound settlement would bill the point estimate"
        )
        allowed = f"1 to {baseline_days - 1}" if baseline_days > 1 else "a baseline of two or more days"
        raise source.error(f"{where}.uncertainty.block_days", message, value=block, allowed=allowed)


def _parse(source: ContractSource) -> Contract:
    if not isinstance(source.data, dict):
        raise source.error("$", "a contract must be a mapping of fields such as schema, id, tenant and anchors", value=type(source.data).__name__)
    try:
        contract = msgspec.convert(source.data, Contract)
    except msgspec.ValidationError as exc:
        raise validation_error(source, Contract, exc) from exc
    _check(contract, source)
    return contract


def parse_contract(data: object, *, file: str = "<contract>") -> Contract:
    """Validate already-parsed YAML or JSON data as a contract; errors name the field but no line."""
    return _parse(ContractSource(file, data))


def parse_contract_text(text: str, *, file: str = "<contract>") -> Contract:
    """Parse and validate contract YAML (or JSON) text; errors name ``file``, the line, the field and the value."""
    return _parse(source_from_text(text, file))


def load_contract(path: str | Path) -> Contract:
    """Load and validate a contract YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc}; give a UTF-8 YAML file", file=str(path)) from exc
    return parse_contract_text(text, file=str(path))
