"""The receiver behind a real uvicorn server, with real commits across connections."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.app import create_app
from service.webhooks.models import StripeEvent
from tests.conftest import API_KEY, Database, make_settings
from tests.factories import T0, item, price_payload, subscription_payload
from tests.live import live_server
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event


def count_events(db: Database) -> int:
    with Session(db.engine) as session:
        return session.scalar(select(func.count()).select_from(StripeEvent)) or 0


class TestLiveServer:
    def test_signed_events_over_real_http(self, fresh_database: Database):
        """Receiver → event store → projector worker → /v1/customers, all for real."""
        app = create_app(make_settings(fresh_database.url), fresh_database.engine)
        bodies = [
            event_body(
                make_event(
                    event_id=f"evt_live_{i}",
                    obj=subscription_payload(
                        id=f"sub_live_{i}",
                        customer=f"cus_live_{i}",
                        created=T0,
                        items=[item(price_payload(unit_amount=1000), i + 1)],
                    ),
                )
            )
            for i in range(20)
        ]
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            answers = [
                http.post("/webhooks/stripe", content=b, headers=signed_headers(b))
                for b in bodies + bodies[:5]
            ]
            deadline = time.monotonic() + 10
            while http.get("/readyz").json().get("unhandled_events") and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            ready = http.get("/readyz")
            customer = http.get("/v1/customers/cus_live_6", headers=auth)
        assert [a.status_code for a in answers] == [200] * 25
        assert sum(a.json()["duplicate"] for a in answers) == 5
        assert ready.status_code == 200
        assert ready.json()["unhandled_events"] == 0
        # Committed before the 2xx: a separate connection sees every acknowledged event.
        assert count_events(fresh_database) == 20
        assert customer.status_code == 200, customer.text
        # 7 seats × 1000 = 7000, new on the subscription's first day.
        assert customer.json()["mrr"] == [{"amount": 7000, "currency": "usd", "display": "70.00"}]
        assert customer.json()["movements"][0]["event_ids"] == ["evt_live_6"]

    def test_concurrent_deliveries_of_one_event_store_it_once(self, fresh_database: Database):
        app = create_app(make_settings(fresh_database.url), fresh_database.engine)
        body = event_body(make_event(event_id="evt_race"))

        with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:

            def deliver(_: int) -> httpx.Response:
                return http.post("/webhooks/stripe", content=body, headers=signed_headers(body))

            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(deliver, range(16)))
        assert [a.status_code for a in answers] == [200] * 16
        assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 15
        assert count_events(fresh_database) == 1
