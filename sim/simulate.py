"""Deterministic simulator of a Stripe account: webhook events plus the MRR they must add up to.

`simulate()` generates a seeded account: customers sign up over the months on monthly,
quarterly, annual, weekly and biweekly prices in usd/eur/gbp/jpy (seats, add-on items,
percent and amount-off coupons, forever or repeating), with 14-day trials (some never
convert), upgrades and downgrades (price, quantity, monthly to annual), cancellations now
or at the period end (Stripe's feedback enum and comments, some withdrawn), retention
coupons, failed payments (retries, then recovered, canceled with reason `payment_failed`,
or `unpaid`), same-day swaps, second subscriptions and reactivations. Hand-made scenarios
use `AccountBuilder` (see `sim.builder`), the same engine.

Either way the result is a `Simulation`: `events`, Stripe event envelopes sorted by
`created` (read-only: they share unchanging parts, see `sim.render`), and `truth`,
computed from the simulator's own state model (`sim.model`), never by the service:

* `truth.mrr(customer_id, day)` / `truth.total_mrr(day)`: MRR at the end of a UTC day, per
  currency, in minor units;
* `truth.movements()`: one `TruthMovement(customer_id, day, currency, from_mrr, to_mrr)`
  per customer, currency and day whose end-of-day MRR changed;
* `truth.subscription_mrr(subscription_id, at)`: one subscription at a unix time.
"""

from __future__ import annotations

import gc
import random

from sim.builder import DEFAULT_START, AccountBuilder
from sim.generator import Generator
from sim.model import (
    API_VERSIONS,
    DAY,
    Coupon,
    Customer,
    Discount,
    Item,
    Price,
    Shape,
    Subscription,
    add_months,
)
from sim.truth import Simulation, Truth, TruthMovement, event_bytes

__all__ = [
    "API_VERSIONS",
    "DAY",
    "DEFAULT_START",
    "AccountBuilder",
    "Coupon",
    "Customer",
    "Discount",
    "Item",
    "Price",
    "Shape",
    "Simulation",
    "Subscription",
    "Truth",
    "TruthMovement",
    "event_bytes",
    "simulate",
]


def simulate(
    *,
    customers: int,
    months: int,
    seed: int = 0,
    start: int = DEFAULT_START,
    shape: Shape = "current",
    account: str | None = None,
) -> Simulation:
    """A seeded Stripe account: `customers` sign up over `months` from `start` (a quarter
    of them in the first month, the rest spread evenly) and live their lives until `start`
    + `months` calendar months, rounded up to a UTC midnight (`Simulation.until`). The same
    arguments always give the same events, ids and truth."""
    if customers < 0 or months < 1:
        raise ValueError("customers must be >= 0 and months >= 1")
    until = add_months(start, months)
    rng = random.Random(f"churn-ledger-simulator:{seed}")
    builder = AccountBuilder(shape=shape, start=start, seed=seed, account=account)
    generator = Generator(builder, rng, until)
    generator.sign_up(customers)
    # The run allocates about a million containers and frees almost none. With the
    # collector on, every 25% of growth triggers a full walk of all of them (2-3x the run
    # time). Instead: off during the run, then one full collection, which also tells the
    # collector these objects are long-lived, so the caller's next allocations do not
    # trigger young-generation walks over all of them.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        generator.run()
        simulation = builder.build(until=until)
    finally:
        if gc_was_enabled:
            gc.enable()
    if gc_was_enabled:
        gc.collect()
    return simulation
