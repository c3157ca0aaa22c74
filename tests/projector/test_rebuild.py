"""rebuild == incremental, on SQLite and PostgreSQL (design §1)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import Base
from service.ledger.models import MrrMovement, SubscriptionState
from service.projector.service import project_pending, rebuild
from service.settings import LedgerOptions
from service.stripe_shapes.events import RawEvent
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from tests.ledger.histories import arrivals, customer_history
from tests.ledger.scenario import NOW

OPTIONS = LedgerOptions()


def clear(session: Session) -> None:
    for table in reversed(Base.metadata.sorted_tables):
        session.execute(table.delete())


def store(session: Session, event: RawEvent) -> None:
    body = json.dumps(
        {
            "id": event.event_id,
            "object": "event",
            "type": event.type,
            "created": event.created,
            "data": {"object": event.obj},
        }
    ).encode()
    store_event(session, body, parse_event(body))


def ledger(session: Session) -> list[tuple]:
    movements = session.scalars(
        select(MrrMovement).order_by(MrrMovement.customer_id, MrrMovement.currency, MrrMovement.day)
    )
    states = session.scalars(select(SubscriptionState).order_by(SubscriptionState.subscription_id))
    return [
        (
            m.customer_id,
            m.day,
            m.currency,
            m.movement,
            m.from_mrr,
            m.to_mrr,
            m.delta_reporting,
            m.event_ids,
            m.churn_reason,
            m.churn_feedback,
        )
        for m in movements
    ] + [(s.subscription_id, s.status, s.mrr, s.last_event_id) for s in states]


@st.composite
def account_history(draw: st.DrawFn) -> list[RawEvent]:
    events: list[RawEvent] = []
    for n in range(draw(st.integers(1, 4))):
        events += draw(customer_history(f"cus_{n}"))
    return draw(arrivals(events))


class TestRebuild:
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(delivered=account_history())
    def test_rebuild_equals_incremental(self, db_session: Session, delivered: list[RawEvent]):
        clear(db_session)
        for event in delivered:
            store(db_session, event)
            # Project after every delivery, as the worker does after each webhook.
            project_pending(db_session, OPTIONS, now=NOW)
        incremental = ledger(db_session)
        rebuild(db_session, OPTIONS, now=NOW, batch=2)
        assert ledger(db_session) == incremental
