"""Currencies without an FX rate: named in every answer, left out of MRR, customer counts
and ARPA alike; a changed REPORTING_CURRENCY is refused with the command to run."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.ledger.repository import LedgerRepository
from service.settings import LedgerOptions
from tests.conftest import API_KEY
from tests.metrics.scenario import TODAY, Step, add_series, d

AUTH = {"Authorization": f"Bearer {API_KEY}"}
Q1 = {"start": "2025-01-01", "end": "2025-04-01"}


def _seed(session: Session) -> None:
    # usd: 5000 from 5 Jan. eur: 9000 EUR from 10 Jan, no rate; churned 10 Feb.
    # gbp: 4000 GBP from 1 Jan with no rate, then a rate (1.25) from 1 Mar when it
    # expands to 6000: the series is left out whole, or MRR would gain the 2500 USD delta
    # (7500 − 5000) without the 4000 GBP it started from.
    add_series(session, "c_usd", [Step(d(1, 5), 5000)])
    add_series(session, "c_eur", [Step(d(1, 10), 9000, rate=None),
               Step(d(2, 10), 0, rate=None, reason="voluntary")], currency="eur")  # fmt: skip
    add_series(session, "c_gbp", [Step(d(1, 1), 4000, rate=None),
               Step(d(3, 1), 6000, rate="1.25")], currency="gbp")  # fmt: skip
    refresh(session, today=TODAY)


class TestLeftOutConsistently:
    def test_mrr_customers_and_arpa_agree(self, client: TestClient, db_session: Session):
        _seed(db_session)
        body = client.get("/v1/metrics/mrr", params=Q1, headers=AUTH).json()
        assert body["unconverted_currencies"] == ["eur", "gbp"]
        assert body["unconverted_movements"] == 4
        rows = [(r["mrr"]["amount"], r["customers"], r["arpa"]["amount"]) for r in body["data"]]
        assert rows == [(5000, 1, 5000)] * 3

    def test_movements_and_churn_leave_them_out(self, client: TestClient, db_session: Session):
        _seed(db_session)
        moves = client.get("/v1/metrics/movements", params=Q1, headers=AUTH).json()
        jan, feb, mar = moves["data"]
        assert (jan["new_mrr"]["amount"], jan["new_customers"]) == (5000, 1)
        assert (feb["churned_mrr"]["amount"], feb["churned_customers"]) == (0, 0)
        assert (mar["expansion_mrr"]["amount"], mar["expansions"]) == (0, 0)
        assert [r["unconverted_movements"] for r in moves["data"]] == [2, 1, 1]
        churn = client.get("/v1/metrics/churn", params=Q1, headers=AUTH).json()
        assert [r["customers_lost"] for r in churn["data"]] == [0, 0, 0]
        assert churn["data"][1]["customer_churn_rate"] == 0.0
        reasons = client.get("/v1/metrics/churn-reasons", params=Q1, headers=AUTH).json()
        assert reasons["data"] == []
        cohorts = client.get("/v1/metrics/cohorts", params=Q1, headers=AUTH).json()
        assert {r["cohort_customers"] for r in cohorts["data"]} == {1}
        assert cohorts["unconverted_currencies"] == ["eur", "gbp"]

    def test_named_only_up_to_end(self, client: TestClient, db_session: Session):
        _seed(db_session)
        # Before 5 January only the gbp row (1 Jan) exists.
        body = client.get("/v1/metrics/mrr", params={"start": "2025-01-01", "end": "2025-01-02",
                          "interval": "day"}, headers=AUTH).json()  # fmt: skip
        assert body["unconverted_currencies"] == ["gbp"]

    def test_a_converted_ledger_names_none(self, client: TestClient, db_session: Session):
        add_series(db_session, "c_usd", [Step(d(1, 5), 5000)])
        refresh(db_session, today=TODAY)
        body = client.get("/v1/metrics/mrr", params=Q1, headers=AUTH).json()
        assert (body["unconverted_currencies"], body["unconverted_movements"]) == ([], 0)


class TestReportingCurrencyChanged:
    PATHS = (
        "/v1/metrics/mrr", "/v1/metrics/churn", "/v1/metrics/recovery", "/v1/customers",
        "/v1/metrics/movements", "/v1/metrics/cohorts", "/v1/metrics/churn-reasons",
    )  # fmt: skip

    def test_refused_with_the_command(self, client: TestClient, db_session: Session):
        add_series(db_session, "c_usd", [Step(d(1, 5), 5000)])
        LedgerRepository(db_session).set_ledger_reporting_currency("eur")
        db_session.flush()
        for path in self.PATHS:
            response = client.get(path, headers=AUTH)
            assert response.status_code == 503, path
            error = response.json()["error"]
            assert error["type"] == "reporting_currency_changed"
            assert error["command"] == "churn-ledger rebuild"
            assert "EUR" in error["message"] and "USD" in error["message"]
        # Never before the key check.
        assert client.get(self.PATHS[0]).status_code == 401

    def test_without_a_stored_currency_the_rows_say(self, client: TestClient, db_session: Session):
        # A ledger projected before the currency was stored: its rows are in usd.
        add_series(db_session, "c_eur", [Step(d(1, 5), 5000)], reporting="eur")
        assert client.get("/v1/metrics/mrr", headers=AUTH).status_code == 503

    def test_recorded_currency_serves(self, client: TestClient, db_session: Session):
        add_series(db_session, "c_usd", [Step(d(1, 5), 5000)])
        repo = LedgerRepository(db_session)
        assert repo.ledger_reporting_currency() == "usd"
        from service.ledger.service import record_reporting_currency

        record_reporting_currency(db_session, LedgerOptions(reporting_currency="USD"))
        assert repo.ledger_reporting_currency() == "usd"
        assert client.get("/v1/metrics/mrr", headers=AUTH).status_code == 200

    def test_empty_ledger_serves(self, client: TestClient):
        assert client.get("/v1/metrics/mrr", headers=AUTH).status_code == 200
