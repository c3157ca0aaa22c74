"""A small Stripe account with a known history, and builders of invoices and events.

Timeline (day n = 2025-01-01 + n days, noon UTC; "now" is day 400, so Stripe still has
events from day 370 on):

* cus_a: sub_a on price_49 from day 10; upgraded to price_99 on day 55 with prorations
  (lines of invoice in_a3, which the list embeds only partly); cancellation requested on
  day 110, ended on day 130. sub_a2 on price_49 from day 200, no events at all.
* cus_b: sub_b trialing days 20–34 with 2 seats, 3 seats from the period of day 64 (no
  proration: only the next invoice shows it); 20 % off forever from day 200. Stripe still
  has its renewal `customer.subscription.updated` of day 394 and that invoice's `paid`.
* cus_c: sub_c on an annual price from day 300, invoiced in the pre-2025-03-31 line shape.
* cus_d: sub_d created on day 385 and raised to 2 seats on day 390: both events available.
* cus_e: sub_e canceled on day 110 during its trial (never paid). cus_f: no subscription.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.factories import (
    coupon_payload,
    discount_payload,
    item,
    plan_payload,
    price_payload,
    subscription_payload,
)
from tests.jobs.sync.fake_stripe import FakeStripe
from tests.ledger.scenario import day

NOW = day(400, 0)
API_VERSION = "2026-10-28.endive"
PRICE_49 = price_payload(id="price_49", unit_amount=4900)
PRICE_99 = price_payload(id="price_99", unit_amount=9900)
PRICE_Y = price_payload(id="price_y", unit_amount=120000, interval="year")
COUPON_20 = coupon_payload(id="coupon_20", percent_off=20.0)


def line(
    price: dict[str, Any],
    quantity: int,
    start: int,
    end: int,
    *,
    sub: str,
    si: str,
    amount: int | None = None,
    proration: bool = False,
    credit: bool = False,
    shape: str = "current",
) -> dict[str, Any]:
    amount = price["unit_amount"] * quantity if amount is None else amount
    base = {
        "id": f"il_{si}_{start}_{'c' if credit else 'd'}",
        "object": "line_item",
        "amount": -abs(amount) if credit else amount,
        "currency": "usd",
        "description": None,
        "discounts": [],
        "livemode": False,
        "metadata": {},
        "period": {"start": start, "end": end},
        "quantity": quantity,
    }
    credited = {"invoice": "in_prev", "invoice_line_items": ["il_prev"]} if credit else None
    if shape == "legacy":
        return {
            **base,
            "type": "invoiceitem" if proration else "subscription",
            "subscription": sub,
            "subscription_item": si,
            "price": price,
            "plan": plan_payload(price),
            "proration": proration,
            "proration_details": {"credited_items": credited},
        }
    return {
        **base,
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": f"ii_{si}_{start}" if proration else None,
                "proration": proration,
                "proration_details": {"credited_items": credited},
                "subscription": sub,
                "subscription_item": si,
            },
        },
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
    }


def invoice(
    id: str,
    *,
    sub: str,
    customer: str,
    created: int,
    lines: list[dict[str, Any]],
    status: str = "paid",
    shape: str = "current",
    discounts: list[dict[str, Any]] | None = None,
    embedded_lines: int | None = None,
) -> dict[str, Any]:
    shown = lines if embedded_lines is None else lines[:embedded_lines]
    payload: dict[str, Any] = {
        "id": id,
        "object": "invoice",
        "amount_due": sum(x["amount"] for x in lines),
        "billing_reason": "subscription_cycle",
        "created": created,
        "currency": "usd",
        "customer": customer,
        "discounts": list(discounts or []),
        "livemode": False,
        "lines": {
            "object": "list",
            "data": shown,
            "has_more": len(shown) < len(lines),
            "total_count": len(lines),
            "url": f"/v1/invoices/{id}/lines",
        },
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "paid_at": created + 3600 if status == "paid" else None,
            "voided_at": None,
            "marked_uncollectible_at": None,
        },
    }
    if shape == "legacy":
        payload["subscription"] = sub
    else:
        payload["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": sub},
        }
    return payload


def event(
    id: str, type_: str, obj: dict[str, Any], created: int, account: str = ""
) -> dict[str, Any]:
    envelope = {
        "id": id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    if account:
        envelope["account"] = account
    return envelope


def customer(id: str, created: int) -> dict[str, Any]:
    return {
        "id": id,
        "object": "customer",
        "created": created,
        "email": f"{id}@example.com",
        "livemode": False,
        "metadata": {},
    }


def _monthly(sub: str, customer_id: str, si: str, first: int, until: int, **kw: Any) -> list:
    """One paid invoice per 30-day period from `first` while it starts before `until`."""
    invoices = []
    start = first
    while start <= until:
        quantity = kw["quantity"](start) if callable(kw.get("quantity")) else 1
        discounts = kw["discounts"](start) if kw.get("discounts") else None
        invoices.append(
            invoice(
                f"in_{sub}_{start}",
                sub=sub,
                customer=customer_id,
                created=start,
                lines=[line(kw["price"], quantity, start, start + 30 * 86400, sub=sub, si=si)],
                discounts=discounts,
            )
        )
        start += 30 * 86400
    return invoices


def build_account(account: str = "") -> FakeStripe:
    fake = FakeStripe()
    fake.prices = {p["id"]: p for p in (PRICE_49, PRICE_99, PRICE_Y)}
    fake.coupons = {COUPON_20["id"]: COUPON_20}
    fake.customers = [customer(f"cus_{x}", day(5)) for x in "abcdef"]

    sub_a = subscription_payload(
        id="sub_a",
        customer="cus_a",
        status="canceled",
        items=[item(PRICE_99, 1, id="si_a")],
        created=day(10),
        current_period_start=day(100),
        current_period_end=day(130),
        cancel_at_period_end=True,
        canceled_at=day(110),
        ended_at=day(130),
        cancellation_details={"reason": "cancellation_requested", "feedback": "too_expensive"},
    )
    a3_lines = [
        line(PRICE_99, 1, day(70), day(100), sub="sub_a", si="si_a"),
        line(PRICE_49, 1, day(55), day(70), sub="sub_a", si="si_a", amount=2450, credit=True,
             proration=True),
        line(PRICE_99, 1, day(55), day(70), sub="sub_a", si="si_a", amount=4950, proration=True),
    ]  # fmt: skip
    fake.invoice_lines["in_a3"] = a3_lines
    invoices = [
        invoice("in_a1", sub="sub_a", customer="cus_a", created=day(10),
                lines=[line(PRICE_49, 1, day(10), day(40), sub="sub_a", si="si_a")]),
        invoice("in_a2", sub="sub_a", customer="cus_a", created=day(40),
                lines=[line(PRICE_49, 1, day(40), day(70), sub="sub_a", si="si_a")]),
        invoice("in_a3", sub="sub_a", customer="cus_a", created=day(70), lines=a3_lines,
                embedded_lines=1),
        invoice("in_a4", sub="sub_a", customer="cus_a", created=day(100),
                lines=[line(PRICE_99, 1, day(100), day(130), sub="sub_a", si="si_a")]),
    ]  # fmt: skip

    sub_a2 = subscription_payload(
        id="sub_a2",
        customer="cus_a",
        items=[item(PRICE_49, 1, id="si_a2")],
        created=day(200),
        current_period_start=day(380),
        current_period_end=day(410),
    )
    invoices += _monthly("sub_a2", "cus_a", "si_a2", day(200), NOW, price=PRICE_49)

    discount_b = discount_payload(
        id="di_b", coupon="coupon_20", coupon_at="source", start=day(200),
        subscription="sub_b", customer="cus_b",
    )  # fmt: skip
    sub_b = subscription_payload(
        id="sub_b",
        customer="cus_b",
        items=[item(PRICE_49, 3, id="si_b")],
        created=day(20),
        trial_start=day(20),
        trial_end=day(34),
        current_period_start=day(394),
        current_period_end=day(424),
        discounts=[discount_b],
        expand_discounts=True,
    )
    invoices.append(
        invoice("in_b_trial", sub="sub_b", customer="cus_b", created=day(20),
                lines=[line(PRICE_49, 2, day(20), day(34), sub="sub_b", si="si_b", amount=0)])
    )  # fmt: skip
    invoices += _monthly(
        "sub_b", "cus_b", "si_b", day(34), NOW,
        price=PRICE_49,
        quantity=lambda start: 2 if start < day(64) else 3,
        discounts=lambda start: [discount_b] if start >= day(200) else None,
    )  # fmt: skip

    sub_c = subscription_payload(
        id="sub_c",
        customer="cus_c",
        items=[item(PRICE_Y, 1, id="si_c")],
        created=day(300),
        current_period_start=day(300),
        current_period_end=day(665),
    )
    invoices.append(
        invoice("in_c1", sub="sub_c", customer="cus_c", created=day(300), shape="legacy",
                lines=[line(PRICE_Y, 1, day(300), day(665), sub="sub_c", si="si_c",
                            shape="legacy")])
    )  # fmt: skip

    sub_d = subscription_payload(
        id="sub_d",
        customer="cus_d",
        items=[item(PRICE_49, 2, id="si_d")],
        created=day(385),
        current_period_start=day(385),
        current_period_end=day(415),
    )
    sub_d_at_start = copy.deepcopy(sub_d)
    sub_d_at_start["items"]["data"][0]["quantity"] = 1
    invoices.append(
        invoice("in_d1", sub="sub_d", customer="cus_d", created=day(385),
                lines=[line(PRICE_49, 1, day(385), day(415), sub="sub_d", si="si_d")])
    )  # fmt: skip

    sub_e = subscription_payload(
        id="sub_e",
        customer="cus_e",
        status="canceled",
        items=[item(PRICE_49, 1, id="si_e")],
        created=day(100),
        trial_start=day(100),
        trial_end=day(114),
        canceled_at=day(110),
        ended_at=day(110),
        current_period_start=day(100),
        current_period_end=day(114),
    )
    invoices.append(
        invoice("in_e1", sub="sub_e", customer="cus_e", created=day(100),
                lines=[line(PRICE_49, 1, day(100), day(114), sub="sub_e", si="si_e", amount=0)])
    )  # fmt: skip

    fake.subscriptions = [sub_a, sub_a2, sub_b, sub_c, sub_d, sub_e]
    fake.invoices = invoices
    # Webhooks of current API versions list discounts as bare ids (design §3).
    sub_b_webhook = {**copy.deepcopy(sub_b), "discounts": ["di_b"]}
    in_b_394 = next(i for i in invoices if i["id"] == f"in_sub_b_{day(394)}")
    in_d1 = next(i for i in invoices if i["id"] == "in_d1")
    fake.events = [
        event("evt_1SubD0Created000000001", "customer.subscription.created", sub_d_at_start,
              day(385), account),
        event("evt_1InvD0Paid000000000001", "invoice.paid", in_d1, day(385) + 3600, account),
        event("evt_1SubD0Updated000000001", "customer.subscription.updated", sub_d, day(390),
              account),
        event("evt_1SubB0Updated000000001", "customer.subscription.updated", sub_b_webhook,
              day(394), account),
        event("evt_1InvB0Paid000000000001", "invoice.paid", in_b_394, day(394) + 3600, account),
        # A type the backfill does not ask for: the list filter must keep it out.
        event("evt_1Charge0Ok000000000001", "charge.succeeded", {"id": "ch_1"}, day(394),
              account),
    ]  # fmt: skip
    return fake


def inject_drift(fake: FakeStripe) -> None:
    """Three changes whose webhooks were missed."""
    sub_b = next(s for s in fake.subscriptions if s["id"] == "sub_b")
    sub_b["items"]["data"][0]["quantity"] = 5  # 3 → 5 seats
    sub_c = next(s for s in fake.subscriptions if s["id"] == "sub_c")
    sub_c.update(status="canceled", canceled_at=day(398), ended_at=day(398))
    fake.subscriptions.append(
        subscription_payload(
            id="sub_g", customer="cus_g", items=[item(PRICE_49, 1, id="si_g")], created=day(399)
        )
    )


# Hand-computed (customer, day, movement, from, to), in cents:
# cus_a: 4900 from day 10; 9900 from the day-55 upgrade; 0 when sub_a ends on day 130;
#        sub_a2 brings 4900 back on day 200 (reactivation).
# cus_b: trial days 20–34 count 0; 2 × 4900 = 9800 from day 34; 3 × 4900 = 14700 from the
#        day-64 period; 20 % off from day 200: 14700 × 0.8 = 11760.
# cus_c: 120000 a year / 12 = 10000 from day 300.
# cus_d: 4900 on day 385; 2 × 4900 = 9800 on day 390 (both from Stripe's own events).
EXPECTED_LEDGER = [
    ("cus_a", 10, "new", 0, 4900),
    ("cus_a", 55, "expansion", 4900, 9900),
    ("cus_a", 130, "churn", 9900, 0),
    ("cus_a", 200, "reactivation", 0, 4900),
    ("cus_b", 34, "new", 0, 9800),
    ("cus_b", 64, "expansion", 9800, 14700),
    ("cus_b", 200, "contraction", 14700, 11760),
    ("cus_c", 300, "new", 0, 10000),
    ("cus_d", 385, "new", 0, 4900),
    ("cus_d", 390, "expansion", 4900, 9800),
]
