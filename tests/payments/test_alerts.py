"""Alert delivery against a real local HTTP receiver, with real commits (design §6).

Delivery runs on a virtual clock (`now_ms`) so that backoff is checked exactly; the sender
thread test runs on the real clock with tiny delays.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx
import pytest
import stripe
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_sessionmaker
from service.payments.alerts import AlertConfig, check_mrr_at_risk
from service.payments.models import AlertStatus, PaymentAlert
from service.payments.sender import AlertSender, deliver_due
from tests.conftest import Database, make_settings
from tests.ledger.scenario import day
from tests.payments.receiver import Delivery, Receiver
from tests.payments.scenario import PaymentScenario

SECRET = "alert_secret_for_tests"
F = day(30, 10)
PAID = F + 86400


@pytest.fixture
def factory(fresh_database: Database) -> sessionmaker[Session]:
    return make_sessionmaker(fresh_database.engine)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def project(
    factory: sessionmaker[Session],
    build: Callable[[PaymentScenario], object],
    *,
    later: bool = False,
) -> None:
    """Store and project (committed); `later`: more events for the same customer."""
    with factory() as session:
        s = PaymentScenario(session)
        if later:
            s._ids = itertools.count(1000)  # event ids must not collide with the first batch
        else:
            s.subscribe(day(0))
        build(s)
        s.store()
        s.project()
        session.commit()


def opened(s: PaymentScenario) -> None:
    s.fail(F, 1, F + 86400)


def recovered(s: PaymentScenario) -> None:
    opened(s)
    s.paid(PAID, 2)


def config(url: str, **kw: object) -> AlertConfig:
    return replace(AlertConfig(url=url, secret=SECRET), **kw)  # type: ignore[arg-type]


def verified(delivery: Delivery) -> dict:
    """The body, after checking the signature the way a receiver would: with Stripe's own
    verifier (the SDK), which alerts must satisfy as Stripe's webhooks do."""
    header = delivery.headers["churn-ledger-signature"]
    try:
        stripe.WebhookSignature.verify_header(delivery.body.decode(), header, SECRET, 60)
    except stripe.SignatureVerificationError as exc:
        pytest.fail(f"bad signature: {exc}")
    parts = dict(p.split("=", 1) for p in header.split(","))
    assert abs(int(parts["t"]) - time.time()) < 60
    body = json.loads(delivery.body)
    assert delivery.headers["churn-ledger-alert-id"] == body["id"]
    return body


def statuses(factory: sessionmaker[Session]) -> list[tuple[str, AlertStatus, int]]:
    with factory() as session:
        rows = session.scalars(select(PaymentAlert).order_by(PaymentAlert.id))
        return [(a.type, a.status, a.attempts) for a in rows]


class TestDelivery:
    def test_signed_alerts_for_opened_and_recovered(self, factory, http):
        project(factory, recovered)
        with Receiver() as receiver:
            report = deliver_due(factory, config(receiver.url), http, now_ms=(PAID + 60) * 1000)
            again = deliver_due(factory, config(receiver.url), http, now_ms=(PAID + 61) * 1000)
        assert (report.delivered, again.attempted) == (2, 0)
        bodies = [verified(d) for d in receiver.deliveries]
        assert [(b["type"], b["created"]) for b in bodies] == [
            ("payment_episode.opened", F),
            ("payment_episode.recovered", PAID),
        ]
        data = bodies[1]["data"]
        assert (data["invoice_id"], data["customer_id"], data["outcome"]) == (
            "in_1",
            "cus_1",
            "recovered",
        )
        assert data["amount_due"] == {"amount": 4900, "currency": "usd", "display": "49.00"}
        assert data["time_to_recover_s"] == 86400
        assert statuses(factory) == [
            ("payment_episode.opened", AlertStatus.delivered, 1),
            ("payment_episode.recovered", AlertStatus.delivered, 1),
        ]

    def test_receiver_failing_twice_then_succeeding(self, factory, http):
        project(factory, opened)
        t0 = (F + 60) * 1000
        cfg = config("", backoff_base_s=5)
        with Receiver([500, 503]) as receiver:
            cfg = replace(cfg, url=receiver.url)
            first = deliver_due(factory, cfg, http, now_ms=t0)
            early = deliver_due(factory, cfg, http, now_ms=t0 + 4_999)  # backoff: 5 s
            second = deliver_due(factory, cfg, http, now_ms=t0 + 5_000)
            early2 = deliver_due(factory, cfg, http, now_ms=t0 + 14_999)  # then 10 s
            third = deliver_due(factory, cfg, http, now_ms=t0 + 15_000)
        assert [r.retrying for r in (first, second)] == [1, 1]
        assert first.errors == ["HTTP 500"] and second.errors == ["HTTP 503"]
        assert (early.attempted, early2.attempted, third.delivered) == (0, 0, 1)
        assert [d.status for d in receiver.deliveries] == [500, 503, 200]
        bodies = [verified(d) for d in receiver.deliveries]
        assert bodies[0] == bodies[1] == bodies[2]  # the same alert, byte for byte
        assert statuses(factory) == [("payment_episode.opened", AlertStatus.delivered, 3)]

    def test_gives_up_after_max_attempts(self, factory, http):
        project(factory, opened)
        with Receiver([500] * 10) as receiver:
            cfg = config(receiver.url, max_attempts=2, backoff_base_s=1)
            deliver_due(factory, cfg, http, now_ms=F * 1000)
            last = deliver_due(factory, cfg, http, now_ms=F * 1000 + 1000)
            after = deliver_due(factory, cfg, http, now_ms=F * 1000 + 10**9)
        assert (last.failed, after.attempted, len(receiver.deliveries)) == (1, 0, 2)
        assert statuses(factory) == [("payment_episode.opened", AlertStatus.failed, 2)]

    def test_unreachable_receiver_is_retried(self, factory, http):
        project(factory, opened)
        with Receiver() as receiver:
            url = receiver.url  # then closed: nothing listens there any more
        report = deliver_due(factory, config(url), http, now_ms=F * 1000)
        assert report.retrying == 1
        assert report.errors[0].startswith("ConnectError")
        assert statuses(factory) == [("payment_episode.opened", AlertStatus.pending, 1)]

    def test_old_transitions_expire_unsent(self, factory, http):
        project(factory, recovered)
        with Receiver() as receiver:
            cfg = config(receiver.url, max_age_s=3600)
            # an hour after the payment: the opening (a day earlier) is history
            report = deliver_due(factory, cfg, http, now_ms=(PAID + 3599) * 1000)
        assert (report.expired, report.delivered) == (1, 1)
        assert [verified(d)["type"] for d in receiver.deliveries] == ["payment_episode.recovered"]


