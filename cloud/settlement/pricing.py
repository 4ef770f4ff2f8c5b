"""Outcome pricing: the money one value anchor earns in a billing period from its vouchers.

All money is :class:`~decimal.Decimal`. Voucher quantities are JSON floats;
they enter pricing through their shortest ``repr`` (``1.5`` becomes
``Decimal('1.5')``), so the same voucher always prices to the same amount.

Rules, per anchor and billing period:

- ``oee_point_day`` / ``availability_point_day``: the sum, over sufficient
  running days, of the day's points gained, times the price.
- ``avoided_minute``: the sum, over sufficient days, of the avoided minutes
  of unplanned downtime, times the price.
- ``target_met``: the price once when the mean gain per sufficient running
  day reaches the anchor's ``target``, else nothing.
- The contract's settlement mode picks the day's point estimate or the lower
  end of its interval. The period's amount is then limited by the anchor's
  ``floor`` and ``cap``. Without a floor it never goes below zero, so a period
  that lost value bills nothing. Last, the amount is rounded to the
  contract's ``rounding`` (``0.01`` = fen) half-up.
- When several vouchers cover one anchor-day (a gateway re-issued the day),
  the one with the highest sequence number counts, and the others are listed
  as superseded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from valuegate.edge.protocol.contract import Anchor, Contract

__all__ = (
    "PRICE_KINDS",
    "PricingError",
    "VoucherValue",
    "Charge",
    "to_decimal",
    "quantize_money",
    "latest_per_day",
    "price_anchor",
)

PriceKind = Literal["oee_point_day", "availability_point_day", "avoided_minute", "target_met"]
Mode = Literal["point", "lower_bound"]

PRICE_KINDS: tuple[PriceKind, ...] = ("oee_point_day", "availability_point_day", "avoided_minute", "target_met")

# The voucher quantity each price kind is defined on; None accepts any quantity.
_QUANTITY_FOR_KIND: dict[str, str | None] = {
    "oee_point_day": "oee_points",
    "availability_point_day": "availability_points",
    "avoided_minute": "avoided_downtime_min",
    "target_met": None,
}


class PricingError(ValueError):
    """An anchor cannot be priced; ``code`` is a stable reason key and ``anchor`` names the anchor."""

    def __init__(self, code: str, message: str, *, anchor: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.anchor = anchor


def to_decimal(value: float | int | str | Decimal, *, what: str = "value") -> Decimal:
    """Convert a JSON number to Decimal through its shortest repr; reject NaN and infinities."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PricingError("non_finite", f"{what} is {value!r}; only finite numbers can be priced")
        number = Decimal(repr(value))
    else:
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise PricingError("not_decimal", f"{what} {value!r} is not a decimal number") from exc
    if not number.is_finite():
        raise PricingError("non_finite", f"{what} is {value!r}; only finite numbers can be priced")
    return number


