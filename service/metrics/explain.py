"""Which ledger rows make up one figure of /v1/metrics (design §5): the rules of
`GET /v1/metrics/explain`, pure functions of a customer's ledger rows.

They restate, row by row, what `service.metrics.compute` does with frames, so that the
rows listed sum to the figure the metric tables hold (a hypothesis property holds the two
together):
* a customer's series in a currency with any row lacking a reporting amount is left out
  whole (its rows count as `unconverted_movements` and move nothing else);
* a customer is active while any of its (converted) series has MRR > 0; its first start
  is `new`, a later one `reactivation`, a stop `churn`: one flip per customer and day;
* a customer's segment is that of its primary subscription now (highest MRR, then
  latest, then id), or, without one, its latest ledger currency and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from typing import Any, Literal

from service.ledger.models import MrrMovement, SubscriptionState
from service.metrics.recount import primacy

Kind = Literal["amount", "count"]

# metric -> ledger movement type whose reporting deltas it sums (or whose rows it counts)
AMOUNT_FLOWS = {
    "new_mrr": "new",
    "expansion_mrr": "expansion",
    "contraction_mrr": "contraction",
    "churned_mrr": "churn",
    "reactivation_mrr": "reactivation",
}
ROW_COUNTS = {"expansions": "expansion", "contractions": "contraction"}
# metric -> customer-level flip it counts
FLIP_COUNTS = {
    "new_customers": "new",
    "reactivated_customers": "reactivation",
    "churned_customers": "churn",
}
UNCONVERTED = "unconverted_movements"
# State at a boundary: the running sum of every row before it (`mrr` is `mrr_end`).
STATE_AMOUNTS = ("mrr", "mrr_start", "mrr_end")
STATE_COUNTS = ("customers", "customers_start", "customers_end")

EXPLAINABLE: tuple[str, ...] = (
    *AMOUNT_FLOWS, *FLIP_COUNTS, *ROW_COUNTS, UNCONVERTED, *STATE_AMOUNTS, *STATE_COUNTS,
)  # fmt: skip


def kind_of(metric: str) -> Kind:
    return "amount" if metric in AMOUNT_FLOWS or metric in STATE_AMOUNTS else "count"


def at_start(metric: str) -> bool:
    """The metric is a state at the period's start (else at its end, or a flow in it)."""
    return metric in ("mrr_start", "customers_start")


def is_state(metric: str) -> bool:
    return metric in STATE_AMOUNTS or metric in STATE_COUNTS


@dataclass(frozen=True, slots=True)
class CustomerSegment:
    """A customer's segment attributes (what `Selection.matches` filters on)."""

    plan: str | None
    billing_interval: str | None
    currency: str | None
    metadata_: dict[str, Any] | None


@dataclass(slots=True)
class Contribution:
    row: MrrMovement
    value: int  # what this row adds to the figure


@dataclass(slots=True)
class CustomerExplained:
    customer_id: str
    contributions: list[Contribution] = field(default_factory=list)

    @property
    def value(self) -> int:
        return sum(c.value for c in self.contributions)


def segment_of(states: Sequence[SubscriptionState], rows: Sequence[MrrMovement]) -> CustomerSegment:
    """The customer's segment: its primary subscription's, or its latest row's currency."""
    if not states:
        return CustomerSegment(None, None, rows[-1].currency, {})
    primary = min(states, key=primacy)
    return CustomerSegment(
        primary.plan, primary.billing_interval, primary.currency, primary.metadata_ or {}
    )


def explain_customer(
    metric: str, rows: Sequence[MrrMovement], start: date, end: date
) -> CustomerExplained | None:
    """The rows of one customer (ordered by day, currency) behind `metric` over
    [start, end); None when the customer adds nothing to it."""
    out = CustomerExplained(rows[0].customer_id)
    inert = {r.currency for r in rows if r.delta_reporting is None}
    live = [r for r in rows if r.currency not in inert]

    def within(r: MrrMovement) -> bool:
        return start <= r.day < end

    def add(r: MrrMovement, value: int) -> None:
        out.contributions.append(Contribution(r, value))

    if metric in AMOUNT_FLOWS or metric in ROW_COUNTS:
        movement = AMOUNT_FLOWS.get(metric) or ROW_COUNTS[metric]
        for r in live:
            if within(r) and r.movement == movement:
                add(r, int(r.delta_reporting or 0) if metric in AMOUNT_FLOWS else 1)
    elif metric == UNCONVERTED:
        for r in rows:
            if within(r) and r.currency in inert:
                add(r, 1)
    elif metric in STATE_AMOUNTS:
        boundary = start if at_start(metric) else end
        for r in live:
            if r.day < boundary:
                add(r, int(r.delta_reporting or 0))
        if out.value == 0:  # e.g. churned: the rows net out, and the figure has none of it
            return None
    else:
        _flips(out, metric, live, start, end)
    return out if out.contributions else None


def _flips(
    out: CustomerExplained, metric: str, live: list[MrrMovement], start: date, end: date
) -> None:
    """Customer counts: a walk over the customer's days, series by series."""
    latest: dict[str, MrrMovement] = {}  # currency -> the series' latest row so far
    active = ever = False
    boundary = start if at_start(metric) else end
    wanted = FLIP_COUNTS.get(metric)
    for day, group in groupby(live, key=lambda r: r.day):
        if day >= boundary:
            break
        rows = list(group)
        for r in rows:
            latest[r.currency] = r
        now = any(r.to_mrr > 0 for r in latest.values())
        flip = None
        if now and not active:
            flip = "reactivation" if ever else "new"
            ever = True
        elif active and not now:
            flip = "churn"
        active = now
        if wanted is not None and flip == wanted and start <= day < end:
            # One flip per customer and day: it counts once, on the day's first row.
            for n, r in enumerate(rows):
                out.contributions.append(Contribution(r, 1 if n == 0 else 0))
    if wanted is None and active:
        # Active at the boundary: the rows that set each paying series' MRR.
        paying = [r for r in latest.values() if r.to_mrr > 0]
        paying.sort(key=lambda r: (r.day, r.currency, r.id))
        for n, r in enumerate(paying):
            out.contributions.append(Contribution(r, 1 if n == 0 else 0))


def explain_ledger(
    metric: str,
    rows: Sequence[MrrMovement],
    states: Sequence[SubscriptionState],
    start: date,
    end: date,
    include: Any,
) -> list[CustomerExplained]:
    """Per customer (rows ordered by customer, day, currency): the contributions to
    `metric`, for the customers whose segment `include(CustomerSegment)` accepts; largest
    contributions first."""
    states_of: dict[str, list[SubscriptionState]] = {}
    for s in states:
        states_of.setdefault(s.customer_id, []).append(s)
    found = []
    for customer, group in groupby(rows, key=lambda r: r.customer_id):
        mine = list(group)
        if not include(segment_of(states_of.get(customer, []), mine)):
            continue
        explained = explain_customer(metric, mine, start, end)
        if explained is not None:
            found.append(explained)
    found.sort(key=lambda c: (-abs(c.value), c.customer_id))
    return found
