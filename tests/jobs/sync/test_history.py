"""History reconstruction and invoice line shapes, pure (no database, no HTTP)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from jobs.sync.history import FirstReal, reconstruct
from service.ledger.timeline import project
from service.stripe_shapes.events import RawEvent
from service.stripe_shapes.invoice import invoice_subscription
from service.stripe_shapes.invoice_lines import BilledLine, billed_lines
from tests.factories import item, subscription_payload
from tests.jobs.sync.account import PRICE_49, PRICE_99, invoice, line
from tests.ledger.scenario import day

NOW = day(400, 0)
WINDOW_START = NOW - 30 * 86400


class Prices:
    """The catalog, minus the HTTP: prices by id."""

    def __init__(self, *prices: Mapping[str, Any]) -> None:
        self.prices = {p["id"]: p for p in prices}

    def line_price(self, line: BilledLine, currency: str | None) -> Mapping[str, Any] | None:
        return line.price or self.prices.get(line.price_id or "")

    def complete_discount(self, discount: Any) -> Any:
        return discount


PRICES = Prices(PRICE_49, PRICE_99)


def ledger(events: list[RawEvent]) -> list[tuple[int, int, str]]:
    """(day, MRR, status) at each change, as the projector sees these snapshots."""
    return [((p.at - day(0, 0)) // 86400, p.mrr, p.status) for p in project(events, now=NOW).points]


def monthly(sub: str, quantity: int, start: int, price: dict = PRICE_49, **kw: Any) -> dict:
    end = start + 30 * 86400
    lines = [line(price, quantity, start, end, sub=sub, si="si_1", **kw)]
    return invoice(f"in_{start}", sub=sub, customer="cus_1", created=start, lines=lines)


class TestInvoiceLines:
    def test_both_shapes_read_alike(self):
        for shape in ("current", "legacy"):
            inv = invoice(
                "in_1",
                sub="sub_1",
                customer="cus_1",
                created=day(0),
                shape=shape,
                lines=[
                    line(PRICE_49, 2, day(0), day(30), sub="sub_1", si="si_1", shape=shape),
                    line(PRICE_49, 2, day(10), day(30), sub="sub_1", si="si_1", shape=shape,
                         proration=True, credit=True, amount=3000),
                ],
            )  # fmt: skip
            assert invoice_subscription(inv) == "sub_1"
            read = [
                (x.subscription, x.key, x.price_id, x.quantity, x.start, x.proration, x.credit)
                for x in billed_lines(inv)
            ]
            assert read == [
                ("sub_1", "si_1", "price_49", 2, day(0), False, False),
                ("sub_1", "si_1", "price_49", 2, day(10), True, True),
            ], shape

    def test_one_off_items_are_not_subscription_lines(self):
        legacy = {**line(PRICE_49, 1, day(0), day(0), sub="sub_1", si="si_1", shape="legacy"),
                  "type": "invoiceitem"}  # fmt: skip
        current = line(PRICE_49, 1, day(0), day(0), sub="sub_1", si="si_1")
        current["parent"] = {
            "type": "invoice_item_details",
            "invoice_item_details": {"invoice_item": "ii_1", "proration": False,
                                     "subscription": "sub_1"},
        }  # fmt: skip
        inv = invoice(
            "in_1", sub="sub_1", customer="cus_1", created=day(0), lines=[legacy, current]
        )
        assert billed_lines(inv) == []

    def test_invoice_item_proration_without_item_id_matches_by_price(self):
        upgrade = [
            line(PRICE_49, 1, day(15), day(30), sub="sub_1", si="si_1", proration=True,
                 credit=True, amount=2450),
            line(PRICE_99, 1, day(15), day(30), sub="sub_1", si="si_1", proration=True,
                 amount=4950),
        ]  # fmt: skip
        for x in upgrade:  # current versions name only the subscription here
            details = x["parent"]["subscription_item_details"]
            x["parent"] = {"type": "invoice_item_details", "invoice_item_details": details}
            del details["subscription_item"]
        invoices = [
            monthly("sub_1", 1, day(0)),
            invoice("in_p", sub="sub_1", customer="cus_1", created=day(30), lines=upgrade),
        ]
        sub = subscription_payload(items=[item(PRICE_99, 1, id="si_1")], created=day(0))
        events = reconstruct(sub, invoices, PRICES, first_real=None, window_start=WINDOW_START,
                             now=NOW)  # fmt: skip
        assert ledger(events) == [(0, 4900, "active"), (15, 9900, "active")]


class TestReconstruct:
    def test_change_after_last_invoice_lands_at_the_window_start(self):
        # Invoiced on price_49 on day 300; Stripe now says price_99; no event says when.
        sub = subscription_payload(items=[item(PRICE_99, 1, id="si_1")], created=day(300))
        events = reconstruct(sub, [monthly("sub_1", 1, day(300))], PRICES, first_real=None,
                             window_start=WINDOW_START, now=NOW)  # fmt: skip
        assert [(e.type, e.created) for e in events] == [
            ("customer.subscription.created", day(300)),
            ("customer.subscription.updated", WINDOW_START),
        ]
        assert ledger(events) == [(300, 4900, "active"), (370, 9900, "active")]

    def test_nothing_at_or_after_the_first_real_event(self):
        sub = subscription_payload(items=[item(PRICE_99, 1, id="si_1")], created=day(300))
        invoices = [monthly("sub_1", 1, day(300)), monthly("sub_1", 1, day(330), PRICE_99)]
        first = FirstReal(day(330), "customer.subscription.updated")
        events = reconstruct(sub, invoices, PRICES, first_real=first, window_start=WINDOW_START,
                             now=NOW)  # fmt: skip
        assert [e.created for e in events] == [day(300)]

    def test_nothing_when_stripe_still_has_the_creation_event(self):
        # Backdated: started on day 300, created (and announced) on day 385.
        sub = subscription_payload(items=[item(PRICE_49, 1, id="si_1")], created=day(385))
        sub["start_date"] = day(300)
        first = FirstReal(day(385), "customer.subscription.created")
        events = reconstruct(sub, [monthly("sub_1", 1, day(300))], PRICES, first_real=first,
                             window_start=WINDOW_START, now=NOW)  # fmt: skip
        assert events == []

    def test_trial_paused_for_want_of_a_payment_method_never_counts(self):
        sub = subscription_payload(
            status="paused",
            items=[item(PRICE_49, 1, id="si_1")],
            created=day(100),
            trial_start=day(100),
            trial_end=day(114),
        )
        trial = invoice("in_t", sub="sub_1", customer="cus_1", created=day(100),
                        lines=[line(PRICE_49, 1, day(100), day(114), sub="sub_1", si="si_1",
                                    amount=0)])  # fmt: skip
        events = reconstruct(sub, [trial], PRICES, first_real=None, window_start=WINDOW_START,
                             now=NOW)  # fmt: skip
        assert [e.obj["status"] for e in events] == ["trialing", "paused"]
        assert ledger(events) == []

    def test_legacy_object_gets_each_period_on_the_subscription(self):
        sub = subscription_payload(shape="legacy", items=[item(PRICE_49, 1, id="si_1")],
                                   created=day(0), current_period_start=day(360))  # fmt: skip
        invoices = [monthly("sub_1", q, day(n)) for q, n in ((1, 0), (2, 30))]
        events = reconstruct(sub, invoices, PRICES, first_real=None, window_start=WINDOW_START,
                             now=NOW)  # fmt: skip
        assert [e.obj["current_period_start"] for e in events[:2]] == [day(0), day(30)]
        assert ledger(events) == [(0, 4900, "active"), (30, 9800, "active"), (370, 4900, "active")]

    def test_deterministic(self):
        sub = subscription_payload(items=[item(PRICE_99, 1, id="si_1")], created=day(300))
        args = ([monthly("sub_1", 1, day(300))], PRICES)
        kwargs: dict[str, Any] = {"first_real": None, "window_start": WINDOW_START, "now": NOW}
        assert reconstruct(copy.deepcopy(sub), *args, **kwargs) == reconstruct(sub, *args, **kwargs)
