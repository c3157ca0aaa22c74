"""Subscriptions of any API version, read into one immutable snapshot shape.

Shapes seen in the wild:

* current (2025-03-31 and later): `current_period_*` on each item, `discounts` as a list of
  ids (expanded only on request), discount coupons at `coupon` or `source.coupon`;
* legacy (before 2025-03-31): `current_period_*` on the subscription, singular embedded
  `discount`, and from 2023 also a `discounts` list;
* ancient (accounts pinned to 2017-2020 versions): items carry only `plan`, the
  subscription may lack `currency`, discounts may lack an `id`.

Current payloads still carry `plan` and `quantity`, so the shape is told apart by where
`current_period_*` lives (design §2), never by `plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from service.stripe_shapes.discount import DiscountSnapshot, read_discount
from service.stripe_shapes.fields import (
    as_mapping,
    expandable_id,
    get_bool,
    get_count,
    get_int,
    get_str,
    is_mapping,
    list_data,
    str_dict,
)
from service.stripe_shapes.price import PriceSnapshot, read_price


@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    id: str | None
    price: PriceSnapshot | None
    quantity: int | None  # None for metered items (and absent in some old payloads)
    discounts: tuple[DiscountSnapshot, ...]  # item-level discounts Stripe sent expanded
    discount_ids: tuple[str, ...]  # item-level discounts Stripe sent as bare ids
    current_period_start: int | None
    current_period_end: int | None


@dataclass(frozen=True, slots=True)
class CancellationDetails:
    reason: str | None
    feedback: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    id: str | None
    customer: str | None
    status: str
    currency: str  # lowercase ISO code; "" only if neither subscription nor price names one
    items: tuple[ItemSnapshot, ...]
    discounts: tuple[DiscountSnapshot, ...]  # subscription-level, expanded
    discount_ids: tuple[str, ...]  # subscription-level, bare ids not among `discounts`
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    start_date: int | None
    trial_start: int | None
    trial_end: int | None
    pause_collection: str | None  # the pause behavior; None when collection is not paused
    cancellation_details: CancellationDetails
    current_period_start: int | None
    current_period_end: int | None
    created: int | None
    api_shape: Literal["legacy", "current"]
    metadata: Mapping[str, str] = field(default_factory=dict)


def _discount_refs(
    listed: Any, singular: Any = None
) -> tuple[tuple[DiscountSnapshot, ...], tuple[str, ...]]:
    """Split discount references into embedded objects and bare ids, without duplicates.

    Legacy payloads from 2023 on may name the same discount twice: expanded in `discount`
    and as an id in `discounts`. Counting it twice would double the discount.
    """
    embedded: list[DiscountSnapshot] = []
    bare: list[str] = []
    raw_refs = ([singular] if is_mapping(singular) else []) + list_data(listed)
    for raw in raw_refs:
        if is_mapping(raw):
            discount = read_discount(raw)
            if discount.id is None or all(d.id != discount.id for d in embedded):
                embedded.append(discount)
        elif isinstance(raw, str) and raw and raw not in bare:
            bare.append(raw)
    known = {d.id for d in embedded}
    return tuple(embedded), tuple(i for i in bare if i not in known)


_PRICES: dict[bytes, PriceSnapshot] = {}
_PRICES_MAX = 4096


def _read_price_cached(raw: Mapping[str, Any]) -> PriceSnapshot:
    """`read_price`, remembered by the price's JSON: every snapshot of every subscription on
    a price repeats the same object, and a snapshot depends on nothing else."""
    try:
        key = orjson.dumps(raw)
    except TypeError:  # not plain JSON (a test's Mapping, an int past 64 bits): no cache
        return read_price(raw)
    found = _PRICES.get(key)
    if found is None:
        if len(_PRICES) >= _PRICES_MAX:
            _PRICES.clear()
        found = _PRICES[key] = read_price(raw)
    return found


def _read_item(obj: Mapping[str, Any]) -> ItemSnapshot:
    raw_price = obj.get("price")
    if not is_mapping(raw_price):
        raw_price = obj.get("plan")
    discounts, discount_ids = _discount_refs(obj.get("discounts"))
    return ItemSnapshot(
        id=get_str(obj, "id"),
        price=_read_price_cached(raw_price) if is_mapping(raw_price) else None,
        quantity=get_count(obj, "quantity"),
        discounts=discounts,
        discount_ids=discount_ids,
        current_period_start=get_int(obj, "current_period_start"),
        current_period_end=get_int(obj, "current_period_end"),
    )


def _raw_items(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = [as_mapping(raw) for raw in list_data(obj.get("items"))]
    plan = obj.get("plan")
    if not items and is_mapping(plan):
        # Pre-2018 single-plan subscriptions: the subscription itself is the only item.
        items = [{"plan": plan, "quantity": obj.get("quantity")}]
    return items


def _pause_behavior(value: Any) -> str | None:
    if is_mapping(value):
        return get_str(value, "behavior") or "unspecified"
    return None


def _start_date(obj: Mapping[str, Any]) -> int | None:
    start_date = get_int(obj, "start_date")
    # Old API versions (before late 2019) called it `start`.
    return start_date if start_date is not None else get_int(obj, "start")


def read_subscription(obj: Mapping[str, Any]) -> SubscriptionSnapshot:
    """Read a subscription object of any API version. Never raises on missing fields."""
    items = tuple(_read_item(raw) for raw in _raw_items(obj))
    legacy = "current_period_start" in obj or "current_period_end" in obj
    if not legacy and not any(i.current_period_end is not None for i in items):
        # No period anywhere (a trimmed payload): the singular `discount` was removed in
        # 2025-03-31, so its presence still marks the old shape.
        legacy = "discount" in obj
    if legacy:
        period_start = get_int(obj, "current_period_start")
        period_end = get_int(obj, "current_period_end")
    else:
        # Items can renew on their own schedule (flexible billing): the subscription's
        # period spans all of them.
        starts = [i.current_period_start for i in items if i.current_period_start is not None]
        ends = [i.current_period_end for i in items if i.current_period_end is not None]
        period_start = min(starts, default=None)
        period_end = max(ends, default=None)
    currency = obj.get("currency")
    if not isinstance(currency, str) or not currency:
        currency = next((i.price.currency for i in items if i.price and i.price.currency), "")
    discounts, discount_ids = _discount_refs(obj.get("discounts"), obj.get("discount"))
    details = as_mapping(obj.get("cancellation_details"))
    return SubscriptionSnapshot(
        id=get_str(obj, "id"),
        customer=expandable_id(obj.get("customer")),
        status=get_str(obj, "status") or "",
        currency=currency.lower(),
        items=items,
        discounts=discounts,
        discount_ids=discount_ids,
        cancel_at_period_end=get_bool(obj, "cancel_at_period_end"),
        cancel_at=get_int(obj, "cancel_at"),
        canceled_at=get_int(obj, "canceled_at"),
        ended_at=get_int(obj, "ended_at"),
        start_date=_start_date(obj),
        trial_start=get_int(obj, "trial_start"),
        trial_end=get_int(obj, "trial_end"),
        pause_collection=_pause_behavior(obj.get("pause_collection")),
        cancellation_details=CancellationDetails(
            reason=get_str(details, "reason"),
            feedback=get_str(details, "feedback"),
            comment=get_str(details, "comment"),
        ),
        current_period_start=period_start,
        current_period_end=period_end,
        created=get_int(obj, "created"),
        api_shape="legacy" if legacy else "current",
        metadata=str_dict(obj.get("metadata")),
    )
