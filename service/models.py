"""Import every domain's models so that Base.metadata is complete (Alembic, tests)."""

from service.db import Base
from service.ledger.models import (
    ChangedDay,
    DataQualityWarning,
    FxRate,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.metrics.models import (
    ClosedPeriod,
    MetricsChurnDaily,
    MetricsCohort,
    MetricsDaily,
    MetricsPeriod,
    MetricsRefresh,
    MetricsSegment,
    Restatement,
)
from service.payments.models import PaymentAlert, PaymentEpisode, PaymentRiskState
from service.sync.models import ReconcileRun, SyncCursor
from service.webhooks.models import EventSource, QueuedEvent, StripeEvent

__all__ = [
    "Base",
    "ChangedDay",
    "ClosedPeriod",
    "DataQualityWarning",
    "EventSource",
    "FxRate",
    "LedgerCustomer",
    "MetricsChurnDaily",
    "MetricsCohort",
    "MetricsDaily",
    "MetricsPeriod",
    "MetricsRefresh",
    "MetricsSegment",
    "MrrMovement",
    "PaymentAlert",
    "PaymentEpisode",
    "PaymentRiskState",
    "QueuedEvent",
    "ReconcileRun",
    "Restatement",
    "StripeEvent",
    "SubscriptionMrrChange",
    "SubscriptionState",
    "SyncCursor",
]
