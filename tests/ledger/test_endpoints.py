"""/v1/customers, /v1/subscriptions and /v1/fx-rates over HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.conftest import API_KEY, WRITE_KEY
from tests.factories import item, price_payload
from tests.ledger.scenario import Scenario, d, day

AUTH = {"Authorization": f"Bearer {API_KEY}"}
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}


@pytest.fixture
def upgraded(db_session: Session) -> Scenario:
    s = Scenario(db_session)
    s.sub("created", day(0), metadata={"team": "growth"})
    s.sub("updated", day(10), items=[item(price_payload(id="price_99", unit_amount=9900))])
    s.run()
    return s


class TestCustomer:
    def test_traces_mrr_to_events(self, client: TestClient, upgraded: Scenario):
        response = client.get("/v1/customers/cus_1", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mrr"] == [{"amount": 9900, "currency": "usd", "display": "99.00"}]
        assert body["first_mrr_day"] == d(0).isoformat()
        assert [(h["day"], h["mrr"]["amount"]) for h in body["history"]] == [
            (d(0).isoformat(), 4900),
            (d(10).isoformat(), 9900),
        ]
        assert [
            (m["movement"], m["delta"]["amount"], m["event_ids"]) for m in body["movements"]
        ] == [("new", 4900, ["evt_000001"]), ("expansion", 5000, ["evt_000002"])]
        [sub] = body["subscriptions"]
        assert (sub["subscription_id"], sub["status"], sub["mrr"]["amount"]) == (
            "sub_1",
            "active",
            9900,
        )
        assert sub["metadata"] == {}
        assert body["warnings"] == []

    def test_unknown_customer_is_404(self, client: TestClient):
        response = client.get("/v1/customers/cus_nobody", headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}]
    )
    def test_needs_api_key(self, client: TestClient, upgraded: Scenario, headers):
        response = client.get("/v1/customers/cus_1", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"


class TestSubscription:
    def test_history_with_causes(self, client: TestClient, upgraded: Scenario):
        body = client.get("/v1/subscriptions/sub_1", headers=AUTH).json()
        assert [(h["mrr"]["amount"], h["cause"], h["event_id"]) for h in body["history"]] == [
            (4900, "event", "evt_000001"),
            (9900, "event", "evt_000002"),
        ]
        assert body["event_ids"] == ["evt_000001", "evt_000002"]
        assert body["plan"] == "price_99"
        assert body["billing_interval"] == "month"

    def test_unknown_subscription_is_404(self, client: TestClient):
        assert client.get("/v1/subscriptions/sub_x", headers=AUTH).status_code == 404


class TestFxRates:
    def test_put_recomputes_reporting_amounts(self, client: TestClient, db_session: Session):
        s = Scenario(db_session)
        s.sub("created", day(0), items=[item(price_payload(currency="eur", unit_amount=4900))])
        s.run()
        assert s.movement(d(0)).delta_reporting is None
        response = client.put(
            "/v1/fx-rates",
            headers=WRITE,
            json={"rates": [{"currency": "EUR", "day": d(-5).isoformat(), "rate": "1.10"}]},
        )
        assert response.json() == {"rates": 1, "movements_recomputed": 1}
        db_session.expire_all()
        # 4900 euro cents × 1.10 = 5390 dollar cents
        assert s.movement(d(0)).delta_reporting == 5390
        listed = client.get("/v1/fx-rates", headers=AUTH).json()
        assert listed == {
            "reporting_currency": "usd",
            "rates": [{"currency": "eur", "day": d(-5).isoformat(), "rate": "1.10"}],
        }

    @pytest.mark.parametrize(
        ("rate", "param"),
        [
            ({"currency": "EURO", "day": "2025-01-01", "rate": "1"}, "currency"),
            ({"currency": "eur", "day": "yesterday", "rate": "1"}, "day"),
            ({"currency": "eur", "day": "2025-01-01", "rate": "-1"}, "rate"),
            ({"currency": "eur", "day": "2025-01-01", "rate": "abc"}, "rate"),
        ],
    )
    def test_invalid_rates_are_422_naming_the_field(self, client: TestClient, rate, param):
        response = client.put("/v1/fx-rates", headers=WRITE, json={"rates": [rate]})
        assert response.status_code == 422
        assert response.json()["error"]["param"].endswith(param)


class TestFxRateBounds:
    """One validation (service/ledger/fx.py check_quotes) for PUT and `fx-load`."""

    @pytest.mark.parametrize(
        ("rate", "mentions"),
        [
            ({"currency": "eur", "day": "2025-01-01", "rate": "1e999999"}, "outside"),
            ({"currency": "eur", "day": "2025-01-01", "rate": "1e-999999"}, "outside"),
            ({"currency": "usd", "day": "2025-01-01", "rate": "1.5"}, "reporting currency"),
            ({"currency": "eur", "day": "2025-01-01", "rate": "1." + "1" * 40}, "characters"),
        ],
    )
    def test_refused_and_nothing_stored(self, client: TestClient, rate, mentions):
        response = client.put("/v1/fx-rates", headers=WRITE, json={"rates": [rate]})
        assert response.status_code == 422, response.text
        assert mentions in response.json()["error"]["message"]
        assert client.get("/v1/fx-rates", headers=AUTH).json()["rates"] == []

    def test_huge_rate_with_movements_does_not_overflow(self, client, db_session):
        s = Scenario(db_session)
        s.sub("created", day(0), items=[item(price_payload(currency="eur", unit_amount=4900))])
        s.run()
        db_session.commit()  # the 422 rolls the request's session back
        rate = {"currency": "eur", "day": d(-5).isoformat(), "rate": "1e999999"}
        response = client.put("/v1/fx-rates", headers=WRITE, json={"rates": [rate]})
        assert response.status_code == 422
        db_session.expire_all()
        assert s.movement(d(0)).delta_reporting is None  # nothing recomputed


class TestHostileInput:
    """Found by the OpenAPI fuzzer: these reached SQL or date arithmetic and gave 500."""

    @pytest.mark.parametrize(
        "url",
        [
            "/v1/customers/cus_1?account=%00",
            "/v1/customers/cus%00x",
            "/v1/subscriptions/sub_1?account=%00",
            "/v1/failed-payments?account=%00",
            "/v1/failed-payments/in%00x",
            "/v1/metrics/recovery?account=%00",
            "/v1/metrics/recovery?end=0001-01-01",
            "/v1/failed-payments?start=0001-01-01",
            "/v1/failed-payments?customer=%00",
            "/v1/failed-payments?cursor=%00",
            "/v1/movements?cursor=%00",
        ],
    )
    def test_is_422_not_500(self, client: TestClient, url: str):
        response = client.get(url, headers=AUTH)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["type"] == "invalid_request"
