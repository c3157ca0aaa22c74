"""`AccountBuilder`: hand-made Stripe account scenarios, and the engine under `simulate`.

A scenario is a series of actions on a clock that only moves forward::

    b = AccountBuilder(shape="current")
    c = b.customer()
    s = b.subscribe(c, b.price(4900, "usd", "month"), quantity=3, at=b.day(0))
    b.change(s, quantity=5, at=b.day(10))
    b.cancel(s, at=b.day(40), at_period_end=True, feedback="too_expensive")
    sim = b.build()
    sim.truth.movements()  # [(cus, 2024-01-01, usd, 0, 14700), ..., (.., 24500, 0)]

Between actions the builder does what Stripe does on its own, in time order: renews
periods (`customer.subscription.updated` whose `previous_attributes` only hold the old
periods) and charges their invoices an hour later, converts trials, ends repeating
discounts at their `end`, ends `cancel_at_period_end` subscriptions at the period end.

Failed payments: `fail_payment(s)` makes the next renewal's charge fail (`past_due`);
calling it again fails the next retry (attempts 1-4, `next_payment_attempt` 3, 5, 7 days
apart, null after the 4th). Then `recover(s)` (paid, `active`), `cancel(s,
reason="payment_failed")` or `mark_unpaid(s)`.

Truth: after every event the builder records the subscription's MRR from its own state
(`sim.model.monthly_amount`), and at each discount `end`; `build()` turns those points into
a `Truth`.

Event times. Every event about one subscription (its own and its invoices') is stamped
strictly later than the previous one: an action asked for the same second moves one second
on. Deliberate same-second cases:

* `customer.discount.created`/`deleted` share the second of the subscription event that
  attached or removed the discount (Stripe sends them together);
* `swap` creates the new subscription in the same second as the old one's deletion.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from sim.model import (
    API_VERSIONS,
    COUNTING_STATUSES,
    DAY,
    HOUR,
    Coupon,
    Customer,
    Discount,
    Interval,
    Invoice,
    Item,
    Line,
    Price,
    Shape,
    Subscription,
    add_months,
    day_start,
    invoice_discount,
    monthly_amount,
    period_end,
    utc_day,
)
from sim.render import Renderer
from sim.truth import Simulation, SubscriptionLine, Truth

DEFAULT_START = 1_704_067_200  # 2024-01-01T00:00:00Z
# Stripe finalizes a renewal invoice about an hour after creating it, then charges it.
CHARGE_DELAY = HOUR
# Days from one failed attempt to the next retry; the attempt after the last gap is final.
RETRY_DAYS = (3, 5, 7)
MAX_ATTEMPTS = len(RETRY_DAYS) + 1
TRIAL_WILL_END_NOTICE = 3 * DAY

FEEDBACK = frozenset(
    {
        "customer_service",
        "low_quality",
        "missing_features",
        "other",
        "switched_service",
        "too_complex",
        "too_expensive",
        "unused",
    }
)
CancelReason = Literal["cancellation_requested", "payment_failed", "payment_disputed"]

# Queue entry kinds; at one instant they run in this order (a discount ending at a period
# boundary is gone from that renewal's invoice).
_DISCOUNT_END, _TRIAL_WILL_END, _PERIOD_END, _CHARGE = range(4)
_QueueEntry = tuple[int, int, int, Subscription, Any]
# `request` of events Stripe caused on its own (renewals, retries); shared like the catalog
# in `sim.render`: events are read-only.
_NO_REQUEST: dict[str, Any] = {"id": None, "idempotency_key": None}


class AccountBuilder:
    """Builds one simulated Stripe account, action by action, on a forward-only clock.

    `at` of every action is a unix time not before the previous action's (default: that
    time, `now`). Subscriptions and customers returned are live views of the state: read
    them (`s.status`, `s.current_period_end`, `s.next_payment_attempt`), never assign.
    """

    def __init__(
        self,
        *,
        shape: Shape = "current",
        start: int = DEFAULT_START,
        seed: int = 0,
        account: str | None = None,
    ) -> None:
        if shape not in API_VERSIONS:
            raise ValueError(f"unknown shape {shape!r}")
        self.shape: Shape = shape
        self.api_version = API_VERSIONS[shape]
        self.start = start
        self.account = account
        self.now = start
        self.customers: list[Customer] = []
        self.subscriptions: list[Subscription] = []
        # A string seed is hashed with SHA-512 by `random`: stable across processes.
        self._ids = random.Random(f"churn-ledger-simulator-ids:{seed}")
        self._events: list[dict[str, Any]] = []
        self._queue: list[_QueueEntry] = []
        self._queued = 0
        self._prices: dict[tuple[Any, ...], Price] = {}
        self._products: dict[str, str] = {}
        self._mrr_cache: dict[str, tuple[tuple[Any, ...], int]] = {}
        self._json = Renderer(shape)
        self._last_items: dict[str, dict[str, Any]] = {}

    # -- time --------------------------------------------------------------------------

    def day(self, n: int, *, hour: int = 0, minute: int = 0, second: int = 0) -> int:
        """Unix time `n` days after `start` (plus a time of day)."""
        return self.start + n * DAY + hour * HOUR + minute * 60 + second

    def advance(self, to: int | None = None, *, days: int | None = None) -> int:
        """Let Stripe run until `to` (or `days` from now): renewals, trial ends, ..."""
        if (to is None) == (days is None):
            raise ValueError("give exactly one of `to` and `days`")
        return self._at(to if to is not None else self.now + (days or 0) * DAY)

    def _at(self, at: int | None) -> int:
        target = self.now if at is None else at
        if target < self.now:
            raise ValueError(f"time only moves forward: {target} < now {self.now}")
        self._run_until(target)
        self.now = target
        return target

    # -- catalog -----------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self._ids.getrandbits(96):024x}"

    def price(
        self,
        unit_amount: int,
        currency: str = "usd",
        interval: Interval = "month",
        *,
        interval_count: int = 1,
        nickname: str | None = None,
        product: str | None = None,
    ) -> Price:
        """A recurring per-unit price; asking twice for the same one returns the same id."""
        if unit_amount < 0 or interval_count < 1:
            raise ValueError("unit_amount must be >= 0 and interval_count >= 1")
        if interval not in ("day", "week", "month", "year"):
            raise ValueError(f"unknown interval {interval!r}")
        product_name = product or nickname or "default"
        key = (unit_amount, currency.lower(), interval, interval_count, nickname, product_name)
        if key not in self._prices:
            if product_name not in self._products:
                self._products[product_name] = self._id("prod")
            self._prices[key] = Price(
                id=self._id("price"),
                product=self._products[product_name],
                currency=currency.lower(),
                unit_amount=unit_amount,
                interval=interval,
                interval_count=interval_count,
                nickname=nickname,
                created=self.start - 400 * DAY,
            )
        return self._prices[key]

    def coupon(
        self,
        *,
        percent_off: int | str | Decimal | None = None,
        amount_off: int | None = None,
        currency: str | None = None,
        duration: Literal["forever", "repeating"] = "forever",
        duration_in_months: int | None = None,
        name: str | None = None,
    ) -> Coupon:
        """A coupon: exactly one of `percent_off` and `amount_off` (with its `currency`)."""
        if (percent_off is None) == (amount_off is None):
            raise ValueError("give exactly one of percent_off and amount_off")
        if amount_off is not None and not currency:
            raise ValueError("amount_off needs a currency")
        if (duration == "repeating") != (duration_in_months is not None):
            raise ValueError("duration_in_months goes with duration='repeating', only")
        percent = None if percent_off is None else Decimal(str(percent_off))
        if percent is not None and not 0 < percent <= 100:
            raise ValueError("percent_off must be in (0, 100]")
        return Coupon(
            id=f"{self._ids.getrandbits(32):08X}",  # like Stripe's generated coupon ids
            percent_off=percent,
            amount_off=amount_off,
            currency=currency.lower() if amount_off is not None and currency else None,
            duration=duration,
            duration_in_months=duration_in_months,
            name=name,
            created=self.start - 200 * DAY,
        )

    # -- customers and subscriptions ---------------------------------------------------

    def customer(
        self,
        *,
        at: int | None = None,
        name: str | None = None,
        email: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Customer:
        t = self._at(at)
        number = len(self.customers) + 1
        customer = Customer(
            id=self._id("cus"),
            created=t,
            email=email or f"customer{number}@example.com",
            name=name or f"Customer {number}",
            invoice_prefix=f"{self._ids.getrandbits(32):08X}",
            payment_method=self._id("pm"),
            metadata=dict(metadata or {}),
        )
        self.customers.append(customer)
        self._event("customer.created", t, self._json.customer(customer), requested=True)
        return customer

    def subscribe(
        self,
        customer: Customer,
        price: Price | None = None,
        quantity: int = 1,
        *,
        items: Sequence[tuple[Price, int]] | None = None,
        at: int | None = None,
        trial_days: int = 0,
        coupon: Coupon | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Subscription:
        """A new subscription to `price` × `quantity`, or to several `items` (same currency
        and interval, as Stripe requires). With `trial_days` it starts `trialing`."""
        if price is not None and items is None:
            specs = [(price, quantity)]
        elif price is None and items:
            specs = list(items)
        else:
            raise ValueError("subscribe needs a price or (non-empty) items, not both")
        first = specs[0][0]
        for p, q in specs:
            self._check_compatible(first, p)
            if q < 1:
                raise ValueError("quantity must be >= 1")
        t = self._at(at)
        trial_end = t + trial_days * DAY if trial_days > 0 else None
        anchor = trial_end or t
        sub = Subscription(
            id=self._id("sub"),
            customer=customer,
            currency=first.currency,
            items=[],
            status="trialing" if trial_end else "active",
            created=t,
            billing_cycle_anchor=anchor,
            period_index=0,
            current_period_start=t,
            current_period_end=trial_end or period_end(anchor, first, 1),
            metadata=dict(metadata or {}),
            trial_start=t if trial_end else None,
            trial_end=trial_end,
            clock=t - 1,
        )
        sub.items = [Item(self._id("si"), p, q, t) for p, q in specs]
        if coupon is not None:
            self._check_coupon(sub, coupon)
        customer.currency = customer.currency or sub.currency
        customer.subscriptions.append(sub)
        self.subscriptions.append(sub)
        t = self._tick(sub, t)
        if coupon is not None:
            sub.discount = self._new_discount(sub, coupon, t)
        invoice = self._invoice(sub, t, "subscription_create", zero=trial_end is not None)
        self._sub_event(sub, "customer.subscription.created", t, requested=True)
        if sub.discount is not None:
            self._discount_event(sub.discount, "customer.discount.created", t)
            self._schedule_discount_end(sub)
        self._pay(sub, invoice, self._tick(sub, t), requested=True)
        self._schedule(sub.current_period_end, _PERIOD_END, sub, sub.current_period_end)
        if trial_end is not None and trial_end - TRIAL_WILL_END_NOTICE > t:
            self._schedule(trial_end - TRIAL_WILL_END_NOTICE, _TRIAL_WILL_END, sub, trial_end)
        return sub

    def change(
        self,
        sub: Subscription,
        *,
        price: Price | None = None,
        quantity: int | None = None,
        item: int = 0,
        at: int | None = None,
    ) -> None:
        """Upgrade or downgrade one item: a new price, a new quantity, or both.

        A price with another billing interval restarts the billing cycle and invoices
        at once (Stripe's behaviour); proration details are left out.
        """
        t = self._at(at)
        self._require_live(sub)
        target = sub.items[item]
        new_price = price or target.price
        new_quantity = target.quantity if quantity is None else quantity
        if new_quantity < 1:
            raise ValueError("quantity must be >= 1 (cancel the subscription instead)")
        if new_price is target.price and new_quantity == target.quantity:
            raise ValueError("change changes nothing")
        for other in sub.items:
            if other is not target:
                self._check_compatible(other.price, new_price)
        if new_price.currency != sub.currency:
            raise ValueError("a subscription's currency cannot change")
        old = target.price
        previous = self._items_previous(sub)
        if self.shape == "legacy" and len(sub.items) == 1:
            if new_price is not old:
                previous["plan"] = self._json.plan(old)
            if new_quantity != target.quantity:
                previous["quantity"] = target.quantity
        t = self._tick(sub, t)
        target.price, target.quantity = new_price, new_quantity
        recut = (old.interval, old.interval_count) != (new_price.interval, new_price.interval_count)
        if not recut or sub.status == "trialing":
            self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)
            return
        previous.update(self._period_previous(sub))
        previous["billing_cycle_anchor"] = sub.billing_cycle_anchor
        previous["latest_invoice"] = sub.latest_invoice
        sub.billing_cycle_anchor, sub.period_index = t, 0
        sub.current_period_start, sub.current_period_end = t, period_end(t, new_price, 1)
        invoice = self._invoice(sub, t, "subscription_update")
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)
        self._pay(sub, invoice, self._tick(sub, t), requested=True)
        self._schedule(sub.current_period_end, _PERIOD_END, sub, sub.current_period_end)

    def add_item(
        self, sub: Subscription, price: Price, quantity: int = 1, *, at: int | None = None
    ) -> Item:
        """Add an item (an add-on) of the same currency and interval as the others."""
        t = self._at(at)
        self._require_live(sub)
        self._check_compatible(sub.items[0].price, price)
        previous = self._items_previous(sub)
        if self.shape == "legacy" and len(sub.items) == 1:
            previous["plan"] = self._json.plan(sub.items[0].price)
            previous["quantity"] = sub.items[0].quantity
        t = self._tick(sub, t)
        added = Item(self._id("si"), price, quantity, t)
        sub.items.append(added)
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)
        return added

    def remove_item(self, sub: Subscription, item: int, *, at: int | None = None) -> None:
        t = self._at(at)
        self._require_live(sub)
        if len(sub.items) < 2:
            raise ValueError("cannot remove the last item: cancel the subscription")
        previous = self._items_previous(sub)
        if self.shape == "legacy":
            previous["plan"], previous["quantity"] = None, None
        t = self._tick(sub, t)
        del sub.items[item]
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)

    def apply_coupon(self, sub: Subscription, coupon: Coupon, *, at: int | None = None) -> Discount:
        """Put a coupon on the subscription, replacing its discount if it has one."""
        t = self._at(at)
        self._require_live(sub)
        self._check_coupon(sub, coupon)
        previous = self._discount_previous(sub)
        t = self._tick(sub, t)
        replaced = sub.discount
        sub.discount = self._new_discount(sub, coupon, t)
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)
        if replaced is not None:
            self._discount_event(replaced, "customer.discount.deleted", t)
        self._discount_event(sub.discount, "customer.discount.created", t)
        self._schedule_discount_end(sub)
        return sub.discount

    def remove_discount(self, sub: Subscription, *, at: int | None = None) -> None:
        t = self._at(at)
        self._require_live(sub)
        if sub.discount is None:
            raise ValueError(f"{sub.id} has no discount")
        previous = self._discount_previous(sub)
        t = self._tick(sub, t)
        removed, sub.discount = sub.discount, None
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)
        self._discount_event(removed, "customer.discount.deleted", t)

    def cancel(
        self,
        sub: Subscription,
        *,
        at: int | None = None,
        at_period_end: bool = False,
        reason: CancelReason = "cancellation_requested",
        feedback: str | None = None,
        comment: str | None = None,
    ) -> None:
        """Cancel now (`customer.subscription.deleted`), or at the period end (an `updated`
        now, the `deleted` at `current_period_end`; MRR counts until then)."""
        t = self._at(at)
        self._require_live(sub)
        if feedback is not None and feedback not in FEEDBACK:
            raise ValueError(f"feedback {feedback!r} is not one of Stripe's: {sorted(FEEDBACK)}")
        details = {"comment": comment, "feedback": feedback, "reason": reason}
        # Involuntary cancellations are Stripe's doing, not an API request.
        requested = reason == "cancellation_requested"
        if not at_period_end:
            t = self._tick(sub, t)
            sub.status = "canceled"
            sub.canceled_at = sub.ended_at = t
            sub.cancellation_details = details
            sub.fail_next_charge = False
            self._sub_event(sub, "customer.subscription.deleted", t, requested=requested)
            return
        if sub.cancel_at_period_end:
            raise ValueError(f"{sub.id} is already canceling at its period end")
        previous = self._cancel_previous(sub)
        t = self._tick(sub, t)
        sub.cancel_at_period_end = True
        sub.cancel_at = sub.current_period_end
        sub.canceled_at = t
        sub.cancellation_details = details
        sub.fail_next_charge = False
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=requested)

    def undo_cancel(self, sub: Subscription, *, at: int | None = None) -> None:
        """Withdraw a `cancel_at_period_end` before the period ends."""
        t = self._at(at)
        self._require_live(sub)
        if not sub.cancel_at_period_end:
            raise ValueError(f"{sub.id} is not canceling at its period end")
        previous = self._cancel_previous(sub)
        t = self._tick(sub, t)
        sub.cancel_at_period_end = False
        sub.cancel_at = sub.canceled_at = None
        sub.cancellation_details = {"comment": None, "feedback": None, "reason": None}
        self._sub_event(sub, "customer.subscription.updated", t, previous, requested=True)

    def swap(
        self,
        sub: Subscription,
        price: Price,
        quantity: int = 1,
        *,
        at: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Subscription:
        """Replace `sub` by a new subscription: deleted and created in the same second."""
        self.cancel(sub, at=at, comment="replaced by a new subscription")
        assert sub.canceled_at is not None
        return self.subscribe(
            sub.customer,
            price,
            quantity,
            at=sub.canceled_at,
            metadata=sub.metadata if metadata is None else metadata,
        )

    # -- payments ------------------------------------------------------------------------

    def fail_next_renewal(self, sub: Subscription) -> int:
        """Make the charge of the next renewal (or trial end) fail, without moving the
        clock; returns when that charge will fail (an hour after the period ends)."""
        self._require_live(sub)
        if sub.cancel_at_period_end or sub.status == "unpaid":
            raise ValueError(f"{sub.id} has no renewal charge coming")
        sub.fail_next_charge = True
        return sub.current_period_end + CHARGE_DELAY

    def fail_payment(self, sub: Subscription, *, at: int | None = None) -> int:
        """Make a payment attempt fail, and move the clock to it; returns its time.

        With no open invoice it is the first attempt of the next renewal (or trial end),
        an hour after the period ends; `at` must then be omitted. The subscription turns
        `past_due`. With an open invoice it is a retry of the oldest one, at `at` (default:
        its `next_payment_attempt`). After the fourth attempt no retry is scheduled.
        """
        if not sub.open_invoices:
            if at is not None:
                raise ValueError("a first failure happens at the next renewal: omit `at`")
            return self._at(self.fail_next_renewal(sub))
        invoice = sub.open_invoices[0]
        when = at if at is not None else invoice.next_payment_attempt
        if when is None:
            raise ValueError(f"{invoice.id} has no retry scheduled: pass `at`")
        self._at(when)
        self._require_live(sub)
        t = self._tick(sub, when)
        invoice.attempt_count += 1
        invoice.next_payment_attempt = self._next_attempt(invoice, t)
        self._invoice_event(sub, invoice, "invoice.payment_failed", t)
        return t

    def recover(self, sub: Subscription, *, at: int | None = None) -> None:
        """The open invoices get paid at `at` (default: at the next scheduled retry);
        a `past_due` or `unpaid` subscription is `active` again."""
        if not sub.open_invoices and sub.status not in ("past_due", "unpaid"):
            raise ValueError(f"{sub.id} has nothing to recover")
        when = at if at is not None else sub.next_payment_attempt
        if when is None:
            raise ValueError(f"{sub.id} has no retry scheduled: pass `at`")
        self._at(when)
        self._require_live(sub)
        for invoice in sub.open_invoices:
            invoice.attempt_count += 1
            self._pay(sub, invoice, self._tick(sub, when), requested=at is not None)
        sub.open_invoices.clear()
        if sub.status in ("past_due", "unpaid"):
            previous = {"status": sub.status}
            t = self._tick(sub, when)
            sub.status = "active"
            self._sub_event(sub, "customer.subscription.updated", t, previous, requested=False)

    def mark_unpaid(self, sub: Subscription, *, at: int | None = None) -> None:
        """Retries exhausted and Stripe set to mark the subscription `unpaid` (MRR 0)."""
        t = self._at(at)
        if sub.status != "past_due":
            raise ValueError(f"{sub.id} is {sub.status}, not past_due")
        t = self._tick(sub, t)
        sub.status = "unpaid"
        self._sub_event(sub, "customer.subscription.updated", t, {"status": "past_due"})

    # -- the result ----------------------------------------------------------------------

    def build(self, *, until: int | None = None) -> Simulation:
        """The account through `until` (rounded up to a UTC midnight).

        By default it runs until nothing but plain renewals is pending: past every
        scheduled period-end cancellation, trial end, discount end and failing charge.
        """
        if until is None:
            while True:
                pending = [e[0] for e in self._queue if self._significant(e)]
                if not pending:
                    break
                self._at(max(pending))
            last = max([self.now, *(e["created"] for e in self._events)])
            until = day_start(utc_day(last)) + DAY
        elif until < self.now:
            raise ValueError(f"until {until} is before now {self.now}")
        until = -(-until // DAY) * DAY
        self._run_until(until - 1)
        self.now = max(self.now, until - 1)
        last_day: date = utc_day(until - 1)
        lines = [
            SubscriptionLine(
                subscription_id=s.id,
                customer_id=s.customer.id,
                currency=s.currency,
                times=tuple(t for t, _ in s.mrr_points),
                mrrs=tuple(m for _, m in s.mrr_points),
            )
            for s in self.subscriptions
        ]
        events = sorted(self._events, key=lambda e: e["created"])  # stable: ties keep order
        return Simulation(
            events=events,
            truth=Truth(lines, last_day),
            shape=self.shape,
            api_version=self.api_version,
            start=self.start,
            until=until,
            account=self.account,
            customer_ids=tuple(c.id for c in self.customers),
            subscription_ids=tuple(s.id for s in self.subscriptions),
        )

    # -- what Stripe does on its own -------------------------------------------------------

    def _schedule(self, at: int, kind: int, sub: Subscription, token: Any) -> None:
        self._queued += 1
        heapq.heappush(self._queue, (at, kind, self._queued, sub, token))

    def _valid(self, entry: _QueueEntry) -> bool:
        _, kind, _, sub, token = entry
        if sub.status == "canceled":
            return False
        if kind == _DISCOUNT_END:
            return sub.discount is token
        if kind == _TRIAL_WILL_END:
            return sub.status == "trialing" and sub.trial_end == token
        if kind == _PERIOD_END:
            return sub.current_period_end == token
        return token.status == "open" and token.attempt_count == 0  # _CHARGE

    def _significant(self, entry: _QueueEntry) -> bool:
        """Whether the entry changes more than periods: `build()` runs past all of these."""
        if not self._valid(entry):
            return False
        kind, sub = entry[1], entry[3]
        if kind == _DISCOUNT_END:
            return True
        if kind == _PERIOD_END:
            return sub.cancel_at_period_end or sub.status == "trialing" or sub.fail_next_charge
        return kind == _CHARGE and (sub.fail_next_charge or sub.status == "past_due")

    def _run_until(self, to: int) -> None:
        while self._queue and self._queue[0][0] <= to:
            entry = heapq.heappop(self._queue)
            if not self._valid(entry):
                continue
            at, kind, _, sub, token = entry
            if kind == _DISCOUNT_END:
                self._end_discount(sub, at)
            elif kind == _TRIAL_WILL_END:
                t = self._tick(sub, at)
                self._sub_event(sub, "customer.subscription.trial_will_end", t)
            elif kind == _PERIOD_END:
                if sub.cancel_at_period_end:
                    self._end_at_period_end(sub, at)
                else:
                    self._renew(sub, at)
            else:
                self._charge(sub, token, at)

    def _end_discount(self, sub: Subscription, at: int) -> None:
        # The discount stops counting at its `end`, whenever the events get stamped.
        self._record(sub, at)
        previous = self._discount_previous(sub)
        t = self._tick(sub, at)
        ended, sub.discount = sub.discount, None
        assert ended is not None
        self._sub_event(sub, "customer.subscription.updated", t, previous)
        self._discount_event(ended, "customer.discount.deleted", t)

    def _end_at_period_end(self, sub: Subscription, at: int) -> None:
        t = self._tick(sub, at)
        sub.status = "canceled"
        sub.ended_at = t
        self._sub_event(sub, "customer.subscription.deleted", t)

    def _renew(self, sub: Subscription, at: int) -> None:
        """A new period (trial end included): `updated` with the old periods, and a new
        invoice charged an hour later. `unpaid` subscriptions get no invoice (Stripe
        leaves theirs in draft)."""
        previous = self._period_previous(sub)
        if sub.status == "trialing":
            previous["status"] = "trialing"
            sub.status = "active"
            sub.period_index = 0
        else:
            sub.period_index += 1
        price = sub.items[0].price
        sub.current_period_start = at
        sub.current_period_end = period_end(sub.billing_cycle_anchor, price, sub.period_index + 1)
        t = self._tick(sub, at)
        invoice = None
        if sub.status != "unpaid":
            previous["latest_invoice"] = sub.latest_invoice
            invoice = self._invoice(sub, t, "subscription_cycle")
        self._sub_event(sub, "customer.subscription.updated", t, previous)
        if invoice is not None:
            # From the period boundary, not the stamped second: `fail_payment` promises it.
            self._schedule(at + CHARGE_DELAY, _CHARGE, sub, invoice)
        self._schedule(sub.current_period_end, _PERIOD_END, sub, sub.current_period_end)

    def _charge(self, sub: Subscription, invoice: Invoice, at: int) -> None:
        t = self._tick(sub, at)
        invoice.attempt_count = 1
        # A subscription in dunning still has a failing card: its new invoices fail too.
        if not (sub.fail_next_charge or sub.status in ("past_due", "unpaid")):
            self._pay(sub, invoice, t, requested=False)
            return
        sub.fail_next_charge = False
        invoice.next_payment_attempt = self._next_attempt(invoice, t)
        sub.open_invoices.append(invoice)
        self._invoice_event(sub, invoice, "invoice.payment_failed", t)
        if sub.status == "active":
            t = self._tick(sub, t)
            sub.status = "past_due"
            self._sub_event(sub, "customer.subscription.updated", t, {"status": "active"})

    # -- helpers ---------------------------------------------------------------------------

    def _tick(self, sub: Subscription, at: int) -> int:
        t = max(at, sub.clock + 1)
        sub.clock = t
        return t

    def _record(self, sub: Subscription, at: int) -> None:
        """Add a truth point if the subscription's MRR from `at` on differs."""
        points = sub.mrr_points
        if points and points[-1][0] > at:
            # Only when same-second stamping pushed an earlier event past `at`: the MRR
            # computed there already saw the state as of `at`.
            at = points[-1][0]
        mrr = self._mrr(sub, at)
        if points and points[-1][0] == at:
            points[-1] = (at, mrr)
        elif (points[-1][1] if points else 0) != mrr:
            points.append((at, mrr))

    def _mrr(self, sub: Subscription, at: int) -> int:
        # Exact fractions are slow and most events (renewals, invoices) leave every input
        # of MRR alone: recompute only when one of them changed.
        discount = sub.discount
        key = (
            sub.status in COUNTING_STATUSES,
            tuple((i.price.id, i.quantity) for i in sub.items),
            discount.id if discount is not None and discount.active_at(at) else None,
        )
        cached = self._mrr_cache.get(sub.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        mrr = monthly_amount(sub, at)
        self._mrr_cache[sub.id] = (key, mrr)
        return mrr

    def _event(
        self,
        type_: str,
        t: int,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
        *,
        requested: bool = False,
    ) -> None:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event: dict[str, Any] = {"id": self._id("evt"), "object": "event"}
        if self.account is not None:
            event["account"] = self.account
        event.update(
            api_version=self.api_version,
            created=t,
            data=data,
            livemode=False,
            pending_webhooks=1,
            request={"id": self._id("req"), "idempotency_key": None} if requested else _NO_REQUEST,
            type=type_,
        )
        self._events.append(event)

    def _sub_event(
        self,
        sub: Subscription,
        type_: str,
        t: int,
        previous: dict[str, Any] | None = None,
        *,
        requested: bool = False,
    ) -> None:
        obj = self._json.subscription(sub)
        self._last_items[sub.id] = obj["items"]
        self._event(type_, t, obj, previous, requested=requested)
        self._record(sub, t)

    def _discount_event(self, discount: Discount, type_: str, t: int) -> None:
        self._event(type_, t, self._json.discount(discount))

    def _invoice_event(self, sub: Subscription, invoice: Invoice, type_: str, t: int) -> None:
        self._event(type_, t, self._json.invoice(invoice, sub))

    def _invoice(self, sub: Subscription, t: int, reason: str, *, zero: bool = False) -> Invoice:
        lines = tuple(
            Line(
                id=self._id("il"),
                item_id=i.id,
                price=i.price,
                quantity=i.quantity,
                amount=0 if zero else i.price.unit_amount * i.quantity,
            )
            for i in sub.items
        )
        subtotal = sum(line.amount for line in lines)
        sub.customer.invoices += 1
        invoice = Invoice(
            id=self._id("in"),
            number=f"{sub.customer.invoice_prefix}-{sub.customer.invoices:04d}",
            customer=sub.customer.id,
            subscription=sub.id,
            currency=sub.currency,
            created=t,
            period_start=sub.current_period_start,
            period_end=sub.current_period_end,
            billing_reason=reason,
            lines=lines,
            subtotal=subtotal,
            discount=sub.discount,
            discount_amount=invoice_discount(subtotal, sub.discount, t),
        )
        sub.latest_invoice = invoice.id
        return invoice

    def _pay(self, sub: Subscription, invoice: Invoice, t: int, *, requested: bool) -> None:
        invoice.status = "paid"
        invoice.paid_at = t
        invoice.next_payment_attempt = None
        if invoice.total and not invoice.attempt_count:
            invoice.attempt_count = 1
        event = "invoice.paid"
        self._event(event, t, self._json.invoice(invoice, sub), requested=requested)

    def _next_attempt(self, invoice: Invoice, t: int) -> int | None:
        if invoice.attempt_count >= MAX_ATTEMPTS:
            return None
        return t + RETRY_DAYS[invoice.attempt_count - 1] * DAY

    def _new_discount(self, sub: Subscription, coupon: Coupon, t: int) -> Discount:
        months = coupon.duration_in_months
        return Discount(
            id=self._id("di"),
            coupon=coupon,
            customer=sub.customer.id,
            subscription=sub.id,
            start=t,
            end=add_months(t, months) if months else None,
        )

    def _schedule_discount_end(self, sub: Subscription) -> None:
        if sub.discount is not None and sub.discount.end is not None:
            self._schedule(sub.discount.end, _DISCOUNT_END, sub, sub.discount)

    def _items_previous(self, sub: Subscription) -> dict[str, Any]:
        # Every change of items or periods is followed by an event of the subscription, so
        # the items of its latest event are the state before this change: shared, not
        # re-rendered (events are read-only, see `sim.render`).
        return {"items": self._last_items[sub.id]}

    def _period_previous(self, sub: Subscription) -> dict[str, Any]:
        if self.shape == "current":
            return self._items_previous(sub)
        return {
            "current_period_end": sub.current_period_end,
            "current_period_start": sub.current_period_start,
        }

    def _discount_previous(self, sub: Subscription) -> dict[str, Any]:
        previous: dict[str, Any] = {}
        if self.shape == "legacy":
            previous["discount"] = self._json.discount(sub.discount) if sub.discount else None
        previous["discounts"] = [sub.discount.id] if sub.discount else []
        return previous

    @staticmethod
    def _cancel_previous(sub: Subscription) -> dict[str, Any]:
        return {
            "cancel_at": sub.cancel_at,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": sub.canceled_at,
            "cancellation_details": dict(sub.cancellation_details),
        }

    @staticmethod
    def _check_compatible(first: Price, other: Price) -> None:
        if other.currency != first.currency:
            raise ValueError("all items of a subscription share one currency")
        if (other.interval, other.interval_count) != (first.interval, first.interval_count):
            raise ValueError("all items of a subscription share one billing interval")

    @staticmethod
    def _check_coupon(sub: Subscription, coupon: Coupon) -> None:
        if coupon.amount_off is not None and coupon.currency != sub.currency:
            raise ValueError(f"coupon {coupon.id} is in {coupon.currency}, not {sub.currency}")

    @staticmethod
    def _require_live(sub: Subscription) -> None:
        if sub.status == "canceled":
            raise ValueError(f"{sub.id} is canceled")
