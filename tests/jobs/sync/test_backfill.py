"""Backfill of a mocked Stripe account (respx at the HTTP layer), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.sync.backfill import BackfillOptions, BackfillReport, run_backfill
from jobs.sync.history import is_synthetic
from jobs.sync.stripe_client import StripeApi
from service.ledger.models import DataQualityWarning, MrrMovement, SubscriptionState
from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.sync.models import SyncCursor
from service.webhooks.models import EventSource, StripeEvent
from tests.jobs.sync.account import EXPECTED_LEDGER, NOW
from tests.jobs.sync.fake_stripe import FakeStripe, error_response
from tests.jobs.sync.helpers import Sleeps, ledger_rows, make_api, mocked_account
from tests.ledger.scenario import day
from tests.signing import event_body, signed_headers

OPTIONS = BackfillOptions(now=NOW)


def backfill(session: Session, api: StripeApi, **options: object) -> BackfillReport:
    values: dict[str, object] = {"now": NOW, **options}
    return run_backfill(session, api, BackfillOptions(**values), LedgerOptions())  # type: ignore[arg-type]


def stored(session: Session) -> list[tuple[str, str, str, int]]:
    rows = session.execute(
        select(
            StripeEvent.account, StripeEvent.event_id, StripeEvent.type, StripeEvent.created
        ).order_by(StripeEvent.account, StripeEvent.event_id)
    ).all()
    return [tuple(r) for r in rows]


class TestHandComputedLedger:
    def test_ledger_of_the_known_history(self, db_session: Session, api: StripeApi):
        backfill(db_session, api)
        assert ledger_rows(db_session) == EXPECTED_LEDGER

        churn = db_session.scalars(select(MrrMovement).where(MrrMovement.movement == "churn")).one()
        assert (churn.churn_reason.value, churn.churn_feedback) == ("voluntary", "too_expensive")
        states = {
            s.subscription_id: (s.status, s.mrr)
            for s in db_session.scalars(select(SubscriptionState))
        }
        assert states == {
            "sub_a": ("canceled", 0),
            "sub_a2": ("active", 4900),
            "sub_b": ("active", 11760),  # 3 × 4900 × 0.8
            "sub_c": ("active", 10000),
            "sub_d": ("active", 9800),
            "sub_e": ("canceled", 0),
        }
        assert db_session.scalars(select(DataQualityWarning)).all() == []

    def test_real_events_as_is_synthetic_only_before_them(
        self, db_session: Session, api: StripeApi, fake: FakeStripe
    ):
        backfill(db_session, api)
        rows = {e.event_id: e for e in db_session.scalars(select(StripeEvent))}
        assert {e.source for e in rows.values()} == {EventSource.backfill}
        for event in fake.events:
            if event["type"] == "charge.succeeded":
                assert event["id"] not in rows  # not a type the backfill lists
                continue
            assert json.loads(rows[event["id"]].body) == event
        # sub_b: Stripe still has its day-394 update; our snapshots stop before it.
        synthetic_b = [
            e for e in rows.values() if e.object_id == "sub_b" and is_synthetic(e.event_id)
        ]
        assert synthetic_b and all(e.created < day(394) for e in synthetic_b)
        # sub_d was created inside the window: Stripe's events tell all of it.
        assert not [e for e in rows.values() if e.object_id == "sub_d" and is_synthetic(e.event_id)]
        # The day-394 invoice has a real event: no synthetic one beside it.
        assert not [e for e in rows if e.startswith(f"evt_bf_in_sub_b_{day(394)}")]
        assert "evt_bf_sub_a_created_" + str(day(10)) in rows

    def test_lists_paginate_and_ask_for_what_mrr_needs(
        self, db_session: Session, api: StripeApi, fake: FakeStripe
    ):
        backfill(db_session, api)
        subs = fake.calls("/v1/subscriptions")
        # 6 subscriptions, newest first, 2 per page: [d, c], [a2, e], [b, a], each page
        # asked for after the last id of the one before.
        assert [c.get("starting_after") for c in subs] == [None, "sub_c", "sub_e"]
        assert {c["status"] for c in subs} == {"all"}
        assert subs[0]["expand[0]"] == "data.discounts"
        assert subs[0]["expand[1]"] == "data.items.data.discounts"
        assert {v for k, v in fake.calls("/v1/events")[0].items() if k.startswith("types[")} >= {
            "customer.subscription.updated",
            "customer.discount.created",
            "invoice.paid",
        }
        # in_a3 embeds one of its three lines: the rest is fetched.
        assert len(fake.calls("/v1/invoices/in_a3/lines")) == 2
        # The coupon behind sub_b's discount, once. Lines name prices by id, but every one
        # of them is on some listed item already: nothing to retrieve.
        assert len(fake.calls("/v1/coupons/coupon_20")) == 1
        assert not [r for r in fake.requests if r.url.path.startswith("/v1/prices/")]

    def test_price_only_in_history_is_retrieved_once(
        self, db_session: Session, api: StripeApi, fake: FakeStripe
    ):
        # Only sub_a (now on price_99) and sub_c remain: price_49 is only on old lines.
        fake.subscriptions = [s for s in fake.subscriptions if s["id"] in ("sub_a", "sub_c")]
        backfill(db_session, api)
        calls = fake.calls("/v1/prices/price_49")
        assert len(calls) == 1
        assert (calls[0]["expand[0]"], calls[0]["expand[1]"]) == ("tiers", "currency_options")
        assert ledger_rows(db_session)[:3] == EXPECTED_LEDGER[:3]


class TestIdempotence:
    def test_second_run_stores_nothing_and_changes_nothing(
        self, db_session: Session, api: StripeApi
    ):
        first = backfill(db_session, api)
        events, ledger = stored(db_session), ledger_rows(db_session)
        ids = db_session.scalars(select(MrrMovement.id).order_by(MrrMovement.id)).all()
        second = backfill(db_session, api)
        assert first.stored > 0
        assert second.stored == 0
        assert stored(db_session) == events
        assert ledger_rows(db_session) == ledger
        assert db_session.scalars(select(MrrMovement.id).order_by(MrrMovement.id)).all() == ids

    def test_same_events_as_webhooks_afterwards_change_nothing(
        self, db_session: Session, api: StripeApi, fake: FakeStripe, client: TestClient
    ):
        backfill(db_session, api)
        events, ledger = stored(db_session), ledger_rows(db_session)
        for event in fake.events:
            body = event_body(event)  # pretty-printed, as Stripe sends webhooks
            response = client.post("/webhooks/stripe", content=body, headers=signed_headers(body))
            assert response.status_code == 200
            expected_duplicate = event["type"] != "charge.succeeded"
            assert response.json()["duplicate"] is expected_duplicate
        while project_pending(db_session, LedgerOptions(), now=NOW):
            pass
        new = [e for e in stored(db_session) if e not in events]
        assert [e[1] for e in new] == ["evt_1Charge0Ok000000000001"]
        assert ledger_rows(db_session) == ledger


class TestRateLimitsAndNetwork:
    def test_429_waits_retry_after_then_succeeds(
        self, db_session: Session, api: StripeApi, fake: FakeStripe, sleeps: Sleeps
    ):
        fake.fail("/v1/customers", error_response(429, "Too many requests", **{"Retry-After": "7"}))
        report = backfill(db_session, api)
        assert sleeps == [7.0]
        assert [c.get("starting_after") for c in fake.calls("/v1/customers")][:2] == [None, None]
        assert report.retries == 1
        assert ledger_rows(db_session) == EXPECTED_LEDGER

    def test_429_without_retry_after_backs_off_exponentially(
        self, db_session: Session, api: StripeApi, fake: FakeStripe, sleeps: Sleeps
    ):
        too_many = error_response(429, "Too many requests")
        fake.fail("/v1/events", too_many, too_many, too_many)
        backfill(db_session, api)
        assert sleeps == [1.0, 2.0, 4.0]

    def test_network_error_then_success(
        self, db_session: Session, api: StripeApi, fake: FakeStripe, sleeps: Sleeps
    ):
        fake.fail("/v1/invoices", httpx.ConnectError("connection reset"))
        backfill(db_session, api)
        assert sleeps == [1.0]  # our loop: the SDK was told not to retry here
        assert ledger_rows(db_session) == EXPECTED_LEDGER

    def test_network_error_retried_by_the_sdk(
        self, db_session: Session, fake: FakeStripe, sleeps: Sleeps
    ):
        api = make_api(sleeps, stripe_max_network_retries=2)
        fake.fail("/v1/subscriptions", httpx.ReadTimeout("timed out"), error_response(503, "down"))
        backfill(db_session, api)
        assert sleeps == []  # the SDK's own retries were enough
        assert len(fake.calls("/v1/subscriptions")) == 3 + 2
        assert ledger_rows(db_session) == EXPECTED_LEDGER

    def test_bounded_a_persistent_failure_stops_the_run(
        self, db_session: Session, api: StripeApi, fake: FakeStripe, sleeps: Sleeps
    ):
        fake.fail("/v1/customers", error_response(500, "boom"), forever=True)
        with pytest.raises(stripe.APIError):
            backfill(db_session, api)
        assert len(fake.calls("/v1/customers")) == 4  # max_attempts, then give up
        assert sleeps == [1.0, 2.0, 4.0]


class TestResume:
    def test_interrupted_run_resumes_without_refetching(
        self, db_session: Session, api: StripeApi, fake: FakeStripe
    ):
        newest_first = sorted(fake.invoices, key=lambda i: (i["created"], i["id"]), reverse=True)
        cursor = newest_first[3]["id"]  # the third page of invoices starts after it
        fault = fake.fail("/v1/invoices", error_response(500, "boom"), starting_after=cursor,
                          forever=True)  # fmt: skip
        with pytest.raises(stripe.APIError):
            backfill(db_session, api)
        cursors = {c.resource: c for c in db_session.scalars(select(SyncCursor))}
        assert cursors["events"].completed and cursors["customers"].completed
        assert (cursors["invoices"].starting_after, cursors["invoices"].completed) == (
            cursor,
            False,
        )
        assert cursors["invoices"].objects == 4
        assert "subscriptions" not in cursors

        fake.faults.remove(fault)
        fake.requests.clear()
        report = backfill(db_session, api)
        assert fake.calls("/v1/events") == [] and fake.calls("/v1/customers") == []
        assert fake.calls("/v1/invoices")[0]["starting_after"] == cursor
        assert report.resources["events"].skipped and report.resources["invoices"].resumed
        assert ledger_rows(db_session) == EXPECTED_LEDGER
        # Finished: no cursor left, so the next backfill is a full (idempotent) pass.
        assert db_session.scalar(select(func.count()).select_from(SyncCursor)) == 0


class TestConnect:
    def test_connected_account_has_its_own_ledger(
        self, db_session: Session, sleeps: Sleeps, client: TestClient
    ):
        with mocked_account("acct_1Connected") as fake:
            backfill(db_session, make_api(sleeps, account="acct_1Connected"),
                     account="acct_1Connected")  # fmt: skip
            assert {r.headers.get("stripe-account") for r in fake.requests} == {"acct_1Connected"}
        # The Connect webhook of a listed event (it names the account) is a duplicate.
        body = event_body(fake.events[0])
        response = client.post("/webhooks/stripe", content=body, headers=signed_headers(body))
        assert response.json()["duplicate"] is True
        with mocked_account() as fake:
            backfill(db_session, make_api(sleeps))
            assert {r.headers.get("stripe-account") for r in fake.requests} == {None}
        assert ledger_rows(db_session, "acct_1Connected") == EXPECTED_LEDGER
        assert ledger_rows(db_session, "") == EXPECTED_LEDGER
        accounts = db_session.execute(
            select(StripeEvent.account, func.count()).group_by(StripeEvent.account)
        ).all()
        assert len(accounts) == 2 and accounts[0][1] == accounts[1][1]


class TestSince:
    def test_since_limits_invoices_and_skips_subscriptions_ended_before(
        self, db_session: Session, api: StripeApi, fake: FakeStripe
    ):
        backfill(db_session, api, since=day(250))
        assert {c["created[gte]"] for c in fake.calls("/v1/invoices")} == {str(day(250))}
        assert "created[gte]" not in fake.calls("/v1/events")[0]  # older than the window
        assert db_session.get(SubscriptionState, ("", "sub_a")) is None  # ended on day 130
        # cus_a's first revenue is now sub_a2 (new, not reactivation): history before
        # --since is what the run was told to ignore.
        assert ledger_rows(db_session)[0] == ("cus_a", 200, "new", 0, 4900)


def test_backfill_fetches_every_type_a_projector_reads():
    # One catalogue (service/stripe_shapes/events.py): a type a projector reads but
    # backfill does not fetch would be missing from every imported account.
    from jobs.sync.backfill import EVENT_TYPES
    from service.stripe_shapes.events import READ_EVENTS

    assert set(EVENT_TYPES) >= READ_EVENTS
    assert len(EVENT_TYPES) <= 20  # Stripe's limit of types per /v1/events call