class TestOutbox:
    def test_rolled_back_projection_alerts_nothing(self, factory, http):
        with factory() as session:
            s = PaymentScenario(session)
            opened(s)
            s.store()
            s.project()
            assert len(s.alerts()) == 1  # written in the projection's transaction...
            session.rollback()  # ...and gone with it
        with Receiver() as receiver:
            report = deliver_due(factory, config(receiver.url), http, now_ms=F * 1000)
        assert (report.attempted, receiver.deliveries) == (0, [])

    def test_mrr_at_risk_crossing_alerts_once_each_way(self, factory, http):
        project(factory, opened)
        cfg = config("", mrr_at_risk_threshold=4000)
        with factory() as session:
            # 4900 at risk > 4000: one alert, however often it is checked
            assert check_mrr_at_risk(session, cfg, now=F + 60) == 1
            assert check_mrr_at_risk(session, cfg, now=F + 120) == 0
            session.commit()
        project(factory, lambda s: s.paid(PAID, 2), later=True)
        with factory() as session:
            assert check_mrr_at_risk(session, cfg, now=PAID + 60) == 1  # back to 0
            session.commit()
        with Receiver() as receiver:
            deliver_due(factory, replace(cfg, url=receiver.url), http, now_ms=(PAID + 60) * 1000)
        bodies = [verified(d) for d in receiver.deliveries]
        risk = [b for b in bodies if b["type"].startswith("mrr_at_risk.")]
        assert [(b["type"], b["data"]["mrr_at_risk"]["amount"]) for b in risk] == [
            ("mrr_at_risk.above_threshold", 4900),
            ("mrr_at_risk.below_threshold", 0),
        ]


class TestSender:
    def test_thread_retries_on_its_own(self, factory):
        project(factory, opened)
        with Receiver([500, 500]) as receiver:
            cfg = config(receiver.url, backoff_base_s=0.05, max_age_s=10**10)
            sender = AlertSender(factory, cfg, poll_s=0.02)
            sender.start()
            try:
                deadline = time.monotonic() + 10
                while len(receiver.deliveries) < 3 and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                sender.stop()
        assert [d.status for d in receiver.deliveries] == [500, 500, 200]
        assert statuses(factory) == [("payment_episode.opened", AlertStatus.delivered, 3)]

    def test_from_settings(self, fresh_database: Database):
        factory = make_sessionmaker(fresh_database.engine)
        settings = make_settings(fresh_database.url)
        assert AlertSender.from_settings(factory, settings) is None  # no URL: nothing to do
        settings = make_settings(
            fresh_database.url,
            alert_webhook_url="http://127.0.0.1:9/alerts",
            alert_webhook_secret="s3cret",
            mrr_at_risk_threshold=100000,
        )
        sender = AlertSender.from_settings(factory, settings)
        assert sender is not None
        assert AlertConfig.from_settings(settings) == AlertConfig(
            url="http://127.0.0.1:9/alerts",
            secret="s3cret",
            reporting_currency="usd",
            mrr_at_risk_threshold=100000,
            max_age_s=72 * 3600,
            settle_s=120,
        )

    def test_url_without_secret_is_refused(self, fresh_database: Database):
        with pytest.raises(ValidationError, match="ALERT_WEBHOOK_SECRET"):
            make_settings(fresh_database.url, alert_webhook_url="https://example.com/hook")


class TestOutboxWithoutSender:
    def test_janitor_expires_and_deletes_old_alerts(self, factory):
        from service.payments.sender import OutboxJanitor

        project(factory, recovered)  # transitions of 2025: long past ALERT_MAX_AGE_HOURS
        assert len(statuses(factory)) == 2
        assert OutboxJanitor(factory, 72 * 3600).run_once() == 2
        assert statuses(factory) == []

    def test_recent_alerts_stay_until_they_are_old(self, factory):
        from datetime import UTC, datetime, timedelta

        from service.payments.sender import OutboxJanitor

        project(factory, recovered)
        soon_after = datetime.fromtimestamp(PAID, UTC) + timedelta(hours=1)
        assert OutboxJanitor(factory, 72 * 3600).run_once(now=soon_after) == 0
        assert [s[1] for s in statuses(factory)] == [AlertStatus.pending] * 2

    def test_app_without_url_runs_the_janitor(self, fresh_database: Database):
        from fastapi.testclient import TestClient

        from service.app import create_app

        factory = make_sessionmaker(fresh_database.engine)
        project(factory, recovered)
        app = create_app(
            make_settings(fresh_database.url, projector_enabled=False), fresh_database.engine
        )
        with TestClient(app):
            deadline = time.monotonic() + 20
            while statuses(factory) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert statuses(factory) == []
