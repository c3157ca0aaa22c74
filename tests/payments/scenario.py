"""The ledger's Scenario, plus invoices, failed charges and the episodes they project to."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from service.payments.models import PaymentAlert, PaymentEpisode
from tests.factories import item, price_payload
from tests.ledger.scenario import Scenario
from tests.payments.factories import (
    InvoiceShape,
    charge_failed_payload,
    invoice_payload,
    payment_intent_failed_payload,
)

EPISODE_COLUMNS = (
    "invoice_id", "customer_id", "subscription_id", "currency", "amount_due", "attempts",
    "first_failure_at", "last_failure_at", "next_retry_at", "decline_code", "failure_message",
    "billing_reason", "action_required", "outcome", "lost_reason", "closed_at",
    "recovered_at", "time_to_recover_s", "recovered_on_attempt", "event_ids",
)  # fmt: skip


class PaymentScenario(Scenario):
    """One invoice at a time: `invoice_defaults` are merged into every invoice payload."""

    shape: InvoiceShape = "current"

    def subscribe(
        self, at: int, *, sub: str = "sub_1", customer: str = "cus_1", amount: int = 4900, **kw: Any
    ) -> str:
        price = price_payload(id=f"price_{amount}", unit_amount=amount, **kw)
        return self.sub("created", at, id=sub, customer=customer, items=[item(price)])

    def invoice(self, type_: str, at: int, **payload: Any) -> str:
        payload.setdefault("shape", self.shape)
        return self.event(f"invoice.{type_}", invoice_payload(created=at, **payload), at)

    def fail(self, at: int, attempt: int, next_retry: int | None = None, **payload: Any) -> str:
        return self.invoice(
            "payment_failed", at, attempt_count=attempt, next_payment_attempt=next_retry, **payload
        )

    def paid(self, at: int, attempt: int, **payload: Any) -> str:
        payload.setdefault("amount_paid", payload.get("amount_due", 4900))
        return self.invoice("paid", at, status="paid", attempt_count=attempt, paid_at=at, **payload)

    def charge_failed(self, at: int, **payload: Any) -> str:
        payload.setdefault("shape", self.shape)
        return self.event("charge.failed", charge_failed_payload(created=at, **payload), at)

    def intent_failed(self, at: int, **payload: Any) -> str:
        payload.setdefault("shape", self.shape)
        obj = payment_intent_failed_payload(created=at, **payload)
        return self.event("payment_intent.payment_failed", obj, at)

    # --- reading ---------------------------------------------------------------------

    def episodes(self, account: str = "") -> list[dict[str, Any]]:
        rows = self.session.scalars(
            select(PaymentEpisode)
            .where(PaymentEpisode.account == account)
            .order_by(PaymentEpisode.invoice_id)
        )
        return [{c: getattr(r, c) for c in EPISODE_COLUMNS} for r in rows]

    def episode(self, invoice_id: str = "in_1") -> PaymentEpisode:
        return self.session.scalars(
            select(PaymentEpisode).where(PaymentEpisode.invoice_id == invoice_id)
        ).one()

    def alerts(self) -> list[tuple[str, str, int]]:
        rows = self.session.scalars(select(PaymentAlert).order_by(PaymentAlert.id))
        return [(a.type, a.dedup_key, a.occurred_at) for a in rows]
