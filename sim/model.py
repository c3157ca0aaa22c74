"""State model of the simulated Stripe account, and its own MRR arithmetic.

The simulator's truth must be an independent check of the service, so MRR here is computed
from this module's dataclasses, never through `service.stripe_shapes` or `service.ledger`.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Literal

Shape = Literal["current", "legacy"]
Interval = Literal["day", "week", "month", "year"]
Status = Literal["trialing", "active", "past_due", "unpaid", "canceled"]

DAY = 86_400
HOUR = 3_600
_EPOCH = date(1970, 1, 1).toordinal()
API_VERSIONS: dict[Shape, str] = {"current": "2025-03-31.basil", "legacy": "2024-06-20"}
# Design §3: these statuses count; every other one counts 0.
COUNTING_STATUSES = frozenset({"active", "past_due"})

# How many months one billing interval unit covers (§3: 52 weeks and 365 days a year).
_MONTHS_PER_UNIT: dict[str, Fraction] = {
    "month": Fraction(1),
    "year": Fraction(12),
    "week": Fraction(12, 52),
    "day": Fraction(12, 365),
}


@dataclass(frozen=True, slots=True)
class Price:
    id: str
    product: str
    currency: str
    unit_amount: int  # minor units (whole yen for JPY)
    interval: Interval
    interval_count: int
    nickname: str | None
    created: int

    # Derived once: Fraction arithmetic costs microseconds per operation, and MRR is
    # recomputed for every change of every subscription.
    months: Fraction = field(init=False, repr=False, compare=False)  # one invoice covers
    monthly_unit_amount: Fraction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        months = _MONTHS_PER_UNIT[self.interval] * self.interval_count
        object.__setattr__(self, "months", months)
        object.__setattr__(self, "monthly_unit_amount", self.unit_amount / months)


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    percent_off: Decimal | None
    amount_off: int | None
    currency: str | None
    duration: Literal["forever", "repeating"]
    duration_in_months: int | None
    name: str | None
    created: int
    # What a percent_off coupon leaves of the amount, derived once like Price.months.
    remaining: Fraction | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        remaining = None if self.percent_off is None else 1 - Fraction(self.percent_off) / 100
        object.__setattr__(self, "remaining", remaining)


@dataclass(frozen=True, slots=True)
class Discount:
    id: str
    coupon: Coupon
    customer: str
    subscription: str
    start: int
    end: int | None

    def active_at(self, at: int) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass(slots=True)
class Item:
    id: str
    price: Price
    quantity: int
    created: int


@dataclass(slots=True)  # not frozen: one per invoice line, and frozen __init__ is slow
class Line:
    id: str
    item_id: str
    price: Price
    quantity: int
    amount: int


@dataclass(eq=False, slots=True)
class Invoice:
    id: str
    number: str
    customer: str
    subscription: str
    currency: str
    created: int
    period_start: int
    period_end: int
    billing_reason: str
    lines: tuple[Line, ...]
    subtotal: int
    discount: Discount | None
    discount_amount: int
    status: Literal["open", "paid"] = "open"
    attempt_count: int = 0
    next_payment_attempt: int | None = None
    paid_at: int | None = None

    @property
    def total(self) -> int:
        return self.subtotal - self.discount_amount


@dataclass(eq=False, slots=True)
class Customer:
    """A simulated customer. Read its fields; change it only through the builder."""

    id: str
    created: int
    email: str
    name: str
    invoice_prefix: str
    payment_method: str
    metadata: dict[str, str]
    currency: str | None = None
    invoices: int = 0
    subscriptions: list[Subscription] = field(default_factory=list)

    @property
    def live(self) -> list[Subscription]:
        """Subscriptions not canceled (trialing, active, past_due, unpaid)."""
        return [s for s in self.subscriptions if s.status != "canceled"]


@dataclass(eq=False, slots=True)
class Subscription:
    """A simulated subscription. Read its fields; change it only through the builder."""

    id: str
    customer: Customer
    currency: str
    items: list[Item]
    status: Status
    created: int
    billing_cycle_anchor: int
    # Periods elapsed since the anchor: the current one ends at `period_end(anchor, n + 1)`.
    period_index: int
    current_period_start: int
    current_period_end: int
    metadata: dict[str, str]
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_details: dict[str, str | None] = field(
        default_factory=lambda: {"comment": None, "feedback": None, "reason": None}
    )
    discount: Discount | None = None
    latest_invoice: str | None = None
    open_invoices: list[Invoice] = field(default_factory=list)
    fail_next_charge: bool = False
    # Time of this subscription's latest event: the next one is stamped strictly later.
    clock: int = 0
    # The simulator's truth: (from this instant, MRR) whenever MRR changed.
    mrr_points: list[tuple[int, int]] = field(default_factory=list)

    @property
    def next_payment_attempt(self) -> int | None:
        return self.open_invoices[0].next_payment_attempt if self.open_invoices else None

    @property
    def months_per_invoice(self) -> Fraction:
        return self.items[0].price.months


def monthly_amount(sub: Subscription, at: int) -> int:
    """True MRR of `sub` at unix time `at`, in integer minor units of `sub.currency`.

    Exact fractions throughout and one ROUND_HALF_UP at the end (design §3).
    """
    if sub.status not in COUNTING_STATUSES:
        return 0
    total = Fraction(0)
    for item in sub.items:
        total += item.price.monthly_unit_amount * item.quantity
    discount = sub.discount
    if discount is not None and discount.active_at(at):
        coupon = discount.coupon
        if coupon.remaining is not None:
            total *= coupon.remaining
        elif coupon.amount_off is not None:
            # amount_off comes off each invoice, so it is spread over the months one covers.
            total -= Fraction(coupon.amount_off) / sub.months_per_invoice
        total = max(total, Fraction(0))
    return (2 * total.numerator + total.denominator) // (2 * total.denominator)


def invoice_discount(subtotal: int, discount: Discount | None, at: int) -> int:
    """What a discount takes off one invoice (whole minor units, never past the subtotal)."""
    if discount is None or not discount.active_at(at):
        return 0
    coupon = discount.coupon
    if coupon.percent_off is not None:
        off = Fraction(subtotal) * Fraction(coupon.percent_off) / 100
        return min(subtotal, (2 * off.numerator + off.denominator) // (2 * off.denominator))
    return min(subtotal, coupon.amount_off or 0)


def utc_day(ts: int) -> date:
    return date.fromordinal(_EPOCH + ts // DAY)


def day_start(day: date) -> int:
    return (day.toordinal() - _EPOCH) * DAY


def add_months(ts: int, months: int) -> int:
    """`ts` moved by calendar months, day clamped to the month's end (Jan 31 → Feb 29),
    which is how Stripe moves a billing cycle anchor."""
    days, seconds = divmod(ts, DAY)
    when = date.fromordinal(_EPOCH + days)
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, monthrange(year, month)[1])
    return (date(year, month, day).toordinal() - _EPOCH) * DAY + seconds


def period_end(anchor: int, price: Price, periods: int) -> int:
    """End of the `periods`-th billing period counted from the anchor.

    Counted from the anchor, not from the previous end, so a 31st anchor comes back to the
    31st after a short month.
    """
    count = price.interval_count * periods
    if price.interval == "month":
        return add_months(anchor, count)
    if price.interval == "year":
        return add_months(anchor, 12 * count)
    return anchor + count * (7 * DAY if price.interval == "week" else DAY)
