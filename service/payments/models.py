"""Failed-payment episodes (derived, rebuilt from the event store) and the alert outbox."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK


class Outcome(StrEnum):
    open = "open"
    recovered = "recovered"
    lost = "lost"


class LostReason(StrEnum):
    voided = "voided"
    uncollectible = "uncollectible"
    subscription_canceled = "subscription_canceled"


class AlertStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # gave up after the last retry
    expired = "expired"  # about a transition too old to be news (backfill, late enabling)


def _enum(cls: type[StrEnum], length: int = 24) -> SAEnum:
    return SAEnum(cls, native_enum=False, length=length, validate_strings=True)


class PaymentEpisode(Base):
    """One invoice from its first failed payment to paid (recovered), or void,
    uncollectible or its subscription canceled (lost). Times are unix seconds."""

    __tablename__ = "payment_episodes"
    __table_args__ = (
        Index("uq_payment_episodes_invoice", "account", "invoice_id", unique=True),
        Index("ix_payment_episodes_customer", "account", "customer_id"),
        # Lists and per-period metrics select by start; MRR at risk by start and end.
        Index("ix_payment_episodes_started", "account", "first_failure_at", "invoice_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    invoice_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    amount_due: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    first_failure_at: Mapped[int] = mapped_column(BigInteger)
    last_failure_at: Mapped[int] = mapped_column(BigInteger)
    next_retry_at: Mapped[int | None] = mapped_column(BigInteger)
    decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    action_required: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[Outcome] = mapped_column(_enum(Outcome), index=True)
    lost_reason: Mapped[LostReason | None] = mapped_column(_enum(LostReason))
    closed_at: Mapped[int | None] = mapped_column(BigInteger)
    recovered_at: Mapped[int | None] = mapped_column(BigInteger)
    time_to_recover_s: Mapped[int | None] = mapped_column(BigInteger)
    recovered_on_attempt: Mapped[int | None] = mapped_column(Integer)
    event_ids: Mapped[list[str]] = mapped_column(JSON)


class PaymentAlert(Base):
    """The alert outbox: written in the projection's transaction (so never for rolled-back
    work, never lost), delivered after commit by the sender with retries."""

    __tablename__ = "payment_alerts"
    __table_args__ = (
        # One alert per transition, however often the customer is re-projected.
        Index("uq_payment_alerts_key", "account", "dedup_key", unique=True),
        Index("ix_payment_alerts_due", "status", "next_attempt_ms"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    dedup_key: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[int] = mapped_column(BigInteger, doc="When it happened, unix s")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[AlertStatus] = mapped_column(_enum(AlertStatus, 16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Integer milliseconds: exact, and compared the same way on SQLite and PostgreSQL.
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentRiskState(Base):
    """Per account, which side of the MRR-at-risk threshold the last check saw: an alert
    goes out on crossing, not on every check."""

    __tablename__ = "payment_risk_states"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    above: Mapped[bool] = mapped_column(Boolean, default=False)
    mrr_at_risk: Mapped[int] = mapped_column(BigInteger, default=0)
    crossings: Mapped[int] = mapped_column(Integer, default=0)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
