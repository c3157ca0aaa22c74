"""The event store: every Stripe event exactly as received, the source of truth."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK


class EventSource(StrEnum):
    webhook = "webhook"
    backfill = "backfill"
    reconcile = "reconcile"


class StripeEvent(Base):
    __tablename__ = "stripe_events"
    __table_args__ = (
        # Connect: the platform's own events have account "" (not NULL) so that the
        # unique constraint also holds for them; NULLs never collide in SQL.
        UniqueConstraint("account", "event_id"),
        # A customer's events, and those of some types (its discounts, its failed payments).
        Index("ix_stripe_events_customer_type", "account", "customer_id", "type"),
        Index("ix_stripe_events_account_object", "account", "object_id"),
        # The newest projected event of an account (`as_of`), by a backward walk.
        Index("ix_stripe_events_account_created", "account", "created"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255), default="", server_default="")
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[int] = mapped_column(BigInteger, doc="Stripe's event.created, unix seconds")
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[EventSource] = mapped_column(
        SAEnum(EventSource, native_enum=False, length=16, validate_strings=True),
        default=EventSource.webhook,
    )
    # Raw bytes, not JSON: the signature covers these exact bytes, and finance may
    # need to show the event as Stripe sent it.
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QueuedEvent(Base):
    """A stored event some projector has yet to read (design §1): the projection queue.

    Narrow on purpose: taking an event off it, or counting a failure, never rewrites the
    event's row with its body. Rows are added by a database trigger on `stripe_events`
    (migration 0007) for every event about a customer, and deleted in the transaction
    that writes the customer's projection. A row with `dead_at` is a dead letter, not
    backlog (migration 0008).
    """

    __tablename__ = "projection_queue"
    __table_args__ = (
        Index("ix_projection_queue_customer", "account", "customer_id"),
        # Dead letters only: what reads of events leave out, in a probe (migration 0018).
        Index(
            "ix_projection_queue_dead",
            "id",
            postgresql_where=text("dead_at IS NOT NULL"),
            sqlite_where=text("dead_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set aside (migration 0008): this event's projection kept failing; the projector
    # leaves it out of its customer's events until it is replayed. `last_error` says why.
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
