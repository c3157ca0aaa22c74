"""Import every domain's models so that Base.metadata is complete (Alembic, tests)."""

from service.db import Base
from service.ledger.models import (
    DataQualityWarning,
    FxRate,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.webhooks.models import EventSource, StripeEvent

__all__ = [
    "Base",
    "DataQualityWarning",
    "EventSource",
    "FxRate",
    "LedgerCustomer",
    "MrrMovement",
    "StripeEvent",
    "SubscriptionMrrChange",
    "SubscriptionState",
]
