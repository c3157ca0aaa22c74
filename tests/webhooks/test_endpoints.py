"""POST /webhooks/stripe over HTTP (httpx TestClient against the ASGI app)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.webhooks.dependencies import verified_stripe_event
from service.webhooks.models import QueuedEvent, StripeEvent
from service.webhooks.signature import WebhookRejected
from tests.signing import WEBHOOK_SECRET, event_body, sign, signed_headers

URL = "/webhooks/stripe"


def make_event(
    event_id: str = "evt_1QabcDEF",
    type_: str = "customer.subscription.created",
    *,
    account: str | None = None,
    api_version: str = "2025-03-31.basil",
    obj: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "api_version": api_version,
        "created": 1735689600,
        "data": {
            "object": obj or {"id": "sub_1Qxyz", "object": "subscription", "customer": "cus_Rabc"}
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_123", "idempotency_key": None},
        "type": type_,
    }
    if account:
        event["account"] = account
    return event


def stored_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(StripeEvent)) or 0


def post(client: TestClient, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        URL, content=body, headers=signed_headers(body) if headers is None else headers
    )


class TestAccepted:
    def test_stores_event_with_its_fields(self, client: TestClient, db_session: Session):
        body = event_body(make_event(account="acct_1Conn"))
        response = post(client, body)
        assert response.status_code == 200
        assert response.json() == {"received": True, "duplicate": False}
        row = db_session.scalars(select(StripeEvent)).one()
        assert (row.account, row.event_id, row.type) == (
            "acct_1Conn",
            "evt_1QabcDEF",
            "customer.subscription.created",
        )
        assert row.api_version == "2025-03-31.basil"
        assert row.created == 1735689600
        assert row.livemode is False
        assert (row.object_type, row.object_id, row.customer_id) == (
            "subscription",
            "sub_1Qxyz",
            "cus_Rabc",
        )
        assert row.received_at is not None
        assert row.source == "webhook"
        # Queued for the projector in the same commit, with the customer it is about.
        queued = db_session.scalars(select(QueuedEvent)).one()
        assert (queued.id, queued.account, queued.customer_id) == (row.id, "acct_1Conn", "cus_Rabc")

    def test_stored_body_is_byte_identical(self, client: TestClient, db_session: Session):
        # Odd spacing, key order and unicode escapes must all survive untouched.
        body = (
            b'{"id":"evt_bytes" ,"type":"invoice.paid","created":1,'
            b'"data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1",'
            b'"description":"caf\\u00e9 \xe2\x82\xac"}}, "livemode":true}\n'
        )
        assert post(client, body).status_code == 200
        row = db_session.scalars(select(StripeEvent)).one()
        assert row.body == body
        assert row.livemode is True

    def test_duplicate_is_stored_once(self, client: TestClient, db_session: Session):
        body = event_body(make_event())
        first, second = post(client, body), post(client, body)
        assert first.json() == {"received": True, "duplicate": False}
        assert second.status_code == 200
        assert second.json() == {"received": True, "duplicate": True}
        assert stored_count(db_session) == 1

    def test_same_event_id_on_two_accounts_is_two_events(
        self, client: TestClient, db_session: Session
    ):
        for account in (None, "acct_A", "acct_B"):
            response = post(client, event_body(make_event(account=account)))
            assert response.json()["duplicate"] is False
        assert stored_count(db_session) == 3

    def test_unused_event_type_is_stored(self, client: TestClient, db_session: Session):
        body = event_body(
            make_event(type_="product.created", obj={"id": "prod_1", "object": "product"})
        )
        assert post(client, body).status_code == 200
        row = db_session.scalars(select(StripeEvent)).one()
        assert (row.type, row.customer_id) == ("product.created", None)

    def test_customer_object_is_its_own_customer(self, client: TestClient, db_session: Session):
        obj = {"id": "cus_Self", "object": "customer", "email": "a@example.com"}
        assert post(client, event_body(make_event(type_="customer.created", obj=obj))).is_success
        assert db_session.scalars(select(StripeEvent.customer_id)).one() == "cus_Self"

    def test_expanded_customer_is_read_by_id(self, client: TestClient, db_session: Session):
        obj = {"id": "in_1", "object": "invoice", "customer": {"id": "cus_X", "object": "customer"}}
        assert post(client, event_body(make_event(type_="invoice.paid", obj=obj))).is_success
        assert db_session.scalars(select(StripeEvent.customer_id)).one() == "cus_X"


class TestSignature:
    def test_several_v1_entries_any_may_match(self, client: TestClient, db_session: Session):
        body = event_body(make_event())
        good = sign(body)
        t, v1 = good.split(",")
        header = f"{t},v1={'0' * 64},{v1},v0=deadbeef"
        assert post(client, body, {"Stripe-Signature": header}).status_code == 200
        assert stored_count(db_session) == 1

    def test_rotation_accepts_old_and_new_secret(self, app, client: TestClient, db_session):
        from tests.conftest import make_settings

        old, new = "whsec_old_secret", "whsec_new_secret"
        app.state.settings = make_settings(
            app.state.settings.database_url, stripe_webhook_secrets=f"{new},{old}"
        )
        for i, secret in enumerate((old, new)):
            body = event_body(make_event(event_id=f"evt_rot_{i}"))
            response = post(client, body, signed_headers(body, secret))
            assert response.status_code == 200, response.text
        stray = event_body(make_event(event_id="evt_rot_stray"))
        assert post(client, stray, signed_headers(stray, WEBHOOK_SECRET)).status_code == 400
        assert stored_count(db_session) == 2


def assert_rejected(response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["reason"] == reason
    assert error["message"]


class TestRejected:
    """Every rejection answers 4xx JSON and stores nothing."""

    @pytest.mark.parametrize(
        ("headers", "reason"),
        [
            ({}, "missing_signature"),
            ({"Stripe-Signature": ""}, "missing_signature"),
            ({"Stripe-Signature": "garbage"}, "malformed_signature"),
            ({"Stripe-Signature": "t=notanumber,v1=abc"}, "malformed_signature"),
            ({"Stripe-Signature": f"t={int(time.time())}"}, "malformed_signature"),
            ({"Stripe-Signature": f"t={int(time.time())},v1={'a' * 64}"}, "invalid_signature"),
        ],
    )
    def test_bad_signature_header(self, client, db_session, headers, reason):
        response = post(client, event_body(make_event()), headers)
        assert_rejected(response, 400, reason)
        assert stored_count(db_session) == 0

    def test_wrong_secret(self, client, db_session):
        body = event_body(make_event())
        response = post(client, body, signed_headers(body, "whsec_someone_else"))
        assert_rejected(response, 400, "invalid_signature")
        assert stored_count(db_session) == 0

    def test_body_tampered_after_signing(self, client, db_session):
        body = event_body(make_event())
        headers = signed_headers(body)
        tampered = body.replace(b"cus_Rabc", b"cus_Evil")
        assert_rejected(post(client, tampered, headers), 400, "invalid_signature")
        assert stored_count(db_session) == 0

    def test_stale_timestamp(self, client, db_session):
        body = event_body(make_event())
        headers = signed_headers(body, timestamp=int(time.time()) - 301)
        assert_rejected(post(client, body, headers), 400, "stale_timestamp")
        assert stored_count(db_session) == 0

    def test_timestamp_within_tolerance_is_accepted(self, client, db_session):
        body = event_body(make_event())
        headers = signed_headers(body, timestamp=int(time.time()) - 250)
        assert post(client, body, headers).status_code == 200

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{not json", "malformed_json"),
            (b"", "malformed_json"),
            (b"[1, 2, 3]", "not_an_event"),
            (b'{"id": "evt_1", "type": "x", "created": 1}', "not_an_event"),
            (b'{"id": "evt_1", "created": 1, "data": {"object": {}}}', "not_an_event"),
            (b'{"type": "x", "created": 1, "data": {"object": {}}}', "not_an_event"),
            (b'{"id": "evt_1", "type": "x", "created": 1, "data": {"object": 5}}', "not_an_event"),
            (b'{"id": "", "type": "x", "created": 1, "data": {"object": {}}}', "not_an_event"),
        ],
    )
    def test_signed_but_not_an_event(self, client, db_session, body, reason):
        assert_rejected(post(client, body), 400, reason)
        assert stored_count(db_session) == 0

    def test_not_utf8(self, client, db_session):
        body = b'{"id": "\xff\xfe"}'
        assert_rejected(
            post(client, body, {"Stripe-Signature": "t=1,v1=ab"}), 400, "invalid_encoding"
        )
        assert stored_count(db_session) == 0

    def test_oversized_body(self, client, db_session):
        event = make_event(obj={"id": "sub_big", "object": "subscription", "pad": "x" * 1_100_000})
        body = event_body(event)
        assert_rejected(post(client, body), 413, "body_too_large")
        assert stored_count(db_session) == 0

    def test_oversized_chunked_body_without_content_length(self, client, db_session):
        body = event_body(make_event(obj={"id": "sub_big", "pad": "y" * 1_100_000}))

        def chunks():
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        response = client.post(URL, content=chunks(), headers=signed_headers(body))
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert_rejected(response, 413, "body_too_large")
        assert stored_count(db_session) == 0

    def test_no_secret_configured_refuses_everything(self, app, client, db_session):
        from tests.conftest import make_settings

        app.state.settings = make_settings(
            app.state.settings.database_url, stripe_webhook_secrets=""
        )
        body = event_body(make_event())
        assert_rejected(post(client, body), 400, "no_secret_configured")
        assert stored_count(db_session) == 0

    def test_rejection_keeps_what_was_stored(self, client, db_session):
        body = event_body(make_event())
        assert post(client, body).status_code == 200
        assert post(client, b"{broken").status_code == 400
        assert post(client, body, {"Stripe-Signature": "t=1,v1=00"}).status_code == 400
        row = db_session.scalars(select(StripeEvent)).one()
        assert row.body == body


class TestTelemetry:
    def test_metrics_count_outcomes_and_rejections(self, client: TestClient):
        body = event_body(make_event())
        post(client, body)
        post(client, body)
        post(client, body, {"Stripe-Signature": "t=1,v1=00"})
        text = client.get("/metrics").text
        assert (
            'churn_ledger_webhook_events_total{outcome="stored",'
            'type="customer.subscription.created"} 1.0' in text
        )
        assert (
            'churn_ledger_webhook_events_total{outcome="duplicate",'
            'type="customer.subscription.created"} 1.0' in text
        )
        assert 'churn_ledger_webhook_rejections_total{reason="invalid_signature"} 1.0' in text
        assert (
            'churn_ledger_http_request_duration_seconds_count{method="POST",'
            'route="/webhooks/stripe",status="200"} 2.0' in text
        )

    def test_log_line_per_webhook_without_secrets_or_body(self, client, caplog):
        body = event_body(
            make_event(
                obj={
                    "id": "sub_1",
                    "object": "subscription",
                    "customer": "cus_1",
                    "secret_marker": "zzTOPzz",
                }
            )
        )
        with caplog.at_level("INFO", logger="churn_ledger"):
            post(client, body)
            post(client, body, {"Stripe-Signature": "t=1,v1=00"})
        records = [r for r in caplog.records if r.name == "churn_ledger.webhooks"]
        assert [r.fields["outcome"] for r in records] == ["stored", "rejected"]
        assert records[0].fields["event_id"] == "evt_1QabcDEF"
        assert records[0].fields["type"] == "customer.subscription.created"
        assert records[0].fields["ms"] >= 0
        assert records[1].fields["reason"] == "invalid_signature"
        dumped = json.dumps([r.fields for r in records]) + " ".join(r.getMessage() for r in records)
        assert "zzTOPzz" not in dumped
        assert WEBHOOK_SECRET not in dumped


class TestFastPath:
    """Which of the two serves the route: with the fast path on, FastAPI's dependencies
    of the route are never solved (an override of its verification that would refuse
    everything changes nothing); off, they are."""

    def test_the_fast_path_serves_the_route_when_on(
        self, app: Any, client: TestClient, settings: Any, db_session: Session
    ):
        def refuse() -> None:
            raise WebhookRejected(400, "overridden", "FastAPI's route answered")

        app.dependency_overrides[verified_stripe_event] = refuse
        response = post(client, event_body(make_event()))
        if settings.webhook_fast_path:
            assert response.status_code == 200
            assert stored_count(db_session) == 1
        else:
            assert response.status_code == 400
            assert response.json()["error"]["message"] == "FastAPI's route answered"
            assert stored_count(db_session) == 0

    def test_other_methods_and_paths_pass_through(self, client: TestClient):
        assert client.get(URL).status_code == 405
        assert client.post(URL + "/x", content=b"{}").status_code == 404
