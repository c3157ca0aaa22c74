"""Closed months (POST /v1/periods/{month}/close), restatements when a late event changes
one (GET /v1/restatements, `period.restated` alerts) and `as_known_on`, end to end:
signed webhooks through the receiver, the projector, the refresh. Hand-computed.

Two customers from 1 January 2025: cus_a at 50.00 a month, cus_b at 30.00. January and
February are closed with MRR 80.00 and no churn. Then a cancellation of cus_b dated
10 February arrives: February becomes churned −30.00, one churned customer, MRR at its
end 50.00 and one customer; January does not change. The churn, cohort and churn-reason
answers `as_known_on` the close say what was published then; after the restatement, what
the tables say now.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.metrics.closing import MOVEMENT_FIGURES
from service.metrics.models import ClosedPeriod
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
            "customers_lost": (0, 1),
            # 2 customers × 28 days; then 2 × 10 (1–10 Feb) + 1 × 18 (11–28 Feb).
            "customer_days": (56, 38),
            "churn_reason:voluntary::churns": (0, 1),
            "churn_reason:voluntary::churned_mrr": (0, -3000),
            "cohort:2025-01:active_customers": (2, 1),
            "cohort:2025-01:cohort_mrr": (8000, 5000),
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

    def test_an_earlier_months_late_event_is_named_by_the_later_month_too(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        """cus_b cancelled as of 20 January: January churns it; February, with no ledger
        row of its own, changes at its start (MRR 80.00 → 50.00, 2 → 1 customers). Both
        restatements name the late event that caused them."""
        jan_20 = T0 + 19 * DAY
        post_subscription(
            client, "evt_late_jan", "cus_b", 3000, status="canceled", ended_at=jan_20,
            canceled_at=jan_20,
        )  # fmt: skip
        project_and_refresh(db_session)
        found = client.get("/v1/restatements", headers=READ).json()["data"]
        by_period = {r["period"]: r for r in found}
        assert sorted(by_period) == ["2025-01", "2025-02"]
        assert by_period["2025-01"]["event_ids"] == ["evt_late_jan"]
        assert by_period["2025-02"]["event_ids"] == ["evt_late_jan"]
        feb = {c["metric"]: (c["old"], c["new"]) for c in by_period["2025-02"]["changes"]}
        assert feb["mrr_start"] == (8000, 5000)
        assert feb["customers_start"] == (2, 1)
        assert "churned_mrr" not in feb

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


# --- as_known_on on churn, cohorts and churn reasons ------------------------------------

JAN_COHORT = {"start": "2025-01-01", "end": "2025-02-01"}
ANSWERS = ("/v1/metrics/churn", "/v1/metrics/cohorts", "/v1/metrics/churn-reasons")


def answer(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    found = client.get(path, params=params, headers=READ)
    assert found.status_code == 200, found.text
    return found.json()


def as_csv(client: TestClient, path: str, **params: Any) -> tuple[list[dict[str, str]], Any]:
    found = client.get(path, params={**params, "format": "csv"}, headers=READ)
    assert found.status_code == 200, found.text
    return list(csv.DictReader(io.StringIO(found.text))), found.headers


def closed_at(client: TestClient, month: str) -> str:
    listed = client.get("/v1/periods", headers=READ).json()["data"]
    return next(p["closed_at"] for p in listed if p["period"] == month)


def cells(body: dict[str, Any]) -> dict[int, tuple[Any, ...]]:
    """Months since start → (size, initial MRR, active, logo retention, MRR, MRR retention)
    of the January cohort."""
    return {
        c["months_since_start"]: (
            c["cohort_customers"], c["initial_mrr"]["amount"], c["active_customers"],
            c["logo_retention"], c["cohort_mrr"]["amount"], c["mrr_retention"],
        )
        for c in body["data"]
        if c["cohort_month"] == "2025-01-01"
    }  # fmt: skip


class TestKnownChurn:
    """February's churn as published at its close (nobody left: 2 customers all month),
    and after the restatement (cus_b, 30.00 of 80.00, left on 10 February)."""

    def test_before_and_after_the_restatement(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        cancel_b(client, db_session)
        known = answer(client, "/v1/metrics/churn", **FEB, as_known_on=closed["closed_at"])
        assert known["as_known_on"] is not None
        (row,) = known["data"]
        assert (row["customers_start"], row["customers_end"], row["customers_lost"]) == (2, 2, 0)
        assert (row["customer_churn_rate"], row["customer_retention_rate"]) == (0.0, 1.0)
        assert (row["gross_mrr_churn_rate"], row["net_mrr_churn_rate"]) == (0.0, 0.0)
        assert (row["nrr"], row["grr"], row["quick_ratio"]) == (1.0, 1.0, None)  # no losses
        assert (row["customer_days"], row["churn_hazard"], row["monthly_churn_rate"]) == (
            56, 0.0, 0.0,
        )  # fmt: skip
        assert (row["churn_level"], row["negative_churn"], row["ltv"]) == ("good", False, None)
        assert row["arpa"]["amount"] == 4000  # 80.00 ÷ 2

        now = answer(client, "/v1/metrics/churn", **FEB, as_known_on=date.today().isoformat())
        (row,) = now["data"]
        assert (row["customers_end"], row["customers_lost"], row["churned_customers"]) == (1, 1, 1)
        assert (row["customer_churn_rate"], row["customer_retention_rate"]) == (0.5, 0.5)
        # 30.00 lost of 80.00; nothing gained.
        assert (row["gross_mrr_churn_rate"], row["net_mrr_churn_rate"]) == (0.375, 0.375)
        assert (row["nrr"], row["grr"], row["quick_ratio"]) == (0.625, 0.625, 0.0)
        # One churn in 38 customer-days; monthly: 1 − (37/38)^30 = 0.55069234; LTV:
        # 50.00 ÷ 0.55069234 = 90.79.
        assert (row["customer_days"], row["churn_hazard"]) == (38, 0.02631579)
        assert row["monthly_churn_rate"] == 0.55069234
        assert (row["churn_level"], row["arpa"]["amount"], row["ltv"]["amount"]) == (
            "high", 5000, 9079,
        )  # fmt: skip

        # Published now is what the tables say: the same row, computed the same way.
        live = answer(client, "/v1/metrics/churn", **FEB)
        assert live["as_known_on"] is None
        assert live["data"] == now["data"]

    def test_csv(self, client: TestClient, db_session: Session, closed: dict[str, Any]):
        cancel_b(client, db_session)
        (row,), headers = as_csv(
            client, "/v1/metrics/churn", **FEB, as_known_on=closed["closed_at"]
        )
        assert (row["customers_lost"], row["customer_churn_rate"], row["mrr_end"]) == (
            "0", "0.0", "8000",
        )  # fmt: skip
        assert headers["x-as-known-on"].startswith(date.today().isoformat())
        (live,), headers = as_csv(client, "/v1/metrics/churn", **FEB)
        assert (live["customers_lost"], live["customer_churn_rate"], live["mrr_end"]) == (
            "1", "0.5", "5000",
        )  # fmt: skip
        assert "x-as-known-on" not in headers


class TestKnownCohorts:
    """The January cohort (cus_a and cus_b, 80.00): its January cell is January's close,
    its February cell February's; later months are not closed."""

    def test_before_and_after_the_restatement(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        cancel_b(client, db_session)
        full = (2, 8000, 2, 1.0, 8000, 1.0)
        known = answer(client, "/v1/metrics/cohorts", **JAN_COHORT, as_known_on=closed["closed_at"])
        assert known["as_known_on"] is not None
        # Through February, the last month closed: March on was never published.
        assert cells(known) == {0: full, 1: full}
        # As known at January's close, before February's: January's cell only.
        at_jan = closed_at(client, "2025-01")
        assert cells(answer(client, "/v1/metrics/cohorts", **JAN_COHORT, as_known_on=at_jan)) == {
            0: full
        }

        today = date.today().isoformat()
        now = answer(client, "/v1/metrics/cohorts", **JAN_COHORT, as_known_on=today)
        # One of two customers left; 50.00 of 80.00 stays.
        assert cells(now) == {0: full, 1: (2, 8000, 1, 0.5, 5000, 0.625)}
        # A February cohort selected too: it has nobody, so no rows.
        both = {"start": "2025-01-01", "end": "2025-03-01"}
        assert (
            answer(client, "/v1/metrics/cohorts", **both, as_known_on=today)["data"] == now["data"]
        )

        live = cells(answer(client, "/v1/metrics/cohorts", **JAN_COHORT))
        assert live[1] == (2, 8000, 1, 0.5, 5000, 0.625)
        assert live[2] == (2, 8000, 1, 0.5, 5000, 0.625)  # March: live only

    def test_csv(self, client: TestClient, db_session: Session, closed: dict[str, Any]):
        cancel_b(client, db_session)
        rows, headers = as_csv(
            client, "/v1/metrics/cohorts", **JAN_COHORT, as_known_on=closed["closed_at"]
        )
        found = [(r["months_since_start"], r["active_customers"], r["cohort_mrr"]) for r in rows]
        assert found == [("0", "2", "8000"), ("1", "2", "8000")]
        assert "x-as-known-on" in headers
        rows, _ = as_csv(client, "/v1/metrics/cohorts", **JAN_COHORT)
        assert (rows[1]["active_customers"], rows[1]["cohort_mrr"]) == ("1", "5000")
        assert len(rows) > 2


class TestKnownChurnReasons:
    def test_before_and_after_the_restatement(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        cancel_b(client, db_session)
        path = "/v1/metrics/churn-reasons"
        known = answer(client, path, **FEB, as_known_on=closed["closed_at"])
        assert known["as_known_on"] is not None and known["data"] == []  # nobody had left
        now = answer(client, path, **FEB, as_known_on=date.today().isoformat())
        assert [
            (r["period_start"], r["reason"], r["feedback"], r["churns"], r["churned_mrr"]["amount"])
            for r in now["data"]
        ] == [("2025-02-01", "voluntary", None, 1, -3000)]
        assert answer(client, path, **FEB)["data"] == now["data"]

    def test_csv(self, client: TestClient, db_session: Session, closed: dict[str, Any]):
        cancel_b(client, db_session)
        path = "/v1/metrics/churn-reasons"
        rows, headers = as_csv(client, path, **FEB, as_known_on=closed["closed_at"])
        assert rows == [] and "x-as-known-on" in headers
        (row,), _ = as_csv(client, path, **FEB)
        assert (row["reason"], row["feedback"], row["churns"], row["churned_mrr"]) == (
            "voluntary", "", "1", "-3000",
        )  # fmt: skip


class TestKnownRefusals:
    def test_what_mrr_refuses_is_refused_alike(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        today = date.today().isoformat()
        yesterday = (date.today() - timedelta(days=1)).isoformat()
        march = {"start": "2025-03-01", "end": "2025-04-01"}
        cases = [
            (path, params)
            for path in ANSWERS
            for params in (
                {**FEB, "as_known_on": yesterday},  # not closed yet then
                {**march, "as_known_on": today},  # never closed
                {**FEB, "plan": "price_1", "as_known_on": today},
                {**FEB, "segment_by": "plan", "as_known_on": today},
                {**FEB, "as_known_on": "not-a-day"},
                {**FEB, "as_known_on": "2025-02-01T00:00:00"},  # no zone
            )
        ] + [
            (path, {**FEB, "interval": "week", "as_known_on": today})
            for path in ("/v1/metrics/churn", "/v1/metrics/churn-reasons")
        ]
        for path, params in cases:
            found = client.get(path, params=params, headers=READ)
            assert found.status_code == 422, (path, params, found.text)
            error = found.json()["error"]
            assert error["param"] == "as_known_on", (path, params)
            mrr = client.get("/v1/metrics/mrr", params=params, headers=READ)
            assert mrr.json()["error"]["message"] == error["message"], (path, params)

    def test_months_closed_before_churn_figures_were_kept(
        self, client: TestClient, db_session: Session, closed: dict[str, Any]
    ):
        # February as an earlier version closed it: the movement figures only.
        feb = db_session.get(ClosedPeriod, ("", "usd", date(2025, 2, 1)))
        assert feb is not None
        old = {k: feb.figures_at_close[k] for k in MOVEMENT_FIGURES}
        feb.figures_at_close, feb.figures = old, dict(old)
        db_session.commit()
        cancel_b(client, db_session)

        # Restated in what it kept, and nothing it did not keep.
        (r,) = client.get("/v1/restatements", headers=READ).json()["data"]
        assert {c["metric"] for c in r["changes"]} == {
            "churned_mrr", "churned_customers", "mrr_end", "customers_end",
        }  # fmt: skip
        today = date.today().isoformat()
        movements = february(client, as_known_on=closed["closed_at"])["data"][0]
        assert movements["mrr_end"]["amount"] == 8000
        for path in ("/v1/metrics/churn", "/v1/metrics/churn-reasons"):
            found = client.get(path, params={**FEB, "as_known_on": today}, headers=READ)
            assert found.status_code == 422, found.text
            assert "closed before" in found.json()["error"]["message"]
        # The January cohort: January's cell (kept), none of February's.
        jan = answer(client, "/v1/metrics/cohorts", **JAN_COHORT, as_known_on=today)
        assert cells(jan) == {0: (2, 8000, 2, 1.0, 8000, 1.0)}


class TestReasonRestated:
    """February closed with cus_b's cancellation at 01:00 on 10 February as
    `too_expensive`; a late event says it ended at 00:00 that day, `switched_service`
    (the first end is the churn). The churn moves from one key to another, on the same
    day: the key it left is restated to 0 and is no row any more; nothing else moves."""

    def test_a_churn_moving_to_another_feedback(self, client: TestClient, db_session: Session):
        post_subscription(client, "evt_a_created", "cus_a", 5000)
        post_subscription(client, "evt_b_created", "cus_b", 3000)
        feedback = {"reason": "cancellation_requested", "feedback": "too_expensive"}
        post_subscription(
            client, "evt_b_canceled", "cus_b", 3000, status="canceled",
            ended_at=FEB_10 + 3600, canceled_at=FEB_10, cancellation_details=feedback,
        )  # fmt: skip
        project_and_refresh(db_session)
        closed = close(client, "2025-02").json()
        post_subscription(
            client, "evt_b_canceled_earlier", "cus_b", 3000, status="canceled",
            ended_at=FEB_10, canceled_at=FEB_10,
            cancellation_details={**feedback, "feedback": "switched_service"},
        )  # fmt: skip
        project_and_refresh(db_session)

        (r,) = client.get("/v1/restatements", headers=READ).json()["data"]
        assert {c["metric"]: (c["old"], c["new"]) for c in r["changes"]} == {
            "churn_reason:voluntary:too_expensive:churns": (1, 0),
            "churn_reason:voluntary:too_expensive:churned_mrr": (-3000, 0),
            "churn_reason:voluntary:switched_service:churns": (0, 1),
            "churn_reason:voluntary:switched_service:churned_mrr": (0, -3000),
        }
        path = "/v1/metrics/churn-reasons"

        def reasons(**params: Any) -> list[tuple[str, int, int]]:
            rows = answer(client, path, **FEB, **params)["data"]
            return [(r["feedback"], r["churns"], r["churned_mrr"]["amount"]) for r in rows]

        assert reasons(as_known_on=closed["closed_at"]) == [("too_expensive", 1, -3000)]
        today = date.today().isoformat()
        assert reasons(as_known_on=today) == reasons() == [("switched_service", 1, -3000)]
