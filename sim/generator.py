"""Customer behaviour for `simulate`: who signs up for what, and what they do next.

Each customer and subscription is a small agent whose next decision is drawn from
competing monthly hazards (cancel, change, fail a payment, swap, add-on); decisions run in
global time order on one `AccountBuilder`, which does everything Stripe does on its own.
The mix below is tuned so 10k customers over 12 months make roughly 140k events, with a
few percent monthly churn, about a fifth of it involuntary (failed payments).
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from sim.builder import FEEDBACK, MAX_ATTEMPTS, AccountBuilder
from sim.model import DAY, Coupon, Customer, Interval, Price, Subscription

MONTH_DAYS = 30.44


@dataclass(frozen=True, slots=True)
class _Plan:
    nickname: str
    product: str
    usd_amount: int  # cents; other currencies are derived by `_amount_in`
    interval: Interval
    interval_count: int
    per_seat: bool
    weight: int


PLANS: tuple[_Plan, ...] = (
    _Plan("Starter monthly", "Starter", 2900, "month", 1, False, 26),
    _Plan("Team monthly", "Team", 1500, "month", 1, True, 24),
    _Plan("Pro monthly", "Pro", 9900, "month", 1, False, 12),
    _Plan("Team quarterly", "Team", 4200, "month", 3, True, 5),
    _Plan("Starter annual", "Starter", 29000, "year", 1, False, 11),
    _Plan("Team annual", "Team", 15000, "year", 1, True, 9),
    _Plan("Pro annual", "Pro", 99000, "year", 1, False, 4),
    _Plan("Starter weekly", "Starter", 900, "week", 1, False, 3),
    _Plan("Team biweekly", "Team", 700, "week", 2, True, 1),
)
ADD_ON_USD = {"month": 1000, "year": 10000, "week": 300}
CURRENCIES: tuple[tuple[str, int], ...] = (("usd", 55), ("eur", 20), ("gbp", 12), ("jpy", 13))
# Amount-off coupons per invoice, in minor units (whole yen): large enough that a weekly
# plan occasionally hits the "never below 0" floor.
AMOUNT_OFF = {"usd": 1000, "eur": 1000, "gbp": 800, "jpy": 1500}

# Monthly hazards of each decision for a live, settled subscription.
CANCEL_HAZARD: dict[str, float] = {"month": 0.032, "week": 0.05, "year": 0.012}
CHANGE_HAZARD = 0.045
FAIL_HAZARD = 0.025
SWAP_HAZARD = 0.004
ADD_ON_HAZARD = 0.006

COMMENTS: dict[str, tuple[str, ...]] = {
    "too_expensive": ("Budget cuts this quarter", "Cheaper elsewhere"),
    "missing_features": ("No SSO", "Needed an API for exports"),
    "switched_service": ("Moved to a competitor", "Consolidating tools"),
    "unused": ("Project ended", "Nobody logged in"),
    "customer_service": ("Support was slow",),
    "too_complex": ("Hard to set up",),
    "low_quality": ("Too many bugs",),
    "other": ("Company closed", "Seasonal business"),
}
FEEDBACK_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("too_expensive", 25),
    ("unused", 20),
    ("missing_features", 15),
    ("switched_service", 14),
    ("other", 10),
    ("too_complex", 6),
    ("customer_service", 5),
    ("low_quality", 5),
)
assert {f for f, _ in FEEDBACK_WEIGHTS} == FEEDBACK == set(COMMENTS)


def _amount_in(usd_cents: int, currency: str) -> int:
    """A catalog price in `currency`, in its minor units (JPY has none: whole yen)."""
    if currency == "usd":
        return usd_cents
    if currency == "jpy":
        yen = usd_cents * 3 // 2  # 150 yen to the dollar, and cents are 1/100 dollar
        return (yen + 5) // 10 * 10
    rate = {"eur": 92, "gbp": 80}[currency]
    return (usd_cents * rate // 100 + 50) // 100 * 100


class _Weighted:
    """A weighted random choice, prepared once (the generator draws hundreds of thousands)."""

    def __init__(self, options: Sequence[tuple[Any, int]]) -> None:
        self._values = [value for value, _ in options]
        self._cumulative = list(accumulate(weight for _, weight in options))

    def pick(self, rng: random.Random) -> Any:
        return self._values[bisect(self._cumulative, rng.random() * self._cumulative[-1])]


SEGMENTS = _Weighted((("smb", 70), ("mid_market", 24), ("enterprise", 6)))
CHANNELS = _Weighted((("self_serve", 75), ("sales", 18), ("partner", 7)))
PICK_CURRENCY = _Weighted(CURRENCIES)
PICK_FEEDBACK = _Weighted(FEEDBACK_WEIGHTS)
# Attempt at which a failed payment is recovered; None: never (involuntary churn).
RECOVERED_ON = _Weighted(((2, 30), (3, 18), (4, 12), (None, 40)))
PICK_PLAN = {
    avoid: _Weighted([(p, p.weight) for p in PLANS if p.product != avoid])
    for avoid in (None, *sorted({p.product for p in PLANS}))
}
DECISIONS = {
    interval: _Weighted(
        [
            ("cancel", round(cancel * 1000)),
            ("change", round(CHANGE_HAZARD * 1000)),
            ("fail", round(FAIL_HAZARD * 1000)),
            ("swap", round(SWAP_HAZARD * 1000)),
            ("add_on", round(ADD_ON_HAZARD * 1000)),
        ]
    )
    for interval, cancel in CANCEL_HAZARD.items()
}


class Generator:
    """Customer behaviour as timed intents, run in global time order on one builder."""

    def __init__(self, builder: AccountBuilder, rng: random.Random, until: int) -> None:
        self.b = builder
        self.rng = rng
        self.until = until
        self._intents: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._prices: dict[tuple[str, str], Price] = {}
        self._coupons: dict[str, tuple[Coupon, ...]] = {}
        self._plan_of: dict[str, _Plan] = {}  # subscription id -> plan of its first item

    # -- plumbing ---------------------------------------------------------------------

    def later(self, at: int, action: Callable[..., None], *args: Any) -> None:
        # Intents at or past the horizon never happen: the account stops there.
        if at < self.until - 60:
            self._seq += 1
            heapq.heappush(self._intents, (at, self._seq, action, args))

    def run(self) -> None:
        while self._intents:
            at, _, action, args = heapq.heappop(self._intents)
            # Same-second stamping can move the builder's clock a few seconds ahead.
            action(max(at, self.b.now), *args)

    def _gap(self, monthly_rate: float) -> int:
        return int(self.rng.expovariate(monthly_rate) * MONTH_DAYS * DAY)

    def _jitter(self, days_low: float, days_high: float) -> int:
        return int(self.rng.uniform(days_low, days_high) * DAY)

    def price(self, plan: _Plan, currency: str) -> Price:
        key = (plan.nickname, currency)
        if key not in self._prices:
            self._prices[key] = self.b.price(
                _amount_in(plan.usd_amount, currency),
                currency,
                plan.interval,
                interval_count=plan.interval_count,
                nickname=plan.nickname,
                product=plan.product,
            )
        return self._prices[key]

    def add_on(self, sub: Subscription) -> Price:
        first = sub.items[0].price
        plan = _Plan(
            f"Add-on {first.interval}ly x{first.interval_count}",
            "Add-on",
            ADD_ON_USD[first.interval] * first.interval_count,
            first.interval,
            first.interval_count,
            True,
            0,
        )
        return self.price(plan, sub.currency)

    def coupons(self, currency: str) -> tuple[Coupon, ...]:
        if currency not in self._coupons:
            c = self.b.coupon
            self._coupons[currency] = (
                c(percent_off=20, name="20% off"),
                c(percent_off="12.5", name="12.5% off"),
                c(percent_off=25, duration="repeating", duration_in_months=3, name="Q1 25%"),
                c(percent_off=50, duration="repeating", duration_in_months=2, name="Half off"),
                c(percent_off=100, duration="repeating", duration_in_months=1, name="Free month"),
                c(amount_off=AMOUNT_OFF[currency], currency=currency, name="Fixed off"),
                c(
                    amount_off=AMOUNT_OFF[currency],
                    currency=currency,
                    duration="repeating",
                    duration_in_months=6,
                    name="Fixed off 6 months",
                ),
            )
        return self._coupons[currency]

    def _quantity(self, plan: _Plan) -> int:
        if not plan.per_seat:
            return 1
        return min(int(self.rng.paretovariate(1.2)), 60)

    def _feedback(self) -> tuple[str | None, str | None]:
        if self.rng.random() < 0.3:
            return None, None
        feedback = PICK_FEEDBACK.pick(self.rng)
        comment = self.rng.choice(COMMENTS[feedback]) if self.rng.random() < 0.4 else None
        return feedback, comment

    # -- customers ----------------------------------------------------------------------

    def sign_up(self, customers: int) -> None:
        """Schedule the signups: a quarter in the first month (the account's existing base,
        so early periods have churn to measure), the rest evenly over the window."""
        start = self.b.start
        window = self.until - start - DAY
        for _ in range(customers):
            span = min(31 * DAY, window) if self.rng.random() < 1 / 4 else window
            self.later(start + int(self.rng.random() * span), self.signup)

    def signup(self, at: int) -> None:
        rng = self.rng
        segment = SEGMENTS.pick(rng)
        customer = self.b.customer(at=at, metadata={"segment": segment})
        currency = PICK_CURRENCY.pick(rng)
        self.start_subscription(at, customer, currency)
        if rng.random() < 0.05:
            self.later(at + self._jitter(1, 90), self.second_subscription, customer)

    def start_subscription(
        self, at: int, customer: Customer, currency: str, avoid: str | None = None
    ) -> None:
        rng = self.rng
        plan: _Plan = PICK_PLAN[avoid].pick(rng)
        trial_days = 14 if plan.interval != "year" and rng.random() < 0.25 else 0
        coupon = rng.choice(self.coupons(currency)) if rng.random() < 0.18 else None
        channel = CHANNELS.pick(rng)
        sub = self.b.subscribe(
            customer,
            self.price(plan, currency),
            self._quantity(plan),
            at=at,
            trial_days=trial_days,
            coupon=coupon,
            metadata={"channel": channel, "plan": plan.nickname},
        )
        self._plan_of[sub.id] = plan
        if trial_days and rng.random() < 0.3:
            # Trials that never convert: canceled before the first charge, MRR never > 0.
            self.later(at + self._jitter(1, trial_days - 0.1), self.cancel_trial, sub)
        else:
            self.later((sub.trial_end or at) + self._next_gap(sub), self.decide, sub)

    def second_subscription(self, at: int, customer: Customer) -> None:
        live = customer.live
        if live:
            avoid = self._plan_of[live[0].id].product
            self.start_subscription(at, customer, live[0].currency, avoid=avoid)

    def maybe_reactivate(self, at: int, customer: Customer, involuntary: bool) -> None:
        if customer.live or self.rng.random() >= (0.12 if involuntary else 0.22):
            return
        self.later(at + self._jitter(20, 150), self.reactivate, customer)

    def reactivate(self, at: int, customer: Customer) -> None:
        if not customer.live and customer.currency is not None:
            self.start_subscription(at, customer, customer.currency)

    # -- one subscription's life --------------------------------------------------------

    def _total_hazard(self, sub: Subscription) -> float:
        interval = sub.items[0].price.interval
        base = CHANGE_HAZARD + FAIL_HAZARD + SWAP_HAZARD + ADD_ON_HAZARD
        return CANCEL_HAZARD[interval] + base

    def _next_gap(self, sub: Subscription) -> int:
        return max(self._gap(self._total_hazard(sub)), DAY)

    def cancel_trial(self, at: int, sub: Subscription) -> None:
        if sub.status == "trialing":
            feedback, comment = self._feedback()
            self.b.cancel(sub, at=at, feedback=feedback, comment=comment)
            self.maybe_reactivate(at, sub.customer, involuntary=False)

    def decide(self, at: int, sub: Subscription) -> None:
        if sub.status != "active" or sub.cancel_at_period_end or sub.fail_next_charge:
            return
        action = DECISIONS[sub.items[0].price.interval].pick(self.rng)
        getattr(self, f"_{action}")(at, sub)

    def _cancel(self, at: int, sub: Subscription) -> None:
        rng = self.rng
        if sub.discount is None and rng.random() < 0.15:
            # A retention offer instead of the cancellation.
            offer = self.coupons(sub.currency)[2]
            self.b.apply_coupon(sub, offer, at=at)
            self.later(at + self._next_gap(sub), self.decide, sub)
            return
        feedback, comment = self._feedback()
        annual = sub.items[0].price.interval == "year"
        if rng.random() < (0.9 if annual else 0.6):
            self.b.cancel(sub, at=at, at_period_end=True, feedback=feedback, comment=comment)
            end = sub.current_period_end
            if rng.random() < 0.12:
                self.later(at + int(rng.uniform(0.1, 0.9) * (end - at)), self._undo, sub)
            else:
                self.later(end + 60, self.maybe_reactivate, sub.customer, False)
        else:
            self.b.cancel(sub, at=at, feedback=feedback, comment=comment)
            self.maybe_reactivate(at, sub.customer, involuntary=False)

    def _undo(self, at: int, sub: Subscription) -> None:
        if sub.cancel_at_period_end and sub.status != "canceled":
            self.b.undo_cancel(sub, at=at)
            self.later(at + self._next_gap(sub), self.decide, sub)

    def _change(self, at: int, sub: Subscription) -> None:
        rng = self.rng
        plan = self._plan_of[sub.id]
        item = sub.items[0]
        if plan.per_seat and rng.random() < 0.7:
            step = rng.randint(1, 3) if rng.random() < 0.65 else -rng.randint(1, 3)
            quantity = max(1, item.quantity + step)
            if quantity == item.quantity:
                quantity += 1
            self.b.change(sub, quantity=quantity, at=at)
        else:
            single = len(sub.items) == 1
            switch_interval = single and plan.interval == "month" and rng.random() < 0.15
            options = [
                p
                for p in PLANS
                if p is not plan
                and (p.interval == "year" if switch_interval else p.interval == plan.interval)
                and (switch_interval or p.interval_count == plan.interval_count)
            ]
            if not options:
                self.b.change(sub, quantity=item.quantity + 1, at=at)
            else:
                new_plan = rng.choice(options)
                quantity = self._quantity(new_plan) if new_plan.per_seat else 1
                price = self.price(new_plan, sub.currency)
                self.b.change(sub, price=price, quantity=quantity, at=at)
                self._plan_of[sub.id] = new_plan
        self.later(at + self._next_gap(sub), self.decide, sub)

    def _add_on(self, at: int, sub: Subscription) -> None:
        if len(sub.items) == 1:
            self.b.add_item(sub, self.add_on(sub), self.rng.randint(1, 5), at=at)
        elif self.rng.random() < 0.5:
            self.b.remove_item(sub, 1, at=at)
        self.later(at + self._next_gap(sub), self.decide, sub)

    def _swap(self, at: int, sub: Subscription) -> None:
        plan = self._plan_of[sub.id]
        options = [p for p in PLANS if p.product != plan.product]
        new_plan = self.rng.choice(options)
        new = self.b.swap(sub, self.price(new_plan, sub.currency), self._quantity(new_plan), at=at)
        self._plan_of[new.id] = new_plan
        self.later(at + self._next_gap(new), self.decide, new)

    def _fail(self, at: int, sub: Subscription) -> None:
        rng = self.rng
        failed_at = self.b.fail_next_renewal(sub)
        # Outcome decided up front: recovered at attempt 2..4, or lost after the 4th.
        recover_on = RECOVERED_ON.pick(rng)
        self.later(failed_at, self._dunning, sub, recover_on)

    def _dunning(self, at: int, sub: Subscription, recover_on: int | None) -> None:
        self.b.advance(at)
        if sub.status == "canceled" or not sub.open_invoices:
            return
        attempts = sub.open_invoices[0].attempt_count
        retry = sub.next_payment_attempt
        if recover_on is not None and attempts + 1 >= recover_on and retry is not None:
            # Some customers fix their card before Stripe retries; the retry then succeeds.
            when = retry if self.rng.random() < 0.7 else at + int(self.rng.random() * (retry - at))
            self.later(when, self._recover, sub)
        elif retry is not None:
            self.later(retry, self._retry_fails, sub, recover_on)
        elif attempts >= MAX_ATTEMPTS:
            self.later(at + 60, self._retries_exhausted, sub)

    def _retries_exhausted(self, at: int, sub: Subscription) -> None:
        # Stripe's "after all retries fail" setting: cancel, or (less often) mark unpaid.
        if sub.status == "canceled":
            return
        if self.rng.random() < 0.75:
            self.b.cancel(sub, at=at, reason="payment_failed")
            self.maybe_reactivate(at, sub.customer, involuntary=True)
        else:
            self.b.mark_unpaid(sub, at=at)
            self.later(at + self._jitter(10, 40), self._settle_unpaid, sub)

    def _retry_fails(self, at: int, sub: Subscription, recover_on: int | None) -> None:
        if sub.status != "canceled" and sub.open_invoices:
            failed_at = self.b.fail_payment(sub, at=at)
            self._dunning(failed_at, sub, recover_on)

    def _recover(self, at: int, sub: Subscription) -> None:
        if sub.status != "canceled" and sub.open_invoices:
            self.b.recover(sub, at=at)
            self.later(at + self._next_gap(sub), self.decide, sub)

    def _settle_unpaid(self, at: int, sub: Subscription) -> None:
        if sub.status != "unpaid":
            return
        if self.rng.random() < 0.25:
            self.b.recover(sub, at=at)
            self.later(at + self._next_gap(sub), self.decide, sub)
        else:
            self.b.cancel(sub, at=at, reason="payment_failed")
            self.maybe_reactivate(at, sub.customer, involuntary=True)
