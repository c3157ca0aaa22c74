"""Coupons and discounts of any API version, read into immutable snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.stripe_shapes.fields import (
    as_mapping,
    expandable_id,
    get_decimal,
    get_int,
    get_str,
    is_mapping,
    lower_currency,
)


@dataclass(frozen=True, slots=True)
class CouponSnapshot:
    id: str | None
    percent_off: Decimal | None
    amount_off: int | None
    currency: str | None
    duration: str | None
    duration_in_months: int | None
    # Multi-currency coupons carry `amount_off` per extra currency in `currency_options`.
    amount_off_options: Mapping[str, int] = field(default_factory=dict)

    def amount_off_in(self, currency: str) -> int | None:
        """`amount_off` usable on an invoice in `currency`, or None if it has none for it."""
        if self.amount_off is not None and self.currency == currency:
            return self.amount_off
        return self.amount_off_options.get(currency)


@dataclass(frozen=True, slots=True)
class DiscountSnapshot:
    # Discounts created before Stripe gave them ids (roughly 2020) have none.
    id: str | None
    # None when the payload only names the coupon (unexpanded `source.coupon`).
    coupon: CouponSnapshot | None
    coupon_id: str | None
    start: int | None
    end: int | None
    subscription: str | None
    subscription_item: str | None
    customer: str | None

    def active_at(self, at: int) -> bool:
        return (self.start is None or self.start <= at) and (self.end is None or at < self.end)


def read_coupon(obj: Mapping[str, Any]) -> CouponSnapshot:
    options: dict[str, int] = {}
    for currency, option in as_mapping(obj.get("currency_options")).items():
        amount = get_int(as_mapping(option), "amount_off")
        code = lower_currency(currency)
        if amount is not None and code is not None:
            options[code] = amount
    return CouponSnapshot(
        id=get_str(obj, "id"),
        percent_off=get_decimal(obj, "percent_off"),
        amount_off=get_int(obj, "amount_off"),
        currency=lower_currency(obj.get("currency")),
        duration=get_str(obj, "duration"),
        duration_in_months=get_int(obj, "duration_in_months"),
        amount_off_options=options,
    )


def read_discount(obj: Mapping[str, Any]) -> DiscountSnapshot:
    """Read a discount object: `coupon` on it (before 2025 versions) or `source.coupon`."""
    raw_coupon = obj.get("coupon")
    if raw_coupon is None:
        raw_coupon = as_mapping(obj.get("source")).get("coupon")
    coupon = read_coupon(raw_coupon) if is_mapping(raw_coupon) else None
    return DiscountSnapshot(
        id=get_str(obj, "id"),
        coupon=coupon,
        coupon_id=expandable_id(raw_coupon),
        start=get_int(obj, "start"),
        end=get_int(obj, "end"),
        subscription=expandable_id(obj.get("subscription")),
        subscription_item=expandable_id(obj.get("subscription_item")),
        customer=expandable_id(obj.get("customer")),
    )
