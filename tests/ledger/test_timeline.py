"""Properties of the pure projection (design §1, §4): order and duplicates never matter,
and the ledger reconciles with the subscriptions' MRR."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from service.ledger.models import Movement
from service.ledger.timeline import movement_type, project
from service.stripe_shapes.events import RawEvent
from tests.factories import DAY, T0
from tests.ledger.histories import arrivals, customer_history

NOW = T0 + 1000 * DAY


def summary(events: list[RawEvent]) -> tuple:
    p = project(events, now=NOW)
    return (
        p.rows,
        sorted((k, v.mrr, v.snapshot.event_id) for k, v in p.subscriptions.items()),
        sorted(p.points, key=lambda x: (x.subscription_id, x.at)),
    )


class TestOrderIndependence:
    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def test_any_order_any_duplicates_same_ledger(self, data: st.DataObject):
        events = data.draw(customer_history())
        delivered = data.draw(arrivals(events))
        assert summary(delivered) == summary(events)


class TestReconciliation:
    @settings(max_examples=300, deadline=None)
    @given(events=customer_history())
    def test_sum_of_deltas_is_current_mrr(self, events: list[RawEvent]):
        p = project(events, now=NOW)
        ledger: dict[str, int] = defaultdict(int)
        for row in p.rows:
            ledger[row.currency] += row.delta
        subs: dict[str, int] = defaultdict(int)
        for sub in p.subscriptions.values():
            subs[sub.snapshot.sub.currency] += sub.mrr
        assert {k: v for k, v in ledger.items() if v} == {k: v for k, v in subs.items() if v}

    @settings(max_examples=300, deadline=None)
    @given(events=customer_history())
    def test_rows_chain_and_are_typed_by_the_table(self, events: list[RawEvent]):
        rows = project(events, now=NOW).rows
        last: dict[str, int] = defaultdict(int)
        had = False
        days = [r.day for r in rows]
        assert days == sorted(days)
        for day in sorted(set(days)):
            # "Had MRR before" means before this day: two currencies starting on the
            # same day are both new.
            for row in (r for r in rows if r.day == day):
                assert row.from_mrr == last[row.currency]
                assert row.from_mrr != row.to_mrr
                assert row.movement == movement_type(row.from_mrr, row.to_mrr, had)
                assert (row.churn is not None) == (row.movement == Movement.churn)
                assert row.event_ids, "every row names the events behind it"
                last[row.currency] = row.to_mrr
            had = had or any(v > 0 for v in last.values())


class TestMovementType:
    def test_table(self):
        assert movement_type(0, 100, False) == Movement.new
        assert movement_type(0, 100, True) == Movement.reactivation
        assert movement_type(100, 150, True) == Movement.expansion
        assert movement_type(150, 100, True) == Movement.contraction
        assert movement_type(100, 0, True) == Movement.churn


class TestScheduledChanges:
    def test_future_discount_end_is_scheduled_not_booked(self):
        from tests.factories import coupon_payload, discount_payload, subscription_payload

        disc = discount_payload(
            id="di_f", coupon=coupon_payload(percent_off=50), start=T0, end=T0 + 90 * DAY
        )
        events = [
            RawEvent("evt_d", "customer.discount.created", T0, disc),
            RawEvent(
                "evt_s",
                "customer.subscription.created",
                T0,
                subscription_payload(created=T0, discounts=[disc]),
            ),
        ]
        early = project(events, now=T0 + 30 * DAY)
        assert [(r.to_mrr, r.movement) for r in early.rows] == [(2450, Movement.new)]
        assert early.next_change_at == T0 + 90 * DAY
        late = project(events, now=T0 + 91 * DAY)
        assert [r.to_mrr for r in late.rows] == [2450, 4900]
        assert late.next_change_at is None
