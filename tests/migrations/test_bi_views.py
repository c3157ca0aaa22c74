"""The bi_* views (migration 0017) on both engines: each returns the hand-computed rows of a
small account built from signed webhooks through the app, their columns are those README.md
documents, a role granted as README.md says reads them and no table, and the downgrade
removes them.

The account, reporting in USD (EUR at 1.10 from 1 January 2025, no GBP rate):
* cus_a: 2 seats at 25.00 from 1 January (50.00), 3 seats from 10 March (75.00); an
  invoice failed on 1 March and was paid on the retry of 4 March.
* cus_b: 30.00 from 1 January. January and February are closed (MRR 80.00, then 102.00),
  then a cancellation dated 10 February arrives: February is restated (churned −30.00,
  MRR at its end 72.00, two customers).
* cus_c: EUR 20.00 from 1 February (USD 22.00); an invoice failed on 1 April, still open.
* cus_d: a trial from 22 March, never any MRR.
* cus_e: GBP 10.00 from 5 April, no rate: left out of every reporting amount.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from service.db import downgrade, upgrade
from service.metrics.models import ClosedPeriod, Restatement
from service.metrics.refresh import refresh_account
from service.projector.service import project_pending
from service.settings import LedgerOptions
from tests.conftest import API_KEY, WRITE_KEY, Database
from tests.factories import DAY, T0, item, price_payload, subscription_payload
from tests.migrations.revisions import revision_named
from tests.payments.factories import invoice_payload
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

README = Path(__file__).resolve().parents[2] / "README.md"
READ = {"Authorization": f"Bearer {API_KEY}"}
WRITE = {"Authorization": f"Bearer {WRITE_KEY}"}
TODAY = date(2025, 4, 30)
NOW = T0 + 119 * DAY  # 2025-04-30T00:00:00Z
FEB_1, FEB_10, MAR_1, MAR_4 = T0 + 31 * DAY, T0 + 40 * DAY, T0 + 59 * DAY, T0 + 62 * DAY
MAR_10, MAR_22, APR_1, APR_4, APR_5 = (T0 + n * DAY for n in (68, 80, 90, 93, 94))
SEATS = price_payload(id="price_seat", unit_amount=2500, nickname="Seats")
BASIC = price_payload(id="price_basic", unit_amount=3000)
EURO = price_payload(id="price_eur", currency="eur", unit_amount=2000, nickname="Euro")
POUND = price_payload(id="price_gbp", currency="gbp", unit_amount=1000)


def utc(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def same_instant(view: datetime | None, stored: datetime | None) -> bool:
    """SQLite's views give instants to the millisecond (rounded), PostgreSQL's to the
    microsecond; the ORM reads SQLite's timestamps without their zone, which is UTC."""
    if view is None or stored is None:
        return view is stored
    aware = stored if stored.tzinfo is not None else stored.replace(tzinfo=UTC)
    return abs(view - aware) <= timedelta(milliseconds=1)


# --- the README's tables ------------------------------------------------------------------


def section() -> str:
    """README's "SQL views for BI tools", to the next top-level heading."""
    return README.read_text().split("### SQL views for BI tools", 1)[1].split("\n## ", 1)[0]


def documented() -> dict[str, list[tuple[str, str]]]:
    """Per view under README's "SQL views for BI tools", its (column, type) rows in order;
    a row may name several columns of one type."""
    views: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in section().splitlines():
        heading = re.fullmatch(r"#### `(bi_\w+)`", line)
        if heading:
            current = views.setdefault(heading.group(1), [])
        elif current is not None and line.startswith("| `"):
            names, kind = (cell.strip() for cell in line.split("|")[1:3])
            current += [(name, kind) for name in re.findall(r"`(\w+)`", names)]
    return views


VIEWS = documented()


# --- reading the views -------------------------------------------------------------------


