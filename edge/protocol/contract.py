"""Contract files (schema ``valuegate/contract/v1``): value anchors and their commercial terms.

One YAML file describes a contract. The edge reads the measurement part of
each anchor: scope, metric, baseline and reporting periods, sufficiency
rules and bootstrap settings. The cloud reads the same file for prices,
caps, floors, settlement mode and renewal triggers. Prices never enter a
voucher.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import msgspec
import yaml

__all__ = (
    "CONTRACT_SCHEMA",
    "ContractError",
    "PeriodSpec",
    "Sufficiency",
    "Uncertainty",
    "Price",
    "Anchor",
    "Trigger",
    "Contract",
    "load_contract",
    "parse_contract",
)

CONTRACT_SCHEMA = "valuegate/contract/v1"

Metric = Literal["oee_points", "availability_points", "unplanned_downtime_rate"]


class ContractError(ValueError):
    """A contract file is invalid; the message names the file, the field, the value and what is allowed."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.field = field


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


def _decimal_ok(value: str | None) -> bool:
    if value is None:
        return True
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def _check(contract: Contract, file: str) -> None:
    def fail(field: str, message: str) -> None:
        raise ContractError(f"{file}: {field}: {message}", file=file, field=field)

    if contract.schema != CONTRACT_SCHEMA:
        fail("schema", f"unknown contract schema {contract.schema!r}; allowed: {CONTRACT_SCHEMA}")
    if contract.end < contract.start:
        fail("end", f"contract ends ({contract.end}) before it starts ({contract.start})")
    if not _decimal_ok(contract.rounding) or Decimal(contract.rounding) <= 0:
        fail("rounding", f"{contract.rounding!r} is not a positive decimal such as '0.01'")
    seen: set[str] = set()
    for index, anchor in enumerate(contract.anchors):
        where = f"anchors[{index}]"
        if anchor.id in seen:
            fail(f"{where}.id", f"duplicate anchor id {anchor.id!r}")
        seen.add(anchor.id)
        if not anchor.scope:
            fail(f"{where}.scope", "an anchor needs at least one machine")
        if anchor.baseline.last_date < anchor.baseline.first_date:
            fail(f"{where}.baseline", "last_date is before first_date")
        if anchor.reporting.last_date < anchor.reporting.first_date:
            fail(f"{where}.reporting", "last_date is before first_date")
        if anchor.reporting.first_date <= anchor.baseline.last_date:
            fail(f"{where}.reporting.first_date", f"{anchor.reporting.first_date} overlaps the baseline, which ends {anchor.baseline.last_date}")
        if anchor.baseline.min_days < 1:
            fail(f"{where}.baseline.min_days", f"{anchor.baseline.min_days} must be at least 1")
        if not 0 < anchor.uncertainty.confidence < 1:
            fail(f"{where}.uncertainty.confidence", f"{anchor.uncertainty.confidence} must lie between 0 and 1")
        if anchor.uncertainty.resamples < 100 or anchor.uncertainty.block_days < 1:
            fail(f"{where}.uncertainty", "resamples must be at least 100 and block_days at least 1")
        for name in ("cap", "floor"):
            if not _decimal_ok(getattr(anchor, name)):
                fail(f"{where}.{name}", f"{getattr(anchor, name)!r} is not a decimal amount")
        if anchor.price is not None and not _decimal_ok(anchor.price.amount):
            fail(f"{where}.price.amount", f"{anchor.price.amount!r} is not a decimal amount")


def parse_contract(data: object, *, file: str = "<contract>") -> Contract:
    """Validate already-parsed YAML or JSON data as a contract."""
    try:
        contract = msgspec.convert(data, Contract)
    except msgspec.ValidationError as exc:
        raise ContractError(f"{file}: {exc}", file=file) from exc
    _check(contract, file)
    return contract


def load_contract(path: str | Path) -> Contract:
    """Load and validate a contract YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(f"{path}: cannot read the contract: {exc}", file=str(path)) from exc
    return parse_contract(data, file=str(path))
