"""`segment_by=plan` answers the price id as `segment` and its name as `segment_label`, in
JSON and CSV, for every metrics answer with segments (issue 17); both databases."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from tests.conftest import API_KEY
from tests.metrics.scenario import TODAY, Step, add_series, add_subscription, d

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FEB = {"start": "2025-02-01", "end": "2025-03-01", "segment_by": "plan"}


def _seed(session: Session) -> None:
    # price_pro: c1 5000 and c2 7000, named "Pro · Monthly" (c2's subscription is the
    # newer; c1's older snapshot still says "Pro"); price_basic: c3 3000, never named;
    # c3 churns on 10 February (too_expensive).
    add_series(session, "c1", [Step(d(1, 5), 5000)])
    add_series(session, "c2", [Step(d(1, 20), 7000)])
    add_series(session, "c3", [Step(d(1, 10), 3000),
               Step(d(2, 10), 0, reason="voluntary", feedback="too_expensive")])  # fmt: skip
    add_subscription(session, "c1", plan="price_pro", plan_name="Pro", interval="month",
                     mrr=5000, started_at=100)  # fmt: skip
    add_subscription(session, "c2", plan="price_pro", plan_name="Pro · Monthly",
                     interval="month", mrr=7000, started_at=200)  # fmt: skip
    add_subscription(session, "c3", plan="price_basic", interval="month", mrr=0)
    refresh(session, today=TODAY)


def _get(client: TestClient, metric: str, **params: str) -> dict:
    response = client.get(f"/v1/metrics/{metric}", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


class TestJson:
    def test_mrr_names_each_plan_with_its_id(self, client: TestClient, db_session: Session):
        _seed(db_session)
        rows = _get(client, "mrr", **FEB)["data"]
        assert [(r["segment"], r["segment_label"], r["mrr"]["amount"]) for r in rows] == [
            ("price_basic", "price_basic", 0),  # no payload named it: the id
            ("price_pro", "Pro · Monthly", 12000),  # the newest subscription's name
        ]

    def test_movements_churn_reasons_and_cohorts(self, client: TestClient, db_session: Session):
        _seed(db_session)
        moves = _get(client, "movements", **FEB)["data"]
        assert {r["segment"]: r["segment_label"] for r in moves} == {
            "price_basic": "price_basic", "price_pro": "Pro · Monthly",
        }  # fmt: skip
        churn = _get(client, "churn", **FEB)["data"]
        assert [r["segment_label"] for r in churn] == ["price_basic", "Pro · Monthly"]
        reasons = _get(client, "churn-reasons", **FEB)["data"]
        assert [(r["segment"], r["segment_label"], r["churns"]) for r in reasons] == [
            ("price_basic", "price_basic", 1),
        ]
        cohorts = _get(client, "cohorts", start="2025-01-01", end="2025-02-01",
                       segment_by="plan")["data"]  # fmt: skip
        assert {(r["segment"], r["segment_label"]) for r in cohorts} == {
            ("price_basic", "price_basic"), ("price_pro", "Pro · Monthly"),
        }  # fmt: skip

    def test_other_segments_label_themselves(self, client: TestClient, db_session: Session):
        _seed(db_session)
        rows = _get(client, "mrr", **{**FEB, "segment_by": "billing_interval"})["data"]
        assert [(r["segment"], r["segment_label"]) for r in rows] == [("month", "month")]
        plain = _get(client, "mrr", start="2025-02-01", end="2025-03-01")["data"]
        assert [(r["segment"], r["segment_label"]) for r in plain] == [(None, None)]


class TestCsv:
    def test_label_column_beside_the_id(self, client: TestClient, db_session: Session):
        _seed(db_session)
        response = client.get("/v1/metrics/mrr", params={**FEB, "format": "csv"}, headers=AUTH)
        assert response.status_code == 200
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["segment"], r["segment_label"], r["mrr"]) for r in rows] == [
            ("price_basic", "price_basic", "0"),
            ("price_pro", "Pro · Monthly", "12000"),
        ]


class TestSubscriptions:
    def test_plan_name_in_json_and_csv(self, client: TestClient, db_session: Session):
        _seed(db_session)
        body = client.get("/v1/subscriptions", headers=AUTH).json()
        assert {s["subscription_id"]: s["plan_name"] for s in body["data"]} == {
            "sub_c1": "Pro", "sub_c2": "Pro · Monthly", "sub_c3": None,
        }  # fmt: skip
        text = client.get("/v1/subscriptions", params={"format": "csv"}, headers=AUTH).text
        rows = {r["subscription_id"]: r for r in csv.DictReader(io.StringIO(text))}
        assert (rows["sub_c2"]["plan"], rows["sub_c2"]["plan_name"]) == (
            "price_pro", "Pro · Monthly",
        )  # fmt: skip
        assert rows["sub_c3"]["plan_name"] == ""
