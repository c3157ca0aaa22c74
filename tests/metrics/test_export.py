"""CSV exports of the lists stream every row (no page cap), with a file name, stable
columns, times in ISO 8601 with zone and booleans as JSON spells them."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.ledger.models import MrrMovement
from service.metrics.render import LEDGER_COLUMNS
from tests.conftest import API_KEY
from tests.metrics.scenario import Step, add_series, add_subscription, d

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ACCOUNT = "acct_export"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


class TestMovementsExport:
    def test_ten_thousand_movements_give_ten_thousand_rows(
        self, client: TestClient, db_session: Session
    ):
        # One customer per row (new, 100..): 10,000 rows, five times the export's batch.
        first = date(2020, 1, 1)
        db_session.execute(
            insert(MrrMovement),
            [
                {
                    "account": ACCOUNT, "customer_id": f"cus_{n:05d}",
                    "day": first + timedelta(days=n % 2000), "movement": "new",
                    "currency": "usd", "from_mrr": 0, "to_mrr": 100 + n, "delta": 100 + n,
                    "reporting_currency": "usd", "fx_rate": "1", "from_mrr_reporting": 0,
                    "to_mrr_reporting": 100 + n, "delta_reporting": 100 + n,
                    "event_ids": [f"evt_{n}"], "subscription_ids": [f"sub_{n}"],
                }
                for n in range(10_000)
            ],
        )  # fmt: skip
        response = client.get(
            "/v1/movements", params={"account": ACCOUNT, "format": "csv", "limit": 10},
            headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["content-disposition"] == 'attachment; filename="movements.csv"'
        assert "x-next-cursor" not in response.headers
        rows = _rows(response.text)
        assert len(rows) == 10_000
        assert len({r["customer_id"] for r in rows}) == 10_000
        assert sum(int(r["delta_reporting"]) for r in rows) == sum(range(100, 10_100))
        days = [r["day"] for r in rows]
        assert days == sorted(days)
        assert response.text.splitlines()[0] == ",".join(LEDGER_COLUMNS)

    def test_from_a_cursor_and_filtered(self, client: TestClient, db_session: Session):
        for n in range(5):
            add_series(db_session, f"c{n}", [Step(d(1, 1 + n), 100)], account=ACCOUNT)
        page = client.get("/v1/movements", params={"account": ACCOUNT, "limit": 2},
                          headers=AUTH).json()  # fmt: skip
        rest = client.get(
            "/v1/movements",
            params={"account": ACCOUNT, "format": "csv", "cursor": page["next_cursor"]},
            headers=AUTH,
        )  # fmt: skip
        assert [r["customer_id"] for r in _rows(rest.text)] == ["c2", "c3", "c4"]
        only = client.get("/v1/movements", params={"account": ACCOUNT, "customer": "c1"},
                          headers={**AUTH, "Accept": "text/csv"})  # fmt: skip
        assert [r["customer_id"] for r in _rows(only.text)] == ["c1"]

    def test_bad_cursor_is_422_before_any_row(self, client: TestClient):
        response = client.get(
            "/v1/movements", params={"format": "csv", "cursor": "nope"}, headers=AUTH
        )
        assert (response.status_code, response.json()["error"]["param"]) == (422, "cursor")

    def test_empty_export_has_the_header(self, client: TestClient):
        response = client.get("/v1/movements", params={"account": "acct_none", "format": "csv"},
                              headers=AUTH)  # fmt: skip
        assert response.text == ",".join(LEDGER_COLUMNS) + "\n"


class TestSubscriptionsList:
    def _seed(self, db_session: Session) -> None:
        for n in range(5):
            add_subscription(
                db_session, f"c{n}", plan="basic" if n % 2 else "pro", interval="month",
                mrr=100 * n, metadata={"region": "eu"} if n == 1 else None, account=ACCOUNT,
            )  # fmt: skip

    def test_pages_visit_each_once(self, client: TestClient, db_session: Session):
        self._seed(db_session)
        seen, cursor = [], None
        while True:
            params = {"account": ACCOUNT, "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = client.get("/v1/subscriptions", params=params, headers=AUTH).json()
            seen += [s["subscription_id"] for s in body["data"]]
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
        assert seen == [f"sub_c{n}" for n in range(5)]

    def test_times_have_their_zone(self, client: TestClient, db_session: Session):
        self._seed(db_session)
        body = client.get("/v1/subscriptions", params={"account": ACCOUNT, "customer": "c1"},
                          headers=AUTH).json()  # fmt: skip
        [sub] = body["data"]
        # started_at=1 (unix seconds) in the builder.
        assert (sub["started_at"], sub["ended_at"]) == ("1970-01-01T00:00:01Z", None)
        assert sub["mrr"] == {"amount": 100, "currency": "usd", "display": "1.00"}
        assert sub["cancel_at_period_end"] is False

    def test_csv_streams_every_match(self, client: TestClient, db_session: Session):
        self._seed(db_session)
        response = client.get(
            "/v1/subscriptions",
            params={"account": ACCOUNT, "format": "csv", "limit": 1, "plan": "basic"},
            headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-disposition"] == (
            'attachment; filename="subscriptions.csv"'
        )
        rows = _rows(response.text)
        assert [r["subscription_id"] for r in rows] == ["sub_c1", "sub_c3"]
        c1 = rows[0]
        assert (c1["started_at"], c1["cancel_at_period_end"], c1["mrr"], c1["mrr_display"]) == (
            "1970-01-01T00:00:01Z", "false", "100", "1.00",
        )  # fmt: skip
        assert c1["metadata"] == '{"region": "eu"}'

    def test_bad_input_is_4xx(self, client: TestClient):
        assert client.get("/v1/subscriptions", params={"cursor": "x"},
                          headers=AUTH).status_code == 422  # fmt: skip
        assert client.get("/v1/subscriptions", params={"limit": 0},
                          headers=AUTH).status_code == 422  # fmt: skip
        assert client.get("/v1/subscriptions").status_code == 401


class TestCustomersAndEpisodesExport:
    def test_customers_csv_is_an_attachment(self, client: TestClient, db_session: Session):
        add_series(db_session, "c1", [Step(d(1, 1), 100)], account=ACCOUNT)
        from service.ledger.models import LedgerCustomer

        db_session.add(LedgerCustomer(account=ACCOUNT, customer_id="c1", first_mrr_day=d(1, 1)))
        response = client.get("/v1/customers", params={"account": ACCOUNT, "format": "csv"},
                              headers=AUTH)  # fmt: skip
        assert response.headers["content-disposition"] == 'attachment; filename="customers.csv"'
        assert [r["customer_id"] for r in _rows(response.text)] == ["c1"]
        bad = client.get("/v1/customers", params={"format": "csv", "cursor": "x"}, headers=AUTH)
        assert bad.status_code == 422

    def test_failed_payments_bad_cursor_is_4xx(self, client: TestClient):
        bad = client.get("/v1/failed-payments", params={"format": "csv", "cursor": "x"},
                         headers=AUTH)  # fmt: skip
        assert bad.status_code == 400
