"""Subscription MRR at an instant, exactly as design §3 defines it.

Amounts are Decimals in minor units (Stripe's `*_decimal` fields are exact decimals). The
interval normalization is kept as an exact fraction (52/12 and 365/12 have no finite decimal
expansion) so that the single ROUND_HALF_UP at the end is the only rounding: summing items
that were each cut to 28 digits could otherwise turn an exact x.5 into x.4999...
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from service.stripe_shapes import (
    CouponSnapshot,
    DiscountSnapshot,
    ItemSnapshot,
    PriceSnapshot,
    SubscriptionSnapshot,
    Tier,
)

# Length of one interval unit in months. Weeks and days use 52 and 365 per year (§3).
_MONTHS_PER_UNIT: Mapping[str, Fraction] = {
    "month": Fraction(1),
    "year": Fraction(12),
    "week": Fraction(12, 52),
    "day": Fraction(12, 365),
}


def _months_per_period(price: PriceSnapshot) -> Fraction | None:
    return _months(price.interval or "", price.interval_count)


@lru_cache(maxsize=256)
def _months(interval: str, count: int) -> Fraction | None:
    # Cached: a handful of (interval, count) pairs, asked for every item of every snapshot.
    unit = _MONTHS_PER_UNIT.get(interval)
    return unit * count if unit is not None else None


def _is_licensed(item: ItemSnapshot) -> bool:
    return item.price is not None and item.price.usage_type == "licensed"


def _first_licensed(sub: SubscriptionSnapshot) -> ItemSnapshot | None:
    return next((i for i in sub.items if _is_licensed(i)), None)


def billing_interval(sub: SubscriptionSnapshot) -> str | None:
    """Interval ('month', 'year', 'week', 'day') of the first licensed item, for segments."""
    item = _first_licensed(sub) or next((i for i in sub.items if i.price), None)
    return item.price.interval if item and item.price else None


def plan_key(sub: SubscriptionSnapshot) -> str | None:
    """Price (or plan) id of the first licensed item, for plan segments."""
    item = _first_licensed(sub)
    return item.price.id if item and item.price else None


def plan_name(sub: SubscriptionSnapshot) -> str | None:
    """What finance calls `plan_key`'s price: its product's name and the price's nickname
    ("Pro · Monthly"), whichever the payload has; None when it has neither (a webhook's
    price names its product by id only, so a nickname is what it usually carries)."""
    item = _first_licensed(sub)
    if item is None or item.price is None:
        return None
    parts = [item.price.product_name, item.price.nickname]
    names = [p for i, p in enumerate(parts) if p and p not in parts[:i]]
    return " · ".join(names) or None


def _amounts_in(price: PriceSnapshot, currency: str) -> tuple[Decimal | None, tuple[Tier, ...]]:
    """Unit amount and tiers in `currency`; (None, ()) when the price has no such amounts."""
    if price.currency is None or price.currency == currency:
        return price.unit_amount_decimal, price.tiers
    option = price.currency_options.get(currency)
    if option is None:
        return None, ()
    return option.unit_amount_decimal, option.tiers


def _quantity(price: PriceSnapshot, quantity: int | None) -> int:
    # Licensed items without a quantity are billed for one (old payloads may omit it).
    quantity = max(quantity if quantity is not None else 1, 0)
    transform = price.transform_quantity
    if transform is None:
        return quantity
    whole, rest = divmod(quantity, transform.divide_by)
    return whole + 1 if rest and transform.round == "up" else whole


def _tiered_amount(tiers: tuple[Tier, ...], mode: str | None, quantity: int) -> Decimal | None:
    if not tiers:
        return None
    if quantity == 0:
        return Decimal(0)
    if mode == "volume":
        for tier in tiers:
            if tier.up_to is None or quantity <= tier.up_to:
                unit = tier.unit_amount_decimal or Decimal(0)
                return unit * quantity + (tier.flat_amount_decimal or Decimal(0))
        return None  # quantity beyond the last bounded tier: Stripe would refuse it
    total = Decimal(0)
    below = 0  # units already priced by earlier tiers
    for tier in tiers:
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = upper - below
        if units <= 0:
            break
        unit = tier.unit_amount_decimal or Decimal(0)
        total += unit * units + (tier.flat_amount_decimal or Decimal(0))
        below = upper
    return total


def _invoice_amount(price: PriceSnapshot, quantity: int | None, currency: str) -> Decimal | None:
    """Per-invoice amount of a licensed item before discounts; None if it cannot be priced."""
    unit, tiers = _amounts_in(price, currency)
    units = _quantity(price, quantity)
    if price.billing_scheme == "tiered":
        return _tiered_amount(tiers, price.tiers_mode, units)
    return unit * units if unit is not None else None


def _item_monthly(item: ItemSnapshot, currency: str) -> tuple[Fraction, Fraction] | None:
    """(MRR before discounts, months one invoice covers), or None if it cannot be priced."""
    if item.price is None:
        return None
    months = _months_per_period(item.price)
    amount = _invoice_amount(item.price, item.quantity, currency)
    if months is None or amount is None:
        return None
    return Fraction(amount) / months, months


def unpriced_items(sub: SubscriptionSnapshot) -> list[ItemSnapshot]:
    """Items counted as 0 because their amount in `sub.currency` is unknown: no price, a
    multi-currency price sent without its `currency_options`, no recurring interval, a
    quantity past the last volume tier. The caller reports them, like missing discounts."""
    return [
        item
        for item in sub.items
        if item.price is None or (_is_licensed(item) and not _priceable(item, sub.currency))
    ]


def _priceable(item: ItemSnapshot, currency: str) -> bool:
    """`_item_monthly(item, currency) is not None`, without its fraction arithmetic."""
    return (
        item.price is not None
        and _months_per_period(item.price) is not None
        and _invoice_amount(item.price, item.quantity, currency) is not None
    )


def missing_discount_ids(
    sub: SubscriptionSnapshot, discounts: Mapping[str, DiscountSnapshot] | None
) -> set[str]:
    """Ids of referenced discounts that `subscription_mrr` had to ignore: not in
    `discounts`, or known only with an unexpanded coupon (an id-less legacy discount is
    then named by its coupon id). The caller reports them and recomputes later."""
    lookup = discounts or {}
    missing = set()
    for holder in (sub, *sub.items):
        for discount in holder.discounts:
            ref = discount.id or discount.coupon_id
            if discount.coupon is None and ref is not None:
                missing.add(ref)
        for ref in holder.discount_ids:
            found = lookup.get(ref)
            if found is None or found.coupon is None:
                missing.add(ref)
    return missing


def _active_coupons(
    embedded: tuple[DiscountSnapshot, ...],
    ids: tuple[str, ...],
    lookup: Mapping[str, DiscountSnapshot],
    at: int,
) -> list[CouponSnapshot]:
    # An embedded object belongs to the same snapshot as the subscription, so it wins over a
    # separately joined copy; bare ids are resolved through the caller's lookup.
    found = [*embedded, *(lookup[i] for i in ids if i in lookup)]
    return [d.coupon for d in found if d.coupon is not None and d.active_at(at)]


def _discounted(
    monthly: Fraction, coupons: list[CouponSnapshot], months: Fraction | None, currency: str
) -> Fraction:
    """Apply coupons one after another, each to what the previous ones left."""
    for coupon in coupons:
        if coupon.percent_off is not None:
            monthly *= 1 - Fraction(coupon.percent_off) / 100
        else:
            amount_off = coupon.amount_off_in(currency)
            # amount_off is per invoice: spread it over the months one invoice covers.
            if amount_off is not None and months is not None:
                monthly -= Fraction(amount_off) / months
        monthly = max(monthly, Fraction(0))
    return monthly


def _counts(sub: SubscriptionSnapshot, at: int, past_due_counts: bool) -> bool:
    if sub.pause_collection is not None:
        return False
    if sub.ended_at is not None and sub.ended_at <= at:
        return False
    return sub.status == "active" or (sub.status == "past_due" and past_due_counts)


def _round_half_up(value: Fraction) -> int:
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def subscription_mrr(
    sub: SubscriptionSnapshot,
    at: int,
    discounts: Mapping[str, DiscountSnapshot] | None = None,
    *,
    past_due_counts: bool = True,
) -> int:
    """MRR of `sub` at unix time `at`, in integer minor units of `sub.currency`.

    `discounts` resolves discount ids the subscription lists without expanding them; ids
    it lacks are skipped here and reported by `missing_discount_ids`. Items that cannot be
    priced count 0 and are reported by `unpriced_items`.
    """
    if not _counts(sub, at, past_due_counts):
        return 0
    lookup = discounts or {}
    total = Fraction(0)
    for item in sub.items:
        if not _is_licensed(item):
            continue  # metered usage is reported separately, never as MRR
        priced = _item_monthly(item, sub.currency)
        if priced is None:
            continue
        monthly, months = priced
        coupons = _active_coupons(item.discounts, item.discount_ids, lookup, at)
        total += _discounted(monthly, coupons, months, sub.currency)
    # Item discounts first, then subscription discounts on the rest (Stripe's order).
    first = _first_licensed(sub)
    sub_months = _months_per_period(first.price) if first and first.price else None
    coupons = _active_coupons(sub.discounts, sub.discount_ids, lookup, at)
    return _round_half_up(_discounted(total, coupons, sub_months, sub.currency))
