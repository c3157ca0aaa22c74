"""Alerts do not depend on delivery order (issue 16): whatever order Stripe's events of an
invoice arrive in, the alerts sent are those in-order delivery sends. Each alert is
checked against the episode as it stands when it is sent (service/payments/repository.py
retract_unsettled), after the settle time (ALERT_SETTLE_S) that holds it."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.payments.alerts import AlertConfig
from service.payments.models import AlertStatus, PaymentAlert
from service.payments.repository import AlertRepository
from service.payments.sender import claim_settled
from service.projector.service import project_pending
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from tests.ledger.scenario import NOW, day
from tests.payments.scenario import PaymentScenario
from tests.signing import event_body

# PostgreSQL advisory locks are database-wide: a test of another schema holding "cus_1"
# would make the drain skip this customer.
CUS = f"cus_ao{uuid.uuid4().hex[:8]}"
CONFIG = AlertConfig(url="http://127.0.0.1:9/alerts", secret="s3cret", max_age_s=10**10)


def history(session: Session) -> list[dict]:
    """Two invoices of one customer: in_1 fails, is marked uncollectible, then is paid
    after all (recovered: payment wins); in_2 fails, then is voided (lost)."""
    s = PaymentScenario(session)
    s.subscribe(day(0), customer=CUS)
    s.fail(day(31), 1, day(34), id="in_1", customer=CUS)
    s.invoice("marked_uncollectible", day(35), id="in_1", customer=CUS, status="uncollectible")
    s.paid(day(36), 2, id="in_1", customer=CUS)
    s.fail(day(61), 1, day(64), id="in_2", customer=CUS)
    s.invoice("voided", day(62), id="in_2", customer=CUS, status="void")
    return s.events


def sent(session: Session, events: list[dict], order: list[int]) -> set[tuple[str, str]]:
    """(type, dedup key) of what the sender would send after these events arrived in this
    order, each projected as it arrived (rolled back afterwards)."""
    outer = session.begin_nested()
    try:
        for i in order:
            body = event_body(events[i])
            store_event(session, body, parse_event(body))
            while project_pending(session, PaymentScenario(session).options, now=NOW):
                pass
        claimed = claim_settled(session, CONFIG, NOW * 1000, 1000)
        return {(a.type, a.dedup_key) for a in claimed}
    finally:
        outer.rollback()


EVENTS = 6


class TestAlertsIgnoreDeliveryOrder:
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(order=st.permutations(range(EVENTS)))
    def test_any_order_sends_what_in_order_sends(self, db_session: Session, order: list[int]):
        events = history(db_session)
        assert len(events) == EVENTS
        expected = sent(db_session, events, list(range(EVENTS)))
        assert expected == {
            ("payment_episode.opened", "opened:in_1"),
            ("payment_episode.recovered", "recovered:in_1"),
            ("payment_episode.opened", "opened:in_2"),
            ("payment_episode.lost", "lost:in_2"),
        }
        assert sent(db_session, events, list(order)) == expected

    def test_a_false_alert_is_retracted_unsent(self, db_session: Session):
        # Paid arrives last: the projection saw in_1 lost (uncollectible) and wrote that
        # alert; by the time it may be sent, the episode says recovered.
        events = history(db_session)
        outer = db_session.begin_nested()
        try:
            for i in [0, 1, 2, 4, 5]:
                body = event_body(events[i])
                store_event(db_session, body, parse_event(body))
            while project_pending(db_session, PaymentScenario(db_session).options, now=NOW):
                pass
            written = {a.dedup_key for a in db_session.scalars(select(PaymentAlert))}
            body = event_body(events[3])
            store_event(db_session, body, parse_event(body))
            while project_pending(db_session, PaymentScenario(db_session).options, now=NOW):
                pass
            claimed = {a.dedup_key for a in claim_settled(db_session, CONFIG, NOW * 1000, 1000)}
            retracted = db_session.scalars(
                select(PaymentAlert).where(PaymentAlert.status == AlertStatus.expired)
            ).all()
        finally:
            outer.rollback()
        assert "lost:in_1" in written  # the false alert was written...
        assert "lost:in_1" not in claimed  # ...and is never sent
        assert [(a.dedup_key, a.last_error) for a in retracted] == [
            ("lost:in_1", "retracted: the episode is recovered")
        ]


class TestSettle:
    def test_alerts_younger_than_the_settle_time_wait(self, db_session: Session):
        from dataclasses import replace

        events = history(db_session)
        outer = db_session.begin_nested()
        try:
            for e in events:
                body = event_body(e)
                store_event(db_session, body, parse_event(body))
            while project_pending(db_session, PaymentScenario(db_session).options, now=NOW):
                pass
            held = claim_settled(db_session, replace(CONFIG, settle_s=3600), NOW * 1000, 1000)
            assert held == []
            assert AlertRepository(db_session).next_due_ms() is not None
        finally:
            outer.rollback()
