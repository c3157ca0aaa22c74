"""The bulk `rebuild` writes exactly what incremental projection writes, on both databases.

Incremental projection (`project_pending`, customer by customer under the lock) is the
reference: a rebuild of the same event store must give the same rows in every derived
table, take every event it read off the projection queue, and leave other Connect
accounts alone.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, literal, select, update
from sqlalchemy.orm import Session

from service.ledger.fx import FxQuote
from service.ledger.models import (
    ChangedDay,
    DataQualityWarning,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.ledger.repository import LedgerRepository
from service.payments.models import PaymentAlert, PaymentEpisode
from service.projector.service import project_pending, rebuild
from service.settings import LedgerOptions
from service.webhooks.models import QueuedEvent, StripeEvent
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from sim.simulate import event_bytes, simulate

OPTIONS = LedgerOptions(past_due_grace_days=None)
ACCOUNTS = ("", "acct_conn1")
# Whatever the rebuild sets anew (surrogate ids, when it ran), left out of comparisons.
VOLATILE = {"id", "projected_at", "created_at"}
TABLES = (
    LedgerCustomer,
    SubscriptionState,
    SubscriptionMrrChange,
    MrrMovement,
    DataQualityWarning,
    PaymentEpisode,
    PaymentAlert,
)


def rows(session: Session, model: Any, account: str | None = None, *, keep_all=False) -> list:
    table = model.__table__
    # As stored, in text: the bulk path writes through the driver, and must store exactly
    # what SQLAlchemy would (date and JSON text, enum names).
    columns = [cast(c, Text) for c in table.columns if keep_all or c.name not in VOLATILE]
    query = select(*columns)
    if account is not None:
        query = query.where(table.c.account == account)
    return sorted(tuple(repr(v) for v in r) for r in session.execute(query))


def snapshot(session: Session, account: str | None = None, *, keep_all=False) -> dict:
    return {m.__tablename__: rows(session, m, account, keep_all=keep_all) for m in TABLES}


@pytest.fixture
def now() -> int:
    return simulation(0).until + 86_400


def simulation(n: int):
    # Small accounts that still have failed payments, several currencies and discounts;
    # the same seed, so both accounts have the same customer ids (they must not mix).
    return simulate(customers=45, months=12, seed=21, account=ACCOUNTS[n] or None)


@pytest.fixture
def stored(db_session: Session, now: int) -> Session:
    LedgerRepository(db_session).upsert_fx_rates(
        OPTIONS.reporting_currency,
        [
            FxQuote("eur", date(2024, 1, 1), Decimal("1.0850")),
            FxQuote("gbp", date(2024, 1, 1), Decimal("1.2700")),
            FxQuote("eur", date(2025, 3, 1), Decimal("1.1025")),
        ],
    )
    for n in range(len(ACCOUNTS)):
        for event in simulation(n).events:
            body = event_bytes(event)
            store_event(db_session, body, parse_event(body))
    while project_pending(db_session, OPTIONS, limit=500, now=now):
        pass
    return db_session


def queued(session: Session, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(QueuedEvent).where(*where)) or 0


def requeue(session: Session, *, attempts: int = 0, error: str | None = None) -> int:
    """Put every event about a customer back on the queue, as if never projected."""
    e = StripeEvent.__table__.c
    session.execute(QueuedEvent.__table__.delete())
    session.execute(
        QueuedEvent.__table__.insert().from_select(
            ["id", "account", "customer_id", "attempts", "last_error"],
            select(e.id, e.account, e.customer_id, literal(attempts), literal(error)).where(
                e.customer_id.is_not(None)
            ),
        )
    )
    return queued(session)


class TestBulkRebuild:
    def test_the_accounts_exercise_what_matters(self, stored: Session):
        s = stored
        currencies = set(s.scalars(select(MrrMovement.currency).distinct()))
        assert {"usd", "eur"} <= currencies and len(currencies) >= 3
        assert set(s.scalars(select(MrrMovement.account).distinct())) == set(ACCOUNTS)
        outcomes = set(s.scalars(select(PaymentEpisode.outcome).distinct()))
        assert len(outcomes) >= 2  # recovered and lost (or open) episodes
        assert s.scalar(select(func.count()).select_from(PaymentAlert)) > 0
        assert s.scalar(select(func.count()).where(MrrMovement.churn_reason.is_not(None))) > 0
        unconverted = select(func.count()).where(MrrMovement.delta_reporting.is_(None))
        assert s.scalar(unconverted) > 0  # jpy has no rate: NULL reporting amounts
        assert queued(s) == 0

    def test_projected_at_is_stored_like_the_incremental_path(self, stored: Session, now: int):
        def stamps() -> set[str]:
            # The shape of the stored text (digits masked): same format, whatever the instant.
            text = select(cast(LedgerCustomer.projected_at, Text))
            return {re.sub(r"\d", "9", re.sub(r"\.\d+", "", t)) for t in stored.scalars(text)}

        incremental = stamps()
        rebuild(stored, OPTIONS, now=now, batch=50)
        assert stamps() == incremental

    def test_rebuild_equals_incremental(self, stored: Session, now: int):
        incremental = snapshot(stored)
        customers = stored.scalar(select(func.count()).select_from(LedgerCustomer))
        # A batch size that splits accounts: batches must not mix their customers up.
        assert rebuild(stored, OPTIONS, now=now, batch=7) == customers
        assert snapshot(stored) == incremental

    def test_worker_processes_compute_the_same(self, stored: Session, now: int):
        incremental = snapshot(stored)
        rebuild(stored, OPTIONS, now=now, batch=30, workers=2)
        assert snapshot(stored) == incremental

    def test_rebuild_repairs_and_empties_the_queue(self, stored: Session, now: int):
        incremental = snapshot(stored)
        s = stored
        # Damage every derived table and the bookkeeping of the events.
        s.execute(update(MrrMovement).values(to_mrr=MrrMovement.to_mrr + 1))
        s.execute(update(PaymentEpisode).values(attempts=99))
        s.execute(update(SubscriptionState).values(mrr=-1))
        s.execute(update(LedgerCustomer).values(first_mrr_day=None, next_change_at=1))
        s.execute(SubscriptionMrrChange.__table__.delete())
        assert requeue(s, attempts=3, error="boom") > 0
        s.execute(ChangedDay.__table__.delete())
        s.commit()
        rebuild(s, OPTIONS, now=now, batch=1000)
        assert snapshot(s) == incremental
        assert queued(s) == 0
        # Every customer with a ledger row is marked for the metrics refresh.
        ledger = set(s.execute(select(MrrMovement.account, MrrMovement.customer_id).distinct()))
        marked = set(s.execute(select(ChangedDay.account, ChangedDay.customer_id)))
        assert ledger <= marked

    def test_one_account_leaves_the_others_untouched(self, stored: Session, now: int):
        s = stored
        target, other = ACCOUNTS
        expected_target = snapshot(s, target)
        # Damage both accounts: only the rebuilt one may come back.
        for account in ACCOUNTS:
            s.execute(
                update(MrrMovement)
                .where(MrrMovement.account == account)
                .values(to_mrr=MrrMovement.to_mrr + 1)
            )
            s.execute(
                update(PaymentEpisode).where(PaymentEpisode.account == account).values(attempts=99)
            )
        assert requeue(s) > 0
        s.commit()
        before_other = snapshot(s, other, keep_all=True)
        other_queue = s.execute(
            select(QueuedEvent.id).where(QueuedEvent.account == other).order_by(QueuedEvent.id)
        ).all()
        assert other_queue
        customers = s.scalar(
            select(func.count()).select_from(LedgerCustomer).where(LedgerCustomer.account == target)
        )
        assert rebuild(s, OPTIONS, account=target, now=now, batch=10) == customers
        assert snapshot(s, target) == expected_target
        assert snapshot(s, other, keep_all=True) == before_other
        assert (
            s.execute(
                select(QueuedEvent.id).where(QueuedEvent.account == other).order_by(QueuedEvent.id)
            ).all()
            == other_queue
        )
        assert queued(s, QueuedEvent.account == target) == 0

    def test_customers_with_only_unread_events_get_their_row(self, db_session: Session):
        s = db_session
        for n, type_ in enumerate(["customer.created", "customer.updated"]):
            body = event_bytes(
                {
                    "id": f"evt_only_{n}",
                    "object": "event",
                    "type": type_,
                    "created": 1_735_689_600 + n,
                    "data": {"object": {"id": "cus_quiet", "object": "customer"}},
                }
            )
            store_event(s, body, parse_event(body))
        project_pending(s, OPTIONS, now=1_800_000_000)
        incremental = snapshot(s)
        assert incremental["ledger_customers"]  # the incremental path made one
        rebuild(s, OPTIONS, now=1_800_000_000)
        assert snapshot(s) == incremental
        assert queued(s) == 0
