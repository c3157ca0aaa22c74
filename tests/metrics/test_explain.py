"""GET /v1/metrics/explain: the customers and ledger rows behind one figure, by hand on
the ten-customer scenario (tests/metrics/test_scenario.py lists it), and as a property:
for random ledgers the rows sum to what /v1/metrics/* report, for every metric."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.metrics.explain import EXPLAINABLE
from tests.conftest import API_KEY
from tests.metrics.scenario import TODAY, Step, add_series, add_subscription, d, seed_scenario
from tests.metrics.test_unconverted import _seed as seed_unconverted

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def seeded(db_session: Session) -> Session:
    seed_scenario(db_session)
    refresh(db_session, today=TODAY)
    return db_session


def explain(client: TestClient, metric: str, period_start: str, **params) -> dict:
    response = client.get(
        "/v1/metrics/explain",
        params={"metric": metric, "period_start": period_start, **params},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    return response.json()


def parts(body: dict) -> list[tuple[str, int, list[tuple[str, str, int]]]]:
    """(customer, value, [(day, first event id, row value)]) per customer listed."""
    return [
        (
            c["customer_id"],
            c["value"],
            [(r["day"], r["event_ids"][0], r["value"]) for r in c["rows"]],
        )
        for c in body["data"]
    ]


class TestByHand:
    def test_churned_mrr_in_february(self, client: TestClient, seeded: Session):
        body = explain(client, "churned_mrr", "2025-02-01")
        # c2 churned 5000 on 15 Feb (its second event), c9 5000 on 10 Feb: -10000.
        assert parts(body) == [
            ("c2", -5000, [("2025-02-15", "evt_c2_1", -5000)]),
            ("c9", -5000, [("2025-02-10", "evt_c9_1", -5000)]),
        ]
        assert (body["value"], body["reported"], body["display"]) == (-10000, -10000, "-100.00")
        assert (body["kind"], body["customers"], body["rows"]) == ("amount", 2, 2)
        assert (body["period_start"], body["period_end"]) == ("2025-02-01", "2025-03-01")
        assert (body["currency"], body["stale"]) == ("usd", False)
        row = body["data"][0]["rows"][0]
        assert (row["movement"], row["churn_reason"], row["churn_feedback"]) == (
            "churn", "voluntary", "too_expensive",
        )  # fmt: skip

    def test_a_day_inside_the_period_is_rounded_down(self, client: TestClient, seeded: Session):
        body = explain(client, "churned_mrr", "2025-02-17")
        assert (body["period_start"], body["value"]) == ("2025-02-01", -10000)

    def test_customer_counts(self, client: TestClient, seeded: Session):
        jan = explain(client, "new_customers", "2025-01-01")
        assert sorted(c["customer_id"] for c in jan["data"]) == ["c1", "c2", "c3", "c4", "c7", "c9"]
        assert (jan["value"], jan["reported"], jan["kind"]) == (6, 6, "count")
        feb = explain(client, "churned_customers", "2025-02-01")
        assert parts(feb) == [
            ("c2", 1, [("2025-02-15", "evt_c2_1", 1)]),
            ("c9", 1, [("2025-02-10", "evt_c9_1", 1)]),
        ]
        mar = explain(client, "reactivated_customers", "2025-03-01")
        assert parts(mar) == [("c8", 1, [("2025-03-28", "evt_c8_2", 1)])]

    def test_every_movement(self, client: TestClient, seeded: Session):
        assert parts(explain(client, "contraction_mrr", "2025-02-01")) == [
            ("c4", -3000, [("2025-02-05", "evt_c4_1", -3000)])
        ]
        # c6: 9000 -> 12000 EUR at 1.2 is 14400 - 10800 USD.
        assert parts(explain(client, "expansion_mrr", "2025-04-01")) == [
            ("c6", 3600, [("2025-04-20", "evt_c6_1", 3600)])
        ]
        assert parts(explain(client, "reactivation_mrr", "2025-03-01")) == [
            ("c8", 10000, [("2025-03-28", "evt_c8_2", 10000)])
        ]
        assert explain(client, "expansions", "2025-03-01")["value"] == 1
        apr = explain(client, "new_mrr", "2025-04-01")
        assert (apr["value"], parts(apr)) == (
            5000,
            [("c10", 5000, [("2025-04-05", "evt_c10_0", 5000)])],
        )

    def test_segment_filters(self, client: TestClient, seeded: Session):
        # February's new MRR: c5 basic 5000, c6 pro 9900 EUR-billed.
        assert explain(client, "new_mrr", "2025-02-01")["value"] == 14900
        pro = explain(client, "new_mrr", "2025-02-01", plan="pro")
        assert [c["customer_id"] for c in pro["data"]] == ["c6"]
        assert (pro["value"], pro["reported"]) == (9900, 9900)
        eu = explain(client, "new_mrr", "2025-02-01", **{"metadata[region]": "eu"})
        assert (eu["value"], eu["reported"]) == (9900, 9900)
        usd = explain(client, "new_mrr", "2025-02-01", currency_code="USD")
        assert [c["customer_id"] for c in usd["data"]] == ["c5"]

    def test_state_at_the_boundaries(self, client: TestClient, seeded: Session):
        feb = explain(client, "mrr_end", "2025-02-01")
        # End of Feb: c1 5000, c3 20000, c4 7000, c5 5000, c6 9900, c9 6000 (its churn and
        # reactivation: 5000 - 5000 + 6000); c2 and c7 net out and are not listed.
        assert [(c["customer_id"], c["value"]) for c in feb["data"]] == [
            ("c3", 20000), ("c6", 9900), ("c4", 7000), ("c9", 6000), ("c1", 5000), ("c5", 5000),
        ]  # fmt: skip
        assert (feb["value"], feb["reported"]) == (52900, 52900)
        assert explain(client, "mrr_start", "2025-03-01")["value"] == 52900
        assert explain(client, "mrr", "2025-02-01")["value"] == 52900
        customers = explain(client, "customers", "2025-02-01")
        assert (customers["value"], customers["reported"], customers["customers"]) == (6, 6, 6)
        c9 = next(c for c in customers["data"] if c["customer_id"] == "c9")
        # One row: the one that set its MRR (its reactivation).
        assert [(r["day"], r["event_ids"], r["value"]) for r in c9["rows"]] == [
            ("2025-02-20", ["evt_c9_2"], 1)
        ]
        assert explain(client, "customers_start", "2025-02-01")["value"] == 5

    def test_csv_sums_to_the_figure(self, client: TestClient, seeded: Session):
        response = client.get(
            "/v1/metrics/explain",
            params={"metric": "churned_mrr", "period_start": "2025-02-01", "format": "csv"},
            headers=AUTH,
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "explain-churned_mrr-2025-02-01.csv" in response.headers["content-disposition"]
        assert (response.headers["x-explain-value"], response.headers["x-reported"]) == (
            "-10000", "-10000",
        )  # fmt: skip
        lines = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["customer_id"], r["event_ids"], r["value"]) for r in lines] == [
            ("c2", "evt_c2_1", "-5000"),
            ("c9", "evt_c9_1", "-5000"),
        ]
        assert sum(int(r["value"]) for r in lines) == -10000


class TestUnconverted:
    def test_left_out_as_in_the_metrics(self, client: TestClient, db_session: Session):
        seed_unconverted(db_session)
        # c_eur's churn has no rate: not churned MRR, not a churned customer.
        feb = explain(client, "churned_mrr", "2025-02-01")
        assert (feb["value"], feb["reported"], feb["data"]) == (0, 0, [])
        assert explain(client, "churned_customers", "2025-02-01")["value"] == 0
        # c_gbp's 1 March expansion has a rate, but its series started without one.
        assert explain(client, "expansion_mrr", "2025-03-01")["value"] == 0
        jan = explain(client, "unconverted_movements", "2025-01-01")
        assert sorted(c["customer_id"] for c in jan["data"]) == ["c_eur", "c_gbp"]
        assert (jan["value"], jan["reported"]) == (2, 2)
        assert jan["unconverted_currencies"] == ["eur", "gbp"]


class TestOneFlipPerDay:
    def test_two_currencies_on_one_day_count_once(self, client: TestClient, db_session: Session):
        add_series(db_session, "c_two", [Step(d(1, 5), 5000)])
        add_series(db_session, "c_two", [Step(d(1, 5), 3000, rate="1.1")], currency="eur")
        refresh(db_session, today=TODAY)
        body = explain(client, "new_customers", "2025-01-01")
        assert (body["value"], body["reported"], body["rows"]) == (1, 1, 2)
        assert [r["value"] for r in body["data"][0]["rows"]] == [1, 0]
        new = explain(client, "new_mrr", "2025-01-01")
        assert (new["value"], new["reported"]) == (8300, 8300)


class TestRefused:
    def test_a_metric_that_is_not_a_sum(self, client: TestClient, seeded: Session):
        response = client.get(
            "/v1/metrics/explain",
            params={"metric": "arpa", "period_start": "2025-02-01"},
            headers=AUTH,
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["param"] == "metric"
        assert error["explainable"] == list(EXPLAINABLE)
        assert "churned_mrr" in error["message"] and "arpa" in error["message"]

    def test_bad_and_future_periods(self, client: TestClient, seeded: Session):
        for params in (
            {"metric": "new_mrr"},
            {"metric": "new_mrr", "period_start": "2025-13-01"},
            {"metric": "new_mrr", "period_start": "0001-01-01"},
            {"metric": "new_mrr", "period_start": "2025-01-01", "interval": "range"},
            {"metric": "new_mrr", "period_start": (date.today() + timedelta(days=40)).isoformat()},
            {"metric": "new_mrr", "period_start": "2025-01-01", "currency": "jpy"},
        ):
            response = client.get("/v1/metrics/explain", params=params, headers=AUTH)
            assert response.status_code == 422, (params, response.text)
            assert "error" in response.json()

    def test_needs_a_key(self, client: TestClient):
        params = {"metric": "new_mrr", "period_start": "2025-01-01"}
        assert client.get("/v1/metrics/explain", params=params).status_code == 401


# --- the property ---------------------------------------------------------------------

BASE = date(2025, 1, 1)
_accounts = itertools.count()
steps = st.lists(
    st.tuples(st.integers(0, 150), st.sampled_from([0, 0, 1000, 2500, 4900, 12000])),
    min_size=1,
    max_size=6,
)
series = st.tuples(
    st.sampled_from(["usd", "usd", "eur", "jpy"]), st.sampled_from(["1", "1.1", "0.0067", None]),
    steps,
)  # fmt: skip
customers = st.lists(
    st.tuples(
        st.lists(series, min_size=1, max_size=2),
        # The customer's subscription (plan), or none known.
        st.sampled_from([None, "basic", "pro"]),
    ),
    max_size=7,
)


def _steps(raw: list[tuple[int, int]], rate: str | None) -> list[Step]:
    out, before = [], 0
    for offset, mrr in sorted(dict(raw).items()):
        if mrr != before:
            out.append(Step(BASE + timedelta(days=offset), mrr, rate=rate))
            before = mrr
    return out


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ledger=customers,
    interval=st.sampled_from(["day", "week", "month", "quarter"]),
    period=st.integers(0, 150),
    plan=st.sampled_from([None, "basic"]),
)
def test_explain_sums_to_the_reported_figure(
    client: TestClient, db_session: Session, ledger: list, interval: str, period: int,
    plan: str | None,
):  # fmt: skip
    account = f"acct_explain_{next(_accounts)}"
    for n, (customer_series, sub_plan) in enumerate(ledger):
        customer = f"cus_{n}"
        for currency, rate, raw in {s[0]: s for s in customer_series}.values():
            built = _steps(raw, rate)
            if built:
                add_series(db_session, customer, built, currency=currency, account=account)
        if sub_plan is not None:
            add_subscription(db_session, customer, plan=sub_plan, interval="month",
                             account=account, mrr=1000)  # fmt: skip
    db_session.flush()
    refresh(db_session, accounts=[account], today=date(2025, 6, 30))
    day = (BASE + timedelta(days=period)).isoformat()
    params = {"account": account, "interval": interval, **({"plan": plan} if plan else {})}
    window = {**params, "start": day, "end": (BASE + timedelta(days=period + 1)).isoformat()}
    moves = client.get("/v1/metrics/movements", params=window, headers=AUTH).json()["data"][0]
    mrr = client.get("/v1/metrics/mrr", params=window, headers=AUTH).json()["data"][0]
    churn = client.get("/v1/metrics/churn", params=window, headers=AUTH).json()["data"][0]
    figures = {**moves, "mrr": mrr["mrr"], "customers": mrr["customers"],
               "customers_start": churn["customers_start"],
               "customers_end": churn["customers_end"]}  # fmt: skip
    for metric in EXPLAINABLE:
        body = explain(client, metric, day, **params)
        figure = figures[metric]
        expected = figure["amount"] if isinstance(figure, dict) else figure
        rows = [r["value"] for c in body["data"] for r in c["rows"]]
        assert sum(rows) == sum(c["value"] for c in body["data"]) == body["value"]
        assert (metric, body["value"], body["reported"]) == (metric, expected, expected)
        for c in body["data"]:
            for r in c["rows"]:
                assert r["customer_id"] == c["customer_id"] and r["event_ids"]
