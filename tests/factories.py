"""Builders of realistic Stripe JSON payloads, field for field after Stripe's API reference.

Three subscription shapes:

* ``current``: API 2025-03-31 and later: ``current_period_*`` on items, ``discounts`` as ids
  (or expanded objects), discount coupons under ``source.coupon``.
* ``legacy``: before 2025-03-31: ``current_period_*`` on the subscription, singular embedded
  ``discount`` plus the 2023+ ``discounts`` id list.
* ``ancient``: accounts pinned to 2017-2020 versions: items with ``plan`` only, no
  ``currency`` on the subscription, ``start`` instead of ``start_date``, id-less discounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

Shape = Literal["current", "legacy", "ancient"]
SHAPES: tuple[Shape, ...] = ("current", "legacy", "ancient")

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z
DAY = 86_400
MONTH = 30 * DAY


def price_payload(
    *,
    id: str = "price_basic",
    product: str | Mapping[str, Any] = "prod_basic",
    currency: str = "usd",
    unit_amount: int | None = 4900,
    unit_amount_decimal: str | None = None,
    interval: str = "month",
    interval_count: int = 1,
    usage_type: str = "licensed",
    billing_scheme: str = "per_unit",
    tiers_mode: str | None = None,
    tiers: Sequence[Mapping[str, Any]] | None = None,
    transform_quantity: Mapping[str, Any] | None = None,
    currency_options: Mapping[str, Any] | None = None,
    nickname: str | None = None,
    created: int = T0 - 365 * DAY,
) -> dict[str, Any]:
    if billing_scheme == "tiered" or unit_amount_decimal is not None:
        # Stripe sends `unit_amount: null` when the amount is fractional or tiered.
        unit_amount = None if billing_scheme == "tiered" else unit_amount
    if unit_amount_decimal is None and unit_amount is not None:
        unit_amount_decimal = str(unit_amount)
    if unit_amount_decimal is not None and Decimal(unit_amount_decimal) % 1 != 0:
        unit_amount = None
    payload: dict[str, Any] = {
        "id": id,
        "object": "price",
        "active": True,
        "billing_scheme": billing_scheme,
        "created": created,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": nickname,
        "product": product,
        "recurring": {
            "interval": interval,
            "interval_count": interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": usage_type,
        },
        "tax_behavior": "unspecified",
        "tiers_mode": tiers_mode,
        "transform_quantity": dict(transform_quantity) if transform_quantity else None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }
    # `tiers` and `currency_options` are only in the payload when expanded.
    if tiers is not None:
        payload["tiers"] = [tier_payload(**t) for t in tiers]
    if currency_options is not None:
        payload["currency_options"] = dict(currency_options)
    return payload


def tier_payload(
    *,
    up_to: int | Literal["inf"] | None,
    unit_amount: int | None = None,
    flat_amount: int | None = None,
) -> dict[str, Any]:
    return {
        "flat_amount": flat_amount,
        "flat_amount_decimal": None if flat_amount is None else str(flat_amount),
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
        "up_to": None if up_to == "inf" else up_to,
    }


def plan_payload(price: Mapping[str, Any]) -> dict[str, Any]:
    """The `plan` Stripe derives from a price (plans keep the recurring fields flat)."""
    recurring = price["recurring"]
    plan: dict[str, Any] = {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "aggregate_usage": None,
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": price["livemode"],
        "metadata": price["metadata"],
        "meter": None,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": price["tiers_mode"],
        "transform_usage": price["transform_quantity"],
        "trial_period_days": None,
        "usage_type": recurring["usage_type"],
    }
    if "tiers" in price:
        plan["tiers"] = price["tiers"]
    return plan


def coupon_payload(
    *,
    id: str = "coupon_1",
    percent_off: float | None = None,
    amount_off: int | None = None,
    currency: str | None = None,
    duration: str = "forever",
    duration_in_months: int | None = None,
    currency_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": T0 - 30 * DAY,
        "currency": currency if amount_off is not None else None,
        "duration": duration,
        "duration_in_months": duration_in_months,
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "name": None,
        "percent_off": percent_off,
        "redeem_by": None,
        "times_redeemed": 1,
        "valid": True,
    }
    if currency_options is not None:
        payload["currency_options"] = dict(currency_options)
    return payload


def discount_payload(
    *,
    id: str | None = "di_1",
    coupon: Mapping[str, Any] | str | None = None,
    start: int = T0 - DAY,
    end: int | None = None,
    subscription: str | None = "sub_1",
    subscription_item: str | None = None,
    customer: str = "cus_1",
    coupon_at: Literal["coupon", "source"] = "coupon",
) -> dict[str, Any]:
    """A discount; `coupon_at="source"` is the newest versions' `source.coupon` layout."""
    coupon = coupon if coupon is not None else coupon_payload(percent_off=20.0)
    payload: dict[str, Any] = {
        "id": id,
        "object": "discount",
        "checkout_session": None,
        "customer": customer,
        "end": end,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": None,
        "start": start,
        "subscription": subscription,
        "subscription_item": subscription_item,
    }
    if coupon_at == "source":
        payload["source"] = {"coupon": coupon, "type": "coupon"}
    else:
        payload["coupon"] = coupon
    if id is None:
        del payload["id"]  # discounts predating ids have no key at all
    return payload


