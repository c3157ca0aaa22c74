"""Hypothesis strategies: Stripe event histories of one customer's subscriptions."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from service.stripe_shapes.events import RawEvent
from tests.factories import (
    DAY,
    T0,
    coupon_payload,
    discount_payload,
    item,
    price_payload,
    subscription_payload,
)

PRICES = [
    price_payload(id="price_m49", unit_amount=4900),
    price_payload(id="price_m99", unit_amount=9900),
    price_payload(id="price_y1200", unit_amount=120000, interval="year"),
    price_payload(id="price_w10", unit_amount=1000, interval="week"),
    price_payload(id="price_eur", unit_amount=3900, currency="eur"),
]
STATUS_CHANGES = ["active", "past_due", "unpaid", "trialing"]


@st.composite
def subscription_history(draw: st.DrawFn, customer: str, sub_id: str) -> list[RawEvent]:
    shape = draw(st.sampled_from(["current", "legacy"]))
    price = draw(st.sampled_from(PRICES))
    # Keep one currency per subscription, as Stripe does.
    same_currency = [p for p in PRICES if p["currency"] == price["currency"]]
    t = T0 + draw(st.integers(0, 60)) * DAY + draw(st.integers(0, 23)) * 3600
    state: dict[str, Any] = {
        "id": sub_id,
        "customer": customer,
        "shape": shape,
        "status": draw(st.sampled_from(["active", "active", "trialing"])),
        "items": [item(price, draw(st.integers(1, 5)))],
        "created": t,
    }
    events: list[RawEvent] = []
    n = 0

    def emit(type_: str, at: int) -> None:
        nonlocal n
        n += 1
        obj = subscription_payload(**state, current_period_start=at)
        events.append(RawEvent(f"evt_{sub_id}_{n:03d}", f"customer.subscription.{type_}", at, obj))

    emit("created", t)
    if draw(st.booleans()):
        coupon = draw(
            st.sampled_from(
                [
                    coupon_payload(id="c_pct", percent_off=draw(st.sampled_from([10, 25, 100]))),
                    coupon_payload(id="c_amt", amount_off=500, currency=price["currency"]),
                ]
            )
        )
        end = draw(st.one_of(st.none(), st.integers(1, 200).map(lambda k: t + k * DAY)))
        disc = discount_payload(
            id=f"di_{sub_id}",
            coupon=coupon,
            start=t,
            end=end,
            subscription=sub_id,
            customer=customer,
        )
        state["discounts"] = [disc]
        n += 1
        events.append(RawEvent(f"evt_{sub_id}_{n:03d}", "customer.discount.created", t, disc))
        emit("updated", t)
    for _ in range(draw(st.integers(0, 6))):
        # Same-second events are allowed on purpose: ties must break deterministically.
        t += draw(st.sampled_from([0, 3600, DAY, 7 * DAY, 30 * DAY]))
        change = draw(st.sampled_from(["quantity", "price", "status", "pause", "cap"]))
        if change == "quantity":
            state["items"] = [item(state["items"][0]["price"], draw(st.integers(1, 9)))]
        elif change == "price":
            state["items"] = [item(draw(st.sampled_from(same_currency)), 1)]
        elif change == "status":
            state["status"] = draw(st.sampled_from(STATUS_CHANGES))
        elif change == "pause":
            state["pause_collection"] = draw(
                st.sampled_from([None, {"behavior": "void", "resumes_at": None}])
            )
        else:
            state["cancel_at_period_end"] = draw(st.booleans())
        emit("updated", t)
    if draw(st.booleans()):
        t += draw(st.sampled_from([0, DAY, 10 * DAY]))
        state.update(status="canceled", ended_at=t, canceled_at=t)
        state["cancellation_details"] = {
            "reason": draw(st.sampled_from(["cancellation_requested", "payment_failed"])),
            "feedback": draw(st.sampled_from([None, "too_expensive", "unused"])),
            "comment": None,
        }
        emit("deleted", t)
    return events


@st.composite
def customer_history(draw: st.DrawFn, customer: str = "cus_1") -> list[RawEvent]:
    events: list[RawEvent] = []
    for k in range(draw(st.integers(1, 3))):
        events += draw(subscription_history(customer, f"sub_{customer}_{k}"))
    return events


@st.composite
def arrivals(draw: st.DrawFn, events: list[RawEvent]) -> list[RawEvent]:
    """The same events as Stripe might deliver them: any order, some more than once."""
    dupes = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    return draw(st.permutations(events + dupes))
