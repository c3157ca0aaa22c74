"""The `period.restated` alert end to end, with real commits: signed webhooks through the
receiver, two months closed over the API, a backdated cancellation restating February,
then the app's own alert sender (`AlertSender.from_settings`, as the app starts it)
posting the outbox to ALERT_WEBHOOK_URL, which respx answers at the HTTP layer.

test_closing's account: cus_a at 50.00 and cus_b at 30.00 from 1 January 2025, January
and February closed with MRR 80.00; cus_b's cancellation dated 10 February
(evt_late_cancel) makes February's MRR at its end 50.00, one customer, churned −30.00
and one churned customer (one customer lost, voluntary, 38 customer-days rather than 56;
the January cohort's February cell one customer and 50.00).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.db import make_sessionmaker
from service.metrics.refresh import refresh_account
from service.payments.models import AlertStatus, PaymentAlert
from service.payments.sender import AlertSender
from service.settings import Settings
from tests.conftest import Database, make_settings
from tests.metrics.test_closing import (
    READ,
    TODAY,
    cancel_b,
    close,
    post_subscription,
    project_and_refresh,
)

ALERT_URL = "https://alerts.example.test/hooks/churn-ledger"
SECRET = "restated_alert_secret_for_tests"


@pytest.fixture
def alerting(fresh_database: Database) -> Settings:
    # No settling: a restatement is final when found (the hold is for invoice events).
    return make_settings(
        fresh_database.url, alert_webhook_url=ALERT_URL, alert_webhook_secret=SECRET,
        alert_settle_s=0,
    )  # fmt: skip


@pytest.fixture
def factory(fresh_database: Database) -> sessionmaker[Session]:
    return make_sessionmaker(fresh_database.engine)


@pytest.fixture
def http(alerting: Settings, fresh_database: Database) -> Iterator[TestClient]:
    # Not entered: no lifespan, so no projector, refresher or sender thread of the app's
    # own runs beside the test's explicit steps.
    client = TestClient(create_app(alerting, fresh_database.engine))
    yield client
    client.close()


def refresh(factory: sessionmaker[Session], *, force: bool = False) -> None:
    with factory() as session:
        project_and_refresh(session)
        if force:
            refresh_account(session, "", today=TODAY, force=True)
            session.commit()


def verified(request: httpx.Request) -> dict[str, Any]:
    """The body, once its signature checks out with Stripe's own verifier (the scheme the
    alerts share with Stripe's webhooks)."""
    header = request.headers["churn-ledger-signature"]
    try:
        stripe.WebhookSignature.verify_header(request.content.decode(), header, SECRET, 300)
    except stripe.SignatureVerificationError as exc:
        pytest.fail(f"bad signature: {exc}")
    body = json.loads(request.content)
    assert request.headers["churn-ledger-alert-id"] == body["id"]
    return body


class TestRestatedAlert:
    def test_sent_once_signed_with_the_period_old_new_and_late_events(
        self, http: TestClient, factory: sessionmaker[Session], alerting: Settings
    ):
        post_subscription(http, "evt_a_created", "cus_a", 5000)
        post_subscription(http, "evt_b_created", "cus_b", 3000)
        refresh(factory)
        assert close(http, "2025-01").status_code == 201
        assert close(http, "2025-02").status_code == 201
        with factory() as session:
            cancel_b(http, session)
        refresh(factory, force=True)  # a second refresh finds nothing new to restate
        (restated,) = http.get("/v1/restatements", headers=READ).json()["data"]

        with respx.mock(assert_all_called=True) as router:
            receiver = router.post(ALERT_URL).mock(return_value=httpx.Response(200))
            sender = AlertSender.from_settings(factory, alerting)
            assert sender is not None  # ALERT_WEBHOOK_URL is set
            try:
                first = sender.run_once()
                refresh(factory)
                refresh(factory, force=True)
                again = sender.run_once()
            finally:
                sender.stop()

        assert (first.delivered, first.attempted, again.attempted) == (1, 1, 0)
        assert receiver.call_count == 1
        request = receiver.calls.last.request
        assert request.headers["content-type"] == "application/json"
        body = verified(request)
        assert (body["object"], body["type"], body["account"]) == ("alert", "period.restated", None)
        assert body["data"] == {
            "restatement_id": restated["id"],
            "period": "2025-02",
            "currency": "usd",
            # Every figure that moved, old → new, by name.
            "changes": [
                {"metric": "churn_reason:voluntary::churned_mrr", "old": 0, "new": -3000},
                {"metric": "churn_reason:voluntary::churns", "old": 0, "new": 1},
                {"metric": "churned_customers", "old": 0, "new": 1},
                {"metric": "churned_mrr", "old": 0, "new": -3000},
                {"metric": "cohort:2025-01:active_customers", "old": 2, "new": 1},
                {"metric": "cohort:2025-01:cohort_mrr", "old": 8000, "new": 5000},
                # 2 customers × 28 days; then 2 × 10 (1–10 Feb) + 1 × 18 (11–28 Feb).
                {"metric": "customer_days", "old": 56, "new": 38},
                {"metric": "customers_end", "old": 2, "new": 1},
                {"metric": "customers_lost", "old": 0, "new": 1},
                {"metric": "mrr_end", "old": 8000, "new": 5000},
            ],
            "event_ids": ["evt_late_cancel"],
        }
        with factory() as session:
            rows = session.scalars(select(PaymentAlert)).all()
        assert [(a.type, a.status, a.attempts) for a in rows] == [
            ("period.restated", AlertStatus.delivered, 1)
        ]
        assert body["created"] == rows[0].occurred_at
