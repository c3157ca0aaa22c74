"""Closed months (POST /v1/periods/{month}/close), restatements when a late event changes
one (GET /v1/restatements, `period.restated` alerts) and `as_known_on`, end to end:
signed webhooks through the receiver, the projector, the refresh. Hand-computed.

Two customers from 1 January 2025: cus_a at 50.00 a month, cus_b at 30.00. January and
February are closed with MRR 80.00 and no churn. Then a cancellation of cus_b dated
10 February arrives: February becomes churned −30.00, one churned customer, MRR at its
end 50.00 and one customer; January does not change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.metrics.refresh import refresh_account
from service.payments.alerts import alert_body
from service.payments.models import PaymentAlert
from service.projector.service import project_pending
from service.settings import LedgerOptions
from tests.conftest import API_KEY, WRITE_KEY
from tests.factories import DAY, T0, item, price_payload, subscription_payload
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

READ = {"Authorization": f"Bearer {API_KEY}"}
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}
FEB_10 = T0 + 40 * DAY
TODAY = date(2025, 4, 30)
FEB = {"start": "2025-02-01", "end": "2025-03-01", "interval": "month"}


def post_subscription(
    client: TestClient, event_id: str, customer: str, amount: int, **changes: Any
) -> None:
    type_ = "customer.subscription.deleted" if changes else "customer.subscription.created"
    event = make_event(
        event_id=event_id, type_=type_,
        obj=subscription_payload(
            id=f"sub_{customer}", customer=customer, created=T0, current_period_start=T0,
            current_period_end=T0 + 31 * DAY, items=[item(price_payload(unit_amount=amount))],
            **changes,
        ),
    )  # fmt: skip
    event["created"] = changes.get("ended_at", T0)
    body = event_body(event)
    answer = client.post("/webhooks/stripe", content=body, headers=signed_headers(body))
    assert answer.status_code == 200, answer.text


def project_and_refresh(session: Session) -> None:
    while project_pending(
        session, LedgerOptions(), now=int(datetime(2025, 4, 30, tzinfo=UTC).timestamp())
    ):
        pass
    refresh_account(session, "", today=TODAY)
    session.commit()


def cancel_b(client: TestClient, db_session: Session) -> None:
    post_subscription(
        client, "evt_late_cancel", "cus_b", 3000, status="canceled", ended_at=FEB_10,
        canceled_at=FEB_10,
        cancellation_details={"reason": "cancellation_requested", "feedback": None},
    )  # fmt: skip
    project_and_refresh(db_session)


def february(client: TestClient, **params: Any) -> dict[str, Any]:
    answer = client.get("/v1/metrics/movements", params={**FEB, **params}, headers=READ)
    assert answer.status_code == 200, answer.text
    return answer.json()


def close(client: TestClient, month: str) -> Any:
    return client.post(f"/v1/periods/{month}/close", headers=WRITE)


@pytest.fixture
def closed(client: TestClient, db_session: Session) -> dict[str, Any]:
    post_subscription(client, "evt_a_created", "cus_a", 5000)
    post_subscription(client, "evt_b_created", "cus_b", 3000)
    project_and_refresh(db_session)
    assert close(client, "2025-01").status_code == 201
    answer = close(client, "2025-02")
    assert answer.status_code == 201, answer.text
    return answer.json()


class TestClose:
    def test_keeps_the_months_figures(self, client: TestClient, closed: dict[str, Any]):
        assert (closed["period"], closed["period_start"], closed["period_end"]) == (
            "2025-02", "2025-02-01", "2025-03-01",
        )  # fmt: skip
        f = closed["figures_at_close"]
        assert (f["mrr_start"], f["mrr_end"], f["churned_mrr"], f["customers_end"]) == (
            8000, 8000, 0, 2,
        )  # fmt: skip
        assert closed["figures"] == f and closed["restatements"] == 0
        listed = client.get("/v1/periods", headers=READ).json()["data"]
        assert [p["period"] for p in listed] == ["2025-01", "2025-02"]
        assert listed[0]["figures"]["new_mrr"] == 8000

    def test_twice_is_a_conflict(self, client: TestClient, closed: dict[str, Any]):
        answer = close(client, "2025-02")
        assert answer.status_code == 409
        assert answer.json()["error"]["type"] == "period_closed"

    def test_bad_and_unfinished_months(self, client: TestClient):
        this_month = date.today().strftime("%Y-%m")
        next_month = (date.today().replace(day=1) + timedelta(days=32)).strftime("%Y-%m")
        for month in (
            "2025-13",
            "2025-1",
            "march",
            "2025-02-01",
            this_month,
            next_month,
            "0000-01",
        ):
            answer = close(client, month)
            assert answer.status_code == 422, (month, answer.text)
            assert "error" in answer.json()

    def test_needs_a_write_key(self, client: TestClient):
        assert client.post("/v1/periods/2025-01/close", headers=READ).status_code == 403
        assert client.post("/v1/periods/2025-01/close").status_code == 401


class TestRestatement:
    def test_a_backdated_cancellation_restates_february_once(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        before = february(client)["data"][0]
        cancel_b(client, db_session)
        after = february(client)["data"][0]
        assert (after["churned_mrr"]["amount"], after["mrr_end"]["amount"]) == (-3000, 5000)

        found = client.get("/v1/restatements", headers=READ).json()["data"]
        assert len(found) == 1
        (r,) = found
        assert (r["period"], r["currency"], r["event_ids"]) == (
            "2025-02",
            "usd",
            ["evt_late_cancel"],
        )
        assert {c["metric"]: (c["old"], c["new"]) for c in r["changes"]} == {
            "churned_mrr": (0, -3000),
            "churned_customers": (0, 1),
            "mrr_end": (8000, 5000),
            "customers_end": (2, 1),
        }
        assert before["churned_mrr"]["amount"] == 0
        periods = {p["period"]: p for p in client.get("/v1/periods", headers=READ).json()["data"]}
        assert periods["2025-02"]["figures"]["mrr_end"] == 5000
        assert periods["2025-02"]["figures_at_close"]["mrr_end"] == 8000
        assert (periods["2025-02"]["restatements"], periods["2025-01"]["restatements"]) == (1, 0)

        # Nothing changes on the next refresh: still one.
        project_and_refresh(db_session)
        refresh_account(db_session, "", today=TODAY, force=True)
        assert len(client.get("/v1/restatements", headers=READ).json()["data"]) == 1
        only = client.get("/v1/restatements", params={"period": "2025-01"}, headers=READ)
        assert only.json()["data"] == []

        # The alert, in the outbox the alert sender delivers from.
        (alert,) = db_session.scalars(
            select(PaymentAlert).where(PaymentAlert.type == "period.restated")
        ).all()
        assert alert.dedup_key == f"restated:{r['id']}"
        assert alert.payload["period"] == "2025-02"
        assert alert.payload["event_ids"] == ["evt_late_cancel"]
        assert {"metric": "mrr_end", "old": 8000, "new": 5000} in alert.payload["changes"]
        assert b'"type":"period.restated"' in alert_body(alert)

    def test_as_known_on_answers_the_figures_before_it(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        cancel_b(client, db_session)
        at_close = february(client, as_known_on=closed["closed_at"])
        assert at_close["as_known_on"] is not None
        row = at_close["data"][0]
        assert (row["churned_mrr"]["amount"], row["mrr_end"]["amount"]) == (0, 8000)
        assert row["churned_customers"] == 0
        mrr = client.get("/v1/metrics/mrr", params={**FEB, "as_known_on": closed["closed_at"]},
                         headers=READ).json()["data"][0]  # fmt: skip
        assert (mrr["mrr"]["amount"], mrr["customers"], mrr["arr"]["amount"]) == (8000, 2, 96000)
        # Today (the whole day) includes the restatement.
        today = february(client, as_known_on=date.today().isoformat())["data"][0]
        assert (today["churned_mrr"]["amount"], today["mrr_end"]["amount"]) == (-3000, 5000)

    def test_as_known_on_only_for_closed_months(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        for params in (
            {**FEB, "as_known_on": yesterday},  # not closed yet then
            {"start": "2025-03-01", "end": "2025-04-01", "as_known_on": date.today().isoformat()},
            {**FEB, "interval": "week", "as_known_on": date.today().isoformat()},
            {**FEB, "plan": "price_1", "as_known_on": date.today().isoformat()},
            {**FEB, "as_known_on": "not-a-day"},
        ):
            answer = client.get("/v1/metrics/movements", params=params, headers=READ)
            assert answer.status_code == 422, (params, answer.text)
            assert answer.json()["error"]["param"] == "as_known_on"