def _normalized(backend: str, kind: str, value: Any) -> Any:
    """A view's value as Python, after checking it has its documented type on `backend`."""
    if value is None:
        return None
    if kind == "boolean":
        assert isinstance(value, bool) if backend == "postgresql" else value in (0, 1)
        return bool(value)
    if kind == "date":
        if backend == "postgresql":
            assert type(value) is date
            return value
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", value)
        return date.fromisoformat(value)
    if kind == "timestamp":
        if backend == "postgresql":
            assert isinstance(value, datetime) and value.utcoffset() is not None
            return value
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", value), value
        return datetime.fromisoformat(value)
    if kind == "JSON":
        assert isinstance(value, str)
        return json.loads(value)
    assert isinstance(value, int if kind == "integer" else str), (kind, value)
    return value


def read(session: Session, view: str, order: str) -> list[dict[str, Any]]:
    backend = session.get_bind().dialect.name
    kinds = dict(VIEWS[view])
    rows = session.execute(text(f"SELECT * FROM {view} ORDER BY {order}")).mappings()
    return [{k: _normalized(backend, kinds[k], v) for k, v in row.items()} for row in rows]


# --- the account ---------------------------------------------------------------------------


def post(client: TestClient, event_id: str, type_: str, obj: dict[str, Any], at: int) -> None:
    event = make_event(event_id=event_id, type_=type_, obj=obj)
    event["created"] = at
    body = event_body(event)
    answer = client.post("/webhooks/stripe", content=body, headers=signed_headers(body))
    assert answer.status_code == 200, answer.text


def subscription(
    client: TestClient, event_id: str, customer: str, price: dict[str, Any], at: int, *,
    type_: str = "created", quantity: int = 1, started: int | None = None, **changes: Any,
) -> None:  # fmt: skip
    obj = subscription_payload(
        id=f"sub_{customer[4:]}", customer=customer, created=started or at,
        current_period_start=at, current_period_end=at + 30 * DAY,
        items=[item(price, quantity)], **changes,
    )  # fmt: skip
    post(client, event_id, f"customer.subscription.{type_}", obj, at)


def invoice(client: TestClient, event_id: str, type_: str, at: int, **payload: Any) -> None:
    post(client, event_id, f"invoice.{type_}", invoice_payload(created=at, **payload), at)


def project_and_refresh(session: Session) -> None:
    while project_pending(session, LedgerOptions(), now=NOW):
        pass
    refresh_account(session, "", today=TODAY)
    session.commit()


@pytest.fixture
def account(client: TestClient, db_session: Session) -> Session:
    rate = {"rates": [{"currency": "eur", "day": "2025-01-01", "rate": "1.10"}]}
    assert client.put("/v1/fx-rates", json=rate, headers=WRITE).status_code == 200
    subscription(client, "evt_a_created", "cus_a", SEATS, T0, quantity=2,
                 metadata={"region": "eu"})  # fmt: skip
    subscription(client, "evt_b_created", "cus_b", BASIC, T0)
    subscription(client, "evt_c_created", "cus_c", EURO, FEB_1)
    subscription(client, "evt_a_upgraded", "cus_a", SEATS, MAR_10, type_="updated",
                 quantity=3, started=T0, metadata={"region": "eu"})  # fmt: skip
    subscription(client, "evt_d_created", "cus_d", BASIC, MAR_22, status="trialing",
                 trial_start=MAR_22, trial_end=MAR_22 + 30 * DAY)  # fmt: skip
    subscription(client, "evt_e_created", "cus_e", POUND, APR_5)
    a1 = {"id": "in_a1", "customer": "cus_a", "subscription": "sub_a", "amount_due": 5000}
    invoice(client, "evt_a1_failed", "payment_failed", MAR_1, **a1, next_payment_attempt=MAR_4)
    invoice(client, "evt_a1_paid", "paid", MAR_4, **a1, status="paid", attempt_count=2,
            amount_paid=5000, paid_at=MAR_4)  # fmt: skip
    c1 = {"id": "in_c1", "customer": "cus_c", "subscription": "sub_c", "currency": "eur"}
    invoice(client, "evt_c1_failed", "payment_failed", APR_1, **c1, amount_due=2000,
            next_payment_attempt=APR_4)  # fmt: skip
    project_and_refresh(db_session)
    for month in ("2025-01", "2025-02"):
        answer = client.post(f"/v1/periods/{month}/close", headers=WRITE)
        assert answer.status_code == 201, answer.text
    details = {"reason": "cancellation_requested", "feedback": "too_expensive",
               "comment": "pricey"}  # fmt: skip
    subscription(client, "evt_late_cancel", "cus_b", BASIC, FEB_10, type_="deleted",
                 started=T0, status="canceled", ended_at=FEB_10, canceled_at=FEB_10,
                 cancellation_details=details)  # fmt: skip
    # Its refresh, as of the scenario's today again (the closes refreshed as of the real
    # one), restates February.
    project_and_refresh(db_session)
    return db_session


