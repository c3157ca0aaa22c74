"""Auth, empty and zero-denominator answers, parameter errors, freshness, /v1/movements."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.ledger.repository import LedgerRepository
from service.webhooks.models import StripeEvent
from tests.conftest import API_KEY
from tests.metrics.scenario import TODAY, Step, add_series, add_subscription, d, seed_scenario

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ENDPOINTS = ["mrr", "movements", "churn", "cohorts", "churn-reasons"]


@pytest.mark.parametrize("path", [*(f"/v1/metrics/{e}" for e in ENDPOINTS), "/v1/movements"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": API_KEY}])
def test_reads_need_the_api_key(client: TestClient, path: str, headers: dict):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_empty_database_gives_zeros_and_nulls(client: TestClient, path: str):
    response = client.get(f"/v1/metrics/{path}", params={"start": "2025-01-01"}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["as_of"], body["refreshed_at"], body["stale"]) == (None, None, False)
    assert body["currency"] == "usd"
    for row in body["data"]:
        for key, value in row.items():
            if isinstance(value, dict):
                assert value["amount"] == 0, key
            elif key not in ("period_start", "period_end", "cohort_month", "month"):
                assert value in (None, 0, False), key


def test_empty_database_churn_rates_are_null(client: TestClient, db_session: Session):
    refresh(db_session, full=True, today=date(2025, 3, 31))
    body = client.get("/v1/metrics/churn", params={"start": "2025-01-01"}, headers=AUTH).json()
    assert body["refreshed_at"] is not None and body["through"] == "2025-03-31"
    jan = body["data"][0]
    assert jan["customer_days"] == 0
    rates = ["customer_churn_rate", "customer_retention_rate", "gross_mrr_churn_rate",
             "net_mrr_churn_rate", "expansion_rate", "nrr", "grr", "quick_ratio",
             "churn_hazard", "monthly_churn_rate", "arpa", "ltv", "negative_churn",
             "churn_level"]  # fmt: skip
    assert {k: jan[k] for k in rates} == dict.fromkeys(rates)


def test_zero_denominators_are_null(client: TestClient, db_session: Session):
    # One customer, new in February, never churning: in March churn and MRR rates are
    # defined (0), the quick ratio (no losses) is null; before February everything is.
    add_series(db_session, "solo", [Step(d(2, 1), 4900)])
    refresh(db_session, today=TODAY)
    body = client.get(
        "/v1/metrics/churn", params={"start": "2025-01-01", "end": "2025-04-01"}, headers=AUTH
    ).json()
    jan, feb, mar = body["data"]
    assert jan["customer_churn_rate"] is None and jan["churn_hazard"] is None
    assert feb["quick_ratio"] is None and feb["customer_churn_rate"] is None  # 0 at start
    assert (mar["customer_churn_rate"], mar["nrr"], mar["quick_ratio"]) == (0.0, 1.0, None)
    assert (mar["churn_hazard"], mar["monthly_churn_rate"], mar["ltv"]) == (0.0, 0.0, None)
    assert (mar["negative_churn"], mar["churn_level"]) == (False, "good")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"interval": "fortnight"}, "interval"),
        ({"start": "2025-13-01"}, "start"),
        ({"start": "2025-03-01", "end": "2025-02-01"}, "end"),
        ({"start": "0001-01-01"}, "start"),
        ({"end": "9999-12-31"}, "end"),
        ({"start": "1970-01-01", "end": "2999-01-01", "interval": "day"}, "start"),
        ({"currency": "EUR"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"segment_by": "colour"}, "segment_by"),
        ({"currency_code": "€"}, "currency_code"),
        ({"plan": "a\x00b"}, "plan"),
        ({"metadata[k]": "x" * 501}, "metadata[k]"),
        ({"format": "xml"}, "format"),
        ({"churn_good_below": "0.2", "churn_high_above": "0.1"}, "churn_high_above"),
        ({"churn_good_below": "1.5"}, "churn_good_below"),
        ({"gross_margin": "0"}, "gross_margin"),
    ],
)
def test_invalid_parameters_are_named(client: TestClient, params: dict, param: str):
    response = client.get("/v1/metrics/churn", params=params, headers=AUTH)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request", param)
    assert param in error["message"]


def test_freshness_as_of_and_stale(client: TestClient, db_session: Session):
    seed_scenario(db_session)
    db_session.add(
        StripeEvent(
            account="",
            event_id="evt_newest",
            type="customer.subscription.updated",
            created=1_745_000_000,
            body=b"{}",
            received_at=datetime.now(UTC),
        )
    )  # fmt: skip  (about no customer: never queued, so as of it at once)
    refresh(db_session, today=TODAY)
    body = client.get("/v1/metrics/mrr", headers=AUTH).json()
    assert body["as_of"] == "2025-04-18T18:13:20Z"
    assert body["stale"] is False
    # The projector writes a row and marks its day: stale until the next refresh.
    add_series(db_session, "late", [Step(d(4, 29), 1000)])
    LedgerRepository(db_session).mark_changed("", [d(4, 29)])
    assert client.get("/v1/metrics/mrr", headers=AUTH).json()["stale"] is True
    refresh(db_session, today=TODAY)
    april = client.get("/v1/metrics/mrr", params={"start": "2025-04-01", "end": "2025-05-01"},
                       headers=AUTH).json()  # fmt: skip
    assert (april["stale"], april["data"][0]["mrr"]["amount"]) == (False, 68500)


def test_unconverted_rows_are_counted_not_summed(client: TestClient, db_session: Session):
    # 100 JPY with no rate on 3 Jan: no USD amount; a USD customer alongside.
    add_series(db_session, "yen", [Step(d(1, 3), 100, rate=None)], currency="jpy")
    add_series(db_session, "usd", [Step(d(1, 4), 2500)])
    refresh(db_session, today=TODAY)
    body = client.get("/v1/metrics/movements", params={"start": "2025-01-01", "end": "2025-02-01"},
                      headers=AUTH).json()  # fmt: skip
    [jan] = body["data"]
    assert (body["unconverted_movements"], jan["unconverted_movements"]) == (1, 1)
    assert body["unconverted_currencies"] == ["jpy"]
    # The yen customer is left out of the count as of the amount.
    assert (jan["new_mrr"]["amount"], jan["mrr_end"]["amount"], jan["new_customers"]) == (
        2500, 2500, 1,
    )  # fmt: skip


def test_movements_pages_and_filters(client: TestClient, db_session: Session):
    seed_scenario(db_session)
    seen, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/movements", params=params, headers=AUTH).json()
        seen += [(m["day"], m["customer_id"], m["movement"]) for m in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert len(seen) == 22 and seen == sorted(seen, key=lambda s: s[0])
    assert len(set(seen)) == 22
    churns = client.get(
        "/v1/movements",
        params={"type": "churn", "start": "2025-02-01", "end": "2025-03-01"},
        headers=AUTH,
    ).json()["data"]
    assert [(m["customer_id"], m["churn_reason"]) for m in churns] == [
        ("c9", "involuntary"),
        ("c2", "voluntary"),
    ]
    c6 = client.get("/v1/movements", params={"customer": "c6"}, headers=AUTH).json()["data"]
    assert [(m["delta"]["amount"], m["reporting"]["delta"]) for m in c6] == [
        (9000, 9900),
        (3000, 3600),
    ]
    eur = client.get("/v1/movements", params={"currency_code": "EUR", "format": "csv"},
                     headers=AUTH)  # fmt: skip
    assert eur.text.splitlines()[0].startswith("id,customer_id,day,movement,currency")
    assert len(eur.text.splitlines()) == 3
    bad = client.get("/v1/movements", params={"cursor": "not-a-cursor"}, headers=AUTH)
    assert (bad.status_code, bad.json()["error"]["param"]) == (422, "cursor")


def test_accounts_never_mix(client: TestClient, db_session: Session):
    seed_scenario(db_session, account="acct_1")
    add_series(db_session, "other", [Step(d(1, 2), 700)])
    refresh(db_session, today=TODAY)
    params = {"start": "2025-01-01", "end": "2025-02-01"}
    platform = client.get("/v1/metrics/mrr", params=params, headers=AUTH).json()
    connected = client.get("/v1/metrics/mrr", params={**params, "account": "acct_1"},
                           headers=AUTH).json()  # fmt: skip
    assert platform["data"][0]["mrr"]["amount"] == 700
    assert connected["data"][0]["mrr"]["amount"] == 45000


@pytest.mark.parametrize("path", ENDPOINTS)
def test_json_is_what_the_response_model_serializes(
    client: TestClient, db_session: Session, path: str
):
    # The endpoints dump their answers themselves (no second validation by FastAPI): the
    # bytes must be those FastAPI's response_model serialization would give.
    from service.metrics import schemas

    model = {"mrr": schemas.MrrAnswer, "movements": schemas.MovementsAnswer,
             "churn": schemas.ChurnAnswer, "cohorts": schemas.CohortsAnswer,
             "churn-reasons": schemas.ReasonsAnswer}[path]  # fmt: skip
    seed_scenario(db_session)
    refresh(db_session, today=TODAY)
    params = {"segment_by": "plan", "start": "2025-01-01", "end": "2025-05-01"}
    response = client.get(f"/v1/metrics/{path}", params=params, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    adapter = TypeAdapter(model)
    assert adapter.dump_json(adapter.validate_json(response.content)) == response.content
    assert response.json()["data"]


def test_csv_never_holds_a_live_formula(client: TestClient, db_session: Session):
    # Customer ids and plan ids are text from Stripe: a spreadsheet must not run them.
    add_series(db_session, '=HYPERLINK("x")', [Step(d(1, 3), 2500), Step(d(1, 20), 0)])
    add_subscription(db_session, '=HYPERLINK("x")', plan="@SUM(A1)", interval="month")
    refresh(db_session, today=TODAY)
    ledger = client.get("/v1/movements", params={"format": "csv"}, headers=AUTH)
    rows = list(csv.DictReader(io.StringIO(ledger.text)))
    assert [(r["customer_id"], r["delta"]) for r in rows] == [
        ('\'=HYPERLINK("x")', "2500"),
        ('\'=HYPERLINK("x")', "-2500"),  # a negative number is a number
    ]
    params = {"format": "csv", "segment_by": "plan", "start": "2025-01-01", "end": "2025-02-01"}
    mrr = client.get("/v1/metrics/movements", params=params, headers=AUTH)
    [jan] = list(csv.DictReader(io.StringIO(mrr.text)))
    assert (jan["segment"], jan["churned_mrr"], jan["churned_mrr_display"]) == (
        "'@SUM(A1)", "-2500", "-25.00",
    )  # fmt: skip


@pytest.mark.parametrize("key", ['["2025-01-01",' + str(10**30) + "]", '["2025-01-01",-1e400]'])
def test_movements_forged_cursor_is_422_not_500(client: TestClient, key: str):
    import base64

    cursor = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    bad = client.get("/v1/movements", params={"cursor": cursor}, headers=AUTH)
    assert (bad.status_code, bad.json()["error"]["param"]) == (422, "cursor")
