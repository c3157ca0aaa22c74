"""Precomputed metric tables, written by `service/metrics/refresh.py`, read by /v1/metrics.

All amounts are integer minor units of the reporting currency (sums of `delta_reporting`).
Every table is keyed by account and reporting currency and can be dropped and recomputed
from the ledger at any time, except the closed periods and their restatements at the end:
what was published, and when, is history the ledger does not keep.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, DateTime, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK


def _amount() -> Mapped[int]:
    return mapped_column(BigInteger, default=0)


def _count() -> Mapped[int]:
    return mapped_column(Integer, default=0)


class MetricsSegment(Base):
    """A set of customers sharing plan, billing interval, currency and metadata.

    A customer is in exactly one segment, that of its primary subscription (highest current
    MRR, then latest), so segments add up to the whole.
    """

    __tablename__ = "metrics_segments"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    plan: Mapped[str | None] = mapped_column(String(255))
    billing_interval: Mapped[str | None] = mapped_column(String(8))
    currency: Mapped[str | None] = mapped_column(String(3))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    customers: Mapped[int] = _count()


class MetricsDaily(Base):
    """Per segment and UTC day with ledger rows: the day's flows (sparse).

    MRR and customers at any date are cumulative sums of these, so the movement identity
    holds by construction.
    """

    __tablename__ = "metrics_daily"
    # Day-interval reads span every segment of a short date range; the primary key leads
    # with the segment, so without this they would read the account's whole history.
    __table_args__ = (Index("ix_metrics_daily_day", "account", "reporting_currency", "day"),)

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    new_mrr: Mapped[int] = _amount()
    expansion_mrr: Mapped[int] = _amount()
    contraction_mrr: Mapped[int] = _amount()
    churned_mrr: Mapped[int] = _amount()
    reactivation_mrr: Mapped[int] = _amount()
    new_customers: Mapped[int] = _count()
    reactivated_customers: Mapped[int] = _count()
    churned_customers: Mapped[int] = _count()
    expansions: Mapped[int] = _count()
    contractions: Mapped[int] = _count()
    unconverted_movements: Mapped[int] = _count()


class MetricsPeriod(Base):
    """Per segment and calendar period (week, month, quarter, year): the period's flows
    (sums of `MetricsDaily`), its customer-days at risk, and customers active at start and
    not at end, and the reverse.

    The API answers week-to-year queries from these alone: a few rows per segment and
    period instead of one per day. Turnover is not derivable from daily counts (a customer
    can churn and come back within a period), so the job computes it per customer. Rows
    run from a segment's first period to the refresh's `through`, all-zero ones left out.
    """

    __tablename__ = "metrics_periods"
    __table_args__ = (
        # Reads select one interval and a range of periods across segments.
        Index(
            "ix_metrics_periods_interval",
            "account",
            "reporting_currency",
            "interval",
            "period_start",
        ),
    )

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    interval: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    customers_lost: Mapped[int] = _count()
    customers_gained: Mapped[int] = _count()
    new_mrr: Mapped[int] = _amount()
    expansion_mrr: Mapped[int] = _amount()
    contraction_mrr: Mapped[int] = _amount()
    churned_mrr: Mapped[int] = _amount()
    reactivation_mrr: Mapped[int] = _amount()
    new_customers: Mapped[int] = _count()
    reactivated_customers: Mapped[int] = _count()
    churned_customers: Mapped[int] = _count()
    expansions: Mapped[int] = _count()
    contractions: Mapped[int] = _count()
    unconverted_movements: Mapped[int] = _count()
    # For each day of the period up to `through`: customers with MRR > 0 at its start.
    customer_days: Mapped[int] = _amount()


class MetricsChurnDaily(Base):
    """Churn rows per segment, day, reason and feedback ('' when none)."""

    __tablename__ = "metrics_churn_daily"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    feedback: Mapped[str] = mapped_column(String(64), primary_key=True)
    churns: Mapped[int] = _count()
    churned_mrr: Mapped[int] = _amount()


class MetricsCohort(Base):
    """Per segment, cohort month (first MRR) and month since start: the cohort's state at
    the end of that month. Dense up to the refresh's `through` month."""

    __tablename__ = "metrics_cohorts"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    segment: Mapped[str] = mapped_column(String(32), primary_key=True)
    cohort_month: Mapped[date] = mapped_column(Date, primary_key=True)
    months_since_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    cohort_customers: Mapped[int] = _count()
    initial_mrr: Mapped[int] = _amount()
    active_customers: Mapped[int] = _count()
    cohort_mrr: Mapped[int] = _amount()


class MetricsRefresh(Base):
    """When an account's tables were last computed, and from which events."""

    __tablename__ = "metrics_refreshes"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Stripe `created` (unix s) of the newest handled event when the ledger was read.
    as_of: Mapped[int | None] = mapped_column(BigInteger)
    # Last UTC day the tables describe: exposure (customer-days) stops there.
    through: Mapped[date] = mapped_column(Date)
    ledger_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    # How long computing and writing took (the refresh-duration gauge).
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    # `metrics_counted` holds what these tables counted: a refresh may go on from them
    # (incremental); False: the next refresh recomputes the account whole.
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class MetricsCounted(Base):
    """The ledger rows as the metric tables last counted them, each with its customer's
    segment then: what an incremental refresh subtracts before adding a customer's new
    rows (the projector rewrites the ledger in place, so the old rows are gone from it).
    One row per ledger row (same key); written from the frame the refresh read, never
    copied from the ledger later, so that it is exactly what was counted."""

    __tablename__ = "metrics_counted"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3))
    segment: Mapped[str] = mapped_column(String(32))
    movement: Mapped[str] = mapped_column(String(16))
    from_mrr: Mapped[int] = mapped_column(BigInteger)
    to_mrr: Mapped[int] = mapped_column(BigInteger)
    delta_reporting: Mapped[int | None] = mapped_column(BigInteger)
    churn_reason: Mapped[str | None] = mapped_column(String(16))
    churn_feedback: Mapped[str | None] = mapped_column(String(64))


class ClosedPeriod(Base):
    """A month finance closed: its figures as published at the close, and as published
    now (each restatement moves `figures` to what the tables then said)."""

    __tablename__ = "closed_periods"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    reporting_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    period: Mapped[date] = mapped_column(Date, primary_key=True)  # the month's first day
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Stripe `created` (unix s) of the newest event the figures included at the close.
    as_of: Mapped[int | None] = mapped_column(BigInteger)
    figures_at_close: Mapped[dict[str, int]] = mapped_column(JSON)
    figures: Mapped[dict[str, int]] = mapped_column(JSON)


class Restatement(Base):
    """A refresh found a closed month's figures changed: what changed (old → new per
    metric) and the Stripe events received after the close that touched the month."""

    __tablename__ = "restatements"
    __table_args__ = (Index("ix_restatements_period", "account", "reporting_currency", "period"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    reporting_currency: Mapped[str] = mapped_column(String(3))
    period: Mapped[date] = mapped_column(Date)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # {metric: [old, new]} for every figure that changed.
    changes: Mapped[dict[str, list[int]]] = mapped_column(JSON)
    event_ids: Mapped[list[str]] = mapped_column(JSON)
