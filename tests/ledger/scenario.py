"""A small language for ledger scenarios: store Stripe events, project, read rows."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.kit.time import utc_day
from service.ledger.models import MrrMovement, SubscriptionState
from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from tests.factories import DAY, T0, subscription_payload
from tests.signing import event_body

NOW = T0 + 400 * DAY  # "today" for every scenario: long after their events


def day(n: int, hour: int = 12) -> int:
    """Unix time of day n after 2025-01-01, at `hour` UTC."""
    return T0 + n * DAY + hour * 3600


def d(n: int) -> date:
    return utc_day(T0 + n * DAY)


class Scenario:
    def __init__(self, session: Session, options: LedgerOptions | None = None) -> None:
        self.session = session
        self.options = options or LedgerOptions()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def event(
        self, type_: str, obj: dict[str, Any], created: int, *, event_id: str | None = None
    ) -> str:
        event_id = event_id or f"evt_{next(self._ids):06d}"
        envelope = {
            "id": event_id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": created,
            "livemode": False,
            "type": type_,
            "data": {"object": obj},
        }
        self.events.append(envelope)
        return event_id

    def sub(self, type_: str, at: int, **payload: Any) -> str:
        """A customer.subscription.<type_> event carrying `subscription_payload(**payload)`."""
        payload.setdefault("created", at)
        payload.setdefault("current_period_start", at)
        return self.event(f"customer.subscription.{type_}", subscription_payload(**payload), at)

    def store(self, events: list[dict[str, Any]] | None = None) -> None:
        for envelope in self.events if events is None else events:
            body = event_body(envelope)
            store_event(self.session, body, parse_event(body))
        self.session.flush()

    def project(self) -> None:
        while project_pending(self.session, self.options, now=NOW):
            pass
        self.session.flush()

    def run(self) -> list[tuple[date, str, int, int, str]]:
        self.store()
        self.project()
        return self.rows()

    def rows(self, customer: str | None = None) -> list[tuple[date, str, int, int, str]]:
        query = select(MrrMovement).order_by(
            MrrMovement.customer_id, MrrMovement.day, MrrMovement.currency
        )
        if customer:
            query = query.where(MrrMovement.customer_id == customer)
        return [
            (m.day, m.movement.value, m.from_mrr, m.to_mrr, m.currency)
            for m in self.session.scalars(query)
        ]

    def movement(self, on: date, customer: str = "cus_1") -> MrrMovement:
        return self.session.scalars(
            select(MrrMovement).where(MrrMovement.day == on, MrrMovement.customer_id == customer)
        ).one()

    def subscription_mrr(self, sub_id: str = "sub_1") -> int:
        state = self.session.get(SubscriptionState, ("", sub_id))
        assert state is not None
        return state.mrr