# --- the views' rows -----------------------------------------------------------------------


class TestRows:
    def test_customers(self, account: Session):
        rows = read(account, "bi_customers", "customer_id")
        assert [tuple(r.values()) for r in rows] == [
            ("", "cus_a", "active", 7500, "usd", False, date(2025, 1, 1), date(2025, 3, 10)),
            ("", "cus_b", "churned", 0, "usd", False, date(2025, 1, 1), date(2025, 2, 10)),
            ("", "cus_c", "active", 2200, "usd", False, date(2025, 2, 1), date(2025, 2, 1)),
            ("", "cus_d", "never_active", 0, None, False, None, None),
            ("", "cus_e", "active", 0, "usd", True, date(2025, 4, 5), date(2025, 4, 5)),
        ]

    def test_customer_mrr(self, account: Session):
        rows = read(account, "bi_customer_mrr", "customer_id, currency")
        d = date
        assert [tuple(r.values()) for r in rows] == [
            ("", "cus_a", "usd", 7500, "usd", 7500, d(2025, 1, 1), d(2025, 3, 10), "expansion"),
            ("", "cus_b", "usd", 0, "usd", 0, d(2025, 1, 1), d(2025, 2, 10), "churn"),
            ("", "cus_c", "eur", 2000, "usd", 2200, d(2025, 2, 1), d(2025, 2, 1), "new"),
            ("", "cus_e", "gbp", 1000, "usd", None, d(2025, 4, 5), d(2025, 4, 5), "new"),
        ]

    def test_subscriptions(self, account: Session):
        rows = read(account, "bi_subscriptions", "subscription_id")
        base = {"account": "", "cancel_at_period_end": False, "ended_at": None, "metadata": {}}
        assert rows == [
            {**base, "subscription_id": "sub_a", "customer_id": "cus_a", "status": "active",
             "currency": "usd", "mrr_minor": 7500, "plan": "price_seat", "plan_name": "Seats",
             "billing_interval": "month", "started_at": utc(T0),
             "last_event_id": "evt_a_upgraded", "metadata": {"region": "eu"}},
            {**base, "subscription_id": "sub_b", "customer_id": "cus_b", "status": "canceled",
             "currency": "usd", "mrr_minor": 0, "plan": "price_basic", "plan_name": None,
             "billing_interval": "month", "started_at": utc(T0), "ended_at": utc(FEB_10),
             "last_event_id": "evt_late_cancel"},
            {**base, "subscription_id": "sub_c", "customer_id": "cus_c", "status": "active",
             "currency": "eur", "mrr_minor": 2000, "plan": "price_eur", "plan_name": "Euro",
             "billing_interval": "month", "started_at": utc(FEB_1),
             "last_event_id": "evt_c_created"},
            {**base, "subscription_id": "sub_d", "customer_id": "cus_d", "status": "trialing",
             "currency": "usd", "mrr_minor": 0, "plan": "price_basic", "plan_name": None,
             "billing_interval": "month", "started_at": utc(MAR_22),
             "last_event_id": "evt_d_created"},
            {**base, "subscription_id": "sub_e", "customer_id": "cus_e", "status": "active",
             "currency": "gbp", "mrr_minor": 1000, "plan": "price_gbp", "plan_name": None,
             "billing_interval": "month", "started_at": utc(APR_5),
             "last_event_id": "evt_e_created"},
        ]  # fmt: skip

    def test_movements(self, account: Session):
        rows = read(account, "bi_movements", "customer_id, day")
        ids = [r.pop("movement_id") for r in rows]
        assert len(set(ids)) == 6
        none = {"churn_reason": None, "churn_feedback": None, "churn_comment": None}
        usd = {"account": "", "reporting_currency": "usd", **none}

        def row(customer: str, currency: str, day: date, kind: str, before: int, after: int,
                rate: str | None, reported: tuple[int, int] | None, event: str,
                **churn: str) -> dict[str, Any]:  # fmt: skip
            r_from, r_to = reported or (None, None)
            return {
                **usd, "customer_id": customer, "currency": currency, "day": day,
                "kind": kind, "from_mrr_minor": before, "to_mrr_minor": after,
                "amount_minor": after - before, "fx_rate": rate,
                "from_mrr_reporting_minor": r_from, "to_mrr_reporting_minor": r_to,
                "amount_reporting_minor": None if reported is None else r_to - r_from,
                "event_ids": [event], "subscription_ids": [f"sub_{customer[4:]}"], **churn,
            }  # fmt: skip

        assert rows == [
            row("cus_a", "usd", date(2025, 1, 1), "new", 0, 5000, "1", (0, 5000),
                "evt_a_created"),
            row("cus_a", "usd", date(2025, 3, 10), "expansion", 5000, 7500, "1",
                (5000, 7500), "evt_a_upgraded"),
            row("cus_b", "usd", date(2025, 1, 1), "new", 0, 3000, "1", (0, 3000),
                "evt_b_created"),
            row("cus_b", "usd", date(2025, 2, 10), "churn", 3000, 0, "1", (3000, 0),
                "evt_late_cancel", churn_reason="voluntary", churn_feedback="too_expensive",
                churn_comment="pricey"),
            row("cus_c", "eur", date(2025, 2, 1), "new", 0, 2000, "1.10", (0, 2200),
                "evt_c_created"),
            row("cus_e", "gbp", date(2025, 4, 5), "new", 0, 1000, None, None,
                "evt_e_created"),
        ]  # fmt: skip

    def test_movement_events(self, account: Session):
        rows = read(account, "bi_movement_events", "customer_id, day")
        movements = {
            (m["customer_id"], m["day"]): m["movement_id"]
            for m in read(account, "bi_movements", "movement_id")
        }
        assert [r.pop("movement_id") for r in rows] == [
            movements[(r["customer_id"], r["day"])] for r in rows
        ]
        assert [tuple(r.values()) for r in rows] == [
            ("", "cus_a", "usd", date(2025, 1, 1), "evt_a_created"),
            ("", "cus_a", "usd", date(2025, 3, 10), "evt_a_upgraded"),
            ("", "cus_b", "usd", date(2025, 1, 1), "evt_b_created"),
            ("", "cus_b", "usd", date(2025, 2, 10), "evt_late_cancel"),
            ("", "cus_c", "eur", date(2025, 2, 1), "evt_c_created"),
            ("", "cus_e", "gbp", date(2025, 4, 5), "evt_e_created"),
        ]

    def test_mrr_monthly(self, account: Session):
        rows = read(account, "bi_mrr_monthly", "plan, month")
        segments = {r["plan"]: r["segment"] for r in rows}
        assert len(set(segments.values())) == 4

        def month(
            plan: str, m: int, start: int, end: int, cust: tuple[int, int], days: int,
            **flows: int,
        ) -> dict[str, Any]:  # fmt: skip
            attrs = {
                "price_seat": ("Seats", "usd", {"region": "eu"}),
                "price_basic": (None, "usd", {}), "price_eur": ("Euro", "eur", {}),
                "price_gbp": (None, "gbp", {}),
            }[plan]  # fmt: skip
            zero = dict.fromkeys(
                ("new_mrr_minor", "expansion_mrr_minor", "contraction_mrr_minor",
                 "churned_mrr_minor", "reactivation_mrr_minor", "new_customers",
                 "reactivated_customers", "churned_customers", "expansions", "contractions",
                 "customers_lost", "customers_gained", "unconverted_movements"), 0,
            )  # fmt: skip
            return {
                "account": "", "reporting_currency": "usd", "segment": segments[plan],
                "plan": plan, "plan_name": attrs[0], "billing_interval": "month",
                "segment_currency": attrs[1], "segment_metadata": attrs[2],
                "month": date(2025, m, 1), "mrr_start_minor": start, "mrr_end_minor": end,
                **zero, "customers_start": cust[0], "customers_end": cust[1],
                "customer_days": days, **flows,
            }  # fmt: skip

        new = {"new_customers": 1, "customers_gained": 1}
        assert rows == [
            # cus_b: churned on 10 February (the late cancellation); no movement since,
            # and the months are still there.
            month("price_basic", 1, 0, 3000, (0, 1), 30, new_mrr_minor=3000, **new),
            month("price_basic", 2, 3000, 0, (1, 0), 10, churned_mrr_minor=-3000,
                  churned_customers=1, customers_lost=1),
            month("price_basic", 3, 0, 0, (0, 0), 0),
            month("price_basic", 4, 0, 0, (0, 0), 0),
            month("price_eur", 2, 0, 2200, (0, 1), 27, new_mrr_minor=2200, **new),
            month("price_eur", 3, 2200, 2200, (1, 1), 31),
            month("price_eur", 4, 2200, 2200, (1, 1), 30),
            # cus_e: no GBP rate, so counted only as an unconverted movement.
            month("price_gbp", 4, 0, 0, (0, 0), 0, unconverted_movements=1),
            month("price_seat", 1, 0, 5000, (0, 1), 30, new_mrr_minor=5000, **new),
            month("price_seat", 2, 5000, 5000, (1, 1), 28),
            month("price_seat", 3, 5000, 7500, (1, 1), 31, expansion_mrr_minor=2500,
                  expansions=1),
            month("price_seat", 4, 7500, 7500, (1, 1), 30),
        ]  # fmt: skip

    def test_mrr_monthly_adds_up_to_the_api(self, account: Session, client: TestClient):
        params = {"start": "2025-01-01", "end": "2025-05-01", "interval": "month"}
        answer = client.get("/v1/metrics/movements", params=params, headers=READ)
        assert answer.status_code == 200, answer.text
        api = [(p["mrr_start"]["amount"], p["mrr_end"]["amount"], p["churned_mrr"]["amount"])
               for p in answer.json()["data"]]  # fmt: skip
        totals = account.execute(
            text(
                "SELECT SUM(mrr_start_minor), SUM(mrr_end_minor), SUM(churned_mrr_minor)"
                " FROM bi_mrr_monthly GROUP BY month ORDER BY month"
            )
        ).all()
        assert [tuple(int(v) for v in t) for t in totals] == api
        assert api == [(0, 8000, 0), (8000, 7200, -3000), (7200, 9700, 0), (9700, 9700, 0)]

    def test_failed_payments(self, account: Session):
        rows = read(account, "bi_failed_payments", "invoice_id")
        none = dict.fromkeys(("lost_reason", "decline_code", "failure_message"))
        assert rows == [
            {"account": "", "invoice_id": "in_a1", "customer_id": "cus_a",
             "subscription_id": "sub_a", "currency": "usd", "amount_due_minor": 5000,
             "status": "recovered", **none, "attempts": 2, "first_failed_at": utc(MAR_1),
             "last_failed_at": utc(MAR_1), "next_retry_at": None,
             "recovered_at": utc(MAR_4), "closed_at": utc(MAR_4),
             "time_to_recover_seconds": 3 * DAY, "recovered_on_attempt": 2,
             "billing_reason": "subscription_cycle", "action_required": False,
             "event_ids": ["evt_a1_failed", "evt_a1_paid"]},
            {"account": "", "invoice_id": "in_c1", "customer_id": "cus_c",
             "subscription_id": "sub_c", "currency": "eur", "amount_due_minor": 2000,
             "status": "open", **none, "attempts": 1, "first_failed_at": utc(APR_1),
             "last_failed_at": utc(APR_1), "next_retry_at": utc(APR_4), "recovered_at": None,
             "closed_at": None, "time_to_recover_seconds": None,
             "recovered_on_attempt": None, "billing_reason": "subscription_cycle",
             "action_required": False, "event_ids": ["evt_c1_failed"]},
        ]  # fmt: skip

    def test_closed_periods(self, account: Session):
        rows = read(account, "bi_closed_periods", "month")
        closes = {c.period: c for c in account.scalars(select(ClosedPeriod))}
        (restatement,) = account.scalars(select(Restatement))
        jan = dict.fromkeys(
            ("mrr_start_minor", "customers_start", "expansion_mrr_minor",
             "contraction_mrr_minor", "churned_mrr_minor", "reactivation_mrr_minor",
             "reactivated_customers", "churned_customers", "expansions", "contractions",
             "unconverted_movements"), 0,
        )  # fmt: skip
        jan |= {"mrr_end_minor": 8000, "customers_end": 2, "new_mrr_minor": 8000,
                "new_customers": 2}  # fmt: skip
        feb_at_close = jan | {
            "mrr_start_minor": 8000, "customers_start": 2, "mrr_end_minor": 10200,
            "customers_end": 3, "new_mrr_minor": 2200, "new_customers": 1,
        }  # fmt: skip
        feb = feb_at_close | {
            "mrr_end_minor": 7200, "customers_end": 2, "churned_mrr_minor": -3000,
            "churned_customers": 1,
        }  # fmt: skip

        def period(m: int, now: dict[str, int], at_close: dict[str, int]) -> dict[str, Any]:
            figures = {}
            for name, value in now.items():
                figures[name], figures[f"{name}_at_close"] = value, at_close[name]
            return {
                "account": "", "reporting_currency": "usd", "month": date(2025, m, 1),
                "as_of": utc(APR_5), **figures,
            }  # fmt: skip

        instants = [(r.pop("closed_at"), r.pop("last_restated_at")) for r in rows]
        assert rows == [
            {**period(1, jan, jan), "restatements": 0},
            {**period(2, feb, feb_at_close), "restatements": 1},
        ]
        expected = [(closes[date(2025, 1, 1)].closed_at, None),
                    (closes[date(2025, 2, 1)].closed_at, restatement.detected_at)]  # fmt: skip
        for (closed, restated), (closed_at, detected_at) in zip(instants, expected, strict=True):
            assert same_instant(closed, closed_at) and same_instant(restated, detected_at)

    def test_restatements(self, account: Session):
        # Sorted here: the engines' collations order `:` and `_` apart.
        rows = sorted(read(account, "bi_restatements", "figure"), key=lambda r: r["figure"])
        (restatement,) = account.scalars(select(Restatement))
        detected = [r.pop("detected_at") for r in rows]
        assert all(same_instant(d, restatement.detected_at) for d in detected)
        same = {"restatement_id": restatement.id, "account": "", "reporting_currency": "usd",
                "month": date(2025, 2, 1), "event_ids": ["evt_late_cancel"]}  # fmt: skip
        assert [{**same, "figure": f, "old_value": o, "new_value": n, "difference": n - o}
                for f, o, n in (
                    # Figures without a bi_closed_periods column keep their key.
                    ("churn_reason:voluntary:too_expensive:churned_mrr", 0, -3000),
                    ("churn_reason:voluntary:too_expensive:churns", 0, 1),
                    ("churned_customers", 0, 1),
                    ("churned_mrr_minor", 0, -3000),
                    ("cohort:2025-01:active_customers", 2, 1),
                    ("cohort:2025-01:cohort_mrr", 8000, 5000),
                    # Feb 1: a and b; 2–28: c too (83). Then 2–10: 3, 11–28: a and c (65).
                    ("customer_days", 83, 65),
                    ("customers_end", 3, 2),
                    ("customers_lost", 0, 1),
                    ("mrr_end_minor", 10200, 7200),
                )] == rows  # fmt: skip

    def test_json_text_is_the_same_on_both_engines(self, account: Session):
        (ids,) = account.execute(
            text("SELECT event_ids FROM bi_failed_payments WHERE invoice_id = 'in_a1'")
        ).one()
        assert ids == '["evt_a1_failed", "evt_a1_paid"]'


