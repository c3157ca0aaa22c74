"""/v1/failed-payments over HTTP: filters, cursor pagination, CSV, one episode's events."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import API_KEY
from tests.ledger.scenario import day
from tests.payments.scenario import PaymentScenario

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def three(db_session: Session) -> PaymentScenario:
    """in_a (Jan 5, recovered), in_b (Jan 20, open), in_c (Feb 10, lost: voided)."""
    s = PaymentScenario(db_session)
    for key in "abc":
        s.subscribe(day(-31), sub=f"sub_{key}", customer=f"cus_{key}")
    s.fail(day(4), 1, id="in_a", customer="cus_a", subscription="sub_a")
    s.paid(day(6), 2, id="in_a", customer="cus_a", subscription="sub_a")
    s.fail(day(19), 1, day(22), id="in_b", customer="cus_b", subscription="sub_b")
    s.charge_failed(day(19) + 3, customer="cus_b", message='=HYPERLINK("x")')
    s.fail(day(40), 1, id="in_c", customer="cus_c", subscription="sub_c")
    s.invoice("voided", day(41), id="in_c", customer="cus_c", subscription="sub_c", status="void")
    s.run()
    return s


def invoices(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["invoice_id"] for e in response.json()["data"]]


class TestList:
    def test_newest_first_with_money_and_times(self, client: TestClient, three: PaymentScenario):
        response = client.get("/v1/failed-payments", headers=AUTH)
        assert invoices(response) == ["in_c", "in_b", "in_a"]
        body = response.json()
        assert (body["has_more"], body["next_cursor"]) == (False, None)
        b = body["data"][1]
        assert b["amount_due"] == {"amount": 4900, "currency": "usd", "display": "49.00"}
        assert (b["outcome"], b["first_failure_at"], b["next_retry_at"]) == (
            "open",
            "2025-01-20T12:00:00Z",
            "2025-01-23T12:00:00Z",
        )
        assert b["decline_code"] == "insufficient_funds"

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("status=open", ["in_b"]),
            ("status=recovered", ["in_a"]),
            ("status=lost", ["in_c"]),
            ("customer=cus_c", ["in_c"]),
            ("start=2025-01-05&end=2025-02-10", ["in_b", "in_a"]),  # end exclusive
            ("start=2025-01-06", ["in_c", "in_b"]),
            ("account=acct_other", []),
        ],
    )
    def test_filters(self, client: TestClient, three: PaymentScenario, query: str, expected):
        assert invoices(client.get(f"/v1/failed-payments?{query}", headers=AUTH)) == expected

    def test_cursor_pagination_visits_each_once(self, client: TestClient, three: PaymentScenario):
        seen, cursor = [], None
        while True:
            query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
            body = client.get(f"/v1/failed-payments?{query}", headers=AUTH).json()
            seen += [e["invoice_id"] for e in body["data"]]
            cursor = body["next_cursor"]
            assert body["has_more"] == (cursor is not None)
            if cursor is None:
                break
        assert seen == ["in_c", "in_b", "in_a"]

    @pytest.mark.parametrize(
        "query",
        ["cursor=%%%", "cursor=W10", "limit=0", "status=closed", "start=2025-02-01&end=2025-01-01"],
    )
    def test_bad_input_is_4xx(self, client: TestClient, three: PaymentScenario, query: str):
        response = client.get(f"/v1/failed-payments?{query}", headers=AUTH)
        assert response.status_code in (400, 422), response.text
        assert set(response.json()["error"]) >= {"type", "message"}

    def test_csv_exports_every_match(self, client: TestClient, three: PaymentScenario):
        response = client.get("/v1/failed-payments?format=csv&limit=1", headers=AUTH)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["invoice_id"], r["outcome"], r["amount_due"]) for r in rows] == [
            ("in_c", "lost", "4900"),
            ("in_b", "open", "4900"),
            ("in_a", "recovered", "4900"),
        ]
        assert rows[2]["time_to_recover_s"] == "172800"  # day 6 − day 4
        assert rows[1]["failure_message"] == '\'=HYPERLINK("x")'  # never a live formula

    def test_empty_csv_still_has_a_header(self, client: TestClient):
        response = client.get("/v1/failed-payments", headers={**AUTH, "Accept": "text/csv"})
        assert response.text.splitlines()[0].startswith("account,invoice_id,customer_id")
        assert len(response.text.splitlines()) == 1

    def test_needs_api_key(self, client: TestClient):
        assert client.get("/v1/failed-payments").status_code == 401


class TestDetail:
    def test_episode_with_its_events(self, client: TestClient, three: PaymentScenario):
        response = client.get("/v1/failed-payments/in_b", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["event_ids"] == [e["event_id"] for e in body["events"]]
        assert [e["type"] for e in body["events"]] == ["invoice.payment_failed", "charge.failed"]
        assert body["customer_id"] == "cus_b"

    def test_unknown_invoice_is_404(self, client: TestClient, three: PaymentScenario):
        response = client.get("/v1/failed-payments/in_nope", headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"


class TestForgedCursors:
    @pytest.mark.parametrize(
        "key", [f'[{10**30},"in_a"]', '[1,"in_\\u0000"]', f'[1,"{"x" * 300}"]']
    )
    def test_is_400_not_500(self, client: TestClient, three: PaymentScenario, key: str):
        import base64

        cursor = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
        response = client.get("/v1/failed-payments", params={"cursor": cursor}, headers=AUTH)
        assert response.status_code == 400, response.text
        assert "cursor" in response.json()["error"]["message"]
