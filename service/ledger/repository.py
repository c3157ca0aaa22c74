"""All SQL of the ledger's reads and FX rates (the projector writes its rows)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from service.kit.sql import chunks, insert_for
from service.ledger.fx import FxQuote, FxTable
from service.ledger.models import (
    ChangedDay,
    DataQualityWarning,
    FxRate,
    LedgerCustomer,
    LedgerSetting,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.ledger.schemas import CustomerSort

REPORTING_CURRENCY = "reporting_currency"


def _contains(column: Any, text: str) -> Any:
    """Case-insensitive substring; % and _ are characters to find, not wildcards."""
    return func.lower(column).contains(text.lower(), autoescape=True)


class LedgerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- reads ------------------------------------------------------------------------

    def movements(self, account: str, customer_id: str) -> Sequence[MrrMovement]:
        return self.session.scalars(
            select(MrrMovement)
            .where(MrrMovement.account == account, MrrMovement.customer_id == customer_id)
            .order_by(MrrMovement.day, MrrMovement.currency)
        ).all()

    def customer(self, account: str, customer_id: str) -> LedgerCustomer | None:
        return self.session.get(LedgerCustomer, (account, customer_id))

    def subscriptions_of(self, account: str, customer_id: str) -> Sequence[SubscriptionState]:
        return self.session.scalars(
            select(SubscriptionState)
            .where(
                SubscriptionState.account == account, SubscriptionState.customer_id == customer_id
            )
            .order_by(SubscriptionState.subscription_id)
        ).all()

    def subscriptions_page(
        self,
        account: str,
        *,
        customer_id: str | None,
        status: str | None,
        plan: str | None,
        after: str | None,
        limit: int,
    ) -> Sequence[SubscriptionState]:
        """Subscriptions in id order after the keyset `after` (its primary key's order)."""
        t = SubscriptionState
        stmt = select(t).where(t.account == account)
        if customer_id is not None:
            stmt = stmt.where(t.customer_id == customer_id)
        if status is not None:
            stmt = stmt.where(t.status == status)
        if plan is not None:
            stmt = stmt.where(t.plan == plan)
        if after is not None:
            stmt = stmt.where(t.subscription_id > after)
        return self.session.scalars(stmt.order_by(t.subscription_id).limit(limit)).all()

    def subscription(self, account: str, subscription_id: str) -> SubscriptionState | None:
        return self.session.get(SubscriptionState, (account, subscription_id))

    def subscription_changes(
        self, account: str, subscription_id: str
    ) -> Sequence[SubscriptionMrrChange]:
        return self.session.scalars(
            select(SubscriptionMrrChange)
            .where(
                SubscriptionMrrChange.account == account,
                SubscriptionMrrChange.subscription_id == subscription_id,
            )
            .order_by(SubscriptionMrrChange.at, SubscriptionMrrChange.id)
        ).all()

    def warnings(self, account: str, customer_id: str) -> Sequence[DataQualityWarning]:
        return self.session.scalars(
            select(DataQualityWarning)
            .where(
                DataQualityWarning.account == account,
                DataQualityWarning.customer_id == customer_id,
            )
            .order_by(DataQualityWarning.id)
        ).all()

    def customer_summaries(
        self,
        account: str,
        reporting: str,
        *,
        search: str | None,
        sort: CustomerSort,
        active: bool | None,
        after: tuple[Any, ...] | None,
        limit: int | None,
    ) -> Sequence[Any]:
        """Customers with their reporting-currency MRR (the sum of their rows'
        `delta_reporting`, as the metric tables add them up), in `sort` order, after the
        keyset `after`: (mrr, customer_id) or (customer_id,)."""
        c, m = LedgerCustomer, MrrMovement
        # Aggregate the ledger alone (its (account, customer_id, ...) index gives the
        # groups in order), then join the customers: no sort of the joined rows.
        rows = select(
            m.customer_id,
            func.sum(m.delta_reporting).label("mrr"),
            func.max(m.day).label("last_day"),
        ).where(m.account == account, m.reporting_currency == reporting.lower())
        if search:
            # Here too, so that a search aggregates only the customers it finds.
            rows = rows.where(_contains(m.customer_id, search))
        per_customer = rows.group_by(m.customer_id).subquery()
        mrr = cast(func.coalesce(per_customer.c.mrr, 0), BigInteger)
        stmt = (
            select(
                c.customer_id,
                c.first_mrr_day,
                mrr.label("mrr"),
                per_customer.c.last_day,
            )
            .outerjoin(per_customer, per_customer.c.customer_id == c.customer_id)
            .where(c.account == account)
        )
        if search:
            stmt = stmt.where(_contains(c.customer_id, search))
        if active is not None:
            stmt = stmt.where(mrr > 0 if active else mrr <= 0)
        if sort is CustomerSort.customer_id:
            if after is not None:
                stmt = stmt.where(c.customer_id > after[0])
            stmt = stmt.order_by(c.customer_id)
        else:
            desc = sort is CustomerSort.mrr_desc
            if after is not None:
                beyond = mrr < after[0] if desc else mrr > after[0]
                stmt = stmt.where(or_(beyond, and_(mrr == after[0], c.customer_id > after[1])))
            stmt = stmt.order_by(mrr.desc() if desc else mrr, c.customer_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        return self.session.execute(stmt).all()

    def latest_per_currency(self, account: str, customer_ids: Sequence[str]) -> Sequence[Any]:
        """(customer_id, currency, to_mrr, movement) of these customers' ledger rows,
        oldest first: the last row per currency is its MRR now. Columns, not ORM rows:
        a CSV of every customer reads them all."""
        m = MrrMovement
        return self.session.execute(
            select(m.customer_id, m.currency, m.to_mrr, m.movement)
            .where(m.account == account, m.customer_id.in_(customer_ids))
            .order_by(m.customer_id, m.day, m.id)
        ).all()

    def count_movements(self) -> int:
        return self.session.scalar(select(func.count()).select_from(MrrMovement)) or 0

    # --- how the ledger was computed -----------------------------------------------------

    def ledger_reporting_currency(self) -> str | None:
        """The stored currency of the reporting amounts; without one (a ledger never
        rebuilt since it was first projected), that of any row; None: no ledger yet."""
        stored = self.session.get(LedgerSetting, REPORTING_CURRENCY)
        if stored is not None:
            return stored.value
        return self.session.scalar(select(MrrMovement.reporting_currency).limit(1))

    def set_ledger_reporting_currency(self, currency: str) -> None:
        stmt = insert_for(self.session, LedgerSetting).values(
            name=REPORTING_CURRENCY, value=currency.lower()
        )
        self.session.execute(
            stmt.on_conflict_do_update(index_elements=["name"], set_={"value": currency.lower()})
        )

    def unconverted_currencies(self, account: str, reporting: str, before: date) -> list[str]:
        """Billing currencies of ledger rows before `before` with no FX rate to
        `reporting` (a partial index holds exactly those rows)."""
        m = MrrMovement
        # `day < before` in HAVING, not WHERE: as a WHERE range, SQLite (no statistics:
        # it never runs ANALYZE) prefers ix_mrr_movements_day's (account, day) and walks
        # the account's whole ledger, ~0.75 s a metrics answer at 100k customers. Without
        # it only the partial index matches, and its (currency, day) order gives each
        # currency's first day.
        stmt = (
            select(m.currency)
            .where(
                m.account == account,
                m.reporting_currency == reporting.lower(),
                m.delta_reporting.is_(None),
            )
            .group_by(m.currency)
            .having(func.min(m.day) < before)
            .order_by(m.currency)
        )
        return list(self.session.scalars(stmt))

    # --- FX -----------------------------------------------------------------------------

    def fx_table(self, reporting: str) -> FxTable:
        rows = self.session.scalars(select(FxRate).where(FxRate.quote == reporting.lower()))
        return FxTable(reporting, (FxQuote(r.currency, r.day, Decimal(r.rate)) for r in rows))

    def fx_rows(self, reporting: str, since: date | None = None) -> Sequence[FxRate]:
        stmt = select(FxRate).where(FxRate.quote == reporting.lower())
        if since is not None:
            stmt = stmt.where(FxRate.day >= since)
        return self.session.scalars(stmt.order_by(FxRate.currency, FxRate.day)).all()

    def fx_day_range(self, reporting: str) -> tuple[date | None, date | None]:
        first, last = self.session.execute(
            select(func.min(FxRate.day), func.max(FxRate.day)).where(
                FxRate.quote == reporting.lower()
            )
        ).one()
        return first, last

    def upsert_fx_rates(self, reporting: str, quotes: Sequence[FxQuote]) -> None:
        quote = reporting.lower()
        stmt = insert_for(self.session, FxRate)
        stmt = stmt.on_conflict_do_update(
            index_elements=["quote", "currency", "day"], set_={"rate": stmt.excluded.rate}
        )
        # One executemany per chunk: an ECB history is tens of thousands of rates.
        for part in chunks(quotes, 2000):
            rows = [
                {"quote": quote, "currency": q.currency, "day": q.day, "rate": str(q.rate)}
                for q in part
            ]
            self.session.execute(stmt, rows)

    def earliest_foreign_day(self, reporting: str) -> date | None:
        """The first day of a ledger row in another currency than `reporting`: from then
        on the ledger needs rates."""
        m = MrrMovement
        return self.session.scalar(
            select(func.min(m.day)).where(
                m.reporting_currency == reporting.lower(), m.currency != reporting.lower()
            )
        )

    def movements_in_currencies(
        self, reporting: str, currencies: Iterable[str], since: date
    ) -> Sequence[MrrMovement]:
        return self.session.scalars(
            select(MrrMovement).where(
                MrrMovement.currency.in_(list(currencies)),
                MrrMovement.reporting_currency == reporting.lower(),
                MrrMovement.day >= since,
            )
        ).all()

    # --- the change feed the metric jobs read -------------------------------------------

    def mark_changed(
        self, account: str, days: Sequence[date], customers: Sequence[str] = ()
    ) -> None:
        """Days whose ledger rows changed, or customers whose ledger rows or subscriptions
        a projection rewrote, in the transaction that changed them."""
        at = time.time_ns() // 1_000_000
        mark = {"account": account, "marked_at": at}
        rows = [{**mark, "day": d, "customer_id": None} for d in days]
        rows += [{**mark, "day": None, "customer_id": c} for c in customers]
        if rows:
            self.session.execute(ChangedDay.__table__.insert(), rows)
