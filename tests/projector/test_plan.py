"""A drain pass computed before its transaction (plan_pending), then written by
project_pending(plan=): the same ledger as a pass that reads and computes under its
lock, whatever arrives in between, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.ledger.models import MrrMovement
from service.projector.compute import CustomerRows
from service.projector.service import plan_pending, project_pending, rebuild
from service.stripe_shapes.events import RawEvent
from service.webhooks.repository import StripeEventRepository
from tests.factories import DAY, T0, item, price_payload, subscription_payload
from tests.projector.test_incremental import OPTIONS, deliveries, projection
from tests.projector.test_rebuild import clear, store

NOW = T0 + 400 * DAY


def subscription(customer: str, n: int, quantity: int) -> RawEvent:
    obj = subscription_payload(
        id=f"sub_{customer}",
        customer=customer,
        items=[item(price_payload(id="price_m49", unit_amount=4900), quantity)],
        created=T0,
        current_period_start=T0 + n * DAY,
    )
    type_ = "created" if n == 0 else "updated"
    return RawEvent(f"evt_{customer}_{n}", f"customer.subscription.{type_}", T0 + n * DAY, obj)


def movements(session: Session, customer: str) -> int:
    query = select(func.count()).where(MrrMovement.customer_id == customer)
    return session.scalar(query.select_from(MrrMovement)) or 0


class TestPlanEqualsPass:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(delivered=deliveries(), between=st.lists(st.booleans(), min_size=40, max_size=40))
    def test_any_order_duplicates_and_arrivals_in_between(
        self, db_session: Session, delivered: list[tuple[RawEvent, int]], between: list[bool]
    ):
        # After each delivery a pass is planned; the next delivery may be stored before
        # the plan is written (the receiver committing while the projector computes).
        clear(db_session)
        pending = list(delivered)
        step = 0
        while pending:
            event, now = pending.pop(0)
            store(db_session, event)
            plan = plan_pending(db_session, OPTIONS, now=now, incremental_from=None)
            if pending and between[step % len(between)]:
                store(db_session, pending[0][0])  # stored again later: a duplicate
            step += 1
            project_pending(db_session, OPTIONS, plan=plan)
        while project_pending(db_session, OPTIONS, now=delivered[-1][1]):
            pass
        drained = projection(db_session)
        rebuild(db_session, OPTIONS, now=delivered[-1][1], batch=2)
        assert projection(db_session) == drained


class TestPlanIsWritten:
    def test_its_rows_are_written_as_computed(self, db_session: Session):
        store(db_session, subscription("cus_A", 0, 1))
        store(db_session, subscription("cus_A", 1, 3))
        plan = plan_pending(db_session, OPTIONS, now=NOW)
        assert plan.customers == [("", "cus_A")]
        # Rows the pass would not compute itself: written, so nothing was recomputed.
        plan.rows[("", "cus_A")] = CustomerRows()
        assert project_pending(db_session, OPTIONS, plan=plan) == 1
        assert movements(db_session, "cus_A") == 0
        assert StripeEventRepository(db_session).count_unhandled() == 0

    def test_a_customer_whose_queue_changed_is_recomputed(self, db_session: Session):
        store(db_session, subscription("cus_A", 0, 1))
        store(db_session, subscription("cus_B", 0, 2))
        plan = plan_pending(db_session, OPTIONS, now=NOW)
        plan.rows = {key: CustomerRows() for key in plan.rows}
        store(db_session, subscription("cus_A", 1, 3))  # after the plan's read
        assert project_pending(db_session, OPTIONS, plan=plan) == 2
        assert movements(db_session, "cus_A") == 2  # new, then expansion: recomputed
        assert movements(db_session, "cus_B") == 0  # unchanged: the plan's rows
        assert StripeEventRepository(db_session).count_unhandled() == 0

    def test_nothing_pending_plans_nothing(self, db_session: Session):
        plan = plan_pending(db_session, OPTIONS, now=NOW)
        assert plan.customers == [] and plan.rows == {}
        assert project_pending(db_session, OPTIONS, plan=plan) == 0

    @pytest.mark.parametrize("incremental_from", [0, 2])
    def test_long_histories_are_left_to_the_pass(self, db_session: Session, incremental_from):
        for n in range(3):
            store(db_session, subscription("cus_A", n, 1 + n))
        project_pending(db_session, OPTIONS, now=NOW)
        store(db_session, subscription("cus_A", 3, 9))
        plan = plan_pending(db_session, OPTIONS, now=NOW, incremental_from=incremental_from)
        # Gone on with incrementally under the lock: nothing computed ahead.
        assert plan.customers == [("", "cus_A")] and plan.rows == {}
        project_pending(db_session, OPTIONS, plan=plan, incremental_from=incremental_from)
        assert movements(db_session, "cus_A") == 4
