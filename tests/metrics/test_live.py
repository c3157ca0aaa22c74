"""Live metrics end to end (issue 14): signed webhooks to a real server show up in every
/v1/metrics answer within seconds, with no `jobs run`, whichever way the projector runs."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from service.app import create_app
from tests.conftest import API_KEY, Database, make_settings
from tests.factories import DAY, T0, item, price_payload, subscription_payload
from tests.live import live_server
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

AUTH = {"Authorization": f"Bearer {API_KEY}"}
RANGE = {"start": "2025-01-01", "end": "2025-04-01", "interval": "month"}
FEB = T0 + 40 * DAY


def sub_event(
    n: int, customer: str, amount: int, *, account: str | None = None, **changes: Any
) -> bytes:
    type_ = "customer.subscription.deleted" if changes else "customer.subscription.created"
    event = make_event(
        event_id=f"evt_live_{n}",
        type_=type_,
        account=account,
        obj=subscription_payload(
            id=f"sub_{customer}",
            customer=customer,
            created=T0,
            current_period_start=T0,
            current_period_end=T0 + 31 * DAY,
            items=[item(price_payload(unit_amount=amount))],
            **changes,
        ),
    )
    event["created"] = changes.get("ended_at", T0)
    return event_body(event)


def post(http: httpx.Client, body: bytes) -> None:
    answer = http.post("/webhooks/stripe", content=body, headers=signed_headers(body))
    assert answer.status_code == 200


def get(http: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    answer = http.get(f"/v1/metrics/{path}", params={**RANGE, **params}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


COHORT_KEYS = ("cohort_month", "months_since_start", "cohort_customers", "active_customers")


def seen(http: httpx.Client) -> dict[str, Any]:
    """What the five answers say about the three customers, in a comparable form."""
    mrr = get(http, "mrr")
    movements = get(http, "movements")
    churn = get(http, "churn")
    cohorts = get(http, "cohorts")
    reasons = get(http, "churn-reasons")
    return {
        "stale": [a["stale"] for a in (mrr, movements, churn, cohorts, reasons)],
        "mrr": [r["mrr"]["amount"] for r in mrr["data"]],
        "new": [r["new_mrr"]["amount"] for r in movements["data"]],
        "churned": [r["churned_mrr"]["amount"] for r in movements["data"]],
        "churned_customers": [r["churned_customers"] for r in churn["data"]],
        "cohort": [tuple(r[k] for k in COHORT_KEYS) for r in cohorts["data"]][:3],
        "reasons": [(r["period_start"], r["feedback"], r["churns"]) for r in reasons["data"]],
    }


EXPECTED = {
    "stale": [False] * 5,
    "mrr": [6000, 3000, 3000],
    "new": [6000, 0, 0],
    "churned": [0, -3000, 0],
    "churned_customers": [0, 1, 0],
    "cohort": [("2025-01-01", 0, 3, 3), ("2025-01-01", 1, 3, 2), ("2025-01-01", 2, 3, 2)],
    "reasons": [("2025-02-01", "too_expensive", 1)],
}


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_webhooks_show_in_every_metrics_answer_within_2s(fresh_database: Database, mode: str):
    settings = make_settings(fresh_database.url, projector_mode=mode)
    app = create_app(settings, fresh_database.engine)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        # The projector (its own process, in process mode) is up once a first event of
        # another account has come through.
        post(http, sub_event(0, "cus_warm", 500, account="acct_warm"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            warm = get(http, "mrr", account="acct_warm")
            if not warm["stale"] and warm["data"][0]["mrr"]["amount"] == 500:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the first event never reached the metrics")

        post(http, sub_event(1, "cus_1", 1000))
        post(http, sub_event(2, "cus_2", 2000))
        post(http, sub_event(3, "cus_3", 3000))
        feedback = {"reason": "cancellation_requested", "feedback": "too_expensive"}
        post(
            http,
            sub_event(
                4, "cus_3", 3000, status="canceled", canceled_at=FEB, ended_at=FEB,
                cancellation_details=feedback,
            ),
        )  # fmt: skip
        posted = time.monotonic()
        last: dict[str, Any] = {}
        while time.monotonic() - posted < 2:
            last = seen(http)
            if last == EXPECTED:
                break
            time.sleep(0.05)
        # No `jobs run` anywhere: what the service keeps fresh by itself.
        assert last == EXPECTED
