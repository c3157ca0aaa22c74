"""Prices, and the plans that stood in for them on accounts pinned to old API versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from service.stripe_shapes.fields import (
    as_mapping,
    expandable_id,
    get_decimal,
    get_int,
    get_str,
    list_data,
    lower_currency,
)


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # None: the open-ended last tier ("inf")
    unit_amount_decimal: Decimal | None
    flat_amount_decimal: Decimal | None


@dataclass(frozen=True, slots=True)
class TransformQuantity:
    divide_by: int
    round: Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class PriceCurrencyOption:
    """Amounts of a multi-currency price in one of its extra currencies."""

    unit_amount_decimal: Decimal | None
    tiers: tuple[Tier, ...]


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    id: str | None
    product: str | None
    currency: str | None
    # `unit_amount_decimal` when Stripe sent it, else `unit_amount` (plan: `amount`).
    unit_amount_decimal: Decimal | None
    billing_scheme: Literal["per_unit", "tiered"]
    tiers_mode: Literal["volume", "graduated"] | None
    tiers: tuple[Tier, ...]
    interval: str | None  # None for one-time prices
    interval_count: int
    usage_type: Literal["licensed", "metered"]
    transform_quantity: TransformQuantity | None
    nickname: str | None
    currency_options: Mapping[str, PriceCurrencyOption] = field(default_factory=dict)
    # The product's `name` when `product` came expanded (never in webhooks, which do not
    # expand; API reads with `expand`), or a pre-2018 plan's own `name`.
    product_name: str | None = None


def _amount(obj: Mapping[str, Any], decimal_key: str, int_key: str) -> Decimal | None:
    exact = get_decimal(obj, decimal_key)
    if exact is not None:
        return exact
    whole = get_int(obj, int_key)
    return Decimal(whole) if whole is not None else None


def _tiers(value: Any) -> tuple[Tier, ...]:
    tiers = []
    for raw in list_data(value):
        tier = as_mapping(raw)
        tiers.append(
            Tier(
                up_to=get_int(tier, "up_to"),  # "inf" and null both read as None
                unit_amount_decimal=_amount(tier, "unit_amount_decimal", "unit_amount"),
                flat_amount_decimal=_amount(tier, "flat_amount_decimal", "flat_amount"),
            )
        )
    return tuple(tiers)


def _transform(value: Any) -> TransformQuantity | None:
    raw = as_mapping(value)
    divide_by = get_int(raw, "divide_by")
    if divide_by is None or divide_by <= 0:
        return None
    return TransformQuantity(
        divide_by=divide_by, round="up" if raw.get("round") == "up" else "down"
    )


def _currency_options(value: Any) -> dict[str, PriceCurrencyOption]:
    options = {}
    for currency, raw in as_mapping(value).items():
        code = lower_currency(currency)
        option = as_mapping(raw)
        if code is not None:
            options[code] = PriceCurrencyOption(
                unit_amount_decimal=_amount(option, "unit_amount_decimal", "unit_amount"),
                tiers=_tiers(option.get("tiers")),
            )
    return options


def read_price(obj: Mapping[str, Any]) -> PriceSnapshot:
    """Read a `price` object, or a `plan` object (which keeps the recurring fields flat)."""
    is_plan = obj.get("object") == "plan" or ("recurring" not in obj and "interval" in obj)
    recurring = obj if is_plan else as_mapping(obj.get("recurring"))
    unit = (
        _amount(obj, "amount_decimal", "amount")
        if is_plan
        else _amount(obj, "unit_amount_decimal", "unit_amount")
    )
    tiers_mode = obj.get("tiers_mode")
    return PriceSnapshot(
        id=get_str(obj, "id"),
        product=expandable_id(obj.get("product")),
        currency=lower_currency(obj.get("currency")),
        unit_amount_decimal=unit,
        billing_scheme="tiered" if obj.get("billing_scheme") == "tiered" else "per_unit",
        tiers_mode=tiers_mode if tiers_mode in ("volume", "graduated") else None,
        tiers=_tiers(obj.get("tiers")),
        interval=get_str(recurring, "interval"),
        interval_count=max(get_int(recurring, "interval_count") or 1, 1),
        usage_type="metered" if recurring.get("usage_type") == "metered" else "licensed",
        transform_quantity=_transform(
            obj.get("transform_usage") if is_plan else obj.get("transform_quantity")
        ),
        nickname=get_str(obj, "nickname"),
        currency_options=_currency_options(obj.get("currency_options")),
        product_name=get_str(as_mapping(obj.get("product")), "name")
        or (get_str(obj, "name") if is_plan else None),
    )
