"""Failed charges and payment intents of any API version, read defensively: where decline
codes come from.

Before 2025-03-31 charges and payment intents name their `invoice`; from 2025-03-31 (basil)
on they do not (the link is on the invoice, `service.stripe_shapes.invoice`).

Absent, `null` and expanded-object forms all occur; nothing here raises on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.stripe_shapes.fields import (
    as_mapping,
    expandable_id,
    get_int,
    get_str,
    lower_currency,
)


@dataclass(frozen=True, slots=True)
class PaymentFailure:
    """A failed charge or payment intent: where decline codes come from."""

    id: str | None
    kind: str  # charge | payment_intent
    invoice: str | None  # only before basil
    charge: str | None  # the payment intent's charge
    payment_intent: str | None  # the charge's payment intent
    amount: int | None
    currency: str | None
    decline_code: str | None
    message: str | None


def read_charge_failure(obj: Mapping[str, Any]) -> PaymentFailure:
    outcome = as_mapping(obj.get("outcome"))
    # `failure_code` is coarse (card_declined); an issuer's decline reason
    # (insufficient_funds, ...) is in `outcome.reason`.
    return PaymentFailure(
        id=get_str(obj, "id"),
        kind="charge",
        invoice=expandable_id(obj.get("invoice")),
        charge=get_str(obj, "id"),
        payment_intent=expandable_id(obj.get("payment_intent")),
        amount=get_int(obj, "amount"),
        currency=lower_currency(obj.get("currency")),
        decline_code=get_str(outcome, "reason") or get_str(obj, "failure_code"),
        message=get_str(obj, "failure_message") or get_str(outcome, "seller_message"),
    )


def read_payment_intent_failure(obj: Mapping[str, Any]) -> PaymentFailure:
    error = as_mapping(obj.get("last_payment_error"))
    return PaymentFailure(
        id=get_str(obj, "id"),
        kind="payment_intent",
        invoice=expandable_id(obj.get("invoice")),
        charge=expandable_id(error.get("charge")) or expandable_id(obj.get("latest_charge")),
        payment_intent=get_str(obj, "id"),
        amount=get_int(obj, "amount"),
        currency=lower_currency(obj.get("currency")),
        decline_code=get_str(error, "decline_code") or get_str(error, "code"),
        message=get_str(error, "message"),
    )
