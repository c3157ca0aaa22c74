"""Envelope validation before anything is stored (issue 16): every input that used to
answer 500 (and reset the keep-alive connection) answers 400 with a reason, and stores
nothing, identically on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service.webhooks.schemas import EventParseError, parse_event
from tests.signing import event_body, sign, signed_headers
from tests.webhooks.test_endpoints import URL, make_event, post, stored_count


def with_object(**fields: Any) -> dict[str, Any]:
    obj = {"id": "sub_1Qxyz", "object": "subscription", "customer": "cus_Rabc", **fields}
    return make_event(obj=obj)


def assert_refused(response: Any, reason: str, mentions: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["reason"] == reason
    assert mentions in error["message"]


class TestEnvelopeRefused:
    @pytest.mark.parametrize(
        ("event", "mentions"),
        [
            ({**make_event(), "created": 10**20}, "created"),
            ({**make_event(), "created": -1}, "created"),
            (make_event(event_id="evt_\x00nul"), "id"),
            (make_event(type_="invoice.paid\x00"), "type"),
            (make_event(account="acct_\x00"), "account"),
            (with_object(customer="cus_\x00"), "data.object.customer"),
            (with_object(customer={"id": "cus_\x00", "object": "customer"}), "customer"),
            (with_object(id="sub_\x01"), "data.object.id"),
            (with_object(object="x" * 65), "data.object.object"),
            (make_event(event_id="e" * 256), "id"),
            (make_event(account="acct_" + "a" * 251), "account"),
            (with_object(id="s" * 256), "data.object.id"),
            (with_object(customer="c" * 256), "data.object.customer"),
            ({**make_event(), "api_version": "v" * 65}, "api_version"),
        ],
    )
    def test_refused_with_reason_and_nothing_stored(
        self, client: TestClient, db_session: Session, event: dict[str, Any], mentions: str
    ):
        response = post(client, event_body(event))
        assert_refused(response, "not_an_event", mentions)
        assert stored_count(db_session) == 0

    def test_lone_surrogate_is_not_json(self, client: TestClient, db_session: Session):
        # Valid JSON escapes, but no UTF-8 text: PostgreSQL could not store it.
        response = post(client, event_body(make_event(event_id="evt_\ud800")))
        assert_refused(response, "malformed_json", "JSON")
        assert stored_count(db_session) == 0

    def test_limits_themselves_are_accepted(self, client: TestClient, db_session: Session):
        event = with_object(id="s" * 255, customer="c" * 255, object="o" * 64)
        event = {
            **make_event(event_id="e" * 255, account="acct_" + "a" * 250),
            "data": event["data"],
        }
        assert post(client, event_body(event)).status_code == 200
        assert stored_count(db_session) == 1

    def test_connection_survives_a_refusal(self, client: TestClient, db_session: Session):
        # The 500s closed the keep-alive connection: the good event after it died too.
        assert post(client, event_body(make_event(event_id="evt_\x00"))).status_code == 400
        assert post(client, event_body(make_event(event_id="evt_ok"))).status_code == 200
        assert stored_count(db_session) == 1


class TestSignatureHeader:
    def test_non_ascii_header_is_malformed(self, client: TestClient, db_session: Session):
        body = event_body(make_event())
        response = client.post(URL, content=body, headers=[(b"stripe-signature", b"t=1,v1=\xe9")])
        assert_refused(response, "malformed_signature", "malformed")
        assert stored_count(db_session) == 0

    def test_timestamp_far_in_the_future_is_refused(self, client, db_session):
        body = event_body(make_event())
        ten_years = int(time.time()) + 10 * 365 * 86400
        response = post(client, body, signed_headers(body, timestamp=ten_years))
        assert_refused(response, "future_timestamp", "future")
        assert stored_count(db_session) == 0

    def test_future_within_tolerance_is_accepted(self, client, db_session):
        # Clock skew between Stripe and us stays allowed, as for old timestamps.
        body = event_body(make_event())
        headers = signed_headers(body, timestamp=int(time.time()) + 200)
        assert post(client, body, headers).status_code == 200

    def test_huge_timestamp_is_malformed_not_500(self, client, db_session):
        body = event_body(make_event())
        header = f"t={'9' * 5000},v1={sign(body).split('v1=')[1]}"
        response = post(client, body, {"Stripe-Signature": header})
        assert_refused(response, "malformed_signature", "malformed")


_text = st.text(st.characters(codec="utf-8"), max_size=300)


class TestParseIsTotal:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(
        id_=_text,
        type_=_text,
        account=st.one_of(st.none(), _text),
        customer=st.one_of(st.none(), _text, st.integers()),
        obj=st.one_of(st.none(), _text),
        created=st.integers(min_value=-(10**21), max_value=10**21),
    )
    def test_parsed_envelopes_fit_the_columns(self, id_, type_, account, customer, obj, created):
        """Whatever the fields hold, parsing refuses with EventParseError or yields fields
        both engines store as they are: printable and within the column limits."""
        event = {
            "id": id_,
            "type": type_,
            "created": created,
            "account": account,
            "data": {"object": {"id": "sub_1", "object": obj, "customer": customer}},
        }
        try:
            envelope = parse_event(event_body(event))
        except EventParseError as exc:
            assert exc.reason == "not_an_event"
            return
        for value, limit in [
            (envelope.id, 255),
            (envelope.type, 255),
            (envelope.account or "", 255),
            (envelope.customer_id or "", 255),
            (envelope.object_type or "", 64),
        ]:
            assert len(value) <= limit and value.isprintable()
        assert 0 <= envelope.created < 2**63