# --- columns, the read-only role, the downgrade -------------------------------------------


class TestInterface:
    def test_readme_documents_nine_views(self):
        # The parse itself can go wrong: every view found, every column of a known type.
        assert len(VIEWS) == 9
        kinds = {k for columns in VIEWS.values() for _, k in columns}
        assert kinds == {"text", "integer", "date", "timestamp", "boolean", "JSON"}

    def test_columns_are_the_documented_ones(self, db_session: Session):
        found = set(inspect(db_session.connection()).get_view_names())
        assert {v for v in found if v.startswith("bi_")} == set(VIEWS)
        for view, columns in VIEWS.items():
            result = db_session.execute(text(f"SELECT * FROM {view} LIMIT 0"))
            assert list(result.keys()) == [name for name, _ in columns], view

    def test_postgresql_column_types(self, db_session: Session):
        if db_session.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite views have no declared types (values: TestRows)")
        expected = {
            "text": {"text", "character varying"}, "JSON": {"text"},
            "integer": {"bigint", "integer"}, "date": {"date"},
            "timestamp": {"timestamp with time zone"}, "boolean": {"boolean"},
        }  # fmt: skip
        rows = db_session.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name LIKE 'bi\\_%'"
            )
        ).all()
        types = {(t, c): kind for t, c, kind in rows}
        for view, columns in VIEWS.items():
            for name, kind in columns:
                assert types[(view, name)] in expected[kind], (view, name, types[(view, name)])

    def test_readme_role_reads_the_views_only(self, account: Session):
        if account.get_bind().dialect.name != "postgresql":
            pytest.skip("roles are PostgreSQL's")
        snippet = section().split("```sql\n", 1)[1].split("```", 1)[0]
        assert "CREATE ROLE bi_reader" in snippet
        granted = re.search(r"GRANT SELECT ON (.*?) TO", snippet, re.S)
        assert granted is not None
        assert {v.strip() for v in granted.group(1).split(",")} == set(VIEWS)
        # Roles are cluster-wide but transactional: this one is rolled back with the test.
        schema = account.scalar(text("SELECT current_schema()"))
        role = f"bi_reader_{schema}"
        database = account.scalar(text("SELECT current_database()"))
        statements = (
            snippet.replace("bi_reader", role)
            .replace("churn_ledger", f'"{database}"')
            .replace("SCHEMA public", f'SCHEMA "{schema}"')
        )
        for statement in filter(str.strip, statements.split(";")):
            account.execute(text(statement))
        account.execute(text(f"SET LOCAL ROLE {role}"))
        counts = {v: account.scalar(text(f"SELECT count(*) FROM {v}")) for v in VIEWS}
        assert counts["bi_movements"] == 6
        # Neither the tables nor writes through a view (PostgreSQL can update simple ones).
        for statement in (
            "SELECT 1 FROM mrr_movements",
            "SELECT 1 FROM stripe_events",
            "UPDATE bi_subscriptions SET status = 'canceled'",
        ):
            denied = pytest.raises(ProgrammingError, match="permission denied")
            with denied, account.begin_nested():
                account.execute(text(statement))

    def test_downgrade_removes_them(self, fresh_database: Database):
        engine: Engine = fresh_database.engine
        revision = revision_named("_bi_views")
        tables = set(inspect(engine).get_table_names())
        downgrade(engine, str(revision.down_revision))
        assert not [v for v in inspect(engine).get_view_names() if v.startswith("bi_")]
        assert set(inspect(engine).get_table_names()) == tables
        upgrade(engine)
        assert {v for v in inspect(engine).get_view_names() if v.startswith("bi_")} == set(VIEWS)
