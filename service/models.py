"""Import every domain's models so that Base.metadata is complete (Alembic, tests)."""

from service.db import Base
from service.webhooks.models import EventSource, StripeEvent

__all__ = ["Base", "EventSource", "StripeEvent"]
