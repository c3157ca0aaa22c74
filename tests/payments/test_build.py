"""The pure episode builder: linking declines to invoices, flags, order independence."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from service.payments.episodes import MATCH_WINDOW_S, build_episodes, dunning_windows
from service.payments.models import Outcome
from service.stripe_shapes.events import RawEvent
from tests.factories import T0, subscription_payload
from tests.payments.factories import (
    charge_failed_payload,
    invoice_payload,
    invoice_payment,
    payment_intent_failed_payload,
)

NOW = T0 + 1000 * 86400
F = T0 + 30 * 86400
_ids = itertools.count(1)


def ev(type_: str, created: int, obj: dict[str, Any]) -> RawEvent:
    return RawEvent(f"evt_{next(_ids):05d}", type_, created, obj)


def failed(at: int, **kw: Any) -> RawEvent:
    return ev("invoice.payment_failed", at, invoice_payload(created=at, **kw))


class TestDeclineLinks:
    def test_legacy_payment_intent_names_its_invoice(self):
        [ep] = build_episodes(
            [
                failed(F, shape="legacy"),
                ev(
                    "payment_intent.payment_failed",
                    F + 1,
                    payment_intent_failed_payload(
                        shape="legacy", amount=1, decline_code="lost_card", message="Lost."
                    ),
                ),
            ],
            now=NOW,
        )
        # amount 1 ≠ 4900: linked by its `invoice`, not by amount
        assert (ep.decline_code, ep.failure_message) == ("lost_card", "Lost.")

    def test_expanded_invoice_payments_link_a_basil_charge_through_its_intent(self):
        payments = [invoice_payment(payment_intent="pi_9")]
        [ep] = build_episodes(
            [
                failed(F, payments=payments),
                # two days later and another amount: no heuristic would take it
                ev(
                    "charge.failed",
                    F + 2 * 86400,
                    charge_failed_payload(
                        payment_intent="pi_9", amount=7, decline_code="expired_card"
                    ),
                ),
            ],
            now=NOW,
        )
        assert ep.decline_code == "expired_card"

    @pytest.mark.parametrize(
        ("delay", "amount", "linked"),
        [
            (MATCH_WINDOW_S, 4900, True),
            (-MATCH_WINDOW_S, 4900, True),  # the charge event may arrive first
            (MATCH_WINDOW_S + 1, 4900, False),
            (5, 4800, False),
        ],
    )
    def test_basil_charge_matched_by_amount_and_time(self, delay: int, amount: int, linked: bool):
        charge = charge_failed_payload(amount=amount, payment_intent=None)
        [ep] = build_episodes([failed(F), ev("charge.failed", F + delay, charge)], now=NOW)
        assert ep.decline_code == ("insufficient_funds" if linked else None)

    def test_basil_charge_goes_to_the_closest_failed_invoice(self):
        [one, two] = build_episodes(
            [
                failed(F, id="in_a"),
                failed(F + 600, id="in_b"),
                ev("charge.failed", F + 500, charge_failed_payload(payment_intent=None)),
            ],
            now=NOW,
        )
        assert (one.invoice_id, one.decline_code) == ("in_a", None)
        assert (two.invoice_id, two.decline_code) == ("in_b", "insufficient_funds")


class TestFlags:
    def test_action_required_flags_but_does_not_start_an_episode(self):
        needs_auth = ev("invoice.payment_action_required", F, invoice_payload(id="in_x"))
        assert build_episodes([needs_auth], now=NOW) == []
        [ep] = build_episodes([needs_auth, failed(F, id="in_x")], now=NOW)
        assert ep.action_required

    def test_one_off_invoice_has_no_subscription_and_no_window(self):
        [ep] = build_episodes([failed(F, subscription=None, billing_reason="manual")], now=NOW)
        assert (ep.subscription_id, ep.billing_reason) == (None, "manual")
        assert dunning_windows([ep]) == {}

    def test_dunning_window_ends_with_the_invoice_not_the_cancellation(self):
        cancel = subscription_payload(status="canceled", ended_at=F + 100)
        events = [
            failed(F),
            ev("customer.subscription.deleted", F + 100, cancel),
            ev("invoice.voided", F + 200, invoice_payload(status="void", voided_at=F + 200)),
        ]
        [ep] = build_episodes(events, now=NOW)
        assert (ep.outcome, ep.closed_at) == (Outcome.lost, F + 100)
        assert dunning_windows([ep]) == {"sub_1": ((F, F + 200),)}

    def test_events_after_now_are_not_seen_yet(self):
        paid = invoice_payload(status="paid", paid_at=F + 10)
        [ep] = build_episodes([failed(F), ev("invoice.paid", F + 10, paid)], now=F + 5)
        assert ep.outcome == Outcome.open


class TestOrderIndependence:
    @pytest.mark.parametrize("seed", range(25))
    def test_any_order_any_duplicates(self, seed: int):
        sub_1 = subscription_payload(status="canceled", ended_at=F + 40 * 86400)
        events = [
            failed(F, attempt_count=1, next_payment_attempt=F + 86400),
            ev("charge.failed", F + 1, charge_failed_payload(payment_intent=None)),
            failed(F + 86400, attempt_count=2, next_payment_attempt=F + 3 * 86400),
            failed(F + 3 * 86400, attempt_count=3, next_payment_attempt=None),
            ev("customer.subscription.deleted", F + 40 * 86400, sub_1),
            failed(F, id="in_2", amount_due=1000, subscription="sub_2"),
            ev("invoice.paid", F + 9, invoice_payload(id="in_2", status="paid", paid_at=F + 9)),
            ev("invoice.payment_succeeded", F + 9, invoice_payload(id="in_2", status="paid")),
        ]
        expected = build_episodes(events, now=NOW)
        rng = random.Random(seed)
        delivered = events + rng.sample(events, 3)
        rng.shuffle(delivered)
        assert build_episodes(delivered, now=NOW) == expected
        assert [(e.invoice_id, e.outcome) for e in expected] == [
            ("in_1", Outcome.lost),
            ("in_2", Outcome.recovered),
        ]
