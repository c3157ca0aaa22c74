"""Stripe objects of any API version, read into our own immutable snapshots."""

from service.stripe_shapes.discount import (
    CouponSnapshot,
    DiscountSnapshot,
    read_coupon,
    read_discount,
)
from service.stripe_shapes.price import (
    PriceCurrencyOption,
    PriceSnapshot,
    Tier,
    TransformQuantity,
    read_price,
)
from service.stripe_shapes.subscription import (
    CancellationDetails,
    ItemSnapshot,
    SubscriptionSnapshot,
    read_subscription,
)

__all__ = [
    "CancellationDetails",
    "CouponSnapshot",
    "DiscountSnapshot",
    "ItemSnapshot",
    "PriceCurrencyOption",
    "PriceSnapshot",
    "SubscriptionSnapshot",
    "Tier",
    "TransformQuantity",
    "read_coupon",
    "read_discount",
    "read_price",
    "read_subscription",
]
