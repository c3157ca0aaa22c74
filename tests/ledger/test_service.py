"""Hand-calculated ledger scenarios (issue 4), through the event store, on both databases.

Every expected amount is written out in cents (or yen) with its arithmetic.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from service.ledger.fx import FxQuote
from service.ledger.models import SubscriptionState
from service.ledger.repository import LedgerRepository
from service.settings import LedgerOptions
from tests.factories import coupon_payload, discount_payload, item, price_payload
from tests.ledger.scenario import Scenario, d, day

MONTHLY_49 = price_payload(id="price_49", unit_amount=4900)
MONTHLY_99 = price_payload(id="price_99", unit_amount=9900)


@pytest.fixture
def s(db_session: Session) -> Scenario:
    return Scenario(db_session)


class TestNormalization:
    def test_monthly_49_times_3_seats(self, s: Scenario):
        s.sub("created", day(0), items=[item(MONTHLY_49, 3)])
        # 4900 × 3 = 14700
        assert s.run() == [(d(0), "new", 0, 14700, "usd")]

    def test_annual_1200(self, s: Scenario):
        annual = price_payload(id="price_y", unit_amount=120000, interval="year")
        s.sub("created", day(0), items=[item(annual)])
        # 120000 / 12 = 10000
        assert s.run() == [(d(0), "new", 0, 10000, "usd")]

    def test_weekly(self, s: Scenario):
        weekly = price_payload(id="price_w", unit_amount=1000, interval="week")
        s.sub("created", day(0), items=[item(weekly)])
        # 1000 × 52 / 12 = 4333.33 → 4333
        assert s.run() == [(d(0), "new", 0, 4333, "usd")]

    def test_every_3_months(self, s: Scenario):
        quarterly = price_payload(id="price_q", unit_amount=30000, interval_count=3)
        s.sub("created", day(0), items=[item(quarterly)])
        # 30000 / 3 = 10000
        assert s.run() == [(d(0), "new", 0, 10000, "usd")]

    def test_daily(self, s: Scenario):
        daily = price_payload(id="price_d", unit_amount=100, interval="day")
        s.sub("created", day(0), items=[item(daily)])
        # 100 × 365 / 12 = 3041.67 → 3042
        assert s.run() == [(d(0), "new", 0, 3042, "usd")]

    def test_tiered_volume(self, s: Scenario):
        tiers = [
            {"up_to": 5, "unit_amount": 1000},
            {"up_to": "inf", "unit_amount": 800, "flat_amount": 500},
        ]
        volume = price_payload(
            id="price_vol", billing_scheme="tiered", tiers_mode="volume", tiers=tiers
        )
        s.sub("created", day(0), items=[item(volume, 8)])
        # volume: all 8 seats at the second tier: 8 × 800 + 500 flat = 6900
        assert s.run() == [(d(0), "new", 0, 6900, "usd")]

    def test_tiered_graduated(self, s: Scenario):
        tiers = [
            {"up_to": 5, "unit_amount": 1000},
            {"up_to": "inf", "unit_amount": 800, "flat_amount": 500},
        ]
        graduated = price_payload(
            id="price_grad", billing_scheme="tiered", tiers_mode="graduated", tiers=tiers
        )
        s.sub("created", day(0), items=[item(graduated, 8)])
        # graduated: 5 × 1000 + 3 × 800 + 500 flat = 7900
        assert s.run() == [(d(0), "new", 0, 7900, "usd")]

    def test_metered_item_adds_nothing(self, s: Scenario):
        metered = price_payload(id="price_m", unit_amount=5, usage_type="metered")
        s.sub("created", day(0), items=[item(MONTHLY_49), item(metered, None)])
        assert s.run() == [(d(0), "new", 0, 4900, "usd")]


class TestDiscounts:
    def test_twenty_percent_forever(self, s: Scenario):
        coupon = coupon_payload(id="c20", percent_off=20)
        disc = discount_payload(id="di_20", coupon=coupon, start=day(0))
        s.event("customer.discount.created", disc, day(0))
        s.sub("created", day(0), items=[item(MONTHLY_49)], discounts=[disc])
        # 4900 × 0.8 = 3920
        assert s.run() == [(d(0), "new", 0, 3920, "usd")]

    def test_ten_dollars_off_monthly(self, s: Scenario):
        coupon = coupon_payload(id="c10", amount_off=1000, currency="usd")
        disc = discount_payload(id="di_10", coupon=coupon, start=day(0))
        s.event("customer.discount.created", disc, day(0))
        s.sub("created", day(0), items=[item(MONTHLY_49)], discounts=[disc])
        # 4900 − 1000 = 3900
        assert s.run() == [(d(0), "new", 0, 3900, "usd")]

    def test_coupon_that_ends(self, s: Scenario):
        coupon = coupon_payload(
            id="c3m", percent_off=50, duration="repeating", duration_in_months=3
        )
        disc = discount_payload(id="di_3m", coupon=coupon, start=day(0), end=day(90))
        s.event("customer.discount.created", disc, day(0))
        s.sub("created", day(0), items=[item(MONTHLY_49)], discounts=[disc])
        # 4900 × 0.5 = 2450 until the discount ends on day 90, then 4900
        assert s.run() == [
            (d(0), "new", 0, 2450, "usd"),
            (d(90), "expansion", 2450, 4900, "usd"),
        ]

    def test_discount_arriving_after_subscription_is_joined(self, s: Scenario):
        coupon = coupon_payload(id="c20", percent_off=20)
        disc = discount_payload(id="di_late", coupon=coupon, start=day(0))
        s.sub("created", day(0), items=[item(MONTHLY_49)], discounts=[disc])
        s.store()
        s.project()
        # Not seen yet: counted at full price and reported.
        assert s.rows() == [(d(0), "new", 0, 4900, "usd")]
        warnings = LedgerRepository(s.session).warnings("", "cus_1")
        assert [(w.kind, w.subject) for w in warnings] == [("discount_not_seen", "di_late")]
        late = s.event("customer.discount.created", disc, day(0, hour=13))
        s.store([s.events[-1]])
        s.project()
        assert s.rows() == [(d(0), "new", 0, 3920, "usd")]
        assert LedgerRepository(s.session).warnings("", "cus_1") == []
        assert late  # the join happened because of this event


class TestLifecycle:
    def test_trial_then_active(self, s: Scenario):
        s.sub("created", day(0), status="trialing", trial_start=day(0), trial_end=day(14))
        s.sub("updated", day(14), status="active")
        assert s.run() == [(d(14), "new", 0, 4900, "usd")]

    def test_upgrade(self, s: Scenario):
        s.sub("created", day(0), items=[item(MONTHLY_49)])
        s.sub("updated", day(10), items=[item(MONTHLY_99)])
        assert s.run() == [
            (d(0), "new", 0, 4900, "usd"),
            (d(10), "expansion", 4900, 9900, "usd"),
        ]

    def test_downgrade(self, s: Scenario):
        s.sub("created", day(0), items=[item(MONTHLY_99)])
        s.sub("updated", day(10), items=[item(MONTHLY_49)])
        assert s.run() == [
            (d(0), "new", 0, 9900, "usd"),
            (d(10), "contraction", 9900, 4900, "usd"),
        ]

    def test_quantity_change(self, s: Scenario):
        s.sub("created", day(0), items=[item(MONTHLY_49, 2)])
        s.sub("updated", day(5), items=[item(MONTHLY_49, 5)])
        s.sub("updated", day(9), items=[item(MONTHLY_49, 4)])
        # 2 → 5 → 4 seats at 4900
        assert s.run() == [
            (d(0), "new", 0, 9800, "usd"),
            (d(5), "expansion", 9800, 24500, "usd"),
            (d(9), "contraction", 24500, 19600, "usd"),
        ]

    def test_upgrade_and_back_on_one_day_nets_out(self, s: Scenario):
        s.sub("created", day(0), items=[item(MONTHLY_49)])
        s.sub("updated", day(3, hour=9), items=[item(MONTHLY_99)])
        s.sub("updated", day(3, hour=17), items=[item(MONTHLY_49)])
        assert s.run() == [(d(0), "new", 0, 4900, "usd")]

    def test_renewal_is_not_a_movement(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("updated", day(30), current_period_start=day(30), current_period_end=day(60))
        assert s.run() == [(d(0), "new", 0, 4900, "usd")]

    def test_cancel_at_period_end_churns_when_it_ends(self, s: Scenario):
        s.sub("created", day(0))
        s.sub(
            "updated",
            day(10),
            cancel_at_period_end=True,
            cancel_at=day(30),
            canceled_at=day(10),
            cancellation_details={
                "reason": "cancellation_requested",
                "feedback": "too_expensive",
                "comment": "Budget cuts",
            },
        )
        s.sub(
            "deleted",
            day(30),
            status="canceled",
            canceled_at=day(10),
            ended_at=day(30),
            cancellation_details={
                "reason": "cancellation_requested",
                "feedback": "too_expensive",
                "comment": "Budget cuts",
            },
        )
        assert s.run() == [(d(0), "new", 0, 4900, "usd"), (d(30), "churn", 4900, 0, "usd")]
        churn = s.movement(d(30))
        assert churn.churn_reason == "voluntary"
        assert (churn.churn_feedback, churn.churn_comment) == ("too_expensive", "Budget cuts")
        assert churn.event_ids == ["evt_000003"]

    def test_immediate_cancel(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("deleted", day(12), status="canceled", canceled_at=day(12), ended_at=day(12))
        assert s.run() == [(d(0), "new", 0, 4900, "usd"), (d(12), "churn", 4900, 0, "usd")]
        assert s.movement(d(12)).churn_reason == "voluntary"

    def test_past_due_then_recovered_has_no_movement(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("updated", day(30), status="past_due")
        s.sub("updated", day(33), status="active")
        assert s.run() == [(d(0), "new", 0, 4900, "usd")]

    def test_past_due_then_canceled_is_involuntary(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("updated", day(30), status="past_due")
        s.sub(
            "deleted",
            day(44),
            status="canceled",
            canceled_at=day(44),
            ended_at=day(44),
            cancellation_details={"reason": "payment_failed", "feedback": None, "comment": None},
        )
        assert s.run() == [(d(0), "new", 0, 4900, "usd"), (d(44), "churn", 4900, 0, "usd")]
        assert s.movement(d(44)).churn_reason == "involuntary"

    def test_past_due_grace_period_ends_mrr(self, db_session: Session):
        s = Scenario(db_session, LedgerOptions(past_due_grace_days=7))
        s.sub("created", day(0))
        s.sub("updated", day(30), status="past_due")
        # Counts 7 days past due (until day 37 at the same hour), then churns: involuntary.
        assert s.run() == [(d(0), "new", 0, 4900, "usd"), (d(37), "churn", 4900, 0, "usd")]
        assert s.movement(d(37)).churn_reason == "involuntary"

    def test_unpaid_is_involuntary_churn(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("updated", day(30), status="past_due")
        s.sub("updated", day(45), status="unpaid")
        assert s.run()[-1] == (d(45), "churn", 4900, 0, "usd")
        assert s.movement(d(45)).churn_reason == "involuntary"

    def test_reactivation_after_churn(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("deleted", day(20), status="canceled", canceled_at=day(20), ended_at=day(20))
        s.sub("created", day(50), id="sub_2", items=[item(MONTHLY_99)])
        assert s.run() == [
            (d(0), "new", 0, 4900, "usd"),
            (d(20), "churn", 4900, 0, "usd"),
            (d(50), "reactivation", 0, 9900, "usd"),
        ]

    def test_swap_subscriptions_on_one_day_is_expansion(self, s: Scenario):
        s.sub("created", day(0))
        s.sub(
            "deleted",
            day(20, hour=10),
            status="canceled",
            canceled_at=day(20, hour=10),
            ended_at=day(20, hour=10),
        )
        s.sub("created", day(20, hour=10), id="sub_2", items=[item(MONTHLY_99)])
        assert s.run() == [
            (d(0), "new", 0, 4900, "usd"),
            (d(20), "expansion", 4900, 9900, "usd"),
        ]
        assert sorted(s.movement(d(20)).subscription_ids) == ["sub_1", "sub_2"]

    def test_pause_collection_counts_zero(self, s: Scenario):
        s.sub("created", day(0))
        s.sub("updated", day(10), pause_collection={"behavior": "void", "resumes_at": None})
        s.sub("updated", day(40))
        assert s.run() == [
            (d(0), "new", 0, 4900, "usd"),
            (d(10), "churn", 4900, 0, "usd"),
            (d(40), "reactivation", 0, 4900, "usd"),
        ]


class TestCurrencies:
    def test_jpy(self, db_session: Session):
        s = Scenario(db_session)
        LedgerRepository(db_session).upsert_fx_rates(
            "usd", [FxQuote("jpy", d(-30), Decimal("0.0067"))]
        )
        yen = price_payload(id="price_jpy", currency="jpy", unit_amount=1000)
        s.sub("created", day(0), items=[item(yen)])
        # ¥1000 is 1000 minor units (zero-decimal); 1000 × 0.0067 USD = 6.70 USD = 670 cents
        assert s.run() == [(d(0), "new", 0, 1000, "jpy")]
        row = s.movement(d(0))
        assert (row.reporting_currency, row.fx_rate, row.delta_reporting) == ("usd", "0.0067", 670)

    def test_eur_with_rate_table(self, db_session: Session):
        s = Scenario(db_session)
        LedgerRepository(db_session).upsert_fx_rates(
            "usd",
            [FxQuote("eur", d(-10), Decimal("1.05")), FxQuote("eur", d(5), Decimal("1.10"))],
        )
        eur = price_payload(id="price_eur", currency="eur", unit_amount=4900)
        s.sub("created", day(0), items=[item(eur)])
        s.sub("updated", day(10), items=[item(eur, 2)])
        assert s.run() == [
            (d(0), "new", 0, 4900, "eur"),
            (d(10), "expansion", 4900, 9800, "eur"),
        ]
        # day 0 uses the 1.05 rate: 4900 × 1.05 = 5145 cents
        assert s.movement(d(0)).delta_reporting == 5145
        # day 10 uses 1.10: from 4900 × 1.1 = 5390 to 9800 × 1.1 = 10780, delta 5390
        expansion = s.movement(d(10))
        assert (expansion.from_mrr_reporting, expansion.to_mrr_reporting) == (5390, 10780)
        assert expansion.delta_reporting == 5390

    def test_missing_rate_leaves_reporting_amounts_empty(self, s: Scenario):
        gbp = price_payload(id="price_gbp", currency="gbp", unit_amount=4900)
        s.sub("created", day(0), items=[item(gbp)])
        assert s.run() == [(d(0), "new", 0, 4900, "gbp")]
        row = s.movement(d(0))
        assert (row.fx_rate, row.delta_reporting) == (None, None)


class TestOrderAndLineage:
    def test_reverse_order_and_duplicates_give_same_ledger(self, db_session: Session):
        def build(s: Scenario) -> None:
            s.sub("created", day(0))
            s.sub("updated", day(10), items=[item(MONTHLY_99)])
            s.sub("deleted", day(20), status="canceled", canceled_at=day(20), ended_at=day(20))

        forward = Scenario(db_session)
        build(forward)
        expected = forward.run()
        db_session.rollback()  # back to the test's clean savepoint state

        backward = Scenario(db_session)
        build(backward)
        backward.store(list(reversed(backward.events)) + backward.events[:2])
        backward.project()
        assert backward.rows() == expected
        assert len(expected) == 3

    def test_same_second_tie_terminal_state_wins(self, s: Scenario):
        # An update and the deletion share one `created` second: whatever the ids and the
        # arrival order, the terminal state is ordered last.
        s.sub("created", day(0, hour=8))
        s.sub("deleted", day(0, hour=13), status="canceled", ended_at=day(0, hour=13))
        s.sub("updated", day(0, hour=13), items=[item(MONTHLY_99)])
        s.store(list(reversed(s.events)))
        s.project()
        # Up at 08:00, down at 13:00 on the same day: nets out, no movement.
        assert s.rows() == []
        state = s.session.get(SubscriptionState, ("", "sub_1"))
        assert state is not None
        assert (state.status, state.mrr) == ("canceled", 0)

    def test_event_ids_trace_every_row(self, s: Scenario):
        created = s.sub("created", day(0))
        upgraded = s.sub("updated", day(10), items=[item(MONTHLY_99)])
        s.run()
        assert s.movement(d(0)).event_ids == [created]
        assert s.movement(d(10)).event_ids == [upgraded]
