"""Incremental projection (service/projector/incremental.py) == rebuild, on SQLite and
PostgreSQL: events in any order, some more than once, projected as they arrive while the
clock moves on."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.ledger.models import (
    DataQualityWarning,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.payments.models import PaymentEpisode
from service.projector import service as projector_service
from service.projector.service import project_pending, rebuild
from service.settings import LedgerOptions
from service.stripe_shapes.events import RawEvent
from tests.factories import DAY, T0, item, price_payload, subscription_payload
from tests.ledger.histories import arrivals, customer_history
from tests.payments.factories import invoice_payload
from tests.projector.test_rebuild import clear, store

OPTIONS = LedgerOptions(past_due_grace_days=7)


def _rows(session: Session, model: Any, skip: tuple[str, ...] = ("id",)) -> list[tuple]:
    columns = [c for c in model.__table__.columns if c.name not in skip]
    return sorted(
        (tuple(repr(v) for v in row) for row in session.execute(select(*columns))),
    )


def projection(session: Session) -> dict[str, Any]:
    """Every row projection writes (ids aside: rows are kept or replaced), warnings as a
    multiset (their order is that of arrival)."""
    warnings = Counter(
        session.execute(
            select(
                DataQualityWarning.customer_id,
                DataQualityWarning.kind,
                DataQualityWarning.subject,
                DataQualityWarning.message,
            )
        ).all()
    )
    return {
        "movements": _rows(session, MrrMovement),
        "changes": _rows(session, SubscriptionMrrChange),
        "states": _rows(session, SubscriptionState),
        "customers": _rows(session, LedgerCustomer, ("projected_at", "incremental")),
        "episodes": _rows(session, PaymentEpisode),
        "warnings": warnings,
    }


@st.composite
def with_payments(draw: st.DrawFn, events: list[RawEvent], customer: str) -> list[RawEvent]:
    """Some invoices (paid, or failed), and an event no projector reads."""
    extra: list[RawEvent] = []
    subs = sorted({e.obj["id"] for e in events if e.type.startswith("customer.subscription")})
    for n in range(draw(st.integers(0, 2))):
        at = T0 + draw(st.integers(0, 90)) * DAY
        sub = draw(st.sampled_from(subs))
        kind = draw(st.sampled_from(["paid", "paid", "payment_failed"]))
        status = "paid" if kind == "paid" else "open"
        obj = invoice_payload(
            id=f"in_{customer}_{n}",
            customer=customer,
            subscription=sub,
            status=status,
            amount_paid=4900 if kind == "paid" else 0,
            created=at,
        )
        extra.append(RawEvent(f"evt_in_{customer}_{n}", f"invoice.{kind}", at, obj))
    if draw(st.booleans()):
        at = T0 + draw(st.integers(0, 90)) * DAY
        obj = {"id": customer, "object": "customer", "email": None, "metadata": {}}
        extra.append(RawEvent(f"evt_cu_{customer}", "customer.updated", at, obj))
    return events + extra


@st.composite
def deliveries(draw: st.DrawFn) -> list[tuple[RawEvent, int]]:
    """Events as delivered, each with the clock at which the drain runs after it: never
    before an event already delivered, sometimes days later."""
    events: list[RawEvent] = []
    for n in range(draw(st.integers(1, 3))):
        customer = f"cus_i{n}"
        events += draw(with_payments(draw(customer_history(customer)), customer))
    delivered = draw(arrivals(events))
    out, clock = [], 0
    for event in delivered:
        clock = max(clock, event.created) + draw(st.sampled_from([0, 0, 3600, 5 * DAY, 40 * DAY]))
        out.append((event, clock))
    return out


class TestIncrementalEqualsRebuild:
    # 0: every customer with a stored projection goes on from it (the histories drawn
    # here are short, so at the default nearly all would be recomputed whole).
    @pytest.mark.parametrize("incremental_from", [0, None], ids=["always", "default"])
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(delivered=deliveries())
    def test_any_order_and_duplicates(
        self,
        db_session: Session,
        delivered: list[tuple[RawEvent, int]],
        incremental_from: int | None,
    ):
        clear(db_session)
        for event, now in delivered:
            store(db_session, event)
            project_pending(db_session, OPTIONS, now=now, incremental_from=incremental_from)
        incremental = projection(db_session)
        rebuild(db_session, OPTIONS, now=delivered[-1][1], batch=2)
        assert projection(db_session) == incremental


def long_history(customer: str, n: int, *, start: int = T0) -> list[RawEvent]:
    price = price_payload(id="price_m49", unit_amount=4900)
    events = []
    for k in range(n):
        status = "past_due" if k % 7 == 3 else "active"
        obj = subscription_payload(
            id=f"sub_{customer}",
            customer=customer,
            status=status,
            items=[item(price, 1 + k % 5)],
            created=start,
            current_period_start=start + k * 3600,
        )
        type_ = "created" if k == 0 else "updated"
        events.append(
            RawEvent(
                f"evt_{customer}_{k:05d}", f"customer.subscription.{type_}", start + k * 3600, obj
            )
        )
    return events


class TestGoesOnFromTheStoredProjection:
    def test_a_new_event_is_not_a_recomputation(self, db_session: Session, monkeypatch):
        clear(db_session)
        history = long_history("cus_long", 60)
        now = history[-1].created + DAY
        for event in history[:-2]:
            store(db_session, event)
        project_pending(db_session, OPTIONS, now=now)

        def whole(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("recomputed from the whole history")

        monkeypatch.setattr(projector_service, "project_rows", whole)
        for event in history[-2:]:
            store(db_session, event)
            assert project_pending(db_session, OPTIONS, now=now) == 1
        monkeypatch.undo()
        incremental = projection(db_session)
        rebuild(db_session, OPTIONS, now=now)
        assert projection(db_session) == incremental

    def test_short_histories_are_recomputed_whole_long_ones_go_on(
        self, db_session: Session, monkeypatch
    ):
        """At the default, a customer with fewer than INCREMENTAL_FROM stored ledger
        events is recomputed whole (bulk, few statements), one with more goes on from
        its projection; both equal rebuild."""
        clear(db_session)
        n = projector_service.INCREMENTAL_FROM
        short, long = long_history("cus_short", 5), long_history("cus_long", n + 5)
        now = long[-1].created + DAY
        for event in short[:-1] + long[:-1]:
            store(db_session, event)
        project_pending(db_session, OPTIONS, now=now)
        whole: list[str] = []
        project_rows = projector_service.project_rows

        def recording(account: str, customer_id: str, *args: Any, **kwargs: Any) -> Any:
            whole.append(customer_id)
            return project_rows(account, customer_id, *args, **kwargs)

        monkeypatch.setattr(projector_service, "project_rows", recording)
        store(db_session, short[-1])
        store(db_session, long[-1])
        assert project_pending(db_session, OPTIONS, now=now) == 2
        assert whole == ["cus_short"]
        monkeypatch.undo()
        incremental = projection(db_session)
        rebuild(db_session, OPTIONS, now=now)
        assert projection(db_session) == incremental

    @pytest.mark.parametrize("late", ["out_of_order", "failed_payment"])
    def test_what_it_cannot_go_on_with_is_recomputed(self, db_session: Session, late: str):
        clear(db_session)
        history = long_history("cus_late", projector_service.INCREMENTAL_FROM + 10)
        now = history[-1].created + DAY
        for event in history if late == "failed_payment" else history[:10] + history[11:]:
            store(db_session, event)
        project_pending(db_session, OPTIONS, now=now)
        if late == "out_of_order":
            store(db_session, history[10])
        else:
            obj = invoice_payload(id="in_x", customer="cus_late", subscription="sub_cus_late")
            store(db_session, RawEvent("evt_failed", "invoice.payment_failed", now - 60, obj))
        project_pending(db_session, OPTIONS, now=now)
        incremental = projection(db_session)
        rebuild(db_session, OPTIONS, now=now)
        assert projection(db_session) == incremental
