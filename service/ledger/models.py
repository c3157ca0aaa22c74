"""Projected state: subscription MRR over time and the customer MRR ledger.

Everything here is derived from the event store and can be rebuilt from it.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, Index, String, Text, false, text
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK


class Movement(StrEnum):
    new = "new"
    expansion = "expansion"
    contraction = "contraction"
    churn = "churn"
    reactivation = "reactivation"


class ChurnReason(StrEnum):
    voluntary = "voluntary"
    involuntary = "involuntary"


def _enum(cls: type[StrEnum]) -> SAEnum:
    return SAEnum(cls, native_enum=False, length=16, validate_strings=True)


class LedgerCustomer(Base):
    """One row per customer: the projector's per-customer lock, and the cohort."""

    __tablename__ = "ledger_customers"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    first_mrr_day: Mapped[date | None] = mapped_column(Date)
    # When a known future change (a discount ending, a grace period running out) takes
    # effect without any event; the worker re-projects the customer then.
    next_change_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    projected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The stored projection can be gone on from by incremental projection (set by a full
    # one when no event of the customer lies ahead of its clock and none failed a payment).
    incremental: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SubscriptionState(Base):
    """A subscription as of its latest snapshot, for lookups and segments."""

    __tablename__ = "subscription_states"
    __table_args__ = (Index("ix_subscription_states_customer", "account", "customer_id"),)

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    mrr: Mapped[int] = mapped_column(BigInteger)
    plan: Mapped[str | None] = mapped_column(String(255))
    # Product name and price nickname of `plan`, as the latest snapshot shows them.
    # Text: Stripe allows names far past 255 characters, and a long one must not fail
    # the projection.
    plan_name: Mapped[str | None] = mapped_column(Text)
    billing_interval: Mapped[str | None] = mapped_column(String(8))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
    last_event_id: Mapped[str] = mapped_column(String(255))
    # Where the walk through its snapshots stands, for incremental projection.
    past_due_since: Mapped[int | None] = mapped_column(BigInteger)
    next_change_at: Mapped[int | None] = mapped_column(BigInteger)
    # JSON (not a native type) so that SQLite and PostgreSQL behave alike.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)


class SubscriptionMrrChange(Base):
    """Each instant a subscription's MRR changed, and the event (or rule) behind it."""

    __tablename__ = "subscription_mrr_changes"
    __table_args__ = (
        Index("ix_subscription_mrr_changes_sub", "account", "subscription_id", "at"),
        Index("ix_subscription_mrr_changes_customer", "account", "customer_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    at: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)
    mrr: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    cause: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    # A change to 0: its churn, which the day's ledger row takes when the day ends at 0.
    churn_reason: Mapped[str | None] = mapped_column(String(16))
    churn_feedback: Mapped[str | None] = mapped_column(String(64))
    churn_comment: Mapped[str | None] = mapped_column(Text)


class MrrMovement(Base):
    """The MRR ledger: one row per customer, currency and UTC day on which MRR changed."""

    __tablename__ = "mrr_movements"
    __table_args__ = (
        Index(
            "uq_mrr_movements_customer_day",
            "account",
            "customer_id",
            "currency",
            "day",
            unique=True,
        ),
        Index("ix_mrr_movements_day", "account", "day", "id"),
        # Rows without an FX rate: "which currencies are left out" is a lookup of this
        # (usually empty) index, for every metrics answer.
        Index(
            "ix_mrr_movements_unconverted",
            "account",
            "reporting_currency",
            "currency",
            "day",
            sqlite_where=text("delta_reporting IS NULL"),
            postgresql_where=text("delta_reporting IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    day: Mapped[date] = mapped_column(Date)
    movement: Mapped[Movement] = mapped_column(_enum(Movement))
    currency: Mapped[str] = mapped_column(String(3))
    from_mrr: Mapped[int] = mapped_column(BigInteger)
    to_mrr: Mapped[int] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    reporting_currency: Mapped[str] = mapped_column(String(3))
    # Decimal as text: exact on SQLite too (its NUMERIC is a float).
    fx_rate: Mapped[str | None] = mapped_column(String(40))
    from_mrr_reporting: Mapped[int | None] = mapped_column(BigInteger)
    to_mrr_reporting: Mapped[int | None] = mapped_column(BigInteger)
    delta_reporting: Mapped[int | None] = mapped_column(BigInteger)
    event_ids: Mapped[list[str]] = mapped_column(JSON)
    subscription_ids: Mapped[list[str]] = mapped_column(JSON)
    churn_reason: Mapped[ChurnReason | None] = mapped_column(_enum(ChurnReason))
    churn_feedback: Mapped[str | None] = mapped_column(String(64))
    churn_comment: Mapped[str | None] = mapped_column(Text)


class FxRate(Base):
    """1 unit of `currency` = `rate` units of `quote`, effective from `day` on."""

    __tablename__ = "fx_rates"

    quote: Mapped[str] = mapped_column(String(3), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    rate: Mapped[str] = mapped_column(String(40))


class DataQualityWarning(Base):
    """Something in the events the projector could not use as-is (e.g. unseen discount)."""

    __tablename__ = "data_quality_warnings"
    __table_args__ = (Index("ix_dq_warnings_customer", "account", "customer_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)


class ChangedDay(Base):
    """The ledger's change feed: days whose ledger rows changed (FX recomputation) and
    customers a projection touched, until the metrics refresh has counted them. A mark
    has a day or a customer.

    Append-only with a surrogate id, so that a refresh deletes only the marks it has seen:
    a mark committed while it runs survives for the next one.
    """

    __tablename__ = "metrics_dirty_days"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255), index=True)
    day: Mapped[date | None] = mapped_column(Date)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    # Unix milliseconds: how far behind the metric tables are (`stale_seconds`).
    marked_at: Mapped[int | None] = mapped_column(BigInteger)


class LedgerSetting(Base):
    """Facts about how the ledger was computed. `reporting_currency`: the currency of its
    reporting amounts, set by a full rebuild (and by the migration from existing rows);
    serving compares it with REPORTING_CURRENCY."""

    __tablename__ = "ledger_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