def item(
    price: Mapping[str, Any] | None = None,
    quantity: int | None = 1,
    *,
    id: str | None = None,
    discounts: Sequence[Mapping[str, Any] | str] = (),
) -> dict[str, Any]:
    """An item spec for `subscription_payload`, rendered there in the chosen shape."""
    return {
        "price": price or price_payload(),
        "quantity": quantity,
        "id": id,
        "discounts": discounts,
    }


def _item_payload(
    spec: Mapping[str, Any], index: int, sub_id: str, shape: Shape, period: tuple[int, int]
) -> dict[str, Any]:
    price = spec["price"]
    payload: dict[str, Any] = {
        "id": spec["id"] or f"si_{index + 1}",
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": period[0],
        "metadata": {},
        "plan": plan_payload(price),
        "subscription": sub_id,
        "tax_rates": [],
    }
    if price["recurring"]["usage_type"] != "metered":
        payload["quantity"] = spec["quantity"]
    if shape == "ancient":
        return payload
    if shape == "current":
        # 2025-03-31.basil removed `aggregate_usage` from every endpoint.
        del payload["plan"]["aggregate_usage"]
    payload["price"] = price
    payload["discounts"] = list(spec["discounts"])
    if shape == "current":
        payload["current_period_start"], payload["current_period_end"] = period
    return payload


def subscription_payload(
    *,
    shape: Shape = "current",
    id: str = "sub_1",
    customer: str | Mapping[str, Any] = "cus_1",
    status: str = "active",
    items: Sequence[Mapping[str, Any]] | None = None,
    currency: str | None = None,
    discounts: Sequence[Mapping[str, Any] | str] = (),
    expand_discounts: bool = False,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    created: int = T0 - 10 * DAY,
    current_period_start: int = T0 - 10 * DAY,
    current_period_end: int = T0 - 10 * DAY + MONTH,
    trial_start: int | None = None,
    trial_end: int | None = None,
    pause_collection: Mapping[str, Any] | None = None,
    cancellation_details: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A subscription in one of the three shapes.

    `discounts` are subscription-level discount payloads (or bare ids), listed in
    `discounts` as ids, as webhooks do, unless `expand_discounts`. In ``legacy`` the first is
    also embedded as `discount`; in ``ancient`` only that one exists, without an id.
    """
    specs = list(items) if items is not None else [item()]
    period = (current_period_start, current_period_end)
    rendered = [_item_payload(s, i, id, shape, period) for i, s in enumerate(specs)]
    first_price = specs[0]["price"] if specs else price_payload()
    payload: dict[str, Any] = {
        "id": id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None},
        "billing_cycle_anchor": current_period_start,
        "billing_thresholds": None,
        "cancel_at": cancel_at,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": dict(cancellation_details)
        if cancellation_details
        else {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency or first_price["currency"],
        "customer": customer,
        "days_until_due": None,
        "default_payment_method": "pm_1",
        "default_tax_rates": [],
        "description": None,
        "ended_at": ended_at,
        "items": {
            "object": "list",
            "data": rendered,
            "has_more": False,
            "total_count": len(rendered),
            "url": f"/v1/subscription_items?subscription={id}",
        },
        "latest_invoice": "in_1",
        "livemode": False,
        "metadata": dict(metadata or {}),
        "pause_collection": dict(pause_collection) if pause_collection else None,
        "schedule": None,
        "start_date": created,
        "status": status,
        "test_clock": None,
        "trial_end": trial_end,
        "trial_start": trial_start,
    }
    refs = [d if isinstance(d, str) else d["id"] for d in discounts]
    embedded = [d for d in discounts if not isinstance(d, str)]
    listed = [dict(d) for d in embedded] if expand_discounts else refs
    if shape == "current":
        payload["discounts"] = listed
    else:
        payload["current_period_start"], payload["current_period_end"] = period
        payload["discount"] = dict(embedded[0]) if embedded else None
        if shape == "legacy":
            payload["discounts"] = listed
        else:
            if payload["discount"] is not None:
                payload["discount"].pop("id", None)
            del payload["currency"]
            payload["start"] = payload.pop("start_date")
            # Single-plan era: the subscription mirrors its only item.
            single = rendered[0] if len(rendered) == 1 else {}
            payload["plan"] = single.get("plan")
            payload["quantity"] = single.get("quantity")
    return payload
