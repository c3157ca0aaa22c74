"""Ledgers written directly as MrrMovement rows (the projector is tested elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from service.kit.money import convert
from service.ledger.models import MrrMovement, SubscriptionState

# "Today" for the fixed scenario: the job's `through`, so that exposure stops at April's end.
TODAY = date(2025, 4, 30)


@dataclass(frozen=True)
class Step:
    day: date
    mrr: int  # the customer's MRR in `currency` at the end of the day
    rate: str | None = "1"  # to the reporting currency; None: no FX rate known
    reason: str | None = None
    feedback: str | None = None


def classify(before: int, after: int, had_mrr: bool) -> str:
    if before == 0:
        return "reactivation" if had_mrr else "new"
    if after == 0:
        return "churn"
    return "expansion" if after > before else "contraction"


def add_series(
    session: Session,
    customer: str,
    steps: Sequence[Step],
    *,
    currency: str = "usd",
    account: str = "",
    reporting: str = "usd",
) -> None:
    """One (customer, currency) ledger series: each step's `from` is the previous `to`."""
    before, had = 0, False
    for n, s in enumerate(steps):
        if s.rate is None:
            from_r = to_r = None
        else:
            rate = Decimal(s.rate)
            from_r = convert(before, currency, reporting, rate)
            to_r = convert(s.mrr, currency, reporting, rate)
        movement = classify(before, s.mrr, had)
        session.add(
            MrrMovement(
                account=account, customer_id=customer, day=s.day, movement=movement,
                currency=currency, from_mrr=before, to_mrr=s.mrr, delta=s.mrr - before,
                reporting_currency=reporting, fx_rate=s.rate, from_mrr_reporting=from_r,
                to_mrr_reporting=to_r,
                delta_reporting=None if from_r is None or to_r is None else to_r - from_r,
                event_ids=[f"evt_{customer}_{n}"], subscription_ids=[f"sub_{customer}"],
                churn_reason=s.reason if movement == "churn" else None,
                churn_feedback=s.feedback if movement == "churn" else None,
            )
        )  # fmt: skip
        had = had or s.mrr > 0
        before = s.mrr


def add_subscription(
    session: Session,
    customer: str,
    *,
    plan: str,
    interval: str,
    currency: str = "usd",
    mrr: int = 0,
    metadata: dict[str, Any] | None = None,
    account: str = "",
    plan_name: str | None = None,
    started_at: int = 1,
) -> None:
    session.add(
        SubscriptionState(
            account=account, subscription_id=f"sub_{customer}", customer_id=customer,
            status="active" if mrr else "canceled", currency=currency, mrr=mrr, plan=plan,
            plan_name=plan_name, billing_interval=interval, cancel_at_period_end=False,
            started_at=started_at,
            ended_at=None, last_event_id=f"evt_{customer}", metadata_=metadata or {},
        )
    )  # fmt: skip


def d(month: int, day: int) -> date:
    return date(2025, month, day)


def seed_scenario(session: Session, account: str = "") -> None:
    """Ten customers over January-April 2025, reporting in USD (see test_scenario.py)."""
    series: dict[str, tuple[str, str, str, list[Step], dict[str, str]]] = {
        # customer: (plan, billing interval, currency, steps, metadata)
        "c1": ("basic", "month", "usd", [Step(d(1, 5), 5000), Step(d(3, 10), 8000)],
               {"region": "eu"}),
        "c2": ("basic", "month", "usd", [Step(d(1, 10), 5000),
               Step(d(2, 15), 0, reason="voluntary", feedback="too_expensive")], {}),
        "c3": ("pro", "year", "usd", [Step(d(1, 1), 20000)], {}),
        "c4": ("pro", "month", "usd", [Step(d(1, 20), 10000), Step(d(2, 5), 7000),
               Step(d(4, 2), 0, reason="involuntary")], {}),
        "c5": ("basic", "month", "usd", [Step(d(2, 1), 5000),
               Step(d(3, 1), 0, reason="voluntary", feedback="unused"),
               Step(d(4, 15), 5000)], {}),
        # EUR at 1.1 in February, 1.2 on 20 April: 9000 EUR = 9900 USD, then
        # 9000 -> 12000 EUR = 10800 -> 14400 USD, delta 3600: MRR 9900 + 3600 = 13500.
        "c6": ("pro", "year", "eur", [Step(d(2, 10), 9000, rate="1.1"),
               Step(d(4, 20), 12000, rate="1.2")], {"region": "eu"}),
        "c7": ("basic", "month", "usd", [Step(d(1, 15), 5000),
               Step(d(1, 25), 0, reason="voluntary")], {}),
        "c8": ("pro", "month", "usd", [Step(d(3, 5), 10000),
               Step(d(3, 20), 0, reason="voluntary", feedback="switched_service"),
               Step(d(3, 28), 10000)], {}),
        "c9": ("basic", "month", "usd", [Step(d(1, 3), 5000),
               Step(d(2, 10), 0, reason="involuntary"), Step(d(2, 20), 6000)], {}),
        "c10": ("basic", "month", "usd", [Step(d(4, 5), 5000)], {}),
    }  # fmt: skip
    for customer, (plan, interval, currency, steps, metadata) in series.items():
        add_series(session, customer, steps, currency=currency, account=account)
        add_subscription(
            session, customer, plan=plan, interval=interval, currency=currency,
            mrr=steps[-1].mrr, metadata=metadata, account=account,
        )  # fmt: skip
    session.flush()