def quantize_money(amount: Decimal, rounding: str | Decimal) -> Decimal:
    """Round ``amount`` to the step ``rounding`` (for example ``0.01``) with ROUND_HALF_UP."""
    step = to_decimal(rounding, what="rounding")
    if step <= 0:
        raise PricingError("rounding", f"rounding {rounding!r} must be a positive step such as '0.01'")
    units = (amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return (units * step).quantize(step)


@dataclass(frozen=True, slots=True)
class VoucherValue:
    """The fields of one verified voucher that pricing reads."""

    voucher_id: str
    gateway: str
    seq: int
    anchor: str
    plant_date: str
    quantity: str
    point: Decimal
    low: Decimal
    running_day: bool
    sufficient: bool

    @classmethod
    def from_claims(cls, claims: Any) -> VoucherValue:
        """Build from a ``Claims`` struct or the ``credentialSubject`` mapping of a voucher."""
        get = claims.get if isinstance(claims, Mapping) else lambda name: getattr(claims, name)

        def part(name: str) -> Any:
            value = get(name)
            if isinstance(value, Mapping):
                return value
            return {key: getattr(value, key) for key in value.__struct_fields__}

        delta, reporting, sufficiency, period = part("delta"), part("reporting"), part("sufficiency"), part("period")
        vid = get("voucher_id")
        return cls(
            voucher_id=vid,
            gateway=get("gateway"),
            seq=int(get("seq")),
            anchor=get("anchor"),
            plant_date=period["plant_date"],
            quantity=delta["quantity"],
            point=to_decimal(delta["point"], what=f"delta.point of voucher {vid}"),
            low=to_decimal(delta["low"], what=f"delta.low of voucher {vid}"),
            running_day=bool(reporting["running_day"]),
            sufficient=bool(sufficiency["ok"]),
        )

    def gain(self, mode: Mode) -> Decimal:
        return self.low if mode == "lower_bound" else self.point


@dataclass(frozen=True, slots=True)
class Charge:
    """The amount one anchor bills for one period, with every input that produced it."""

    anchor: str
    kind: PriceKind
    mode: Mode
    currency: str
    unit_price: Decimal
    quantity: Decimal
    raw_amount: Decimal
    amount: Decimal
    days: int
    mean_gain: Decimal | None
    target: Decimal | None
    target_met: bool | None
    cap_applied: bool
    floor_applied: bool
    voucher_ids: tuple[str, ...]
    superseded: tuple[str, ...] = field(default=())
    not_counted: tuple[tuple[str, str], ...] = field(default=())


def latest_per_day(values: Iterable[VoucherValue]) -> tuple[list[VoucherValue], list[VoucherValue]]:
    """Split vouchers into the latest one per anchor-day (highest seq) and the superseded rest."""
    latest: dict[tuple[str, str], VoucherValue] = {}
    superseded: list[VoucherValue] = []
    for value in values:
        key = (value.anchor, value.plant_date)
        held = latest.get(key)
        if held is None:
            latest[key] = value
        elif (value.seq, value.voucher_id) > (held.seq, held.voucher_id):
            superseded.append(held)
            latest[key] = value
        else:
            superseded.append(value)
    kept = sorted(latest.values(), key=lambda v: (v.plant_date, v.voucher_id))
    return kept, sorted(superseded, key=lambda v: v.voucher_id)


def _limits(anchor: Anchor) -> tuple[Decimal | None, Decimal | None]:
    cap = to_decimal(anchor.cap, what=f"cap of anchor {anchor.id}") if anchor.cap is not None else None
    floor = to_decimal(anchor.floor, what=f"floor of anchor {anchor.id}") if anchor.floor is not None else None
    for name, limit in (("cap", cap), ("floor", floor)):
        if limit is not None and limit < 0:
            msg = f"anchor {anchor.id!r} has {name} {limit}, below zero; upload a contract revision whose {name} is 0 or more"
            raise PricingError("negative_limit", msg, anchor=anchor.id)
    if cap is not None and floor is not None and floor > cap:
        msg = f"anchor {anchor.id!r} has floor {floor} above cap {cap}; fix the contract so that floor <= cap"
        raise PricingError("floor_above_cap", msg, anchor=anchor.id)
    return cap, floor


def price_anchor(contract: Contract, anchor_id: str, values: Iterable[VoucherValue], *, mode: Mode | None = None) -> Charge:
    """Price one anchor over the given verified vouchers of one billing period.

    ``mode`` overrides the contract's settlement mode (the UI shows both).
    Raises :class:`PricingError` when the anchor has no price, a price of zero
    or less, a negative cap or floor, or a voucher that belongs to another
    anchor or carries a quantity the price is not defined on.
    """
    anchor = contract.anchor(anchor_id)
    if anchor.price is None:
        raise PricingError("no_price", f"anchor {anchor.id!r} of contract {contract.id!r} has no price; add price {{per, amount}}", anchor=anchor.id)
    kind = anchor.price.per
    mode = mode or contract.settlement
    unit_price = to_decimal(anchor.price.amount, what=f"price of anchor {anchor.id}")
    # The contract parser rejects such prices. This check covers revisions stored before it did,
    # because at a negative price the value a plant lost would be billed to the customer.
    if unit_price <= 0:
        msg = f"anchor {anchor.id!r} of contract {contract.id!r} has unit price {unit_price}; a price must be greater than zero, so upload a corrected contract revision"
        raise PricingError("non_positive_price", msg, anchor=anchor.id)
    cap, floor = _limits(anchor)
    target = to_decimal(anchor.target, what=f"target of anchor {anchor.id}") if anchor.target is not None else None
    if kind == "target_met" and target is None:
        raise PricingError("no_target", f"anchor {anchor.id!r} is priced per target met but has no target", anchor=anchor.id)

    values = list(values)
    for value in values:
        if value.anchor != anchor.id:
            msg = f"voucher {value.voucher_id} is for anchor {value.anchor!r}, not {anchor.id!r}; price each anchor with its own vouchers"
            raise PricingError("wrong_anchor", msg, anchor=anchor.id)
        expected = _QUANTITY_FOR_KIND[kind]
        if expected is not None and value.quantity != expected:
            msg = f"voucher {value.voucher_id} measures {value.quantity!r}, but anchor {anchor.id!r} is priced per {kind} ({expected})"
            raise PricingError("quantity_mismatch", msg, anchor=anchor.id)
    kept, superseded = latest_per_day(values)

    # Which days count: sufficient days; point-day prices and targets also need a running day.
    counted: list[VoucherValue] = []
    not_counted: list[tuple[str, str]] = []
    for value in kept:
        if not value.sufficient:
            not_counted.append((value.voucher_id, "insufficient_data"))
        elif kind != "avoided_minute" and not value.running_day:
            not_counted.append((value.voucher_id, "not_running_day"))
        else:
            counted.append(value)

    total_gain = sum((value.gain(mode) for value in counted), Decimal(0))
    mean_gain = total_gain / len(counted) if counted else None
    target_met = None if target is None or mean_gain is None else mean_gain >= target
    if kind == "target_met":
        quantity = Decimal(1) if target_met else Decimal(0)
    else:
        quantity = total_gain
    raw_amount = quantity * unit_price

    # Limits apply to the period's amount; a floor only once the period counted any day.
    amount = raw_amount
    cap_applied = floor_applied = False
    lower = floor if floor is not None else Decimal(0)
    if counted and amount < lower:
        amount, floor_applied = lower, floor is not None
    if not counted:
        amount = Decimal(0)
    if cap is not None and amount > cap:
        amount, cap_applied = cap, True

    return Charge(
        anchor=anchor.id,
        kind=kind,
        mode=mode,
        currency=contract.currency,
        unit_price=unit_price,
        quantity=quantity,
        raw_amount=raw_amount,
        amount=quantize_money(amount, contract.rounding),
        days=len(counted),
        mean_gain=mean_gain,
        target=target,
        target_met=target_met,
        cap_applied=cap_applied,
        floor_applied=floor_applied,
        voucher_ids=tuple(value.voucher_id for value in counted),
        superseded=tuple(value.voucher_id for value in superseded),
        not_counted=tuple(not_counted),
    )
